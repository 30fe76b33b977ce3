//! Defects found in review, each kept as a test of its fix.

mod common;

use std::time::Duration;

use common::{peer, role};
use shmport::layout::{KIND_RAW, RecordInfo, pack_info};
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
    assert_eq!(role, "ool-then-exit");
    let port = MessagePort::from_parent().unwrap();
    // Out of line in the default 1 MiB ring; exit with the port open.
    port.post_bytes(&vec![5u8; 1 << 20]).unwrap();
    std::process::exit(0);
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
