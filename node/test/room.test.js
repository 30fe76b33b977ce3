'use strict';
// Posts that find the ring full wait for room without blocking and
// without timers: the reader's release wakes the port's descriptor (the
// core's prepare_post_poll). Real processes; the reader starts late.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { fork } = require('..');

const reader = path.join(__dirname, 'fixtures', 'late_reader.js');
const CAPACITY = 4096; // the smallest ring: a few of these messages fill it
const N = 120;

// Message i: i % 256 in every byte; every fourth is larger than the ring
// can hold (out of line: its memory travels over the socket).
const message = (i) => Buffer.alloc(i % 4 === 3 ? 3 * CAPACITY : 1000, i % 256);

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;

function ready(port) {
  return new Promise((resolve) => {
    port.once('message', (e) => {
      assert.strictEqual(e.data, 'ready');
      resolve();
    });
    port.start();
  });
}

test('posts waiting for room go out when the reader catches up, woken by the descriptor (no timer)', async () => {
  const { child, port } = fork(reader, ['report', String(N)], { capacity: CAPACITY });
  await ready(port);
  const before = timers();
  for (let i = 0; i < N; i++) port.postMessage(message(i)); // never blocks
  // The ring is full and messages wait; nothing polls for room.
  assert.strictEqual(timers(), before, 'no timer or immediate retries the posts');
  const report = new Promise((resolve) => port.once('message', (e) => resolve(e.data)));
  child.kill('SIGUSR2');
  assert.deepStrictEqual(await report, { count: N, ok: true });
  const exited = new Promise((r) => child.on('exit', r));
  port.close();
  await exited;
});

test('close() while posts wait for room: the reader gets every one, then "closed"', async () => {
  const { child, port } = fork(reader, ['exit', String(N)], { capacity: CAPACITY });
  await ready(port);
  for (let i = 0; i < N; i++) port.postMessage(message(i));
  port.close(); // the waiting posts still go, then the close
  port.postMessage(Buffer.alloc(10)); // after close(): dropped, as Electron does
  const exited = new Promise((r) => child.on('exit', (code, signal) => r([code, signal])));
  child.kill('SIGUSR2');
  assert.deepStrictEqual(await exited, [0, null], 'the reader saw every message in order, then "closed"');
});

test('the reader killed while posts wait: they are dropped, the close says "peer died", nothing holds the process', () => {
  // In a process of its own, which must end by itself: nothing may keep
  // its loop alive once the reader is gone.
  const code = `
    const { fork } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const { child, port } = fork(${JSON.stringify(reader)}, ['report', '1000'], { capacity: ${CAPACITY} });
    port.once('message', () => {
      for (let i = 0; i < 50; i++) port.postMessage(Buffer.alloc(1000, i));
      port.on('close', (e) => console.log('close: ' + e.reason));
      child.on('exit', (code, signal) => console.log('reader: ' + signal));
      child.kill('SIGKILL');
    });
    port.start();`;
  const out = execFileSync(process.execPath, ['-e', code], { timeout: 20000 }).toString();
  assert.match(out, /close: peer died/);
  assert.match(out, /reader: SIGKILL/);
});
