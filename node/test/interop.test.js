'use strict';
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const shmport = require('..');

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

// The next message's data, after start().
function next(port) {
  return new Promise((resolve) => port.once('message', (e) => resolve(e.data)));
}

// Build node/examples/raw_echo.rs (a Rust program on shmport's Rust API)
// and return the path of its executable.
function buildRawEcho() {
  const out = execFileSync('cargo', ['build', '-p', 'shmport-node', '--release', '--example', 'raw_echo',
    '--message-format=json-render-diagnostics'], { cwd: __dirname, stdio: ['ignore', 'pipe', 'inherit'] });
  for (const line of out.toString().split('\n')) {
    if (!line.startsWith('{')) continue;
    const m = JSON.parse(line);
    if (m.reason === 'compiler-artifact' && m.target.name === 'raw_echo' && m.executable) return m.executable;
  }
  throw new Error('cargo built no raw_echo executable');
}

test('interop with a Rust process through raw bytes', async () => {
  const exe = buildRawEcho();
  const { child, port } = shmport.spawn(exe);
  port.start();
  const hello = await next(port);
  assert.ok(Buffer.isBuffer(hello));
  assert.strictEqual(hello.toString(), `hello from rust, pid ${child.pid}`);

  port.postMessage(Buffer.from([1, 2, 3]));
  assert.deepStrictEqual([...(await next(port))], [3, 2, 1]);

  port.postMessage(new Uint8Array([9, 8])); // a Uint8Array is raw bytes too
  assert.deepStrictEqual([...(await next(port))], [8, 9]);

  const big = crypto.randomBytes(4 << 20); // out of line: a memfd each way
  port.postMessage(big);
  const back = await next(port);
  assert.strictEqual(back.length, big.length);
  assert.strictEqual(sha(back), sha(Buffer.from(big).reverse()));

  port.postMessage({ a: 1 }); // a structured clone is a typed message to Rust
  assert.strictEqual((await next(port)).toString(), 'typed');

  const exited = new Promise((r) => child.on('exit', (code, signal) => r([code, signal])));
  port.close(); // Rust's recv returns Closed: it exits
  assert.deepStrictEqual(await exited, [0, null]);
});

test("a forked child's stdout and stderr reach the parent's", () => {
  const code = `
    const { fork } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const { child, port } = fork(${JSON.stringify(path.join(__dirname, 'fixtures', 'print.js'))});
    child.on('exit', (code) => { console.log('parent saw exit ' + code); port.close(); });`;
  const r = spawnSync(process.execPath, ['-e', code], { timeout: 20000 });
  assert.strictEqual(r.status, 0, r.stderr.toString());
  const out = r.stdout.toString();
  const err = r.stderr.toString();
  const pid = /child (\d+) on stdout/.exec(out);
  assert.ok(pid, `the child's line is in the parent's stdout: ${JSON.stringify(out)}`);
  assert.match(out, /parent saw exit 0/);
  assert.match(err, new RegExp(`child ${pid[1]} on stderr`));
});
