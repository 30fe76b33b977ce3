//! The port's socket: one end of a `SOCK_SEQPACKET` pair per port.
//!
//! It carries three things: one-byte wake tokens (sent only when the other
//! side announced in the segment that it sleeps), descriptors (`SCM_RIGHTS`,
//! always sent before the ring record that refers to them; an attachment too
//! large for one message goes in several, see `crate::wire::attachment`), and — by being
//! closed, explicitly or by the kernel when the owning process dies — the
//! hang-up that tells the peer the port is gone.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg,
    sendmsg,
};

/// Tag byte of a wake token.
pub const TAG_WAKE: u8 = b'W';
/// Tag byte of a message carrying descriptors (an attachment), or the last
/// part of an attachment sent in several messages.
pub const TAG_ATTACH: u8 = b'A';
/// Tag byte of every part but the last of an attachment sent in several
/// messages.
pub const TAG_MORE: u8 = b'M';
/// Tag byte of a link's invitation: the link's number and the far end of
/// its socket (`crate::link`), sent on a port's socket before the first
/// record that names kits in the link's arenas.
pub const TAG_LINK: u8 = b'L';
/// Tag byte of a channel's move to a new segment: the segment's memfd and
/// the receiver's end of the new socket pair, sent on the old socket
/// (`crate::port`, moving a channel).
pub const TAG_MOVED: u8 = b'V';
/// Most descriptors one socket message carries (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;
/// Largest attachment body, tag included.
pub const MAX_BODY: usize = 4096;

/// A connected pair, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Is `fd` a `SOCK_SEQPACKET` Unix socket?
pub fn is_seqpacket(fd: impl AsFd) -> bool {
    matches!(
        rustix::net::sockopt::socket_type(fd),
        Ok(SocketType::SEQPACKET)
    )
}

/// Send a wake token. A full socket buffer already holds tokens, so it counts
/// as success. A hung-up peer is `BrokenPipe`.
pub fn send_wake(fd: impl AsFd) -> io::Result<()> {
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    match rustix::net::send(fd, &[TAG_WAKE], flags) {
        Ok(_) | Err(Errno::AGAIN) => Ok(()),
        Err(e) => Err(hangup_as_broken_pipe(e)),
    }
}

fn hangup_as_broken_pipe(e: Errno) -> io::Error {
    match e {
        Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN => io::ErrorKind::BrokenPipe.into(),
        e => e.into(),
    }
}

/// Send one attachment, or one part of it: `body` (after the tag byte) and
/// `fds`, in one message, so it arrives whole or not at all; tagged
/// [`TAG_ATTACH`] if `last`, else [`TAG_MORE`]. `WouldBlock` when the socket
/// buffer is full and `block` is false; `BrokenPipe` when the peer hung up.
pub fn send_attachment(
    fd: impl AsFd,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
    last: bool,
    block: bool,
) -> io::Result<()> {
    if fds.len() > MAX_FDS || body.len() + 1 > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors or too large an attachment for one message",
        ));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed);
    }
    let mut flags = SendFlags::NOSIGNAL;
    if !block {
        flags |= SendFlags::DONTWAIT;
    }
    let tag = [if last { TAG_ATTACH } else { TAG_MORE }];
    let iov = [io::IoSlice::new(&tag), io::IoSlice::new(body)];
    loop {
        match sendmsg(&fd, &iov, &mut control, flags) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(hangup_as_broken_pipe(e)),
        }
    }
}

/// What one receive found.
#[derive(Debug)]
pub enum Incoming {
    /// Nothing queued (non-blocking receive).
    Empty,
    /// A wake token.
    Wake,
    /// An attachment, or the last part of one sent in several messages:
    /// its body (after the tag) and descriptors.
    Attachment(Vec<u8>, Vec<OwnedFd>),
    /// A part of an attachment, not the last: its body (after the tag) and
    /// descriptors.
    Part(Vec<u8>, Vec<OwnedFd>),
    /// The other end is closed: its owner closed it or died. Nothing more
    /// is queued.
    HungUp,
    /// The other end was closed while messages we sent were still unread
    /// (`ECONNRESET`). The kernel reports this once, before the messages
    /// still queued for us: keep reading them, up to [`Incoming::HungUp`].
    Reset,
    /// An attachment (or its last part) whose descriptors could not be
    /// received (this process ran out of descriptors); the kernel closed
    /// them.
    Lost,
    /// [`Incoming::Lost`] for a part that is not the last.
    LostPart,
    /// A link's invitation: its number and the far end of its socket.
    Link(u64, OwnedFd),
    /// A link's invitation whose descriptor could not be received (this
    /// process is out of descriptors): its number.
    LinkLost(u64),
    /// The channel moved: its new segment and this side's new socket.
    Moved(OwnedFd, OwnedFd),
    /// Something the protocol does not send (unknown tag, truncated
    /// message or descriptors). Any descriptors that came with it were
    /// closed.
    Garbage,
}

/// Send a link's invitation (see [`TAG_LINK`]).
pub fn send_link(fd: impl AsFd, id: u64, link: BorrowedFd<'_>) -> io::Result<()> {
    let mut body = [0u8; 9];
    body[0] = TAG_LINK;
    body[1..].copy_from_slice(&id.to_le_bytes());
    send_tagged(fd, &body, &[link])
}

/// Send a channel's move (see [`TAG_MOVED`]).
pub fn send_moved(fd: impl AsFd, seg: BorrowedFd<'_>, sock: BorrowedFd<'_>) -> io::Result<()> {
    send_tagged(fd, &[TAG_MOVED], &[seg, sock])
}

/// Send `body` (its tag first) with `fds`, blocking while the socket is full.
fn send_tagged(fd: impl AsFd, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
    debug_assert!(pushed);
    let iov = [io::IoSlice::new(body)];
    loop {
        match sendmsg(&fd, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(hangup_as_broken_pipe(e)),
        }
    }
}

/// Receive one message.
pub fn recv(fd: impl AsFd, block: bool) -> io::Result<Incoming> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; MAX_BODY];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if !block {
        flags |= RecvFlags::DONTWAIT;
    }
    let got = loop {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        match recvmsg(&fd, &mut iov, &mut control, flags) {
            Ok(m) => break m,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(Incoming::Empty),
            Err(Errno::CONNRESET) => return Ok(Incoming::Reset),
            Err(e) => return Err(e.into()),
        }
    };
    let mut received = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            received.extend(it);
        }
    }
    if got.bytes == 0 && received.is_empty() {
        // End of file, or an empty message (which the protocol never
        // sends): the kernel reports both alike. Only at the end is the
        // peer's side shut down.
        let mut pfd = [PollFd::new(&fd, PollFlags::RDHUP)];
        let shut = match poll(&mut pfd, Some(&Timespec::default())) {
            Ok(_) => pfd[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP),
            Err(_) => true,
        };
        return Ok(if shut {
            Incoming::HungUp
        } else {
            Incoming::Garbage
        });
    }
    if got.flags.contains(ReturnFlags::TRUNC) {
        return Ok(Incoming::Garbage);
    }
    let fds_lost = got.flags.contains(ReturnFlags::CTRUNC);
    match buf[0] {
        // The kernel could not install every descriptor (this process is
        // out of descriptors): they are gone, closed by the kernel.
        TAG_ATTACH if fds_lost => Ok(Incoming::Lost),
        TAG_LINK if fds_lost && got.bytes == 9 => Ok(Incoming::LinkLost(u64::from_le_bytes(
            buf[1..9].try_into().expect("eight bytes"),
        ))),
        TAG_MORE if fds_lost => Ok(Incoming::LostPart),
        _ if fds_lost => Ok(Incoming::Garbage),
        TAG_WAKE if received.is_empty() && got.bytes == 1 => Ok(Incoming::Wake),
        TAG_ATTACH => Ok(Incoming::Attachment(buf[1..got.bytes].to_vec(), received)),
        TAG_MOVED if got.bytes == 1 && received.len() == 2 => {
            let sock = received.pop().expect("two descriptors");
            let seg = received.pop().expect("two descriptors");
            Ok(Incoming::Moved(seg, sock))
        }
        TAG_LINK if got.bytes == 9 && received.len() == 1 => {
            let id = u64::from_le_bytes(buf[1..9].try_into().expect("eight bytes"));
            Ok(Incoming::Link(id, received.pop().expect("one descriptor")))
        }
        TAG_MORE => Ok(Incoming::Part(buf[1..got.bytes].to_vec(), received)),
        _ => Ok(Incoming::Garbage),
    }
}

/// Readiness of the socket after [`wait`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    /// Something to receive (or hang-up).
    pub readable: bool,
    /// The other end is gone.
    pub hung_up: bool,
}

/// Wait until the socket is readable (or writable, if asked), or until
/// `timeout` passes (`None`: no limit).
pub fn wait(fd: impl AsFd, writable: bool, timeout: Option<Duration>) -> io::Result<Ready> {
    wait_or(fd, None, writable, timeout)
}

/// [`wait`], also returning when `kick` is readable.
pub fn wait_or(
    fd: impl AsFd,
    kick: Option<BorrowedFd<'_>>,
    writable: bool,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let mut events = PollFlags::IN;
    if writable {
        events |= PollFlags::OUT;
    }
    let ts = timeout.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let fd = fd.as_fd();
    let mut pfd = [
        PollFd::new(&fd, events),
        PollFd::new(&fd, PollFlags::empty()),
    ];
    let n = match &kick {
        Some(k) => {
            pfd[1] = PollFd::new(k, PollFlags::IN);
            2
        }
        None => 1,
    };
    loop {
        match poll(&mut pfd[..n], ts.as_ref()) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let r = pfd[0].revents();
    Ok(Ready {
        readable: r.contains(PollFlags::IN),
        hung_up: r.intersects(PollFlags::HUP | PollFlags::ERR),
    })
}

/// Which of these sockets' other ends are gone (hang-up or error), in one
/// `poll` that does not wait. An error of `poll` itself reports none gone.
pub fn hung_up(fds: &[BorrowedFd<'_>]) -> Vec<bool> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::empty()))
        .collect();
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut pfds, Some(&zero)) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(_) => return vec![false; fds.len()],
        }
    }
    pfds.iter()
        .map(|p| p.revents().intersects(PollFlags::HUP | PollFlags::ERR))
        .collect()
}

// ------------------------------------------------------------- rendezvous
//
// A listening `SOCK_SEQPACKET` socket at a filesystem path or an abstract
// name: a process connects to it to get its first port.

/// Where a rendezvous socket lives.
#[derive(Debug, Clone, Copy)]
pub enum UnixAddr<'a> {
    /// A filesystem path (a socket file).
    Path(&'a std::path::Path),
    /// A Linux abstract name (no file; the leading NUL is implied).
    Abstract(&'a [u8]),
}

impl UnixAddr<'_> {
    fn to_sockaddr(self) -> io::Result<rustix::net::SocketAddrUnix> {
        let too_long = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
        match self {
            UnixAddr::Path(p) => {
                if p.as_os_str().is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "empty socket path",
                    ));
                }
                rustix::net::SocketAddrUnix::new(p).map_err(|e| match e {
                    Errno::NAMETOOLONG => too_long("socket path longer than 107 bytes"),
                    e => e.into(),
                })
            }
            UnixAddr::Abstract(name) => {
                if name.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "empty abstract socket name",
                    ));
                }
                rustix::net::SocketAddrUnix::new_abstract_name(name)
                    .map_err(|_| too_long("abstract socket name longer than 107 bytes"))
            }
        }
    }
}

/// Identity of a file (device and inode), to recognise a socket file later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

/// The socket file at `path`, if that is what is there (not following a
/// symbolic link).
fn socket_file_id(path: &std::path::Path) -> io::Result<Option<FileId>> {
    let st = rustix::fs::lstat(path)?;
    let is_socket =
        rustix::fs::FileType::from_raw_mode(st.st_mode as _) == rustix::fs::FileType::Socket;
    Ok(is_socket.then_some(FileId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
    }))
}

/// Remove the socket file at `path` if it is still `id` (not a file someone
/// put there since). Errors are ignored: this runs when a listener drops.
pub fn remove_socket_file(path: &std::path::Path, id: FileId) {
    if let Ok(Some(now)) = socket_file_id(path) {
        if now == id {
            let _ = rustix::fs::unlink(path);
        }
    }
}

/// A listening `SOCK_SEQPACKET` socket at `addr`: non-blocking (accepts
/// never wait), close-on-exec. A socket file is made with mode 0600 (set on
/// the socket before `bind`, so the file never exists with wider access, and
/// again on the file after it). Returns the socket file's identity for
/// [`remove_socket_file`]. An existing file at the path is `AddrInUse`.
pub fn listen(addr: UnixAddr<'_>, backlog: i32) -> io::Result<(OwnedFd, Option<FileId>)> {
    use rustix::fs::Mode;
    let sa = addr.to_sockaddr()?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let private = Mode::RUSR | Mode::WUSR;
    if let UnixAddr::Path(_) = addr {
        // The file `bind` makes takes the socket inode's mode (minus umask).
        rustix::fs::fchmod(&fd, private)?;
    }
    match rustix::net::bind(&fd, &sa) {
        Ok(()) => {}
        Err(Errno::ADDRINUSE) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                match addr {
                    UnixAddr::Path(p) => format!(
                        "{} already exists (a stale socket? remove it if no listener uses it)",
                        p.display()
                    ),
                    UnixAddr::Abstract(n) => format!(
                        "abstract socket name {:?} is already in use",
                        String::from_utf8_lossy(n)
                    ),
                },
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let id = match addr {
        UnixAddr::Path(p) => {
            // If the path no longer holds a socket, someone replaced our
            // file: fail, and leave theirs alone.
            let id = socket_file_id(p)?.ok_or_else(|| {
                io::Error::other(format!("{} was replaced right after bind", p.display()))
            })?;
            if let Err(e) = rustix::fs::chmod(p, private) {
                remove_socket_file(p, id);
                return Err(e.into());
            }
            Some(id)
        }
        UnixAddr::Abstract(_) => None,
    };
    if let Err(e) = rustix::net::listen(&fd, backlog) {
        if let (UnixAddr::Path(p), Some(id)) = (addr, id) {
            remove_socket_file(p, id);
        }
        return Err(e.into());
    }
    Ok((fd, id))
}

/// Accept one pending connection, without waiting: `None` when none is
/// pending. The connection is non-blocking and close-on-exec.
pub fn accept(listener: impl AsFd) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => return Ok(Some(fd)),
            // A connection that went away while queued: try the next one.
            Err(Errno::INTR) | Err(Errno::CONNABORTED) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The credentials (pid, uid, gid) of the process that connected `conn`,
/// as the kernel recorded them at `connect` (`SO_PEERCRED`). The pid is 0
/// when that process is outside this process's PID namespace.
pub fn peer_credentials(conn: impl AsFd) -> io::Result<(u32, u32, u32)> {
    // Not rustix's `socket_peercred`: its `UCred` holds the pid as a
    // non-zero type, and the kernel does report 0 (a peer in an ancestor PID
    // namespace), which that type cannot hold.
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live, writable locals; `len` holds the
    // size of `cred`, so the kernel writes at most that many bytes into it;
    // the descriptor is borrowed for the duration of the call.
    let r = unsafe {
        libc::getsockopt(
            conn.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short answer"));
    }
    Ok((cred.pid as u32, cred.uid, cred.gid))
}

/// Connect a close-on-exec `SOCK_SEQPACKET` socket to the listener at
/// `addr`, waiting at most `timeout` while the listener's queue is full
/// (`TimedOut`). No socket at a path is `NotFound`, nothing listening is
/// `ConnectionRefused`, a socket of another type is `InvalidData`.
pub fn connect(addr: UnixAddr<'_>, timeout: Duration) -> io::Result<OwnedFd> {
    let sa = addr.to_sockaddr()?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // A full accept queue makes `connect` wait, at most the send timeout
        // (zero would mean no limit).
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Send,
            Some(left.max(Duration::from_micros(1))),
        )?;
        match rustix::net::connect(&fd, &sa) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) if std::time::Instant::now() < deadline => continue,
            Err(Errno::INTR) | Err(Errno::AGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the listener's queue stayed full",
                ));
            }
            Err(Errno::PROTOTYPE) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the socket there is not a SOCK_SEQPACKET socket",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
