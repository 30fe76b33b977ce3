"""Type stubs of shmport (the Rust extension shmport._shmport and the
Python package around it)."""

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import IO, Any, Literal, Optional, Union

# Any object with the buffer protocol (bytes, bytearray, memoryview, a
# contiguous numpy array, a Message). Not `collections.abc.Buffer`: before
# Python 3.12, numpy's stubs do not declare arrays as buffers.
Buffer = Any

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

DEFAULT_CAPACITY: int
MAX_MESSAGE_SIZE: int
MAX_PORTS: int

Trust = Literal["validated", "untrusted"]
CloseReason = Literal["closed", "peer_died", "protocol_error", "closed_here"]
_Std = Union[None, int, IO[Any]]
_Path = Union[str, "PathLike[str]"]

class ClosedError(Exception):
    """The close event: the peer is gone, or this port was closed."""

    reason: CloseReason
    port: "Port"  # set by PortSet.recv

class Closed(ClosedError):
    """The peer closed (or dropped) its port, after every message it posted."""

class PeerDied(ClosedError):
    """The peer's process ended without closing (kill -9 included)."""

class ProtocolError(ClosedError):
    """The peer broke the protocol; the port no longer reads or writes."""

class BusyError(RuntimeError):
    """The port (or half of it) is in use by another thread or task."""

class Full(Exception):
    """try_post: no room in the ring now."""

class Refused(ValueError):
    """One message was refused (too large for max_message_size, or not
    sealed on an untrusted port); the port goes on."""

class Message:
    """A received message. Its bytes stay in shared memory, valid while the
    message or any view of it (memoryview, numpy arrays from ``data``)
    lives; the ring space returns to the sender after that."""

    @property
    def data(self) -> Any:
        """The unpickled object (numpy arrays as read-only views, no copy).
        TypeError for raw bytes."""
    @property
    def buffer(self) -> memoryview:
        """The payload, read-only, in place."""
    @property
    def ports(self) -> list["Port"]:
        """The ports that came with the message (taken on first access)."""
    @property
    def kind(self) -> Literal["pickle", "bytes", "typed"]: ...
    @property
    def fingerprint(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def released(self) -> bool: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def tobytes(self) -> bytes: ...
    def release(self) -> None:
        """Give the message back (its views keep it until they go)."""
    def __enter__(self) -> "Message": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Port:
    """One end of a channel. One thread receives and one posts at a time
    (another thread using the same half gets BusyError). Made ready for
    use (two eventfds) at its first use: a post on it, a receive,
    ``fileno()``, a setting read (``capacity`` and ``spin`` too); posted
    away before that (``ports=[p]``), a new channel's port travels
    as a kit of the carrying channel, with no new memfd or socket. A first
    use with no descriptor free raises OSError and leaves the port as it
    was."""

    def post(
        self, obj: Any, *, ports: Optional[Sequence["Port"]] = None, timeout: Optional[float] = None
    ) -> None:
        """Pickle ``obj`` (protocol 5) into shared memory, its out-of-band
        buffers copied once; wait for room (TimeoutError after ``timeout``)."""
    def try_post(self, obj: Any, *, ports: Optional[Sequence["Port"]] = None) -> None:
        """``post`` without waiting: Full when there is no room."""
    def post_bytes(
        self,
        buf: Buffer,
        *,
        ports: Optional[Sequence["Port"]] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Post the bytes of any buffer as a raw message (Rust and C peers
        read it in place)."""
    def try_post_bytes(self, buf: Buffer, *, ports: Optional[Sequence["Port"]] = None) -> None: ...
    def reserve(self, nbytes: int, *, timeout: Optional[float] = None) -> "Reservation":
        """Room for one raw message in the ring: ``with port.reserve(n) as
        buf:`` fills it in place and commits at the end of the block."""
    def recv(self, timeout: Optional[float] = None) -> Message:
        """The next message; raises the close event after the last one,
        TimeoutError after ``timeout`` seconds."""
    def try_recv(self) -> Optional[Message]:
        """A message if one is waiting, else None."""
    async def arecv(self) -> Message:
        """``recv`` on the running asyncio loop."""
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def close_reason(self) -> Optional[CloseReason]: ...
    @property
    def capacity(self) -> int: ...
    @property
    def spin(self) -> float: ...
    inline_limit: int
    pool_limit: Optional[int]
    max_message_size: int
    trust: Trust
    def fileno(self) -> int:
        """A descriptor for selectors and event loops: readable when a message,
        the close event, or a close() here may be there. Call prepare_poll()
        before each wait, try_recv() after it."""
    def prepare_poll(self) -> bool:
        """Announce a wait on fileno(); False when an event is already there."""
    def __enter__(self) -> "Port": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    def __iter__(self) -> Iterator[Message]: ...
    def __next__(self) -> Message: ...
    def __aiter__(self) -> AsyncIterator[Message]: ...

class Reservation:
    """Room for one raw message in the ring, filled in place."""

    @property
    def buffer(self) -> memoryview:
        """A writable view of the reserved ring memory."""
    def commit(self, nbytes: Optional[int] = None) -> None:
        """Publish the first nbytes (all by default; ValueError for more than
        reserved, BufferError while views of it live)."""
    def cancel(self) -> None: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> memoryview: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class MessageChannel:
    """Two entangled ports: ``a, b = MessageChannel()``."""

    port1: Port
    port2: Port
    def __init__(
        self,
        *,
        capacity: Optional[int] = None,
        spin: Optional[float] = None,
        trust: Optional[Trust] = None,
        max_message_size: Optional[int] = None,
    ) -> None: ...
    def __iter__(self) -> Iterator[Port]: ...

class PortSet:
    """Receive from many ports, round robin; a port's close event is raised
    with ``e.port`` set, and the port leaves the set."""

    def __init__(self, ports: Iterable[Port] = ...) -> None: ...
    def add(self, port: Port) -> None: ...
    def remove(self, port: Port) -> None: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __contains__(self, port: object) -> bool: ...
    def __iter__(self) -> Iterator[Port]: ...
    def recv(self, timeout: Optional[float] = None) -> tuple[Port, Message]: ...
    def try_recv(self) -> Optional[tuple[Port, Message]]: ...
    async def arecv(self) -> tuple[Port, Message]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "PortSet": ...
    def __exit__(self, *exc: object) -> bool: ...

class Process:
    """A child started by ``spawn`` (the parts of subprocess.Popen that apply)."""

    args: list[str]
    pid: int
    returncode: Optional[int]
    stdin: Optional[IO[Any]]
    stdout: Optional[IO[Any]]
    stderr: Optional[IO[Any]]
    def poll(self) -> Optional[int]: ...
    def wait(self, timeout: Optional[float] = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def __enter__(self) -> "Process": ...
    def __exit__(self, *exc: object) -> bool: ...

def spawn(
    args: Union[_Path, Sequence[Union[_Path, bytes]]],
    *,
    capacity: Optional[int] = None,
    spin: Optional[float] = None,
    trust: Optional[Trust] = None,
    max_message_size: Optional[int] = None,
    cwd: Optional[_Path] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: _Std = None,
    stdout: _Std = None,
    stderr: _Std = None,
    text: bool = False,
) -> tuple[Process, Port]:
    """Start a child with a connected port; the child calls from_parent()."""

def from_parent() -> Port:
    """In a child started by spawn: its port (OSError elsewhere)."""

class Incoming:
    """A process waiting for a port."""

    @property
    def credentials(self) -> tuple[int, int, int]: ...
    @property
    def pid(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    def accept(
        self,
        *,
        capacity: Optional[int] = None,
        spin: Optional[float] = None,
        trust: Optional[Trust] = None,
        max_message_size: Optional[int] = None,
    ) -> Port: ...
    def reject(self) -> None: ...

class Listener:
    """A Unix socket (mode 0600) that hands a port to each connector."""

    def __init__(self, path: Optional[_Path] = None, *, abstract_name: Optional[bytes] = None) -> None: ...
    def accept(self, timeout: Optional[float] = None) -> Incoming: ...
    @property
    def path(self) -> Optional[str]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Listener": ...
    def __exit__(self, *exc: object) -> bool: ...

def connect(
    path: Optional[_Path] = None, *, abstract_name: Optional[bytes] = None, timeout: Optional[float] = None
) -> Port:
    """A port from the Listener at ``path`` (FileNotFoundError,
    ConnectionRefusedError, TimeoutError...)."""
