'use strict';
// The seed's worker process: the main process forks a worker and two app
// processes, creates a channel per app, gives one end to the worker and the
// other to the app. Apps and worker then talk directly; main is not in the path.
//   node examples/worker/main.js
const path = require('node:path');
const { MessageChannelMain, fork } = require('../..');

const worker = fork(path.join(__dirname, 'worker.js'));
const apps = [1, 2].map((n) => fork(path.join(__dirname, 'app.js'), [String(n)]));

let running = apps.length;
for (const app of apps) {
  const { port1, port2 } = new MessageChannelMain();
  worker.port.postMessage('new client', [port1]);
  app.port.postMessage('your worker', [port2]);
  app.child.on('exit', (code, signal) => {
    if (code !== 0) process.exitCode = 1;
    if (--running === 0) worker.port.close(); // the worker ends on its parent's close
  });
}
worker.child.on('exit', (code) => console.log(`worker exited with ${code}`));
