"""Forwarding a port: a producer streams numbered messages on a port; the
main process hands that port on to a third process while messages keep
coming. Messages already queued move with the port; every one arrives, in
order, at the third process, which reads the rest directly from the
producer.

    python forward.py [N]
"""

import os
import sys

import shmport


def producer():
    ctl = shmport.from_parent()
    out = ctl.recv().ports[0]
    n = ctl.recv().data
    for i in range(n):
        out.post(i)
    out.close()


def consumer():
    ctl = shmport.from_parent()
    src = ctl.recv().ports[0]
    expected = ctl.recv().data  # the first number still to come
    for msg in src:  # until the producer closes
        assert msg.data == expected, (msg.data, expected)
        expected += 1
    ctl.post(expected)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    me = [sys.executable, os.path.abspath(__file__)]
    prod, pctl = shmport.spawn(me + ["producer"])
    cons, cctl = shmport.spawn(me + ["consumer"])
    mine, theirs = shmport.MessageChannel(capacity=64 * 1024)
    pctl.post("post here", ports=[theirs])
    pctl.post(n)
    # Read a few here, then forward the port with whatever is queued on it.
    got = [mine.recv().data for _ in range(100)]
    assert got == list(range(100))
    cctl.post("read on", ports=[mine])
    cctl.post(100)
    last = cctl.recv().data
    print(f"forwarded after 100 of {n} messages; the third process read up to {last - 1}, in order")
    assert last == n
    for p in (prod, cons):
        assert p.wait() == 0


if __name__ == "__main__":
    {"producer": producer, "consumer": consumer}.get(sys.argv[1] if sys.argv[1:] else "", main)()
