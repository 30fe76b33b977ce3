'use strict';
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const shmport = require('..');
const { MessageChannelMain, fork } = shmport;

const fixture = (name) => path.join(__dirname, 'fixtures', name);
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

// Resolves with the next n messages, then (if asked) the close event.
function collect(port, n, withClose = false) {
  return new Promise((resolve) => {
    const got = [];
    port.on('message', (e) => {
      got.push(e);
      if (!withClose && got.length === n) resolve(got);
    });
    if (withClose) port.on('close', (c) => resolve({ got, close: c }));
    port.start();
  });
}

function roundTrip(copy) {
  return async () => {
    shmport.setCopyMode(copy);
    const { child, port } = fork(fixture('echo.js'), [], { env: { SHMPORT_COPY: copy ? '1' : '0' } });
    const sizes = [0, 1, 63, 4096, 65536, 1 << 20, 4 << 20, 16 << 20, 64 << 20];
    const sent = sizes.map((n, i) => crypto.randomBytes(Math.min(n, 1024)).length === 0
      ? Buffer.alloc(0) : Buffer.alloc(n, i + 1).fill(crypto.randomBytes(256), 0, Math.min(n, 256)));
    const replies = collect(port, sent.length + 2);
    for (const b of sent) port.postMessage(b);
    port.postMessage({ nested: [1, 'two', new Map([[3, 4]])], big: 2n ** 70n });
    port.postMessage(new Float64Array([1.5, -2, 3e300]));
    const got = await replies;
    sent.forEach((b, i) => {
      assert.ok(Buffer.isBuffer(got[i].data), `message ${i} is a Buffer`);
      assert.strictEqual(got[i].data.length, b.length);
      assert.strictEqual(sha(got[i].data), sha(b), `checksum of ${b.length} B`);
    });
    assert.deepStrictEqual(got[sizes.length].data, { nested: [1, 'two', new Map([[3, 4]])], big: 2n ** 70n });
    assert.deepStrictEqual(got[sizes.length + 1].data, new Float64Array([1.5, -2, 3e300]));
    const exited = new Promise((r) => child.on('exit', (code) => r(code)));
    port.postMessage('exit');
    assert.strictEqual(await exited, 0);
    port.close();
    shmport.setCopyMode(false);
  };
}

test('ordering and checksums, 0 B to 64 MiB, through a child (shared-memory views)', roundTrip(false));
test('the same with the one-copy path forced on (Electron)', roundTrip(true));

test('zero-copy views are writable copy-on-write and do not change the sender', async () => {
  shmport.setCopyMode(false);
  const { port1, port2 } = new MessageChannelMain();
  const big = Buffer.alloc(8 << 20, 5);
  const got = collect(port2, 1);
  port1.postMessage(big);
  const [e] = await got;
  e.data[0] = 9;
  assert.strictEqual(e.data[0], 9);
  assert.strictEqual(big[0], 5);
  port1.close();
  port2.close();
});

test('messages queue until start()', async () => {
  const { port1, port2 } = new MessageChannelMain();
  let early = 0;
  port2.on('message', () => { early++; });
  for (let i = 0; i < 100; i++) port1.postMessage(i);
  await new Promise((r) => setTimeout(r, 20));
  assert.strictEqual(early, 0, 'nothing before start()');
  port2.removeAllListeners('message');
  const got = collect(port2, 100);
  assert.deepStrictEqual((await got).map((e) => e.data), [...Array(100).keys()]);
  port1.close();
  port2.close();
});

test('close arrives after every message, with reason "closed"', async () => {
  const { port1, port2 } = new MessageChannelMain();
  for (let i = 0; i < 5000; i++) port1.postMessage(i); // more than the ring holds: some wait for room
  port1.close();
  const { got, close } = await collect(port2, 0, true);
  assert.deepStrictEqual(got.map((e) => e.data), [...Array(5000).keys()]);
  assert.strictEqual(close.reason, 'closed');
  assert.strictEqual(port2.closeReason, 'closed');
});

test('kill -9 of the peer process gives close with reason "peer died"', async () => {
  const { child, port } = fork(fixture('echo.js'));
  const first = collect(port, 1);
  port.postMessage('ping');
  assert.strictEqual((await first)[0].data, 'ping');
  const closed = new Promise((r) => port.on('close', r));
  const exited = new Promise((r) => child.on('exit', (code, signal) => r(signal)));
  child.kill('SIGKILL');
  assert.strictEqual((await closed).reason, 'peer died');
  assert.strictEqual(await exited, 'SIGKILL');
});

test('ports across three processes: a port forwarded through a middle process', async () => {
  const { child, port: toMiddle } = fork(fixture('middle.js'));
  const { port1: mine, port2: theirs } = new MessageChannelMain();
  mine.postMessage('before the hop'); // queued on the port as it travels
  toMiddle.postMessage('take this', [theirs]);
  mine.postMessage('during the hop');
  const got = await collect(mine, 2);
  assert.deepStrictEqual(got.map((e) => e.data.echo), ['before the hop', 'during the hop']);
  assert.notStrictEqual(got[0].data.pid, child.pid, 'answered by the grandchild');
  assert.notStrictEqual(got[0].data.pid, process.pid);
  const exited = new Promise((r) => child.on('exit', r));
  mine.close();
  await exited;
  toMiddle.close();
});

test('refused transfers throw DataCloneError and send nothing', async () => {
  const { port1, port2 } = new MessageChannelMain();
  const other = new MessageChannelMain();
  assert.throws(() => port1.postMessage('x', [port1]), { name: 'DataCloneError', message: /source port/ });
  assert.throws(() => port1.postMessage('x', [port2]), { name: 'DataCloneError', message: /entangled peer/ });
  assert.throws(() => port1.postMessage('x', [other.port1, other.port1]), { name: 'DataCloneError', message: /duplicate/ });
  assert.throws(() => port1.postMessage('x', ['not a port']), { name: 'TypeError' });
  // The peer hidden in the queue of a port in the list is refused too, and
  // that port comes back with its queue.
  other.port1.postMessage('carries the peer', [port2]);
  assert.throws(() => port1.postMessage('x', [other.port2]), { name: 'DataCloneError', message: /entangled peer/ });
  // Nothing was sent; every port still works.
  const [carried] = await collect(other.port2, 1);
  assert.strictEqual(carried.data, 'carries the peer');
  const [peer] = carried.ports;
  port1.postMessage('only this');
  const got = await collect(peer, 1);
  assert.strictEqual(got[0].data, 'only this');
  port1.close();
  peer.close();
  other.port1.close();
  other.port2.close();
});

test('bad input: non-cloneable values and closed ports', () => {
  const { port1, port2 } = new MessageChannelMain();
  assert.throws(() => port1.postMessage(() => 1), { name: 'DataCloneError' });
  assert.throws(() => port1.postMessage({ s: Symbol('x') }), { name: 'DataCloneError' });
  const c = new MessageChannelMain();
  c.port1.close();
  assert.throws(() => port1.postMessage('x', [c.port1]), { name: 'DataCloneError', message: /neutered/ });
  const d = new MessageChannelMain();
  port1.postMessage('moves', [d.port1]);
  assert.throws(() => port1.postMessage('again', [d.port1]), { name: 'DataCloneError', message: /neutered/ });
  for (const bad of [-1, NaN, Infinity]) assert.throws(() => port1.setSpin(bad), RangeError, String(bad));
  assert.throws(() => port1.setSpin('20'), TypeError);
  port1.setSpin(0); // never spin
  assert.strictEqual(port1.spin, 0);
  port1.setSpin(35);
  assert.strictEqual(port1.spin, 35);
  port1.close();
  assert.strictEqual(port1.spin, null);
  port1.postMessage('dropped silently, as Electron does'); // no throw
  port1.close(); // twice is fine
  port2.close();
  c.port2.close();
  d.port2.close();
});

function openFds() {
  return fs.readdirSync('/proc/self/fd').length;
}
function shmFiles() {
  return fs.readdirSync('/dev/shm').length;
}

// The 1,000 with SHMPORT_SOAK=1000 (bash .ci/node.sh runs it so);
// 100 by default keeps a plain `npm test` short.
const SOAK = Number(process.env.SHMPORT_SOAK || 100);

test(`no descriptor or /dev/shm leak after ${SOAK} forked and killed children`, async () => {
  const fds = openFds();
  const shm = shmFiles();
  const N = SOAK;
  for (let i = 0; i < N; i += 10) {
    await Promise.all(Array.from({ length: Math.min(10, N - i) }, async () => {
      const { child, port } = fork(fixture('echo.js'));
      const first = collect(port, 1);
      port.postMessage(Buffer.alloc(2 << 20, 1)); // an out-of-line message each
      await first;
      const closed = new Promise((r) => port.on('close', r));
      const exited = new Promise((r) => child.on('exit', r));
      child.kill('SIGKILL');
      assert.strictEqual((await closed).reason, 'peer died');
      await exited;
    }));
  }
  global.gc?.();
  assert.strictEqual(openFds(), fds, 'descriptors');
  assert.strictEqual(shmFiles(), shm, '/dev/shm entries');
});

test('an idle, never-started port does not keep the process alive; unref() lets a started one go', () => {
  const { execFileSync } = require('node:child_process');
  const code = `
    const { MessageChannelMain } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const a = new MessageChannelMain();
    const b = new MessageChannelMain();
    b.port2.start();
    b.port2.unref();
    setTimeout(() => console.log('exited on its own'), 10);`;
  const out = execFileSync(process.execPath, ['-e', code], { timeout: 20000 }).toString();
  assert.match(out, /exited on its own/);
});

test('a larger ring (capacity option) carries large messages inside it, in order', async () => {
  const { child, port } = fork(fixture('echo.js'), [], { capacity: 8 << 20 });
  const sent = [1 << 20, 4 << 20, 3, 6 << 20].map((n) => crypto.randomBytes(n));
  const replies = collect(port, sent.length);
  for (const b of sent) port.postMessage(b);
  const got = await replies;
  sent.forEach((b, i) => assert.strictEqual(sha(got[i].data), sha(b)));
  const { port1, port2 } = new MessageChannelMain({ capacity: 16 << 20 });
  const one = collect(port2, 1);
  port1.postMessage(sent[3]);
  assert.strictEqual(sha((await one)[0].data), sha(sent[3]));
  assert.throws(() => new MessageChannelMain({ capacity: -1 }), RangeError);
  const exited = new Promise((r) => child.on('exit', r));
  port.postMessage('exit');
  await exited;
  port.close();
  port1.close();
  port2.close();
});

test('a message waiting for room is a snapshot: changing the Buffer after postMessage changes nothing', async () => {
  const { port1, port2 } = new MessageChannelMain({ capacity: 4096 }); // holds about three of these
  const b = Buffer.alloc(1024);
  for (let i = 0; i < 50; i++) {
    b.fill(i);
    port1.postMessage(b);
  }
  b.fill(255);
  const got = await collect(port2, 50);
  got.forEach((e, i) => assert.ok(e.data.every((x) => x === i), `message ${i}`));
  port1.close();
  port2.close();
});
