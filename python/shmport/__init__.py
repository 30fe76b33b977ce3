"""shmport: MessagePort-style channels between processes on one Linux
machine, carried over shared memory.

- ``a, b = shmport.MessageChannel()``: two entangled ports; what one posts,
  the other receives, in order, in both directions.
- ``port.post(obj)`` pickles ``obj`` (protocol 5) straight into shared
  memory; its out-of-band buffers (numpy arrays, ``pickle.PickleBuffer``,
  memoryviews) are copied once, and ``port.recv().data`` rebuilds numpy
  arrays and memoryviews as read-only views of that memory: no copy on the
  receiving side.
- ``port.post_bytes(buf)`` sends raw bytes (any buffer), which Rust and C
  peers read in place; ``memoryview(msg)`` reads them in place here.
- Close is an event: after the peer's last message, ``recv`` raises
  ``Closed``, ``PeerDied`` (its process died, ``kill -9`` included) or
  ``ProtocolError`` — all ``ClosedError``.
- Ports travel in messages (``post(obj, ports=[p])``, ``msg.ports``).
- ``spawn([...])`` starts a child with a connected port
  (``from_parent()`` in the child); ``Listener`` / ``connect`` for
  unrelated processes; ``PortSet`` and asyncio (``await port.arecv()``,
  ``async for msg in port``) for many ports.
"""

from ._shmport import (
    DEFAULT_CAPACITY,
    MAX_MESSAGE_SIZE,
    MAX_PORTS,
    BusyError,
    Closed,
    ClosedError,
    Full,
    Incoming,
    Listener,
    Message,
    PeerDied,
    Port,
    ProtocolError,
    Refused,
    Reservation,
    _channel,
    connect,
    from_parent,
)
from ._portset import PortSet
from ._process import Process, spawn

__all__ = [
    "DEFAULT_CAPACITY",
    "MAX_MESSAGE_SIZE",
    "MAX_PORTS",
    "BusyError",
    "Closed",
    "ClosedError",
    "Full",
    "Incoming",
    "Listener",
    "Message",
    "MessageChannel",
    "PeerDied",
    "Port",
    "PortSet",
    "Process",
    "ProtocolError",
    "Refused",
    "Reservation",
    "connect",
    "from_parent",
    "spawn",
]


class MessageChannel:
    """Two entangled ports, ``port1`` and ``port2``: ``a, b = MessageChannel()``.

    Keyword options: ``capacity`` (ring bytes per direction, default 1 MiB,
    rounded up to a power of two; messages larger than half of it travel
    out of line, in their own shared memory), ``spin`` (seconds a blocking
    call spins before it sleeps, default 20e-6), ``trust`` (``"validated"``
    or ``"untrusted"`` for a hostile peer), ``max_message_size`` (bytes).
    """

    __slots__ = ("port1", "port2")

    def __init__(self, *, capacity=None, spin=None, trust=None, max_message_size=None):
        self.port1, self.port2 = _channel(
            capacity=capacity, spin=spin, trust=trust, max_message_size=max_message_size
        )

    def __iter__(self):
        return iter((self.port1, self.port2))

    def __repr__(self):
        return f"<shmport.MessageChannel {self.port1!r} {self.port2!r}>"
