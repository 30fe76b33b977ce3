'use strict';
// Electron's MessageChannelMain / MessagePortMain over shmport. See README.md
// ("Node.js") and index.d.ts. The native half (src/lib.rs) keeps the ports;
// this file keeps Electron's behaviour: structured clone, transfer lists,
// queue until start(), 'close' after every message.

const { EventEmitter } = require('node:events');
const v8 = require('node:v8');
const path = require('node:path');
const native = require('./shmport.node');

// SHMPORT_COPY=1: copy every received payload once, as Electron must (its V8
// memory cage refuses external buffers), instead of viewing shared memory.
let copyMode = process.env.SHMPORT_COPY === '1' || !!process.versions.electron;

// Payload tags: 0 raw bytes (Buffer / Uint8Array), 1 v8.serialize, 2.. views.
const VIEWS = [ArrayBuffer, Int8Array, Uint8ClampedArray, Int16Array, Uint16Array,
  Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView];

function dataCloneError(message) {
  const e = new Error(message);
  e.name = 'DataCloneError';
  return e;
}

function encode(value) {
  if (value instanceof Uint8Array && (value.constructor === Buffer || value.constructor === Uint8Array)) {
    return [0, value];
  }
  if (value instanceof ArrayBuffer) return [2, new Uint8Array(value)];
  if (ArrayBuffer.isView(value)) {
    const i = VIEWS.indexOf(value.constructor);
    if (i > 0) return [2 + i, new Uint8Array(value.buffer, value.byteOffset, value.byteLength)];
  }
  let bytes;
  try {
    bytes = v8.serialize(value);
  } catch (e) {
    const err = dataCloneError(e.message);
    err.cause = e;
    throw err;
  }
  return [1, bytes];
}

// The native refusals (a duplicate, closed or peer port) are Electron's
// DataCloneError.
function post(id, tag, bytes, ids) {
  try {
    return native.post(id, tag, bytes, ids);
  } catch (e) {
    if (e.code === 'InvalidArg') throw dataCloneError(e.message);
    throw e;
  }
}

function decode(tag, data) {
  if (tag === 0) return data;
  if (tag === 1) return v8.deserialize(data);
  const ab = data.byteOffset === 0 && data.buffer.byteLength === data.length
    ? data.buffer : data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
  const View = VIEWS[tag - 2];
  if (View === ArrayBuffer) return ab;
  if (View === DataView) return new DataView(ab);
  return new View(ab, 0, ab.byteLength / View.BYTES_PER_ELEMENT);
}

// How long a writer whose ring is full retries on every loop turn before
// it falls back to a 1 ms timer (see _scheduleRetry).
const RETRY_SPIN_MS = 2;

// A port dropped without close() closes when collected (Electron closes
// never-started ports on GC); a started port is held by its watch.
const collected = new FinalizationRegistry((id) => native.close(id));

class MessagePortMain extends EventEmitter {
  constructor(id) {
    super();
    this._id = id;
    this._watch = 0;
    this._started = false;
    this._ref = true;
    this._pending = [];
    this._retry = null;
    this._fullSince = 0;
    this._closing = false;
    this.closeReason = null;
    collected.register(this, id, this);
  }

  /** Post `message` (structured clone) with `transfer` ports (Electron's postMessage). */
  postMessage(message, transfer = []) {
    if (!Array.isArray(transfer)) throw new TypeError('The transfer list must be an array of MessagePortMain');
    const ids = [];
    for (let i = 0; i < transfer.length; i++) {
      const p = transfer[i];
      if (!(p instanceof MessagePortMain)) throw new TypeError(`Port at index ${i} is not a valid port`);
      if (p === this) throw dataCloneError(`Port at index ${i} contains the source port.`);
      if (p._id === null || ids.includes(p._id) || !native.isOpen(p._id)) {
        throw dataCloneError(`Port at index ${i} is already neutered or is a duplicate.`);
      }
      if (p._pending.length) throw dataCloneError(`Port at index ${i} has messages waiting for room to be sent.`);
      ids.push(p._id);
    }
    const [tag, bytes] = encode(message);
    if (this._id === null || this._closing) return; // Electron: a closed port drops silently
    // A message that waits is a snapshot: the caller may change its buffer
    // as soon as postMessage returns.
    // (Serialized bytes are already a copy of their own.)
    const snapshot = () => (tag === 0 || tag >= 2 ? native.hold(bytes) : bytes);
    if (this._pending.length) {
      this._pending.push([tag, snapshot(), ids, transfer]);
      for (const p of transfer) p._neuter();
      return;
    }
    const status = post(this._id, tag, bytes, ids);
    if (status === 'full') {
      // The ring is full: keep it (ports stay ours) and retry as it drains.
      this._pending.push([tag, snapshot(), ids, transfer]);
      for (const p of transfer) p._neuter();
      this._scheduleRetry();
      return;
    }
    for (const p of transfer) p._neuter();
  }

  // The core tells a reader when a message comes (the descriptor), not a
  // writer when room frees up. So while the ring is full, retry on every
  // turn of the event loop (setImmediate: other work still runs between
  // tries) for up to RETRY_SPIN_MS, since a reader that keeps up frees room
  // within microseconds; then every millisecond (a timer), so that a reader
  // that stalls does not make the writer burn a CPU.
  _scheduleRetry() {
    if (this._retry) return;
    if (this._fullSince === 0) this._fullSince = performance.now();
    const run = () => {
      this._retry = null;
      while (this._pending.length && this._id !== null) {
        const [tag, bytes, ids] = this._pending[0];
        const status = typeof bytes === 'number'
          ? native.postHeld(this._id, tag, bytes, ids) : native.post(this._id, tag, bytes, ids);
        if (status === 'full') return this._scheduleRetry();
        this._pending.shift();
      }
      this._fullSince = 0;
      if (this._closing) this._closeNow();
    };
    if (performance.now() - this._fullSince < RETRY_SPIN_MS) this._retry = setImmediate(run);
    else this._retry = setTimeout(run, 1);
  }

  _neuter() {
    for (const [, bytes] of this._pending) if (typeof bytes === 'number') native.releaseHeld(bytes);
    this._pending = [];
    if (this._watch) { native.watchClose(this._watch); this._watch = 0; }
    collected.unregister(this);
    this._id = null;
  }

  /** Deliver queued and future messages as 'message' events. */
  start() {
    if (this._id === null || this._started) return;
    this._started = true;
    this._watch = native.watchNew(native.portFd(this._id), () => this._drain());
    if (!this._ref) native.watchRef(this._watch, false);
    native.watchStart(this._watch);
    setImmediate(() => this._drain());
  }

  _drain() {
    let n = 0;
    while (this._id !== null && this._started) {
      const ev = native.tryRecv(this._id, copyMode);
      if (ev === null) {
        if (native.preparePoll(this._id)) return;
        continue;
      }
      if (ev.close !== undefined) return this._ended(ev.close);
      const ports = ev.ports.map((id) => new MessagePortMain(id));
      let data;
      try {
        data = decode(ev.tag, ev.data);
      } catch (e) {
        this.emit('messageerror', { error: e, ports });
        continue;
      }
      try {
        this.emit('message', { data, ports });
      } catch (e) {
        setImmediate(() => this._drain());
        throw e;
      }
      if (++n === 1000) return void setImmediate(() => this._drain());
    }
  }

  _ended(reason) {
    this.closeReason = reason;
    const id = this._id;
    this._neuter();
    native.close(id);
    this.emit('close', { reason });
  }

  /** Close this port: the peer gets 'close' (reason "closed") after every message posted before. */
  close() {
    if (this._id === null) return;
    this._closing = true;
    if (!this._pending.length) this._closeNow();
  }

  _closeNow() {
    const id = this._id;
    if (id === null) return;
    this._neuter();
    native.close(id);
  }

  /** Keep the process alive while started (the default). */
  ref() { this._ref = true; if (this._watch) native.watchRef(this._watch, true); return this; }

  /** Do not keep the process alive for this port. */
  unref() { this._ref = false; if (this._watch) native.watchRef(this._watch, false); return this; }
}

function ringCapacity(options) {
  const c = options && options.capacity;
  if (c === undefined) return undefined;
  if (!Number.isInteger(c) || c < 0 || c > 2 ** 30) throw new RangeError('capacity must be a whole number of bytes up to 1 GiB');
  return c;
}

class MessageChannelMain {
  /** `options.capacity`: bytes of each ring (default 1 MiB); messages up to half of it travel inside the ring. */
  constructor(options) {
    const [a, b] = native.channel(ringCapacity(options));
    this.port1 = new MessagePortMain(a);
    this.port2 = new MessagePortMain(b);
  }
}

/** A process started by fork(): pid, kill(), 'exit' (code, signal). */
class ChildProcess extends EventEmitter {
  constructor(pid, pidfd) {
    super();
    this.pid = pid;
    this.exitCode = null;
    this.signalCode = null;
    this._pidfd = pidfd;
    this._watch = native.watchNew(pidfd, () => this._check());
    native.watchStart(this._watch);
  }

  _check() {
    const st = native.childExit(this.pid);
    if (st === null) return;
    native.watchClose(this._watch);
    native.closeFd(this._pidfd);
    [this.exitCode, this.signalCode] = st;
    if (this.signalCode !== null) {
      const name = Object.keys(require('node:os').constants.signals)
        .find((k) => require('node:os').constants.signals[k] === this.signalCode);
      this.signalCode = name || this.signalCode;
    }
    this.emit('exit', this.exitCode, this.signalCode);
  }

  kill(signal = 'SIGTERM') {
    if (this.exitCode !== null || this.signalCode !== null) return false;
    process.kill(this.pid, signal);
    return true;
  }

  /** Let the process exit while this child runs. */
  unref() { native.watchRef(this._watch, false); return this; }
  ref() { native.watchRef(this._watch, true); return this; }
}

/**
 * Start `file ...args` with a port to it (shmport's spawn): `{ child, port }`.
 * For programs in other languages: a Rust, C or Python process adopts the
 * port with shmport's `from_parent` and exchanges raw bytes with Node
 * (a `Buffer` or `Uint8Array` is posted as plain bytes; plain bytes arrive
 * as a `Buffer`).
 */
function spawn(file, args = [], options = {}) {
  const env = {};
  if (options.env) Object.assign(env, options.env);
  const s = native.spawn(file, args.map(String), env, ringCapacity(options));
  return { child: new ChildProcess(s.pid, s.pidfd), port: new MessagePortMain(s.port) };
}

/**
 * Start `node modulePath ...args` with a port to it (shmport's spawn):
 * `{ child, port }`; the child's end is `require('shmport').parentPort`.
 */
function fork(modulePath, args = [], options = {}) {
  const execArgv = options.execArgv || [];
  // Under Electron process.execPath is the app itself: run it as plain Node,
  // as Electron's child_process.fork does.
  const env = process.versions.electron ? { ELECTRON_RUN_AS_NODE: '1', ...options.env } : options.env;
  return spawn(process.execPath, [...execArgv, path.resolve(modulePath), ...args], { ...options, env });
}

let parentPort;
function getParentPort() {
  if (parentPort === undefined) {
    const id = native.fromParent();
    parentPort = id === null ? null : new MessagePortMain(id);
  }
  return parentPort;
}

module.exports = {
  MessageChannelMain,
  MessagePortMain,
  fork,
  spawn,
  get parentPort() { return getParentPort(); },
  /** Force (true) or stop forcing the one-copy receive path. */
  setCopyMode(on) { copyMode = !!on; },
  get copyMode() { return copyMode; },
};
