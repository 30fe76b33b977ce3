'use strict';
// The main world: reads the forwarded port from its first message to the
// last, answers main on it, and ends on its close.
const { parentPort } = require('../..');
parentPort.once('message', ({ ports: [port] }) => {
  parentPort.close();
  const seen = [];
  port.postMessage({ hello: true, pid: process.pid });
  port.on('message', ({ data }) => {
    if (data.count === undefined) {
      seen.push(data);
      return;
    }
    const inOrder = seen.every((m, i) => m.seq === i);
    const phases = [...new Set(seen.map((m) => m.phase))];
    console.log(`main world: ${seen.length} messages (${phases.join(', ')})`);
    port.postMessage({ received: seen.length, inOrder: inOrder && seen.length === data.count });
  });
  port.on('close', ({ reason }) => {
    console.log(`main world: the port closed ("${reason}")`);
    process.exitCode = reason === 'closed' ? 0 : 1;
  });
  port.start();
});
parentPort.start();
