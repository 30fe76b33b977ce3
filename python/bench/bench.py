"""shmport against what Python offers for worker processes, same run.

    python python/bench/bench.py [--runs 5] [--quick] [--rtt | --per-request | --throughput]
        [--sum] [--sizes 1 16 64] [--steady SECONDS] [--cpus P,C] [--spin SECONDS]

Two processes (this one and a child): the child is started with
shmport.spawn for shmport, with multiprocessing (the "spawn" start method)
for the others.

- 64 B round trip: a 64-byte message goes to the child, which sends it
  back. shmport: `post_bytes` (raw) and `post` (pickled);
  multiprocessing.Pipe: `send_bytes` and `send` (pickled); Queue: `put`;
  shared_memory + Pipe: the bytes written into a SharedMemory block, a
  one-byte pipe message to signal each way. Also the raw round trip with
  the parent waiting in a set, raw and pickled (shmport.PortSet against
  multiprocessing.connection.wait) and on asyncio (`await port.arecv()`
  against a Pipe read from `loop.add_reader`).
- A channel per request: make a channel, post one end to the running
  child with a 64-byte request, get the child's one reply (the request's
  bytes) on the other end, then the close event (the child closes its end
  after replying). shmport: `MessageChannel()`, `post_bytes(req,
  ports=[theirs])`, `recv()` then `Closed`. multiprocessing: a new duplex
  `Pipe()` (a socket pair, two-way as a channel is) per request, its end
  sent in two ways: pickled with the request (`conn.send((req, theirs))`:
  what a user writes; multiprocessing passes the descriptor through its
  resource-sharer thread, one connection to it per descriptor), and with
  `multiprocessing.reduction.send_handle` on the existing connection after
  the request (SCM_RIGHTS on its socket: the cheapest multiprocessing
  offers); the reply, then `EOFError`. Beside them, shmport's 64 B round
  trip on the existing port (no new channel) and a bare
  `socket.socketpair()` and two `close()`s in this process (no peer).
  Each run's figure is the median of chunks of 100 requests.
- One-way throughput of numpy float64 arrays of 1, 16 and 64 MiB: the
  sender posts a batch (256 MiB, at least 8 arrays), the receiver gets
  each as a usable numpy array (reads its first and last element, then
  lets it go), and answers once at the end of the batch. shmport:
  `post(arr)` / `recv().data` (the receiver's array is a read-only view of
  the shared memory) with the default ring (1 MiB: arrays travel in the
  port's pool, up to its largest block, 64 MiB) and with a ring of four
  arrays (4, 64 and 256 MiB) whose inline limit is half the ring (every
  array written into the ring); and `post_bytes(arr)` /
  `np.frombuffer(msg, dtype)` (the raw bytes, no frame: an array of
  64 MiB fits the largest pool block). Pipe: `send(arr)` / `recv()`;
  Queue: `put` / `get`; shared_memory + Pipe: the array copied into one
  SharedMemory block, its shape sent over the pipe, the receiver's array a
  view of the block, and an acknowledgment back before the block is
  reused (the usual recipe). With `--sum`, every receiver sums each whole
  array instead (it reads all of it). With `--steady S`, each figure is
  the median of batches sent back to back for S seconds: the transport's
  own pace rather than its first batch after the others ran.

With `--cpus P,C` the parent runs on processor P and every child on C
(the scheduler otherwise may put a parent and its child on one processor
for a whole run, where neither can spin while the other works).

Each measurement is repeated `--runs` times, the transports taking turns
in every run, and the median is reported: round trips with their ratio to
shmport's of the same kind (raw or pickled), throughputs with their ratio
to Pipe's and to the shared_memory recipe's.
"""

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from multiprocessing import reduction, shared_memory
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait

import numpy as np

import shmport

MiB = 1 << 20
PAYLOAD = b"x" * 64
# The large-array configuration: a ring of four arrays, whose inline limit
# is half the ring, so that every array is written into it (memory mapped
# and faulted in after the first lap, and reused) instead of out of line (a
# new memfd per message: fresh pages).
RING_ARRAYS = 4
# A channel per request: each run's figure is the median of chunks of this
# many requests.
REQUEST_CHUNK = 100


# ------------------------------------------------------------------ children


def use(arr, mode):
    """What a receiver does with an array: reads its first and last
    element ("sink"), or every element ("sum")."""
    if mode == "sum":
        arr.sum()
    else:
        arr[0], arr[-1]


def shmport_child():
    port = shmport.from_parent()
    mode = port.recv().data
    if mode == "echo":
        for msg in port:
            port.post_bytes(msg)
    elif mode == "echo-pickle":
        for msg in port:
            port.post(msg.data)
    elif mode == "reply":
        # Each request brings the port to answer on: one reply, then close.
        for msg in port:
            (reply,) = msg.ports
            reply.post_bytes(msg)
            msg.release()
            reply.close()
    else:  # "sink" or "sum": arrays, one answer per batch
        n = 0
        for msg in port:
            # Each array is let go once used (as the shared_memory
            # recipe's receiver does before its acknowledgment): the block
            # goes back to the sender while the next array is on its way.
            with msg:
                if msg.kind == "bytes":  # an array's raw bytes (post_bytes)
                    d = np.frombuffer(msg, dtype=np.float64)
                else:
                    d = msg.data
                    if isinstance(d, str):  # end of a batch
                        port.post(n)
                        n = 0
                        continue
                n += 1
                use(d, mode)
                del d


def mp_pipe_child(conn, mode):
    if mode == "echo":
        while True:
            b = conn.recv_bytes()
            if not b:
                return
            conn.send_bytes(b)
    elif mode == "echo-pickle":
        while True:
            o = conn.recv()
            if o is None:
                return
            conn.send(o)
    elif mode == "reply-pickled":
        while True:
            o = conn.recv()
            if o is None:
                return
            req, reply = o
            reply.send_bytes(req)
            reply.close()
    elif mode == "reply-handle":
        while True:
            req = conn.recv_bytes()
            if not req:
                return
            reply = Connection(reduction.recv_handle(conn))
            reply.send_bytes(req)
            reply.close()
    else:
        n = 0
        while True:
            o = conn.recv()
            if o is None:
                return
            if isinstance(o, str):
                conn.send(n)
                n = 0
                continue
            n += 1
            use(o, mode)


def mp_queue_child(inq, outq, mode):
    n = 0
    while True:
        o = inq.get()
        if o is None:
            return
        if mode == "echo":
            outq.put(o)
        elif isinstance(o, str):
            outq.put(n)
            n = 0
        else:
            n += 1
            use(o, mode)


def shm_child(conn, name, mode):
    shm = shared_memory.SharedMemory(name=name)
    try:
        if mode == "echo":
            buf = shm.buf
            while True:
                if conn.recv_bytes(1) == b"q":
                    return
                # The reply goes back through the same block: read, write.
                buf[64:128] = buf[0:64]
                conn.send_bytes(b"r")
        else:
            n = 0
            while True:
                msg = conn.recv()
                if msg is None:
                    return
                if isinstance(msg, str):
                    conn.send(n)
                    n = 0
                    continue
                arr = np.ndarray(msg, dtype=np.float64, buffer=shm.buf)
                use(arr, mode)
                del arr
                n += 1
                conn.send_bytes(b"k")  # the block may be reused
    finally:
        shm.close()


# ------------------------------------------------------------------- parents

# `--cpus P,C`: the processor every child runs on (the parent's is set in
# main); None: where the scheduler puts them.
CHILD_CPU = None
# `--spin S`: every shmport port's spin time (seconds); None: the default.
SPIN = None


def pin_child(pid):
    if CHILD_CPU is not None:
        os.sched_setaffinity(pid, {CHILD_CPU})


class Shmport:
    name = "shmport"

    def __init__(self, mode, raw=False, **opts):
        self.raw = raw
        if SPIN is not None:
            opts.setdefault("spin", SPIN)
        self.proc, self.port = shmport.spawn([sys.executable, os.path.abspath(__file__), "child"], **opts)
        pin_child(self.proc.pid)
        self.port.post(mode)

    def rtt(self, n):
        port = self.port
        t = time.perf_counter()
        for _ in range(n):
            port.post_bytes(PAYLOAD)
            port.recv().release()
        return (time.perf_counter() - t) / n

    def rtt_pickle(self, n):
        port = self.port
        t = time.perf_counter()
        for _ in range(n):
            port.post(PAYLOAD)
            port.recv().data
        return (time.perf_counter() - t) / n

    def in_set(self, n, post, take):
        with shmport.PortSet([self.port]) as ports:
            t = time.perf_counter()
            for _ in range(n):
                post(PAYLOAD)
                take(ports.recv()[1])
            return (time.perf_counter() - t) / n

    def rtt_set(self, n):
        return self.in_set(n, self.port.post_bytes, shmport.Message.release)

    def rtt_set_pickle(self, n):
        return self.in_set(n, self.port.post, lambda m: m.data)

    def rtt_async(self, n):
        port = self.port

        async def run():
            t = time.perf_counter()
            for _ in range(n):
                port.post_bytes(PAYLOAD)
                (await port.arecv()).release()
            return (time.perf_counter() - t) / n

        return asyncio.run(run())

    def per_request(self, n):
        port = self.port
        t = time.perf_counter()
        for _ in range(n):
            mine, theirs = shmport.MessageChannel(spin=SPIN)
            port.post_bytes(PAYLOAD, ports=[theirs])
            mine.recv().release()
            try:
                mine.recv()
            except shmport.Closed:
                pass
            mine.close()
        return (time.perf_counter() - t) / n

    def one_way(self, arr, n):
        port = self.port
        # Raw: the array's bytes, no frame (the receiver knows the dtype).
        post = port.post_bytes if self.raw else port.post
        t = time.perf_counter()
        for _ in range(n):
            post(arr)
        port.post("end")
        assert port.recv().data == n
        return time.perf_counter() - t

    def close(self):
        self.port.close()
        self.proc.wait()


class Pipe:
    name = "multiprocessing.Pipe"

    def __init__(self, mode):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=mp_pipe_child, args=(child, mode))
        self.proc.start()
        pin_child(self.proc.pid)
        child.close()

    def rtt(self, n):
        c = self.conn
        t = time.perf_counter()
        for _ in range(n):
            c.send_bytes(PAYLOAD)
            c.recv_bytes()
        return (time.perf_counter() - t) / n

    def rtt_pickle(self, n):
        c = self.conn
        t = time.perf_counter()
        for _ in range(n):
            c.send(PAYLOAD)
            c.recv()
        return (time.perf_counter() - t) / n

    def rtt_set(self, n):
        c = self.conn
        t = time.perf_counter()
        for _ in range(n):
            c.send_bytes(PAYLOAD)
            mp_wait([c])
            c.recv_bytes()
        return (time.perf_counter() - t) / n

    def rtt_async(self, n):
        c = self.conn

        async def run():
            loop = asyncio.get_running_loop()
            t = time.perf_counter()
            for _ in range(n):
                c.send_bytes(PAYLOAD)
                fut = loop.create_future()
                loop.add_reader(c.fileno(), fut.set_result, None)
                try:
                    await fut
                finally:
                    loop.remove_reader(c.fileno())
                c.recv_bytes()
            return (time.perf_counter() - t) / n

        return asyncio.run(run())

    def one_way(self, arr, n):
        c = self.conn
        t = time.perf_counter()
        for _ in range(n):
            c.send(arr)
        c.send("end")
        assert c.recv() == n
        return time.perf_counter() - t


def reply_and_close_event(conn):
    """The reply on a request's own Pipe, then its close event."""
    conn.recv_bytes()
    try:
        conn.recv_bytes()
    except EOFError:
        pass
    conn.close()


class PipeBytes(Pipe):
    def per_request(self, n):
        """A new Pipe per request, its end passed after the request with
        `send_handle` (SCM_RIGHTS on the connection's socket)."""
        c, pid = self.conn, self.proc.pid
        t = time.perf_counter()
        for _ in range(n):
            mine, theirs = mp.Pipe()
            c.send_bytes(PAYLOAD)
            reduction.send_handle(c, theirs.fileno(), pid)
            theirs.close()
            reply_and_close_event(mine)
        return (time.perf_counter() - t) / n

    def close(self):
        self.conn.send_bytes(b"")
        self.proc.join()


class PipePickle(Pipe):
    def per_request(self, n):
        """A new Pipe per request, its end pickled with the request."""
        c = self.conn
        t = time.perf_counter()
        for _ in range(n):
            mine, theirs = mp.Pipe()
            c.send((PAYLOAD, theirs))
            theirs.close()
            reply_and_close_event(mine)
        return (time.perf_counter() - t) / n

    def close(self):
        self.conn.send(None)
        self.proc.join()


class SocketPair:
    """What a socket pair costs in Python with no peer: made and closed."""

    def per_request(self, n):
        t = time.perf_counter()
        for _ in range(n):
            a, b = socket.socketpair()
            a.close()
            b.close()
        return (time.perf_counter() - t) / n

    def close(self):
        pass


class Queue:
    name = "multiprocessing.Queue"

    def __init__(self, mode):
        ctx = mp.get_context("spawn")
        self.inq, self.outq = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=mp_queue_child, args=(self.inq, self.outq, mode))
        self.proc.start()
        pin_child(self.proc.pid)

    def rtt(self, n):
        t = time.perf_counter()
        for _ in range(n):
            self.inq.put(PAYLOAD)
            self.outq.get()
        return (time.perf_counter() - t) / n

    def one_way(self, arr, n):
        t = time.perf_counter()
        for _ in range(n):
            self.inq.put(arr)
        self.inq.put("end")
        assert self.outq.get() == n
        return time.perf_counter() - t

    def close(self):
        self.inq.put(None)
        self.proc.join()


class SharedMemory:
    name = "shared_memory + Pipe"

    def __init__(self, mode, size=4096):
        ctx = mp.get_context("spawn")
        self.shm = shared_memory.SharedMemory(create=True, size=max(size, 4096))
        self.conn, child = ctx.Pipe()
        self.mode = mode
        self.proc = ctx.Process(target=shm_child, args=(child, self.shm.name, mode))
        self.proc.start()
        pin_child(self.proc.pid)
        child.close()

    def rtt(self, n):
        c, buf = self.conn, self.shm.buf
        t = time.perf_counter()
        for _ in range(n):
            buf[0:64] = PAYLOAD
            c.send_bytes(b"g")
            c.recv_bytes(1)
            bytes(buf[64:128])
        return (time.perf_counter() - t) / n

    def one_way(self, arr, n):
        c = self.conn
        dst = np.ndarray(arr.shape, dtype=arr.dtype, buffer=self.shm.buf)
        t = time.perf_counter()
        for i in range(n):
            if i:
                c.recv_bytes(1)  # the receiver is done with the block
            np.copyto(dst, arr)
            c.send(arr.shape)
        c.recv_bytes(1)
        c.send("end")
        assert c.recv() == n
        elapsed = time.perf_counter() - t
        del dst
        return elapsed

    def close(self):
        if self.mode == "echo":
            self.conn.send_bytes(b"q")
        else:
            self.conn.send(None)
        self.proc.join()
        self.shm.close()
        self.shm.unlink()


# ------------------------------------------------------------------- running


def median_rows(samples):
    return {k: statistics.median(v) for k, v in samples.items()}


def take_turns(makers, runs, n, chunk=None):
    """Each (name, make, method): its peer made, warmed up, then `method`
    of every peer in turn, `runs` times; the median of each. With `chunk`,
    a run's figure is the median of its `n / chunk` chunks (a moment when
    another process takes a peer's processor moves it less)."""
    peers = [(name, make(), how) for name, make, how in makers]
    for _, peer, how in peers:  # warm up
        getattr(peer, how)(min(n, 1000))
    samples = {name: [] for name, _, _ in peers}
    for _ in range(runs):
        for name, peer, how in peers:
            if chunk:
                chunks = [getattr(peer, how)(chunk) for _ in range(n // chunk)]
                samples[name].append(statistics.median(chunks))
            else:
                samples[name].append(getattr(peer, how)(n))
    for _, peer, _ in peers:
        peer.close()
    return median_rows(samples)


def round_trips(runs, n):
    makers = [
        ("shmport post_bytes", lambda: Shmport("echo"), "rtt"),
        ("shmport post (pickle)", lambda: Shmport("echo-pickle"), "rtt_pickle"),
        ("shmport PortSet.recv", lambda: Shmport("echo"), "rtt_set"),
        ("shmport PortSet.recv (pickle)", lambda: Shmport("echo-pickle"), "rtt_set_pickle"),
        ("shmport await arecv", lambda: Shmport("echo"), "rtt_async"),
        ("Pipe send_bytes", lambda: PipeBytes("echo"), "rtt"),
        ("Pipe send (pickle)", lambda: PipePickle("echo-pickle"), "rtt_pickle"),
        ("Pipe connection.wait", lambda: PipeBytes("echo"), "rtt_set"),
        ("Pipe loop.add_reader", lambda: PipeBytes("echo"), "rtt_async"),
        ("Queue put/get", lambda: Queue("echo"), "rtt"),
        ("shared_memory + Pipe", lambda: SharedMemory("echo"), "rtt"),
    ]
    return take_turns(makers, runs, n)


def per_requests(runs, n):
    makers = [
        ("shmport MessageChannel per request", lambda: Shmport("reply"), "per_request"),
        ("shmport post_bytes round trip, no new channel", lambda: Shmport("echo"), "rtt"),
        ("Pipe per request, pickled with the request", lambda: PipePickle("reply-pickled"),
         "per_request"),
        ("Pipe per request, send_handle", lambda: PipeBytes("reply-handle"), "per_request"),
        ("socket.socketpair() + 2 close(), no peer", SocketPair, "per_request"),
    ]
    return take_turns(makers, runs, n, chunk=REQUEST_CHUNK)


def rate(peer, arr, n, steady):
    """Bytes per second of one batch of `n` arrays; with `steady`, batches
    back to back for that many seconds, the median of them (the
    transport's own pace, not its first batch after the others ran)."""
    if not steady:
        return arr.nbytes * n / peer.one_way(arr, n)
    rates, end = [], time.perf_counter() + steady
    while not rates or time.perf_counter() < end:
        rates.append(arr.nbytes * n / peer.one_way(arr, n))
    return statistics.median(rates)


def throughputs(runs, sizes, batch, mode, steady):
    rows = {}
    for size in sizes:
        arr = np.random.default_rng(0).random(size // 8)
        n = batch(size)
        big = Shmport(mode, capacity=RING_ARRAYS * size)
        big.port.inline_limit = big.port.capacity // 2
        peers = [
            ("shmport post/recv().data", Shmport(mode)),
            ("shmport, ring of 4 arrays", big),
            ("shmport post_bytes/np.frombuffer", Shmport(mode, raw=True)),
            ("Pipe send/recv", PipePickle(mode)),
            ("Queue put/get", Queue(mode)),
            ("shared_memory + Pipe", SharedMemory(mode, size)),
        ]
        for _, peer in peers:  # warm up: a lap of the big ring
            peer.one_way(arr, RING_ARRAYS + 1)
        samples = {name: [] for name, _ in peers}
        for _ in range(runs):
            for name, peer in peers:
                samples[name].append(rate(peer, arr, n, steady))
        for _, peer in peers:
            peer.close()
        rows[size] = median_rows(samples)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="few iterations (a smoke test)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--rtt", action="store_true", help="the round trips only")
    only.add_argument("--per-request", action="store_true",
                      help="the channel per request only")
    only.add_argument("--throughput", action="store_true", help="the throughputs only")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], metavar="MIB",
                   help="array sizes for the throughput, in MiB")
    p.add_argument("--steady", type=float, default=0, metavar="SECONDS",
                   help="each throughput figure: batches back to back for SECONDS, their median")
    p.add_argument("--cpus", metavar="P,C",
                   help="run this process on processor P and every child on C (the same "
                        "number twice: parent and child share one processor)")
    p.add_argument("--spin", type=float, metavar="SECONDS",
                   help="the spin time of every shmport port (default: shmport's, 20e-6)")
    p.add_argument("--sum", action="store_true",
                   help="throughput receivers sum every array (read all of it) instead of two elements")
    args = p.parse_args()
    global SPIN, CHILD_CPU
    SPIN = args.spin
    if args.cpus:
        parent_cpu, CHILD_CPU = (int(c) for c in args.cpus.split(","))
        os.sched_setaffinity(0, {parent_cpu})
    runs = 2 if args.quick else args.runs
    n_rtt = 500 if args.quick else 20000
    n_req = 200 if args.quick else 2000

    def batch(size):
        return max(2 if args.quick else 8, (16 if args.quick else 256) * MiB // size)

    pinned = f"; parent on CPU {parent_cpu}, children on CPU {CHILD_CPU}" if args.cpus else ""
    if SPIN is not None:
        pinned += f"; shmport ports spin {SPIN} s"
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs; "
          f"medians of {runs} runs, transports taking turns in each run{pinned}\n")
    if not (args.throughput or args.per_request):
        rtt = round_trips(runs, n_rtt)
        base = rtt["shmport post_bytes"]
        base_p = rtt["shmport post (pickle)"]
        print(f"64 B round trip ({n_rtt} per run)")
        print("| transport | median round trip | / shmport (same kind) |")
        print("|---|---:|---:|")
        for name, v in rtt.items():
            ref = base_p if "pickle" in name else base
            print(f"| {name} | {v * 1e6:.1f} µs | {v / ref:.2f}× |")
        print()
    if not (args.throughput or args.rtt):
        req = per_requests(runs, n_req)
        base = req["shmport MessageChannel per request"]
        print(f"A channel per request: make it, post one end with a 64 B request, "
              f"one reply, the close event ({n_req} per run, the median of chunks of "
              f"{REQUEST_CHUNK})")
        print("| | median per request | / shmport's |")
        print("|---|---:|---:|")
        for name, v in req.items():
            print(f"| {name} | {v * 1e6:.1f} µs | {v / base:.2f}× |")
        print()
    if args.rtt or args.per_request:
        return
    sizes = [s * MiB for s in args.sizes]
    tp = throughputs(runs, sizes, batch, "sum" if args.sum else "sink", args.steady)
    what = "summed" if args.sum else "first and last element read"
    print(f"One-way throughput of numpy float64 arrays, received as usable arrays ({what})")
    print("| transport | " + " | ".join(f"{s} MiB" for s in args.sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    names = list(next(iter(tp.values())))
    for name in names:
        cells = []
        for size, row in tp.items():
            pipe = row[name] / row["Pipe send/recv"]
            recipe = row[name] / row["shared_memory + Pipe"]
            cells.append(f"{row[name] / 2**30:.2f} GiB/s ({pipe:.1f}× Pipe, {recipe:.2f}× recipe)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        shmport_child()
    else:
        main()
