"""asyncio: a port's waits on the running loop, through its descriptor.

The protocol is the one every foreign event loop uses (``prepare_poll``
then wait on ``fileno()``, then ``try_recv``): no thread per port. Before
it announces a wait, a receive spins for the port's spin time (the GIL
released), as a blocking ``recv`` does: a message that comes meanwhile
never goes through the loop. ``fileno()`` also turns readable when a post
on the same port, waiting for room on another thread, took in this side's
wake-up, and when the port is closed here: no wake-up is lost, so a wait
needs no timer.
"""

import asyncio

from ._shmport import BusyError, Closed, _spin

# Ports a task is awaiting, by id (a port has one waiter at a time).
_waiting = {}


def _wake(fut):
    if not fut.done():
        fut.set_result(None)


async def _wait_readable(loop, fds):
    fut = loop.create_future()
    for fd in fds:
        loop.add_reader(fd, _wake, fut)
    try:
        await fut
    finally:
        for fd in fds:
            loop.remove_reader(fd)


async def arecv(port):
    """The next message of ``port``; raises the close event."""
    m = port.try_recv()
    if m is not None:
        return m
    key = id(port)
    if key in _waiting:
        raise BusyError("another task is awaiting this port")
    _waiting[key] = port
    try:
        loop = asyncio.get_running_loop()
        spun = False
        while True:
            m = port.try_recv()
            if m is not None:
                return m
            if not spun:
                spun = True
                if _spin((port,)) is not None:
                    continue
            if not port.prepare_poll():
                continue
            await _wait_readable(loop, (port.fileno(),))
    finally:
        del _waiting[key]


class PortIterator:
    """``async for msg in port``: ends at ``Closed``; ``PeerDied`` and
    ``ProtocolError`` are raised."""

    __slots__ = ("port",)

    def __init__(self, port):
        self.port = port

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await arecv(self.port)
        except Closed:
            raise StopAsyncIteration from None
