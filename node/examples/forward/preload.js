'use strict';
// The middle process: forks the main world and forwards the port it gets to
// it; ends (with the main world's exit code) when the main world has ended.
const path = require('node:path');
const { parentPort, fork } = require('../..');
parentPort.once('message', ({ ports: [port] }) => {
  const world = fork(path.join(__dirname, 'world.js'));
  world.port.postMessage('from preload', [port]);
  world.child.on('exit', (code) => {
    world.port.close();
    parentPort.close();
    process.exitCode = code;
  });
});
parentPort.start();
