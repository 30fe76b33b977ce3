'use strict';
// Received Buffers that view the sender's pool blocks: a receiver that
// keeps every Buffer holds all but an eighth of the blocks, the rest come
// as copies, and the sender, whose pool reaches its cap, is never left
// waiting for a garbage collection; collected views give their blocks
// back. With the copy path forced (Electron), nothing is viewed.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { fork } = require('..');

const MIB = 1 << 20;
// More 1 MiB messages than the sender's pool holds: capped at 64 MiB, it
// grows buffers of 1, 2, 4 … 32 blocks, 63 blocks of 1 MiB.
const COUNT = 100;
const POOL = 64 * MIB;
const BLOCKS = 63;

function next(port) {
  return new Promise((resolve) => port.once('message', (e) => resolve(e.data)));
}

async function keepEverything(copy) {
  const { child, port } = fork(path.join(__dirname, 'fixtures', 'keeper.js'), [], {
    execArgv: ['--expose-gc'],
    env: { SHMPORT_COPY: copy ? '1' : '0' },
  });
  port.setPoolLimit(POOL);
  port.start();
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  const rounds = [];
  // A hung child would keep this process alive: the test's timeout kills it.
  const timer = setTimeout(() => child.kill('SIGKILL'), 100000);
  try {
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < COUNT; i++) port.postMessage(Buffer.alloc(MIB, i % 256));
      port.postMessage('report');
      const report = await Promise.race([next(port), exited]);
      port.postMessage('drop');
      const dropped = await Promise.race([next(port), exited]);
      rounds.push({ ...report, after: dropped.viewed });
    }
    port.postMessage('exit');
    assert.strictEqual(await exited, 0);
  } finally {
    clearTimeout(timer);
    port.close();
  }
  return rounds;
}

test('a receiver that keeps every Buffer views all but an eighth of the pool and its sender never waits for a collection', { timeout: 120000 }, async () => {
  for (const r of await keepEverything(false)) {
    assert.strictEqual(r.count, COUNT, 'every message arrived');
    assert.ok(r.ok, 'every Buffer holds its bytes');
    assert.ok(r.viewed > 0, `some Buffers view pool blocks (${r.viewed})`);
    const most = BLOCKS - Math.floor(BLOCKS / 8);
    assert.ok(r.viewed <= most, `at most ${most} of ${BLOCKS} blocks viewed (${r.viewed})`);
    assert.ok(r.viewed > BLOCKS / 2, `more than half of them viewed (${r.viewed})`);
    assert.strictEqual(r.after, 0, 'collected views gave their blocks back');
  }
});

test('with the copy path forced on, nothing is viewed and everything arrives', { timeout: 120000 }, async () => {
  for (const r of await keepEverything(true)) {
    assert.strictEqual(r.count, COUNT);
    assert.ok(r.ok);
    assert.strictEqual(r.viewed, 0);
  }
});

test('cloned values are copied out of pool blocks; raw bytes are viewed', async () => {
  const { MessageChannelMain } = require('..');
  const { port1, port2 } = new MessageChannelMain();
  const kept = [];
  let want = 0;
  let arrived;
  port2.on('message', (e) => {
    kept.push(e.data);
    if (kept.length === want) arrived();
  });
  port2.start();
  const post = (values) => new Promise((resolve) => {
    want += values.length;
    arrived = resolve;
    for (const v of values) port1.postMessage(v);
  });
  try {
    // Three at once: the pool grows to several blocks of their size (4 MiB).
    const text = 'x'.repeat(2.5 * MIB);
    await post([{ text }, { text }, { text }]);
    assert.ok(kept.every((v) => v.text === text));
    assert.strictEqual(port2.viewedBlocks, 0, 'decoded values hold no block');
    await post([Buffer.alloc(2.5 * MIB, 1), Buffer.alloc(2.5 * MIB, 2)]);
    assert.ok(kept[3][0] === 1 && kept[4][0] === 2);
    assert.ok(port2.viewedBlocks >= 1, `raw bytes are views (${port2.viewedBlocks})`);
  } finally {
    port1.close();
    port2.close();
  }
  // A view outlives its port: the block stays mapped until it is collected.
  assert.ok(kept[3][0] === 1 && kept[4][kept[4].length - 1] === 2);
});

// A receiver that drops each Buffer after reading it: its port asks V8 for
// scavenges, so that the views' blocks come back without waiting for a
// collection V8 would make on its own (in a process that allocates little,
// none comes for a long time). Posted all at once, 48 messages of 1 MiB
// grow the sender's pool to 63 blocks; the scavenge comes when views hold
// half of them, and the next after 16 MiB more; V8 then needs no
// mark-compact for the external memory they would hold.
async function dropEverything(collectEvery) {
  const { child, port } = fork(path.join(__dirname, 'fixtures', 'dropper.js'), [String(collectEvery)]);
  port.start();
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
  try {
    const payload = Buffer.alloc(MIB, 3);
    for (let i = 0; i < 48; i++) port.postMessage(payload);
    port.postMessage('report');
    const report = await Promise.race([next(port), exited]);
    port.postMessage('exit');
    assert.strictEqual(await exited, 0);
    return report;
  } finally {
    clearTimeout(timer);
    port.close();
  }
}

test('a receiver that drops its Buffers gives their blocks back at the scavenges its port asks for', { timeout: 60000 }, async () => {
  const r = await dropEverything(16 * MIB);
  assert.strictEqual(r.count, 48, 'every message arrived');
  assert.strictEqual(r.sum, 48 * 6, 'each holds its bytes');
  assert.ok(r.minor >= 2, `the port asked for scavenges (${r.minor} minor collections)`);
  assert.strictEqual(r.major, 0, 'no mark-compact was needed');
  assert.ok(r.viewed <= 17, `blocks came back: at most the views since the last scavenge are held (${r.viewed})`);
});

test('with setCollectEvery(0) the port asks for no collection', { timeout: 60000 }, async () => {
  // The views' blocks then come back at V8's own collections (here a
  // mark-compact, for the external memory they hold).
  const r = await dropEverything(0);
  assert.strictEqual(r.count, 48);
  assert.strictEqual(r.sum, 48 * 6);
  assert.strictEqual(r.minor, 0, 'no scavenge');
});

test('setCollectEvery takes a whole number of bytes, 0 or more, or null', () => {
  const shmport = require('..');
  for (const bad of [-1, 1.5, NaN, Infinity, '16', undefined]) {
    assert.throws(() => shmport.setCollectEvery(bad), RangeError, String(bad));
  }
  shmport.setCollectEvery(0);
  assert.strictEqual(shmport.collectEvery, 0);
  shmport.setCollectEvery(null);
  assert.strictEqual(shmport.collectEvery, 16 * MIB);
});

// The port's scavenge comes once the listener of the message that made it
// due has returned, so a Buffer that listener dropped is freed by it. (Made
// before the listener, with that Buffer alive, it left the last view of a
// batch held; and a Buffer alive at two collections is promoted, after
// which only a mark-compact frees it.)
test('the scavenge after a listener frees the view that listener dropped', { timeout: 60000 }, async () => {
  const { MessageChannelMain } = require('..');
  const { port1, port2 } = new MessageChannelMain();
  const COUNT16 = 4; // posted at once: the sender's pool grows to 4 blocks of 16 MiB
  let n = 0;
  let viewedAtLast = 0;
  let done;
  const all = new Promise((r) => { done = r; });
  port2.on('message', (e) => {
    assert.strictEqual(e.data.byteLength, 16 * MIB);
    assert.strictEqual(e.data[0], n % 256);
    if (++n === COUNT16) {
      viewedAtLast = port2.viewedBlocks;
      done();
    }
  });
  port2.start();
  for (let i = 0; i < COUNT16; i++) port1.postMessage(Buffer.alloc(16 * MIB, i)); // each makes a scavenge due
  await all;
  // The finalizers that give the blocks back run in the loop.
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  const after = port2.viewedBlocks;
  port1.close();
  port2.close();
  assert.ok(viewedAtLast >= 1, `the last message was a view (${viewedAtLast} views held in its listener)`);
  assert.strictEqual(after, 0, 'no view is held once the listeners returned and the loop turned');
});
