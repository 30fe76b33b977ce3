'use strict';
// Serves every client port the main process sends: squares numbers.
const { parentPort } = require('../..');
parentPort.on('message', ({ ports: [client] }) => {
  client.on('message', ({ data }) => client.postMessage({ pid: process.pid, squares: data.map((x) => x * x) }));
  client.start();
});
// Ends when the main process closes its port and every client has gone.
parentPort.start();
