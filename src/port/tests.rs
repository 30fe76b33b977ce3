//! Port internals that only a misbehaving peer reaches: driven here through
//! the sending half's own steps.

use super::parts::rewind_min;
use super::*;
use crate::error::{CloseReason, PostError, RecvError};
use crate::shm::layout::OOL_DESCRIPTOR;
use crate::shm::ring::{Kind, REWIND_MIN, RecordMeta, RingMemory};
use crate::sys;
use crate::wire::attachment::Attachment;

/// Publish an out-of-line record whose memfd has only `seals`.
fn post_out_of_line_with(a: &MessagePort, payload: &[u8], seals: rustix::fs::SealFlags) {
    let fd = sys::memfd::create("test-ool", payload.len()).unwrap();
    sys::memfd::write_all_at(&fd, payload, 0).unwrap();
    sys::memfd::seal(&fd, seals).unwrap();
    let tx = a.tx();
    let slot = tx.reserve(OOL_DESCRIPTOR, Wait::No, None).unwrap();
    let att = Attachment {
        ool: Some(fd),
        pool: None,
        ports: Vec::new(),
        lost: false,
    };
    tx.send_attachment(&att, Wait::No, None).unwrap();
    // SAFETY: the slot holds at least OOL_DESCRIPTOR bytes, 32-byte aligned,
    // written only by this producer until commit.
    unsafe {
        slot.payload
            .cast::<u64>()
            .as_ptr()
            .write(payload.len() as u64)
    };
    let meta = RecordMeta {
        kind: Kind::Raw,
        out_of_line: true,
        pool: false,
        announce: false,
        kits: false,
        nports: 0,
        fingerprint: 0,
    };
    tx.commit(slot, OOL_DESCRIPTOR, meta);
}

#[test]
fn untrusted_ports_refuse_out_of_line_payloads_that_can_still_be_written() {
    let (a, b) = MessagePort::pair(1 << 20, DEFAULT_SPIN).unwrap();
    let payload = vec![3u8; 10_000];
    // Without the write seal: a validated port takes it, an untrusted one
    // refuses it (that message only).
    post_out_of_line_with(&a, &payload, sys::memfd::SIZE_SEALS);
    assert_eq!(b.recv().unwrap().bytes(), &payload[..]);
    b.set_trust(Trust::Untrusted);
    post_out_of_line_with(&a, &payload, sys::memfd::SIZE_SEALS);
    assert!(matches!(b.recv(), Err(RecvError::Refused(_))));
    // With it, accepted, and the port went on.
    post_out_of_line_with(&a, &payload, sys::memfd::OOL_SEALS);
    let m = b.recv().unwrap();
    assert!(m.is_out_of_line());
    assert_eq!(m.bytes(), &payload[..]);
}

#[test]
fn a_published_record_is_a_successful_post_even_if_the_peer_left_since() {
    let (a, b) = MessagePort::pair(1 << 20, DEFAULT_SPIN).unwrap();
    // The receiver announces that it sleeps, so the commit owes a wake-up;
    // then it goes before the record is published.
    assert!(b.prepare_poll());
    let slot = a.tx().reserve(8, Wait::No, None).unwrap();
    drop(b);
    let meta = RecordMeta {
        kind: Kind::Raw,
        out_of_line: false,
        pool: false,
        announce: false,
        kits: false,
        nports: 0,
        fingerprint: 0,
    };
    // The wake-up finds the socket closed: the post still succeeded (the
    // record was published, `commit` cannot fail); the next one reports the
    // close.
    a.tx().commit(slot, 8, meta);
    assert!(matches!(
        a.post_bytes(b"x"),
        Err(crate::error::PostError::Closed(_))
    ));
}

#[test]
fn a_port_its_peer_corrupted_during_a_failed_transfer_comes_back_broken() {
    let (p, _q) = MessagePort::pair(1 << 20, DEFAULT_SPIN).unwrap();
    let (x, y) = MessagePort::pair(1 << 20, DEFAULT_SPIN).unwrap();
    // x's peer is gone: the transfer fails after `p` was taken apart.
    drop(y);
    // Meanwhile p's peer writes a misaligned head into p's sending ring
    // (what the other process of `_q` could do at any time).
    p.tx()
        .tx
        .borrow()
        .memory()
        .header()
        .consumer
        .head
        .store(3, Ordering::Relaxed);

    let err = x.post_bytes_with_ports(b"take p", vec![p]).unwrap_err();
    assert!(matches!(err.error, PostError::Closed(_)), "{err}");
    // The port is handed back, not lost; it reports the protocol error.
    let [p]: [MessagePort; 1] = err.ports.try_into().expect("one port back");
    assert!(matches!(
        p.try_recv(),
        Err(RecvError::Closed(CloseReason::ProtocolError))
    ));
    assert!(matches!(
        p.post_bytes(b"x"),
        Err(PostError::Closed(CloseReason::ProtocolError))
    ));
}

#[test]
fn a_port_handed_back_from_a_failed_transfer_keeps_its_queued_messages() {
    let (p, q) = MessagePort::pair(1 << 20, DEFAULT_SPIN).unwrap();
    let (x, y) = MessagePort::pair(1 << 20, DEFAULT_SPIN).unwrap();
    q.post_bytes(b"queued for p").unwrap();
    drop(y);
    let err = x.post_bytes_with_ports(b"take p", vec![p]).unwrap_err();
    let [p]: [MessagePort; 1] = err.ports.try_into().expect("one port back");
    assert_eq!(p.recv().unwrap().bytes(), b"queued for p");
    p.post_bytes(b"back").unwrap();
    assert_eq!(q.recv().unwrap().bytes(), b"back");
}

#[test]
fn rings_rewind_only_when_large_for_the_cache() {
    let llc = crate::sys::cache::last_level_bytes();
    assert_eq!(rewind_min(llc / 4), usize::MAX);
    assert_eq!(rewind_min(llc), REWIND_MIN);
}
