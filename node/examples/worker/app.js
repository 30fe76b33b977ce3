'use strict';
// An app process: gets a port to the worker from main, asks, prints, ends.
const { parentPort } = require('../..');
const n = Number(process.argv[2]);
parentPort.once('message', ({ ports: [worker] }) => {
  worker.once('message', ({ data }) => {
    console.log(`app ${n} (pid ${process.pid}) got ${JSON.stringify(data.squares)} from worker ${data.pid}`);
    worker.close();
    parentPort.close(); // nothing left to wait for: the process ends
  });
  worker.start();
  worker.postMessage([n, n + 1, n + 2]);
});
parentPort.start();
