//! The calls a relay (a bridge to another host) uses: posting a message
//! as it came, and passing on why the far peer went away.

use shmport::{AccessError, CloseReason, MessageChannel, PostError, RecvError};

fn closed(r: Result<shmport::Message<'_>, RecvError>) -> CloseReason {
    match r {
        Err(RecvError::Closed(reason)) => reason,
        other => panic!(
            "expected the close event, got {:?}",
            other.map(|m| m.bytes().len())
        ),
    }
}

#[test]
fn relayed_reasons_arrive_after_the_messages_and_fail_the_peers_posts() {
    for reason in [
        CloseReason::PeerDied,
        CloseReason::ProtocolError,
        CloseReason::Closed,
    ] {
        let (app, relay) = MessageChannel::new().unwrap().into_ports();
        relay.post_bytes(b"one").unwrap();
        relay.post_bytes(b"two").unwrap();
        relay.close_with_reason(reason);
        assert!(matches!(app.post_bytes(b"x"), Err(PostError::Closed(r)) if r == reason));
        assert_eq!(app.recv().unwrap().bytes(), b"one");
        assert_eq!(app.recv().unwrap().bytes(), b"two");
        assert_eq!(closed(app.recv()), reason);
    }
}

#[test]
fn a_relayed_reason_reaches_a_port_that_moved() {
    let (app, relay) = MessageChannel::new().unwrap().into_ports();
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    a.post_with_ports(&(), vec![app]).unwrap();
    let moved = b.recv().unwrap().take_ports().unwrap().pop().unwrap();
    relay.close_with_reason(CloseReason::PeerDied);
    assert_eq!(closed(moved.recv()), CloseReason::PeerDied);
}

#[test]
fn forwarded_messages_keep_their_type_kind_and_ports() {
    let (src, mid) = MessageChannel::new().unwrap().into_ports();
    let (out, dst) = MessageChannel::new().unwrap().into_ports();
    let (keep, carried) = MessageChannel::new().unwrap().into_ports();
    src.post(&(9u64, "nine".to_string())).unwrap();
    src.post_bytes(b"raw").unwrap();
    for ports in [vec![carried], Vec::new()] {
        let msg = mid.recv().unwrap();
        out.post_forwarded(msg.bytes(), msg.fingerprint(), ports)
            .unwrap();
    }
    let mut typed = dst.recv().unwrap();
    assert_eq!(typed.get::<(u64, String)>().unwrap().1, "nine");
    assert!(matches!(
        typed.get::<u32>(),
        Err(AccessError::TypeMismatch { .. })
    ));
    let got = typed.take_ports().unwrap().pop().unwrap();
    keep.post_bytes(b"through").unwrap();
    assert_eq!(got.recv().unwrap().bytes(), b"through");
    let raw = dst.recv().unwrap();
    assert!(!raw.is_typed());
    assert_eq!(raw.bytes(), b"raw");
}

#[test]
fn try_post_forwarded_on_a_full_ring_hands_the_ports_back() {
    let (a, _b) = MessageChannel::builder()
        .capacity(4096)
        .build()
        .unwrap()
        .into_ports();
    let (_keep, carried) = MessageChannel::new().unwrap().into_ports();
    while a.try_post_bytes(&[1; 512]).is_ok() {}
    let e = a
        .try_post_forwarded(&[2; 512], 0, vec![carried])
        .unwrap_err();
    assert!(matches!(e.error, PostError::Full));
    assert_eq!(e.ports.len(), 1);
}
