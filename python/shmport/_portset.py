"""PortSet: receive from many ports at once, fairly, in one thread or on
an asyncio loop."""

import asyncio
import collections
import selectors
import time

from . import _aio
from ._shmport import ClosedError, Port, _spin


class PortSet:
    """Many ports, one wait: ``port, msg = ports.recv()``.

    Messages come round robin: a port with a long queue does not starve
    the others. A port's close event is raised (``Closed``, ``PeerDied``,
    ``ProtocolError``) with the port in the exception's ``port``
    attribute, and the port is removed from the set::

        ports = shmport.PortSet([a, b, c])
        while ports:
            try:
                port, msg = ports.recv()
            except shmport.ClosedError as e:
                print("gone:", e.port, e.reason)
                continue
            ...

    Before it sleeps, a receive spins for the longest spin time of its
    ports (the GIL released), as a port's blocking ``recv`` does.
    """

    def __init__(self, ports=()):
        self._ports = {}  # fd -> port
        self._ready = collections.deque()
        self._sel = selectors.DefaultSelector()
        for p in ports:
            self.add(p)

    def add(self, port):
        """Add a port (it stays the caller's: posting on it is fine)."""
        if not isinstance(port, Port):
            raise TypeError(f"a PortSet holds shmport.Port objects only, not {type(port).__name__}")
        fd = port.fileno()
        if fd in self._ports:
            raise ValueError("the port is already in the set")
        self._sel.register(fd, selectors.EVENT_READ, port)
        self._ports[fd] = port
        self._ready.append(port)

    def remove(self, port):
        """Take a port out of the set (not closed)."""
        for fd, p in list(self._ports.items()):
            if p is port:
                del self._ports[fd]
                self._sel.unregister(fd)
                try:
                    self._ready.remove(port)
                except ValueError:
                    pass
                return
        raise KeyError(port)

    def __len__(self):
        return len(self._ports)

    def __bool__(self):
        return bool(self._ports)

    def __contains__(self, port):
        return any(p is port for p in self._ports.values())

    def __iter__(self):
        return iter(list(self._ports.values()))

    def _try(self):
        """A message from a port that may have one, or None."""
        while self._ready:
            p = self._ready.popleft()
            if not any(q is p for q in self._ports.values()):
                continue
            try:
                m = p.try_recv()
            except ClosedError as e:
                self._closed(p, e)
            if m is not None:
                # It may have more: back of the line.
                self._ready.append(p)
                return p, m
        return None

    def _closed(self, port, e):
        """A port's close event: out of the set, raised with the port."""
        self.remove(port)
        e.port = port
        raise e

    def _spin(self, limit=None):
        """Spin for the ports' spin time (at most ``limit`` seconds), the
        GIL released; True if a port has an event."""
        ports = list(self._ports.values())
        i = _spin(ports, limit)
        if i is None:
            return False
        self._ready.append(ports[i])
        return True

    def _arm(self):
        """Announce the wait on every port; True if one has an event."""
        for p in list(self._ports.values()):
            try:
                waits = p.prepare_poll()
            except ClosedError as e:
                self._closed(p, e)
            if not waits:
                self._ready.append(p)
        return bool(self._ready)

    def recv(self, timeout=None):
        """``(port, message)`` from the next port with a message, waiting
        at most ``timeout`` seconds (``TimeoutError``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        spun = False
        while True:
            got = self._try()
            if got is not None:
                return got
            if not self._ports:
                raise ValueError("the port set is empty")
            if not spun:
                spun = True
                if self._spin(timeout):
                    continue
            if self._arm():
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("no message in the set")
            for key, _ in self._sel.select(left):
                self._ready.append(key.data)

    def try_recv(self):
        """``(port, message)`` if one is waiting, else None."""
        got = self._try()
        if got is None and self._ports and self._arm():
            got = self._try()
        return got

    async def arecv(self):
        """``await ports.arecv()``: ``recv`` on the running asyncio loop."""
        loop = asyncio.get_running_loop()
        spun = False
        while True:
            got = self._try()
            if got is not None:
                return got
            if not self._ports:
                raise ValueError("the port set is empty")
            if not spun:
                spun = True
                if self._spin():
                    continue
            if self._arm():
                continue
            await _aio._wait_readable(loop, list(self._ports))
            self._ready.extend(self._ports.values())

    def close(self):
        """Stop waiting on the ports (they are not closed)."""
        self._sel.close()
        self._ports.clear()
        self._ready.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
