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

// Large received payloads (views of the sender's pool blocks, or copies in
// mappings kept for reuse) go back only when V8 collects their Buffers. A
// listener's Buffers die young, but a process that allocates little makes
// few scavenges, and the external memory they hold brings only mark-compacts
// (every 32 to 64 MiB here, 10 to 14 ms late): a fast sender then runs
// through its whole pool of cold blocks, or waits. So the port asks V8 for a
// scavenge (a minor collection, about 35 µs here with little alive) once
// views hold half of the blocks of one size of the sender's pool (the
// native `collectionDue`), or after `collectEvery` bytes of such payloads
// (on all ports of this thread), once the listener of the message that
// made it due has returned (so that this message's Buffer is garbage too,
// and does not survive it: see `collectNow`); then it lets the loop turn,
// which runs the finalizers that give the blocks back. Buffers a listener
// keeps are promoted, as by any scavenge.
const COLLECT_EVERY = 16 << 20;
// Payloads from this size on count towards `collectEvery` (the pool's
// smallest block).
const COLLECTED_FROM = 64 << 10;
// From this size on a payload may be a view of a pool block (a port with
// a small ring pools messages of a few KiB): ask whether a scavenge is due.
const VIEWED_FROM = 1 << 10;
let collectEvery = COLLECT_EVERY;
let deliveredSince = 0;
let scavenge;

// Was this V8 flag given on the command line or in NODE_OPTIONS?
function flagGiven(...names) {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS || '').split(/\s+/)]
    .some((a) => names.includes(a));
}

// V8 sweeps the ArrayBuffers a scavenge frees on a background thread, which
// competes with both processes for the CPUs: blocks came back milliseconds
// late. Around the port's own scavenge the sweep is made part of it (the
// flag is read when a collection starts), unless the command line chose.
const SWEEP_INLINE = !flagGiven('--concurrent-array-buffer-sweeping', '--concurrent_array_buffer_sweeping',
  '--no-concurrent-array-buffer-sweeping', '--no-concurrent_array_buffer_sweeping');

// V8's gc(), which takes { type: 'minor' }: the one given by --expose-gc,
// or one from a context made while the flag is set for that moment (the
// flag is then cleared again, so the process's own contexts stay as they
// were).
function scavenger() {
  if (typeof globalThis.gc === 'function') return globalThis.gc;
  v8.setFlagsFromString('--expose-gc');
  try {
    return require('node:vm').runInNewContext('gc');
  } finally {
    if (!flagGiven('--expose-gc', '--expose_gc')) v8.setFlagsFromString('--no-expose-gc');
  }
}

// Count a delivered payload; true when a scavenge is due (made by
// `collectNow` once the listener has returned).
function collectDue(data) {
  if (!collectEvery || !(data instanceof Uint8Array) || data.byteLength < VIEWED_FROM) return false;
  if (data.byteLength >= COLLECTED_FROM) deliveredSince += data.byteLength;
  if (!native.collectionDue() && deliveredSince < collectEvery) return false;
  deliveredSince = 0;
  if (scavenge === undefined) {
    try {
      scavenge = scavenger();
    } catch {
      scavenge = null; // no gc() to be had: collections come as V8 decides
    }
  }
  return !!scavenge;
}

// The scavenge itself. Made after the listener has returned, from a frame
// that holds no received Buffer: a Buffer alive during one scavenge is
// moved to the young generation's survivors, and alive during a second
// collection (V8 makes its own for the views' external memory) it is
// promoted to the old generation, where only a mark-compact frees it; its
// block then stays out until one comes. Made before the listener, with the
// message's Buffer still alive, it promoted one or two views a batch and
// a sender with four blocks of a size saw nearly all of its messages of
// that size copied.
function collectNow() {
  if (SWEEP_INLINE) v8.setFlagsFromString('--no-concurrent-array-buffer-sweeping');
  try {
    scavenge({ type: 'minor' });
  } finally {
    if (SWEEP_INLINE) v8.setFlagsFromString('--concurrent-array-buffer-sweeping');
  }
}

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

// What native.post returns when nothing was sent because the ring is full.
const FULL = 1;

// libuv's poll events.
const READABLE = 1;
const WRITABLE = 2;

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
    // Messages that wait for room: [tag, bytes or held copy, port ids, ports, length].
    this._pending = [];
    // What the watch waits for besides messages: room to post (READABLE:
    // the peer's release wakes the descriptor; WRITABLE too: the socket
    // lacks room for an out-of-line message's descriptor).
    this._roomEvents = 0;
    this._closing = false;
    // A scavenge is due once delivery stops (see _deliver).
    this._collect = false;
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
    const wait = () => {
      this._pending.push([tag, tag === 0 || tag >= 2 ? native.hold(bytes) : bytes, ids, transfer, bytes.length]);
      for (const p of transfer) p._neuter();
    };
    if (this._pending.length) return wait();
    const status = post(this._id, tag, bytes, ids);
    if (status === FULL) {
      // The ring is full: keep it (ports stay ours) and post it when the
      // reader releases room, which wakes the port's descriptor.
      wait();
      return this._flush();
    }
    for (const p of transfer) p._neuter();
  }

  // Post what waits, in order. When the ring is full again, announce the
  // wait for room (the core's prepare_post_poll) and let the watch wake us.
  _flush() {
    let roomSaid = false;
    while (this._pending.length && this._id !== null) {
      const [tag, bytes, ids, , len] = this._pending[0];
      const status = typeof bytes === 'number'
        ? native.postHeld(this._id, tag, bytes, ids) : native.post(this._id, tag, bytes, ids);
      if (status === FULL) {
        if (native.prepareRoom(this._id, tag, len)) return this._watchFor(READABLE);
        // The ring has room, the post did not go: the socket has none for
        // an out-of-line message's descriptor (the peer has not taken in
        // earlier ones). Wait until it has.
        if (roomSaid) return this._watchFor(READABLE | WRITABLE);
        roomSaid = true;
        continue;
      }
      roomSaid = false;
      this._pending.shift(); // sent, or dropped as the peer is gone
    }
    this._watchFor(0);
    if (this._closing) this._closeNow();
  }

  // Set what the watch waits for: messages once started, and `room`.
  // One poll handle per port; it keeps the process alive while messages
  // wait for room (as a pending socket write does) or while the port is
  // started and not unref()ed.
  _watchFor(room) {
    this._roomEvents = room;
    if (this._id === null) return;
    const events = (this._started ? READABLE : 0) | room;
    if (!this._watch) {
      if (!events) return;
      this._watch = native.watchNew(native.portFd(this._id), (spin) => this._ready(spin), this._id);
    }
    native.watchRef(this._watch, this._pending.length > 0 || this._ref);
    if (events) native.watchStart(this._watch, events);
    else native.watchStop(this._watch);
  }

  // The descriptor is ready (a message or the close came, room came, or
  // the peer left), or the loop comes back to the port (start(), or a long
  // batch went on in setImmediate). Deliver what came, post what waits for
  // room, then announce both waits (room, then messages) and let the loop
  // sleep. Each announcement re-checks, and nothing reads the port's
  // socket after it (a read could take the wake-up it announced), so no
  // wake-up is lost. With `spin` (from the watch, and not waiting for
  // room), return true instead of announcing the wait for messages: the
  // watch spins for the next one first.
  _ready(spin) {
    for (;;) {
      if (!this._deliver()) {
        // A scavenge is due: make it now that _deliver's frame is gone.
        // Its finalizers (which give the blocks back) run before the
        // delivery that _deliver left for setImmediate.
        if (this._collect) {
          this._collect = false;
          collectNow();
        }
        return false;
      }
      if (this._roomEvents) {
        native.endRoom(this._id); // reads the socket: before the announcements
        this._flush(); // announces the wait for room if the ring is still full
      }
      if (this._id === null || !this._started) return false;
      if (spin && !this._roomEvents) return true;
      if (native.preparePoll(this._id)) return false;
    }
  }

  _neuter() {
    for (const [, bytes] of this._pending) if (typeof bytes === 'number') native.releaseHeld(bytes);
    this._pending = [];
    this._roomEvents = 0;
    if (this._watch) { native.watchClose(this._watch); this._watch = 0; }
    collected.unregister(this);
    this._id = null;
  }

  /** Deliver queued and future messages as 'message' events. */
  start() {
    if (this._id === null || this._started) return;
    this._started = true;
    this._watchFor(this._roomEvents);
    setImmediate(() => this._ready(false)); // what came before start()
  }

  /**
   * How long the port looks for its next message after delivering one,
   * before it lets its event loop sleep, in microseconds (default 20;
   * 0: never). Spinning saves the wake-up of a sleeping loop (tens of
   * microseconds) when the peer answers quickly, and costs that much CPU
   * when it does not.
   */
  setSpin(microseconds) {
    if (typeof microseconds !== 'number') throw new TypeError('The spin time must be a number of microseconds');
    this._set(native.setSpin, microseconds);
  }

  // Apply a native setting to the open port; a value out of range is a RangeError.
  _set(setting, value) {
    if (this._id === null) return;
    try {
      setting(this._id, value);
    } catch (e) {
      if (e.code === 'InvalidArg') throw new RangeError(e.message);
      throw e;
    }
  }

  /**
   * Cap the shared memory this port's posts too large for its ring use
   * (its pool of blocks, reused once the receiver is done with them), in
   * bytes; null restores the default, 256 MiB (the pool grows to it only
   * under a stream of large messages: a Node receiver gives blocks back
   * when its garbage collector frees their Buffers). Posts beyond what the
   * pool holds wait in the port as copies until blocks come back; a larger
   * pool lets bursts go straight into shared memory, a smaller one holds
   * less memory. Kept in this process only.
   */
  setPoolLimit(bytes) {
    if (bytes !== null && typeof bytes !== 'number') throw new TypeError('The pool limit must be a number of bytes or null');
    this._set(native.setPoolLimit, bytes);
  }

  /** Bytes of shared memory in this port's pool now (null once closed). */
  get poolBytes() { return this._id === null ? null : native.poolBytes(this._id); }

  /** The spin time set by setSpin(), in microseconds (null once closed). */
  get spin() { return this._id === null ? null : native.spin(this._id); }

  /**
   * How many blocks of the sender's pool the Buffers received on this port
   * view (shared memory, no copy) until the garbage collector frees them;
   * null once the port is closed or transferred. All but an eighth (at
   * least one) of the blocks of one size may be viewed at a time; past
   * that, messages are copied.
   */
  get viewedBlocks() { return this._id === null ? null : native.viewedBlocks(this._id); }

  // Deliver what the ring holds; true once it is empty (or the port is
  // not started), false when delivery stopped: the port ended, or after
  // 1000 messages or a message after which a scavenge is due (`_collect`,
  // made by _ready; the rest in setImmediate, so the loop runs its other
  // work and the scavenge's finalizers).
  _deliver() {
    let n = 0;
    while (this._id !== null && this._started) {
      const ev = native.tryRecv(this._id, copyMode);
      if (ev === null) return true;
      // Counted on receipt (the views' share is the native side's); the
      // scavenge comes after the listener, when this Buffer is garbage
      // too unless the listener kept it.
      const due = collectDue(ev instanceof Uint8Array ? ev : ev.data);
      let data = ev;
      let ports = [];
      if (!(ev instanceof Uint8Array)) { // raw bytes without ports come as they are
        if (ev.close !== undefined) {
          this._ended(ev.close);
          return false;
        }
        ports = ev.ports.map((id) => new MessagePortMain(id));
        try {
          data = decode(ev.tag, ev.data);
        } catch (e) {
          this.emit('messageerror', { error: e, ports });
          continue;
        }
      }
      try {
        this.emit('message', { data, ports });
      } catch (e) {
        this._collect = this._collect || due;
        setImmediate(() => this._ready(false));
        throw e;
      }
      if (due || ++n === 1000) {
        this._collect = this._collect || due;
        setImmediate(() => this._ready(false));
        return false;
      }
    }
    return this._id !== null;
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
  ref() { this._ref = true; this._watchFor(this._roomEvents); return this; }

  /** Do not keep the process alive for this port. */
  unref() { this._ref = false; this._watchFor(this._roomEvents); return this; }
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
    native.watchStart(this._watch, READABLE);
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
  /**
   * Large payloads received (64 KiB and up) hold the sender's shared
   * memory until V8 collects their Buffers, so a port asks V8 for a
   * scavenge once views hold half of the blocks of one size of its
   * sender's pool, or after every `bytes` bytes of them received on this
   * thread's ports (default 16 MiB); 0: never (blocks then come back at
   * the collections V8 makes on its own); null restores the default.
   */
  setCollectEvery(bytes) {
    if (bytes === null) bytes = COLLECT_EVERY;
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError('setCollectEvery takes a whole number of bytes, 0 or more, or null');
    collectEvery = bytes;
    deliveredSince = 0;
  },
  get collectEvery() { return collectEvery; },
};
