'use strict';
// Streams `count` replies on the port that came with each request, then
// closes that port: the close is the end of the stream.
const { parentPort } = require('../..');
parentPort.on('message', ({ data: { count }, ports: [reply] }) => {
  for (let seq = 0; seq < count; seq++) reply.postMessage({ seq, square: seq * seq, pid: process.pid });
  reply.close(); // after every reply above, even those still waiting for room
});
parentPort.on('close', () => {}); // the parent is done: nothing keeps the process alive
parentPort.start();
