"""asyncio: a port's waits on the running loop, through its descriptor.

The protocol is the one every foreign event loop uses (``prepare_poll``
then wait on ``fileno()``, then ``try_recv``): no thread per port. A wait
also ends after ``RECHECK`` seconds and looks again, which bounds the one
case where a wake-up can be taken by another user of the same socket (a
blocking ``post`` on this port, waiting for room, reads the socket too).
"""

import asyncio

from ._shmport import BusyError, Closed

RECHECK = 0.25

# Ports a task is awaiting, by id (a port has one waiter at a time).
_waiting = {}


def _wake(fut):
    if not fut.done():
        fut.set_result(None)


async def _wait_readable(loop, fds):
    fut = loop.create_future()
    for fd in fds:
        loop.add_reader(fd, _wake, fut)
    timer = loop.call_later(RECHECK, _wake, fut)
    try:
        await fut
    finally:
        timer.cancel()
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
        while True:
            m = port.try_recv()
            if m is not None:
                return m
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
