//! The port's socket: one end of a `SOCK_SEQPACKET` pair per port.
//!
//! It carries three things: one-byte wake tokens (sent only when the other
//! side announced in the segment that it sleeps), descriptors (`SCM_RIGHTS`,
//! always sent before the ring record that refers to them), and — by being
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
/// Tag byte of a message carrying descriptors (an attachment).
pub const TAG_ATTACH: u8 = b'A';
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

/// Send one attachment: `body` (after the tag byte) and `fds`, in one
/// message, so it arrives whole or not at all. `WouldBlock` when the socket
/// buffer is full and `block` is false; `BrokenPipe` when the peer hung up.
pub fn send_attachment(
    fd: impl AsFd,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
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
    let iov = [io::IoSlice::new(&[TAG_ATTACH]), io::IoSlice::new(body)];
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
    /// An attachment: its body (after the tag) and descriptors.
    Attachment(Vec<u8>, Vec<OwnedFd>),
    /// The other end is closed: its owner closed it or died.
    HungUp,
    /// Something the protocol does not send (unknown tag, truncated
    /// message or descriptors). Any descriptors that came with it were
    /// closed.
    Garbage,
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
            Err(Errno::CONNRESET) => return Ok(Incoming::HungUp),
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
        return Ok(Incoming::HungUp);
    }
    let truncated = got
        .flags
        .intersects(ReturnFlags::CTRUNC | ReturnFlags::TRUNC);
    match buf[0] {
        _ if truncated => Ok(Incoming::Garbage),
        TAG_WAKE if received.is_empty() && got.bytes == 1 => Ok(Incoming::Wake),
        TAG_ATTACH => Ok(Incoming::Attachment(buf[1..got.bytes].to_vec(), received)),
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
    let mut events = PollFlags::IN;
    if writable {
        events |= PollFlags::OUT;
    }
    let ts = timeout.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let mut pfd = [PollFd::new(&fd, events)];
    loop {
        match poll(&mut pfd, ts.as_ref()) {
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
