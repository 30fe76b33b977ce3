'use strict';
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { execFileSync, spawnSync } = require('node:child_process');
const shmport = require('..');
const { buildExample } = require('./cargo.js');

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

// The next message's data, after start().
function next(port) {
  return new Promise((resolve) => port.once('message', (e) => resolve(e.data)));
}

// The next n messages' data (one listener for all: several may come in
// one turn of the loop, before a listener added after the first would be).
function nextN(port, n) {
  return new Promise((resolve) => {
    const got = [];
    const on = (e) => {
      got.push(e.data);
      if (got.length === n) {
        port.off('message', on);
        resolve(got);
      }
    };
    port.on('message', on);
  });
}

// A C program on shmport's C library (node/examples/c_echo.c), built into
// a temporary directory; returns its path and a function that removes it.
function buildCEcho() {
  const out = execFileSync('cargo', ['build', '-p', 'shmport-ffi', '--release', '--message-format=json-render-diagnostics'],
    { cwd: __dirname, stdio: ['ignore', 'pipe', 'inherit'] });
  const so = out.toString().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    .filter((m) => m.reason === 'compiler-artifact' && m.target.name === 'shmport')
    .flatMap((m) => m.filenames).find((f) => f.endsWith('/libshmport.so'));
  assert.ok(so, 'cargo built libshmport.so');
  const root = path.join(__dirname, '..', '..');
  const lib = path.dirname(so);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmport-c-echo-'));
  const exe = path.join(dir, 'c_echo');
  execFileSync('cc', [path.join(root, 'node', 'examples', 'c_echo.c'), `-I${path.join(root, 'include')}`,
    `-L${lib}`, `-Wl,-rpath,${lib}`, '-lshmport', '-o', exe], { stdio: 'inherit' });
  return [exe, () => fs.rmSync(dir, { recursive: true })];
}

// Talk to a raw-bytes peer that says hello and answers every message with
// its bytes reversed, then close: it exits 0.
async function reverseEcho(exe, greeting) {
  const { child, port } = shmport.spawn(exe);
  port.start();
  const hello = await next(port);
  assert.ok(Buffer.isBuffer(hello));
  assert.strictEqual(hello.toString(), `${greeting}, pid ${child.pid}`);

  port.postMessage(Buffer.from([1, 2, 3]));
  assert.deepStrictEqual([...(await next(port))], [3, 2, 1]);

  port.postMessage(new Uint8Array([9, 8])); // a Uint8Array is raw bytes too
  assert.deepStrictEqual([...(await next(port))], [8, 9]);

  // In blocks of each side's pool; three at once, so that the peer's
  // pool may grow and a reply arrive as a view of its block (or a copy).
  const bigs = [1, 2, 3].map(() => crypto.randomBytes(4 << 20));
  const replies = nextN(port, bigs.length);
  for (const big of bigs) port.postMessage(big);
  (await replies).forEach((back, i) => {
    assert.strictEqual(back.length, bigs[i].length);
    assert.strictEqual(sha(back), sha(Buffer.from(bigs[i]).reverse()));
  });
  return { child, port };
}

test('interop with a Rust process through raw bytes', async () => {
  const { child, port } = await reverseEcho(buildExample('raw_echo'), 'hello from rust');
  port.postMessage({ a: 1 }); // a structured clone is a typed message to Rust
  assert.strictEqual((await next(port)).toString(), 'typed');

  const exited = new Promise((r) => child.on('exit', (code, signal) => r([code, signal])));
  port.close(); // Rust's recv returns Closed: it exits
  assert.deepStrictEqual(await exited, [0, null]);
});

test('interop with a C process through raw bytes', async () => {
  const [exe, remove] = buildCEcho();
  try {
    const { child, port } = await reverseEcho(exe, 'hello from c');
    const exited = new Promise((r) => child.on('exit', (code, signal) => r([code, signal])));
    port.close(); // its recv returns SHMPORT_CLOSED: it exits 0
    assert.deepStrictEqual(await exited, [0, null]);
  } finally {
    remove();
  }
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
