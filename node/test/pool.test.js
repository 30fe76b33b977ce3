'use strict';
// A port's pool (the shared memory of its posts too large for the ring):
// it stays under the limit setPoolLimit() gives (256 MiB by default), a
// limit of 0 turns it off (large messages then travel in memory of their
// own), and bad limits throw.
const test = require('node:test');
const assert = require('node:assert');
const { MessageChannelMain } = require('..');

const MIB = 1 << 20;

function collect(port, n) {
  return new Promise((resolve) => {
    const got = [];
    port.on('message', (e) => {
      got.push(e.data);
      if (got.length === n) resolve(got);
    });
    port.start();
  });
}

async function sendMany(limit, count) {
  const { port1, port2 } = new MessageChannelMain();
  port1.setPoolLimit(limit);
  const got = collect(port2, count);
  for (let i = 0; i < count; i++) port1.postMessage(Buffer.alloc(MIB, i));
  const data = await got;
  data.forEach((b, i) => {
    assert.strictEqual(b.length, MIB);
    assert.ok(b[0] === i && b[MIB - 1] === i && b[MIB >> 1] === i, `message ${i} intact`);
  });
  const bytes = port1.poolBytes;
  port1.close();
  port2.close();
  return bytes;
}

test('a port\'s pool stays under the limit it is given', async () => {
  const bytes = await sendMany(4 * MIB, 20);
  assert.ok(bytes > 0 && bytes <= 4 * MIB, `${bytes} bytes`);
});

test('a limit of 0 turns the pool off; null restores the default', async () => {
  assert.strictEqual(await sendMany(0, 5), 0);
  const bytes = await sendMany(null, 5);
  assert.ok(bytes > 0 && bytes <= 256 * MIB, `${bytes} bytes`);
});

test('by default a pool grows past 64 MiB, up to 256 MiB, for a burst the receiver has not taken yet', async () => {
  // Both ports on this thread: the 100 posts go out before the first
  // delivery, so every block is in flight at once. One Buffer, refilled
  // after each post: each message is what the Buffer held when posted.
  const { port1, port2 } = new MessageChannelMain();
  const got = collect(port2, 100);
  const buf = Buffer.alloc(MIB);
  for (let i = 0; i < 100; i++) port1.postMessage(buf.fill(i));
  const bytes = port1.poolBytes;
  const data = await got;
  assert.ok(data.every((b, i) => b.length === MIB && b[0] === i && b[MIB - 1] === i));
  port1.close();
  port2.close();
  assert.ok(bytes >= 100 * MIB && bytes <= 256 * MIB, `${bytes} bytes`);
});

test('bad pool limits throw and change nothing', () => {
  const { port1, port2 } = new MessageChannelMain();
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 54]) assert.throws(() => port1.setPoolLimit(bad), RangeError, String(bad));
  assert.throws(() => port1.setPoolLimit('8'), TypeError);
  assert.throws(() => port1.setPoolLimit(), TypeError);
  assert.strictEqual(port1.poolBytes, 0);
  port1.close();
  assert.strictEqual(port1.poolBytes, null);
  port2.close();
});
