// Types of the shmport Node binding: Electron's MessageChannelMain /
// MessagePortMain between processes, over shared memory.
import { EventEmitter } from 'node:events';

export type CloseReason = 'closed' | 'peer died' | 'protocol error';

export interface MessageEvent {
  /** The posted value (structured clone); Buffer/TypedArray/ArrayBuffer keep their type. */
  data: any;
  /** The ports of the transfer list, in order, not started. */
  ports: MessagePortMain[];
}

export interface CloseEvent {
  reason: CloseReason;
}

export declare class MessagePortMain extends EventEmitter {
  /** Why the port closed, once its 'close' event ran; null before. */
  readonly closeReason: CloseReason | null;
  /** Post a structured-clone value with ports in the transfer list. Throws DataCloneError for a
   *  value v8.serialize refuses, the port itself, its entangled peer, or a closed/duplicate port. */
  postMessage(message: any, transfer?: MessagePortMain[]): void;
  /** Deliver queued and future messages. */
  start(): void;
  /** Close: the peer's 'close' (reason "closed") comes after every message posted before. */
  close(): void;
  /** Keep the process alive while started (default). */
  ref(): this;
  /** Let the process exit while this port waits for messages (messages waiting for room to be
   *  posted still keep it alive, as a pending socket write does). An unref()ed port does not spin. */
  unref(): this;
  /** After delivering, look for the next message this long (µs, default 20; 0: never) before the
   *  event loop sleeps: no wake-up when the peer answers within it, that much CPU when it does not. */
  setSpin(microseconds: number): void;
  /** Cap the shared memory of this port's posts too large for its ring (its pool; null: the default,
   *  256 MiB, reached only under a stream of large messages). Posts the pool cannot take wait
   *  in the port as copies. Throws RangeError unless a whole number of bytes, 0 or more. */
  setPoolLimit(bytes: number | null): void;
  /** Bytes of shared memory in this port's pool now; null once closed. */
  readonly poolBytes: number | null;
  /** The spin time in microseconds; null once the port is closed or transferred. */
  readonly spin: number | null;
  /** Blocks of the sender's pool that Buffers received here view (no copy) until they are garbage
   *  collected; all but an eighth (at least one) of the blocks of one size at a time, then copies.
   *  Null once closed. */
  readonly viewedBlocks: number | null;
  on(event: 'message', listener: (e: MessageEvent) => void): this;
  on(event: 'close', listener: (e: CloseEvent) => void): this;
  on(event: 'messageerror', listener: (e: { error: Error; ports: MessagePortMain[] }) => void): this;
  once(event: 'message', listener: (e: MessageEvent) => void): this;
  once(event: 'close', listener: (e: CloseEvent) => void): this;
}

export interface ChannelOptions {
  /**
   * Bytes of each direction's ring (default 1 MiB, rounded up to a power of
   * two, at most 1 GiB). A message up to half of it travels inside the ring
   * and is copied once on receipt; a larger one goes out of line (a memfd
   * each) and arrives as a view of that memory. Ring memory is touched only
   * as it is used.
   */
  capacity?: number;
}

export declare class MessageChannelMain {
  constructor(options?: ChannelOptions);
  readonly port1: MessagePortMain;
  readonly port2: MessagePortMain;
}

export declare class ChildProcess extends EventEmitter {
  readonly pid: number;
  exitCode: number | null;
  signalCode: string | number | null;
  kill(signal?: NodeJS.Signals | number): boolean;
  ref(): this;
  unref(): this;
  on(event: 'exit', listener: (code: number | null, signal: string | null) => void): this;
}

export interface ForkOptions extends ChannelOptions {
  /** Added to the child's environment. */
  env?: Record<string, string>;
  /** Node options before the module path. */
  execArgv?: string[];
}

/** Start `node modulePath ...args` with a port connected; the child's end is `parentPort`. */
export declare function fork(modulePath: string, args?: string[], options?: ForkOptions): {
  child: ChildProcess;
  port: MessagePortMain;
};

/**
 * Start `file ...args` (any program) with a port connected: a Rust, C or
 * Python process adopts it with shmport's `from_parent` and exchanges raw
 * bytes (`Buffer`/`Uint8Array` travel as plain bytes and arrive as `Buffer`).
 */
export declare function spawn(file: string, args?: string[], options?: ChannelOptions & { env?: Record<string, string> }): {
  child: ChildProcess;
  port: MessagePortMain;
};

/** In a process started by fork(): the port to the parent; null otherwise. */
export declare const parentPort: MessagePortMain | null;

/** Force (true) the one-copy receive path Electron needs, or return to views of shared memory. */
export declare function setCopyMode(on: boolean): void;
export declare const copyMode: boolean;
