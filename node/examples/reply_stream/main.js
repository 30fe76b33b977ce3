'use strict';
// Reply streams: one request, a stream of replies, then the close event.
//   node examples/reply_stream/main.js
// A request-response IPC gives one answer per request. With ports, a request
// carries a fresh port; the responder streams as many messages as it likes on
// it and then closes it: the requester reads every message, then 'close'
// (reason "closed") says the stream ended. Every request is in flight before
// the first stream is read: each stream waits in its own port.
const path = require('node:path');
const { MessageChannelMain, fork } = require('../..');

const responder = fork(path.join(__dirname, 'responder.js'));
const requests = [3, 5, 1000];

// Post every request first, each with the far end of its own channel.
const streams = requests.map((count) => {
  const { port1, port2 } = new MessageChannelMain();
  responder.port.postMessage({ count }, [port2]);
  return { count, port: port1 };
});

function read({ count, port }) {
  return new Promise((resolve, reject) => {
    const got = [];
    port.on('message', ({ data }) => got.push(data));
    port.on('close', ({ reason }) => {
      const inOrder = got.every((x, i) => x.seq === i);
      if (reason !== 'closed' || got.length !== count || !inOrder) {
        reject(new Error(`stream of ${count}: ${got.length} replies, in order: ${inOrder}, end: ${reason}`));
        return;
      }
      console.log(`request for ${count}: ${got.length} replies in order, then close ("${reason}"); last: ${JSON.stringify(got[got.length - 1])}`);
      resolve();
    });
    port.start();
  });
}

(async () => {
  for (const s of streams) await read(s); // one after the other: the rest wait in their ports
  const exited = new Promise((r) => responder.child.on('exit', r));
  responder.port.close(); // the responder ends when its parent's port closes
  const code = await exited;
  console.log(`responder exited with ${code}`);
  if (code !== 0) process.exitCode = 1;
})().catch((e) => {
  console.error(e.message);
  process.exitCode = 1;
  responder.child.kill();
});
