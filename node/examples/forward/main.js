'use strict';
// Forwarding: a port received by one process is passed on to another, and
// nothing posted to it is lost or reordered on the way.
//   node examples/forward/main.js
// Three processes play the seed's context-isolated page:
//   main       makes a channel, keeps one end (the far end), sends the other
//              to the preload process;
//   preload    forks the main world and passes the port on to it (the
//              preload → main world hop);
//   main world reads the port, answers main directly on it, checks what came.
// Main posts on the far end before it sends the port, while the port travels
// (every few milliseconds, until the main world answers on the port itself),
// and after the hop. The main world gets every message in order (those posted
// before and during the hop waited in the port and moved with it), reports
// the count, and sees the close event when main closes the far end.
const path = require('node:path');
const { MessageChannelMain, fork } = require('../..');

const preload = fork(path.join(__dirname, 'preload.js'));
const { port1: far, port2: travelling } = new MessageChannelMain();

let seq = 0;
const post = (phase) => far.postMessage({ seq: seq++, phase });
for (let i = 0; i < 3; i++) post('before the hop');
preload.port.postMessage('pass this on', [travelling]);
const during = setInterval(() => post('during the hop'), 2);

far.on('message', ({ data }) => {
  if (data.hello) {
    clearInterval(during);
    console.log(`main world (pid ${data.pid}) answered on the forwarded port; preload is pid ${preload.child.pid}`);
    for (let i = 0; i < 3; i++) post('after the hop');
    far.postMessage({ count: seq });
  } else if (data.received !== undefined) {
    console.log(`main world received ${data.received} of ${seq} messages, in order: ${data.inOrder}`);
    if (data.received !== seq || !data.inOrder) process.exitCode = 1;
    far.close(); // the main world sees the close and ends; then preload ends
  }
});
far.start();

preload.child.on('exit', (code) => {
  console.log(`preload exited with ${code}`);
  if (code !== 0) process.exitCode = 1;
  preload.port.close();
});
