//! Defects found in review, each kept as a test of its fix.

mod common;

use std::time::Duration;

use common::{peer, role};
use shmport::testing::layout::{KIND_RAW, RecordInfo, pack_info};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

fn small() -> (MessagePort, MessagePort) {
    MessageChannel::builder()
        .capacity(4096)
        .spin(Duration::ZERO)
        .build()
        .unwrap()
        .into_ports()
}

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        "ool-then-exit" => {
            // Out of line in the default 1 MiB ring; exit with the port open.
            port.post_bytes(&vec![5u8; 1 << 20]).unwrap();
            std::process::exit(0);
        }
        "fd-starved" => fd_starved(port),
        other => panic!("unknown role {other}"),
    }
}

/// Fill the descriptor table, receive an out-of-line message (its memfd
/// cannot be installed), then free descriptors and receive another.
fn fd_starved(port: MessagePort) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = Some(64);
    setrlimit(Resource::Nofile, lim).unwrap();
    let mut hold = Vec::new();
    while let Ok(fd) = rustix::io::dup(std::io::stdin()) {
        hold.push(fd);
    }
    port.post(&"starved".to_string()).unwrap();
    match port.recv() {
        Err(RecvError::Io(e)) => assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::MFILE.raw_os_error())
        ),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    drop(hold);
    port.post(&"recovered".to_string()).unwrap();
    let m = port.recv().unwrap();
    assert_eq!(m.bytes().len(), 2 << 20);
    assert!(m.bytes().iter().all(|&b| b == 2));
}

/// A failed send to a dead peer must not stop the port from reading the
/// attachments still queued for records the peer committed before dying.
#[test]
fn a_failed_send_does_not_hide_queued_attachments() {
    let (mut child, a) = shmport::spawn(peer("ool-then-exit")).unwrap();
    assert!(child.wait().unwrap().success());
    // Out of line: sending the attachment fails (the peer is gone).
    assert!(a.post_bytes(&vec![1u8; 2 << 20]).is_err());
    let m = a.recv().unwrap();
    assert_eq!(m.bytes().len(), 1 << 20);
    drop(m);
    assert!(matches!(
        a.recv(),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));
}

/// Two ports, both rings full, each having consumed one message: each post
/// must find the room the other released.
#[test]
fn posts_waiting_for_room_see_space_released_by_their_own_port() {
    let (a, b) = small();
    let msg = [0u8; 64];
    while a.try_post_bytes(&msg).is_ok() {}
    while b.try_post_bytes(&msg).is_ok() {}
    drop(b.recv().unwrap());
    let t = std::thread::spawn(move || {
        let r = a.post_bytes_timeout(&msg, Duration::from_secs(5));
        while a.try_recv().is_ok() {}
        (r, a)
    });
    let rb = b.post_bytes_timeout(&msg, Duration::from_secs(5));
    let (ra, _a) = t.join().unwrap();
    assert!(ra.is_ok() && rb.is_ok(), "a: {ra:?}, b: {rb:?}");
}

/// Payload bytes of an earlier lap that look like a committed header must
/// not be taken as a record.
#[test]
fn stale_payload_bytes_are_never_a_record() {
    let (a, b) = small();
    let cap = 4096u64;
    // Lap 0: a 2000-byte payload whose bytes at ring offset 64 forge the
    // header of position cap + 64 (lap 1), followed by more messages.
    let mut p = vec![0u8; 2000];
    p[32..40].copy_from_slice(&(cap + 64 + 1).to_le_bytes());
    p[40..48].copy_from_slice(
        &pack_info(RecordInfo {
            len: 5,
            kind: KIND_RAW,
            flags: 0,
            nports: 0,
        })
        .to_le_bytes(),
    );
    p[64..69].copy_from_slice(b"ghost");
    a.post_bytes(&p).unwrap();
    drop(b.recv().unwrap());
    a.post_bytes(&[0u8; 2016]).unwrap();
    drop(b.recv().unwrap());
    a.post_bytes(b"real").unwrap();
    assert_eq!(b.recv().unwrap().bytes(), b"real");
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)), "phantom");
    for i in 0..5u64 {
        a.post(&(i, [7u64; 20])).unwrap();
    }
    for i in 0..5u64 {
        let m = b.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(m.get::<(u64, [u64; 20])>().unwrap().0, i);
    }
}

/// A port travelling in a message that nobody reads before its carrier is
/// dropped is closed properly: its peer sees Closed, not PeerDied.
#[test]
fn ports_in_unread_messages_close_when_the_receiver_drops() {
    let (a, b) = small();
    let (p1, p2) = small();
    a.post_bytes_with_ports(b"x", vec![p2]).unwrap();
    drop(b);
    assert!(matches!(
        p1.recv_timeout(Duration::from_secs(2)),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

/// Descriptors of this process that are shmport channel segments.
fn segment_fds() -> Vec<i32> {
    common::open_fds()
        .into_iter()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|t| t.to_string_lossy().starts_with("/memfd:shmport-channel"))
                .unwrap_or(false)
        })
        .collect()
}

/// A bad port after a good one in the same message: `take_ports` fails,
/// and hands over the good one, still open.
#[test]
fn take_ports_hands_over_the_valid_ports_when_one_is_bad() {
    use std::os::fd::{AsFd, BorrowedFd};
    let (a, b) = small();
    let before = segment_fds();
    let (q1, q2) = small();
    let seg: Vec<i32> = segment_fds()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(seg.len(), 1);
    let pipe = rustix::pipe::pipe().unwrap();
    let (junk_sock, _other) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    // A forged attachment with two ports: q2's real socket and segment, then
    // a port whose "segment" is a pipe.
    let port = |side: u8| {
        let mut v = vec![side];
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    };
    let mut body = vec![0u8];
    body.extend_from_slice(&2u16.to_le_bytes());
    body.extend(port(1));
    body.extend(port(1));
    {
        // SAFETY: `seg[0]` is q2's segment descriptor, open for as long as
        // q2 lives (it is forgotten below, never closed by this test).
        let seg_fd = unsafe { BorrowedFd::borrow_raw(seg[0]) };
        let fds = [q2.as_fd(), seg_fd, junk_sock.as_fd(), pipe.0.as_fd()];
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        let iov = [std::io::IoSlice::new(b"A"), std::io::IoSlice::new(&body)];
        rustix::net::sendmsg(&a, &iov, &mut control, rustix::net::SendFlags::empty()).unwrap();
    }
    // q2 now travels; keep its descriptors open here (no close event).
    std::mem::forget(q2);
    // A record carrying two ports: b pairs it with the forged attachment.
    let (_g1, g2) = small();
    let (_h1, h2) = small();
    // Used ports (not channels made for this message): they travel with
    // their descriptors, which b pairs with the forged attachment.
    let _ = (g2.max_inline_payload(), h2.max_inline_payload());
    a.post_bytes_with_ports(b"x", vec![g2, h2]).unwrap();
    let mut m = b.recv().unwrap();
    assert_eq!(m.port_count(), 2);
    let err = m.take_ports().unwrap_err();
    assert!(
        matches!(err.error, shmport::OpenError::BadDescriptor(_)),
        "{err}"
    );
    assert_eq!(err.ports.len(), 1);
    // The good port is open and entangled with q1.
    err.ports[0].post(&9u8).unwrap();
    assert_eq!(*q1.recv().unwrap().get::<u8>().unwrap(), 9);
}

/// Out of descriptors while an out-of-line message arrives: an error for
/// that message; the port keeps working once descriptors are free again.
#[test]
fn running_out_of_descriptors_fails_one_message_not_the_port() {
    let (mut child, port) = shmport::spawn(peer("fd-starved")).unwrap();
    assert_eq!(
        port.recv().unwrap().get::<String>().unwrap().as_str(),
        "starved"
    );
    port.post_bytes(&vec![1u8; 2 << 20]).unwrap();
    assert_eq!(
        port.recv().unwrap().get::<String>().unwrap().as_str(),
        "recovered"
    );
    port.post_bytes(&vec![2u8; 2 << 20]).unwrap();
    assert!(child.wait().unwrap().success());
}
