//! What the tests whose peer is raw (`shmport::testing::fuzzing::RawPeer`:
//! the segment and the socket, written as a hostile process would) share.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use rustix::fs::{MemfdFlags, SealFlags};
use shmport::testing::fuzzing::RawPeer;
use shmport::{CloseReason, MessagePort, PostError, RecvError};

/// One case at a time: descriptor counts are per process.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `case` and check that the descriptors open afterwards are exactly
/// those open before.
pub fn leaks_nothing(what: &str, case: impl FnOnce()) {
    let before = super::open_fds();
    case();
    let after = super::open_fds();
    assert_eq!(before, after, "{what}: descriptors left open");
}

/// Send one raw `SOCK_SEQPACKET` message with `fds` attached.
pub fn send(peer: &RawPeer, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)));
    }
    rustix::net::sendmsg(
        peer.sock(),
        &[IoSlice::new(bytes)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )
    .unwrap();
}

/// An attachment: the tag, then `body`.
pub fn attach(peer: &RawPeer, body: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut b = vec![b'A'];
    b.extend_from_slice(body);
    send(peer, &b, fds);
}

/// A memfd holding `content`, of `size` bytes, with `seals`.
pub fn memfd(content: &[u8], size: usize, seals: SealFlags) -> OwnedFd {
    let fd = rustix::fs::memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, size as u64).unwrap();
    rustix::io::pwrite(&fd, content, 0).unwrap();
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

pub const SIZE_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// The port is closed for protocol error, both ways, and the process's
/// other ports work.
pub fn assert_protocol_error(what: &str, victim: &MessagePort) {
    let got = victim.try_recv();
    assert!(
        matches!(got, Err(RecvError::Closed(CloseReason::ProtocolError))),
        "{what}: {got:?}"
    );
    assert!(
        matches!(
            victim.try_post_bytes(b"x"),
            Err(PostError::Closed(CloseReason::ProtocolError))
        ),
        "{what}: posts must fail too"
    );
    let (a, b) = shmport::MessageChannel::new().unwrap().into_ports();
    a.post_bytes(what.as_bytes()).unwrap();
    assert_eq!(b.try_recv().unwrap().bytes(), what.as_bytes());
}
