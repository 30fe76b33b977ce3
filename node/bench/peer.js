'use strict';
// The other end of bench.js, one transport per run:
//   node peer.js shmport   — a process started by shmport's fork()
//   node peer.js ipc       — a process started by child_process.fork()
//   (worker_threads)       — a worker thread, given its port in workerData
// Protocol, the same on every transport: a Buffer of at most 64 bytes is
// echoed; { expect: n } announces n large Buffers, answered with 'done' once
// the last has arrived (each is touched at its first and last byte, as a
// receiver that reads the stamps of a message would); 'exit' ends the peer.

function serve(post, onMessage, end) {
  let expect = 0;
  let sum = 0;
  onMessage((data) => {
    if (typeof data === 'string') {
      if (data === 'exit') end();
      return;
    }
    if (data.expect !== undefined) {
      expect = data.expect;
      return;
    }
    if (data.byteLength <= 64) {
      post(data);
      return;
    }
    sum += data[0] + data[data.byteLength - 1];
    if (--expect === 0) post('done');
  });
  return () => sum;
}

const { isMainThread, workerData } = require('node:worker_threads');

if (!isMainThread) {
  const { port } = workerData;
  serve((m) => port.postMessage(m), (f) => port.on('message', f), () => port.close());
} else if (process.argv[2] === 'shmport') {
  const { parentPort } = require('..');
  serve((m) => parentPort.postMessage(m), (f) => parentPort.on('message', (e) => f(e.data)), () => parentPort.close());
  parentPort.start();
} else if (process.argv[2] === 'ipc') {
  serve((m) => process.send(m), (f) => process.on('message', f), () => process.disconnect());
} else {
  throw new Error('usage: node peer.js shmport|ipc');
}
