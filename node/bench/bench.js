'use strict';
// shmport against Node's own transports, in the same run:
//   - shmport: fork() + port, a second process; with the default 1 MiB ring
//     (1 MiB and 16 MiB messages go into blocks of the sender's pool, 256 MiB
//     at most, received as views of them, or as copies past the views the
//     receiver may hold), the same with a 64 MiB pool (setPoolLimit: the
//     core's default floor; posts wait as copies while the receiver's views
//     hold blocks until a collection), and with a 64 MiB ring (both travel
//     inside the ring, and are copied once into a new Buffer on receipt);
//   - process.send: child_process.fork() IPC (serialization 'advanced', the
//     one that carries Buffers as bytes; 'json' turns them into arrays of numbers);
//   - MessageChannel: worker_threads, a worker thread in this process;
//   - Rust: the same core path without Node (examples/one_way.rs, one
//     process per measurement, which it times itself as this file times
//     the others), with both ring sizes, for the one-way cases: what the
//     binding adds over the Rust API. Left out if cargo cannot build it.
//     Its rounds run after the others': interleaved, they made the next
//     process.send and MessageChannel measurements slower (by a third to a
//     half here), though no Rust process was left running.
// Cases: 64 B round trip (a Buffer out, the same back), and one-way throughput
// of 1 MiB and 16 MiB Buffers (a batch, then one ack). Every round runs every
// case on every transport, in an order that rotates from round to round; the
// report gives the median of the rounds, the range, and the median of the
// per-round ratios to process.send.
// Quiet peers: all peers stay alive for the whole run, and a peer goes on
// running after its measurement ends (its garbage collector and V8's
// helper threads, the finalizers of what it received): a receiver of
// 128 MiB of copies ran 1 to 5 ms into the next transport's measurement
// here. So before every measurement, of every transport alike, the bench
// waits until the peers are idle: no peer process, and no thread of this
// process but its main thread (the worker thread, V8's helpers), ran more
// than 0.2 ms in the last 10 ms (their CPU time from /proc, Linux; at most
// 1 s, then it measures anyway and counts a timeout). Load from outside
// the bench is not waited for: it is printed at the start and the end.
//   npm run bench              (about half a minute)
//   node bench/bench.js --quick
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const childProcess = require('node:child_process');
const { Worker, MessageChannel } = require('node:worker_threads');
const shmport = require('..');
const { buildExample } = require('../test/cargo.js');

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 2 : 9;
const PINGS = quick ? 200 : 2000;
const BATCH = { [1 << 20]: quick ? 16 : 128, [16 << 20]: quick ? 4 : 16 };
const peer = path.join(__dirname, 'peer.js');

// The Rust one-way program (built here), or null without cargo.
function buildOneWay() {
  try {
    return buildExample('one_way');
  } catch (e) {
    console.error(`no Rust rows: ${e.message}`);
    return null;
  }
}

// Each transport: { post(value), next() → Promise of the next message's data, close() }.
function queueOf(subscribe) {
  const waiting = [];
  const ready = [];
  subscribe((data) => {
    if (waiting.length) waiting.shift()(data);
    else ready.push(data);
  });
  return () => (ready.length ? Promise.resolve(ready.shift()) : new Promise((r) => waiting.push(r)));
}

function openShmport(capacity, poolLimit) {
  const { child, port } = shmport.fork(peer, ['shmport'], { capacity });
  if (poolLimit !== undefined) port.setPoolLimit(poolLimit);
  const next = queueOf((f) => port.on('message', (e) => f(e.data)));
  port.start();
  const exited = new Promise((r) => child.on('exit', r));
  return {
    pid: child.pid,
    post: (m) => port.postMessage(m),
    next,
    async close() { port.postMessage('exit'); await exited; port.close(); },
  };
}

function openIpc() {
  const child = childProcess.fork(peer, ['ipc'], { serialization: 'advanced' });
  const next = queueOf((f) => child.on('message', f));
  const exited = new Promise((r) => child.on('exit', r));
  return {
    pid: child.pid,
    post: (m) => child.send(m),
    next,
    async close() { child.send('exit'); await exited; },
  };
}

function openWorker() {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(peer, { workerData: { port: port2 }, transferList: [port2] });
  const next = queueOf((f) => port1.on('message', f));
  const exited = new Promise((r) => worker.on('exit', r));
  return {
    post: (m) => port1.postMessage(m),
    next,
    async close() { port1.postMessage('exit'); await exited; port1.close(); },
  };
}

// A transport that measures a one-way batch itself, in a process of its own.
function openRust(exe, capacity) {
  return {
    oneWay: (size, count) => Number(childProcess.execFileSync(exe,
      [String(size), String(count), ...(capacity ? [String(capacity)] : [])]).toString()),
    async close() {},
  };
}

const TRANSPORTS = [
  ['shmport', () => openShmport()],
  ['shmport, 64 MiB pool', () => openShmport(undefined, 64 << 20)],
  ['shmport, 64 MiB ring', () => openShmport(64 << 20)],
  ['process.send', openIpc],
  ['MessageChannel', openWorker],
];
// Measured in rounds of their own, after the others (see above).
const LATER = [];
const oneWayExe = buildOneWay();
if (oneWayExe) {
  LATER.push(['Rust, 1 MiB ring', () => openRust(oneWayExe)]);
  LATER.push(['Rust, 64 MiB ring', () => openRust(oneWayExe, 64 << 20)]);
}

// Mean round trip of a 64 B Buffer, in microseconds.
async function roundTrip(t, n) {
  const ping = Buffer.alloc(64, 7);
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    t.post(ping);
    const back = await t.next();
    if (back.byteLength !== 64) throw new Error('bad echo');
  }
  return Number(process.hrtime.bigint() - start) / 1e3 / n;
}

// One-way throughput of `count` Buffers of `size` bytes, in MiB/s: from the
// first post to the peer's ack of the last.
async function oneWay(t, size, count, payload) {
  if (t.oneWay) return t.oneWay(size, count);
  t.post({ expect: count });
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) t.post(payload);
  const ack = await t.next();
  if (ack !== 'done') throw new Error(`bad ack ${ack}`);
  const s = Number(process.hrtime.bigint() - start) / 1e9;
  return (size * count) / (1 << 20) / s;
}

// CPU time (ns) the threads of process `pid` have run, but `skip`'s.
function ranNs(pid, skip) {
  let ns = 0;
  let tids;
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0; // gone
  }
  for (const tid of tids) {
    if (Number(tid) === skip) continue;
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended
    }
  }
  return ns;
}

// Wait until the peers in `pids` and this process's other threads are
// idle (see the header); false if they were not within a second.
const QUIET_WINDOW_MS = 10;
const QUIET_NS = 0.2e6;
const QUIET_LIMIT_MS = 1000;
async function quiet(pids) {
  const ran = () => pids.reduce((sum, pid) => sum + ranNs(pid), ranNs(process.pid, process.pid));
  const began = Date.now();
  let before = ran();
  for (;;) {
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS));
    const now = ran();
    if (now - before <= QUIET_NS) return true;
    if (Date.now() - began > QUIET_LIMIT_MS) return false;
    before = now;
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  const began = Date.now();
  const load = () => os.loadavg()[0].toFixed(2);
  console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0].model}), load ${load()}, ${ROUNDS} rounds`);
  const payloads = { [1 << 20]: Buffer.alloc(1 << 20, 1), [16 << 20]: Buffer.alloc(16 << 20, 2) };
  const cases = [
    { name: '64 B round trip', unit: 'µs', lowerIsBetter: true, skips: (t) => !!t.oneWay, run: (t) => (t.oneWay ? null : roundTrip(t, PINGS)) },
    ...Object.keys(BATCH).map(Number).map((size) => ({
      name: `${size >> 20} MiB one-way`,
      unit: 'MiB/s',
      run: (t) => oneWay(t, size, BATCH[size], payloads[size]),
    })),
  ];
  const results = cases.map(() => Object.fromEntries([...TRANSPORTS, ...LATER].map(([n]) => [n, []])));
  let waits = 0;
  let timeouts = 0;
  for (const group of [TRANSPORTS, LATER]) {
    const open = {};
    for (const [name, make] of group) open[name] = make();
    const pids = Object.values(open).map((t) => t.pid).filter((pid) => pid !== undefined);
    // Warm-up: every case once on every transport.
    for (const c of cases) for (const [name] of group) await c.run(open[name]);
    for (let r = 0; r < ROUNDS; r++) {
      const order = group.map((_, i) => group[(i + r) % group.length][0]);
      for (let ci = 0; ci < cases.length; ci++) {
        for (const name of order) {
          const t = open[name];
          if (!cases[ci].skips?.(t)) {
            waits++;
            if (!(await quiet(pids))) timeouts++;
          }
          results[ci][name].push(await cases[ci].run(t));
          global.gc?.();
        }
      }
      process.stderr.write(`round ${r + 1}/${ROUNDS} done\n`);
    }
    for (const [name] of group) await open[name].close();
  }

  const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  console.log('');
  console.log('| case | transport | median | range | ratio to process.send (median of rounds) |');
  console.log('|---|---|---|---|---|');
  for (let ci = 0; ci < cases.length; ci++) {
    const c = cases[ci];
    const base = results[ci]['process.send'];
    for (const [name] of [...TRANSPORTS, ...LATER]) {
      const xs = results[ci][name];
      if (xs[0] === null) continue;
      const ratios = xs.map((x, i) => x / base[i]);
      console.log(`| ${c.name} | ${name} | ${fmt(median(xs))} ${c.unit} | ${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))} | ${median(ratios).toFixed(2)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) |`);
    }
  }
  console.log(`\nload ${load()} at the end; ${((Date.now() - began) / 1000).toFixed(0)} s; peers not quiet within ${QUIET_LIMIT_MS / 1000} s before ${timeouts} of ${waits} measurements`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
