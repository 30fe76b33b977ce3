//! Rendezvous: how a process that was not spawned with a port gets its
//! first one.
//!
//! A host binds a [`Listener`] to a socket path (or a Linux abstract name);
//! another process calls [`connect`]. The host sees the connecting process's
//! [`Credentials`] in an [`Incoming`] and decides: [`Incoming::accept`]
//! makes a new channel and hands one port to the connector, dropping the
//! `Incoming` rejects it.
//!
//! The protocol on the connection is one message, from the listener: the
//! port (as one descriptor-carrying attachment, the same that carries ports
//! inside messages), then the listener closes the connection. The listener
//! never reads from a connection and never waits on one: its single send
//! goes, without blocking, into a socket buffer nobody else writes to.
//! So a connector that misbehaves (closes at once, sends garbage, never
//! reads) costs the listener one failed or unread send, nothing more.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::connect::channel::ChannelBuilder;
use crate::connect::handover::{self, RecvPortError};
use crate::port::MessagePort;
use crate::shm::segment::OpenError;
use crate::sys::socket::{self as sock, FileId, UnixAddr};

/// How long [`connect`] and [`connect_abstract`] wait for the listener to
/// accept and send the port.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections the kernel queues for a listener before connectors wait.
const BACKLOG: i32 = 128;

/// Where a listener is bound.
enum Bound {
    /// A socket file this listener made (and removes when dropped).
    Path(PathBuf, FileId),
    /// A Linux abstract name.
    Abstract(Vec<u8>),
}

/// A rendezvous point that hands out ports to processes that
/// [`connect`] to it: a listening Unix `SOCK_SEQPACKET` socket.
///
/// The socket is close-on-exec and non-blocking; [`Listener::accept`]
/// waits by polling it. It implements [`AsFd`], so an event loop can poll
/// it too (readable: a connection is waiting) and then call
/// [`Listener::try_accept`].
///
/// A listener bound to a path removes its socket file when dropped (if the
/// file at the path is still the one it made). Connections still queued
/// when it drops are closed: their connectors get [`ConnectError::Rejected`].
///
/// # Example
/// ```
/// use shmport::Listener;
///
/// let dir = std::env::temp_dir().join(format!("shmport-doc-listener-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("host.sock");
/// let listener = Listener::bind(&path)?;
/// assert_eq!(listener.path(), Some(path.as_path()));
///
/// let client = std::thread::spawn({
///     let path = path.clone();
///     move || shmport::connect(&path).map(|port| port.post(&42u32))
/// });
/// let incoming = listener.accept()?;
/// assert_eq!(incoming.credentials().pid, std::process::id());
/// let port = incoming.accept()?;
/// client.join().unwrap()??;
/// assert_eq!(port.recv()?.get::<u32>()?.to_native(), 42);
///
/// drop(listener);
/// assert!(!path.exists());
/// std::fs::remove_dir(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener {
    fd: OwnedFd,
    bound: Bound,
}

impl Listener {
    /// Listen on a new socket file at `path`, made with mode 0600 (only this
    /// user may connect).
    ///
    /// Fails with [`io::ErrorKind::AddrInUse`] if anything exists at `path`
    /// already — a socket left by a listener that died is not removed
    /// silently; remove it yourself if you know no listener uses it. Paths
    /// are limited to 107 bytes (the kernel's limit).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Listener> {
        let path = path.as_ref();
        let (fd, id) = sock::listen(UnixAddr::Path(path), BACKLOG)?;
        let id = id.expect("a path listener has a socket file");
        // Absolute, so the drop removes the right file even if the current
        // directory changes meanwhile.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Listener {
            fd,
            bound: Bound::Path(path, id),
        })
    }

    /// Listen on a Linux abstract socket name (no file; the name disappears
    /// with the listener). `name` is given without the leading NUL byte, 1
    /// to 107 bytes.
    ///
    /// An abstract name has no permissions: any process in this network
    /// namespace may connect, so check [`Incoming::credentials`]. A name
    /// already in use fails with [`io::ErrorKind::AddrInUse`].
    ///
    /// # Example
    /// ```
    /// use shmport::Listener;
    ///
    /// let name = format!("shmport-doc-{}", std::process::id());
    /// let listener = Listener::bind_abstract(&name)?;
    ///
    /// let client = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///     let port = shmport::connect_abstract(&name)?;
    ///     port.post_bytes(b"hello")?;
    ///     assert_eq!(port.recv()?.bytes(), b"welcome");
    ///     Ok(())
    /// });
    ///
    /// let incoming = listener.accept()?;
    /// // The host decides who may have a port: here, only this process.
    /// assert_eq!(incoming.credentials().pid, std::process::id());
    /// let port = incoming.accept()?;
    /// assert_eq!(port.recv()?.bytes(), b"hello");
    /// port.post_bytes(b"welcome")?;
    /// client.join().unwrap().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind_abstract(name: impl AsRef<[u8]>) -> io::Result<Listener> {
        let name = name.as_ref();
        let (fd, _) = sock::listen(UnixAddr::Abstract(name), BACKLOG)?;
        Ok(Listener {
            fd,
            bound: Bound::Abstract(name.to_vec()),
        })
    }

    /// The socket file's path, made absolute (`None` for an abstract name).
    pub fn path(&self) -> Option<&Path> {
        match &self.bound {
            Bound::Path(p, _) => Some(p),
            Bound::Abstract(_) => None,
        }
    }

    /// The abstract name, without the leading NUL (`None` for a path).
    pub fn abstract_name(&self) -> Option<&[u8]> {
        match &self.bound {
            Bound::Path(..) => None,
            Bound::Abstract(n) => Some(n),
        }
    }

    /// Wait for a process to connect, with no time limit.
    pub fn accept(&self) -> io::Result<Incoming> {
        loop {
            if let Some(incoming) = self.try_accept()? {
                return Ok(incoming);
            }
            sock::wait(&self.fd, false, None)?;
        }
    }

    /// Wait at most `timeout` for a process to connect; `Ok(None)` if none
    /// did.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<Incoming>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(incoming) = self.try_accept()? {
                return Ok(Some(incoming));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            sock::wait(&self.fd, false, Some(left))?;
        }
    }

    /// Take a connection if one is waiting; `Ok(None)` if none is. Never
    /// blocks.
    pub fn try_accept(&self) -> io::Result<Option<Incoming>> {
        let Some(conn) = sock::accept(&self.fd)? else {
            return Ok(None);
        };
        let (pid, uid, gid) = sock::peer_credentials(&conn)?;
        Ok(Some(Incoming {
            conn,
            credentials: Credentials { pid, uid, gid },
        }))
    }
}

impl AsFd for Listener {
    /// The listening socket: readable when a connection is waiting.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Bound::Path(path, id) = &self.bound {
            sock::remove_socket_file(path, *id);
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Listener");
        match &self.bound {
            Bound::Path(p, _) => d.field("path", p),
            Bound::Abstract(n) => d.field("abstract_name", &String::from_utf8_lossy(n)),
        };
        d.finish()
    }
}

/// Who connected, as the kernel recorded it when the process called
/// `connect` (`SO_PEERCRED`): it cannot be forged by the connector.
///
/// The process may have exited since, and its pid been reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// Process id (as [`std::process::id`] and
    /// [`Child::id`](std::process::Child::id) give it), or 0 when the
    /// process is outside this process's PID namespace.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// A process waiting for a port: accept it ([`Incoming::accept`]) or
/// reject it (drop it, or [`Incoming::reject`]: the connector gets
/// [`ConnectError::Rejected`]).
#[derive(Debug)]
pub struct Incoming {
    conn: OwnedFd,
    credentials: Credentials,
}

impl Incoming {
    /// Who connected.
    pub fn credentials(&self) -> Credentials {
        self.credentials
    }

    /// Make a new channel with the default settings, send one port to the
    /// connector and return the other. See [`Incoming::accept_with`].
    pub fn accept(self) -> io::Result<MessagePort> {
        self.accept_with(&ChannelBuilder::new())
    }

    /// Make a new channel with `builder`'s settings, send one port to the
    /// connector and return the other; the connection is closed either way.
    ///
    /// This never waits on the connector. If the connector is already gone
    /// the send fails with [`io::ErrorKind::BrokenPipe`] (the listener is
    /// not affected). If it is alive but never reads, the send still
    /// succeeds and the port sits in its socket: the returned port then
    /// reads as closed when the connector closes that connection or exits,
    /// with [`CloseReason::PeerDied`](crate::CloseReason::PeerDied) (the
    /// port went away without its close), although the connector may
    /// still run.
    pub fn accept_with(self, builder: &ChannelBuilder) -> io::Result<MessagePort> {
        let (mine, theirs) = builder.build()?.into_ports();
        match handover::send_port(self.conn.as_fd(), theirs) {
            Ok(()) => Ok(mine),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connecting process hung up before its port was sent",
            )),
            Err(e) => Err(e),
        }
    }

    /// Refuse the connection: it is closed without a port, and the
    /// connector gets [`ConnectError::Rejected`]. Dropping the `Incoming`
    /// does the same.
    pub fn reject(self) {
        drop(self)
    }
}

/// Connect to the [`Listener`] at socket file `path` and wait (at most
/// [`DEFAULT_CONNECT_TIMEOUT`]) for it to accept and send a port.
///
/// # Example
/// ```no_run
/// let port = shmport::connect("/run/user/1000/my-host.sock")?;
/// port.post(&"hello".to_string())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(path: impl AsRef<Path>) -> Result<MessagePort, ConnectError> {
    connect_timeout(path, DEFAULT_CONNECT_TIMEOUT)
}

/// [`connect`], waiting at most `timeout` (for the listener to take the
/// connection and send the port, together).
pub fn connect_timeout(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<MessagePort, ConnectError> {
    connect_to(UnixAddr::Path(path.as_ref()), timeout)
}

/// Connect to the [`Listener`] bound to the abstract socket `name` (without
/// the leading NUL) and wait (at most [`DEFAULT_CONNECT_TIMEOUT`]) for a
/// port. See [`connect`].
pub fn connect_abstract(name: impl AsRef<[u8]>) -> Result<MessagePort, ConnectError> {
    connect_abstract_timeout(name, DEFAULT_CONNECT_TIMEOUT)
}

/// [`connect_abstract`], waiting at most `timeout`.
pub fn connect_abstract_timeout(
    name: impl AsRef<[u8]>,
    timeout: Duration,
) -> Result<MessagePort, ConnectError> {
    connect_to(UnixAddr::Abstract(name.as_ref()), timeout)
}

fn connect_to(addr: UnixAddr<'_>, timeout: Duration) -> Result<MessagePort, ConnectError> {
    let deadline = Instant::now() + timeout;
    let conn = sock::connect(addr, timeout).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ConnectError::NotFound,
        // The kernel refuses a path that is not a socket as it refuses a
        // socket nobody listens on: tell the two apart.
        io::ErrorKind::ConnectionRefused if is_other_than_socket(addr) => ConnectError::NotASocket,
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied,
        io::ErrorKind::TimedOut => ConnectError::Timeout,
        io::ErrorKind::InvalidData => {
            ConnectError::Protocol("the socket is not a SOCK_SEQPACKET socket")
        }
        _ => ConnectError::Io(e),
    })?;
    let left = deadline.saturating_duration_since(Instant::now());
    let port = handover::recv_port(conn.as_fd(), Some(left)).map_err(|e| match e {
        RecvPortError::Timeout => ConnectError::Timeout,
        RecvPortError::HungUp => ConnectError::Rejected,
        RecvPortError::Garbage(s) => ConnectError::Protocol(s),
        RecvPortError::Open(e) => ConnectError::Open(e),
        RecvPortError::Io(e) => ConnectError::Io(e),
    })?;
    // The port's socket came from the other side: it must be the kind a
    // port uses, or every wake and hang-up on it would misbehave.
    if !sock::is_seqpacket(port.as_fd()) {
        return Err(ConnectError::Protocol(
            "the port's socket is not a SOCK_SEQPACKET socket",
        ));
    }
    Ok(port)
}

/// Does `addr` name a file that exists and is not a socket? (Only asked
/// after a refused connection, to say why.)
fn is_other_than_socket(addr: UnixAddr<'_>) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match addr {
        UnixAddr::Path(p) => std::fs::metadata(p).is_ok_and(|m| !m.file_type().is_socket()),
        UnixAddr::Abstract(_) => false,
    }
}

/// Getting a port from a [`Listener`](crate::Listener) failed
/// ([`connect`](crate::connect) and its variants).
///
/// Later versions may add variants: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing exists at the path (or a directory on the way is missing).
    NotFound,
    /// The path names something that is not a socket (a regular file, a
    /// directory, ...): a wrong path, not a listener that is gone.
    NotASocket,
    /// Nothing listens there: a socket file left behind by a listener that
    /// is gone, or an abstract name nobody holds.
    Refused,
    /// This process may not connect to the socket file (it is mode 0600 and
    /// belongs to another user, or a directory on the way is closed).
    PermissionDenied,
    /// No port arrived in time: the listener did not accept the connection,
    /// or its queue stayed full.
    Timeout,
    /// The listener closed the connection without sending a port: it
    /// rejected this process (dropped the [`Incoming`](crate::Incoming)), or
    /// it was dropped with the connection still queued.
    Rejected,
    /// The other side is not a shmport listener: what it sent is not one
    /// port, or its socket is of another type.
    Protocol(&'static str),
    /// A port arrived but its shared segment is not valid.
    Open(OpenError),
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NotFound => f.write_str("nothing exists at that path"),
            ConnectError::NotASocket => {
                f.write_str("not a socket: the path names a file of another kind")
            }
            ConnectError::Refused => f.write_str("connection refused: nothing listens there"),
            ConnectError::PermissionDenied => {
                f.write_str("permission denied connecting to the socket")
            }
            ConnectError::Timeout => f.write_str("timed out waiting for a port from the listener"),
            ConnectError::Rejected => {
                f.write_str("the listener closed the connection without sending a port")
            }
            ConnectError::Protocol(s) => write!(f, "not a shmport listener: {s}"),
            ConnectError::Open(e) => write!(f, "the port received is not valid: {e}"),
            ConnectError::Io(e) => write!(f, "connecting failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Open(e) => Some(e),
            ConnectError::Io(e) => Some(e),
            _ => None,
        }
    }
}
