"""A new channel per request, made in Python: each request to a spawned
child carries the port its replies come back on, as a request/reply
protocol over MessagePorts does. The child answers on that port and closes
it. The requester sees every reply in order, then the close event, and
holds a bounded number of descriptors however many requests it makes:
the channels travel as kits of the carrying channel (their memfds and
sockets are reused), and they all go when the carrier closes."""

import gc
import os

import pytest

import shmport
from conftest import open_fds

REQUESTS = 2000
# Requests posted before their replies are read.
IN_FLIGHT = 4
REPLIES = 3
# Idle kits one end of a link keeps at most (src/port/kit.rs, MAX_IDLE);
# a loaded machine may make more kits than a quiet one (a kit the child
# has not marked idle yet is not taken), never more than this.
KITS_KEPT = 256
# Besides those: the unused channels kept for the next ones (8), the
# carrier, the requests in flight.
OTHERS = 16

ANSWER_AND_CLOSE = f"""
for msg in port:
    (reply,) = msg.ports
    n = msg.data
    msg.release()
    for k in range({REPLIES}):
        reply.post((n, k))
    reply.close()
"""


def memfds():
    """The inode numbers of the memfds this process holds a descriptor of."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:"):
                out.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except FileNotFoundError:  # the listing's own descriptor
            pass
    return out


def test_a_channel_per_request_reuses_its_memory_and_gives_every_descriptor_back(spawn_py):
    gc.collect()
    fds_before = open_fds()
    proc, port = spawn_py(ANSWER_AND_CLOSE)
    most_fds = 0
    memfds_seen = set()
    for start in range(0, REQUESTS, IN_FLIGHT):
        waiting = []
        for i in range(start, start + IN_FLIGHT):
            mine, theirs = shmport.MessageChannel()
            port.post(i, ports=[theirs])
            assert theirs.closed
            waiting.append((i, mine))
        # Every request's channel is open here.
        memfds_seen |= memfds()
        most_fds = max(most_fds, len(os.listdir("/proc/self/fd")))
        for i, mine in waiting:
            for k in range(REPLIES):
                assert mine.recv(timeout=30).data == (i, k)
            with pytest.raises(shmport.Closed):
                mine.recv(timeout=30)
            assert mine.close_reason == "closed"
            mine.close()
    # Thousands of channels, a bounded set of memfds (7 on a quiet
    # machine): the same few segments carried them all, where a new
    # channel per request would show a new memfd each.
    assert len(memfds_seen) <= KITS_KEPT + OTHERS, len(memfds_seen)
    # A kit is a memfd and a socket; an unused channel, a memfd and two.
    assert most_fds - len(fds_before) <= 2 * KITS_KEPT + 3 * OTHERS, (most_fds, len(fds_before))
    port.close()
    assert proc.wait(timeout=30) == 0
    del port, mine, waiting
    gc.collect()
    # The kits kept for the next requests went with the carrier.
    assert open_fds() == fds_before
