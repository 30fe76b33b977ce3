//! Ports that travel inside messages, within a process and along a chain
//! of processes.

mod common;

use std::time::Duration;

use common::{peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, PostError, RecvError};

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    assert_eq!(role, "relay");
    relay();
}

/// Receive the travelling port and a hop count from the parent; pass the
/// port on to a new child, or, at the end of the chain, read every message
/// from it.
fn relay() {
    let up = MessagePort::from_parent().unwrap();
    let mut m = up.recv().unwrap();
    let hops = m.get::<u32>().unwrap().to_native();
    let port = m.take_ports().unwrap().pop().expect("a port");
    drop(m);
    if hops > 0 {
        let (mut child, down) = shmport::spawn(peer("relay")).unwrap();
        down.post_with_ports(&(hops - 1), vec![port]).unwrap();
        assert!(child.wait().unwrap().success(), "relay {hops} failed");
        return;
    }
    let mut next = 0u64;
    loop {
        match port.recv() {
            Ok(m) => {
                let v = m.get::<u64>().unwrap().to_native();
                assert_eq!(v, next, "lost, doubled or reordered");
                next += 1;
            }
            Err(RecvError::Closed(CloseReason::Closed)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(next, CHAIN_MESSAGES);
}

const CHAIN_MESSAGES: u64 = 200_000;

#[test]
fn a_port_passed_along_five_processes_loses_and_reorders_nothing() {
    let (far, travelling) = MessageChannel::new().unwrap().into_ports();
    // Messages posted before the first hop travel with the port.
    for i in 0..1000u64 {
        far.post(&i).unwrap();
    }
    let (mut first, carrier) = shmport::spawn(peer("relay")).unwrap();
    // 4 more hops after the first relay: 5 relay processes in all.
    carrier.post_with_ports(&4u32, vec![travelling]).unwrap();
    // The far peer keeps posting during the hops; the ring fills and the
    // posts wait for whichever process holds the port by then.
    for i in 1000..CHAIN_MESSAGES {
        far.post(&i).unwrap();
    }
    far.close();
    assert!(first.wait().unwrap().success());
}

#[test]
fn queued_messages_and_ports_inside_them_move_with_the_port() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (x, t) = MessageChannel::builder()
        .capacity(64 * 1024)
        .build()
        .unwrap()
        .into_ports();
    let (p, q) = MessageChannel::new().unwrap().into_ports();
    let big = vec![7u8; 200 * 1024]; // out of line in a 64 KiB ring
    for i in 0..10u64 {
        x.post(&i).unwrap();
    }
    x.post_with_ports(&"inner".to_string(), vec![q]).unwrap();
    x.post_bytes_with_ports(&big, vec![]).unwrap();
    x.post_bytes(b"last").unwrap();

    // t hops twice before anyone reads it.
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    a.post_with_ports(&1u8, vec![t]).unwrap();
    let t = b.recv().unwrap().take_ports().unwrap().pop().unwrap();
    c.post_with_ports(&2u8, vec![t]).unwrap();
    let mut m = d.recv().unwrap();
    assert_eq!(m.port_count(), 1);
    let t = m.take_ports().unwrap().pop().unwrap();
    assert_eq!(m.port_count(), 0);
    drop(m);

    for i in 0..10u64 {
        assert_eq!(t.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    let mut m = t.recv().unwrap();
    assert_eq!(m.get::<String>().unwrap().as_str(), "inner");
    let q = m.take_ports().unwrap().pop().unwrap();
    drop(m);
    let m = t.recv().unwrap();
    assert!(m.is_out_of_line());
    assert_eq!(m.bytes(), &big[..]);
    drop(m);
    assert_eq!(t.recv().unwrap().bytes(), b"last");

    // The moved ports work both ways, directly.
    p.post_bytes(b"to q").unwrap();
    assert_eq!(q.recv().unwrap().bytes(), b"to q");
    t.post_bytes(b"back").unwrap();
    assert_eq!(x.recv().unwrap().bytes(), b"back");
}

#[test]
fn the_entangled_peer_is_refused_and_everything_handed_back() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (x, y) = MessageChannel::new().unwrap().into_ports();
    let err = a.post_with_ports(&1u32, vec![y, b]).unwrap_err();
    assert!(matches!(err.error, PostError::PeerInTransfer));
    assert_eq!(err.ports.len(), 2);
    let mut ports = err.ports.into_iter();
    let (y, b) = (ports.next().unwrap(), ports.next().unwrap());
    // Nothing was sent, and both ports still work.
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    a.post(&5u32).unwrap();
    assert_eq!(b.recv().unwrap().get::<u32>().unwrap().to_native(), 5);
    x.post(&6u32).unwrap();
    assert_eq!(y.recv().unwrap().get::<u32>().unwrap().to_native(), 6);
}

#[test]
fn a_failed_transfer_returns_working_ports() {
    let (a, b) = MessageChannel::builder()
        .capacity(4096)
        .build()
        .unwrap()
        .into_ports();
    while a.try_post(&0u8).is_ok() {}
    let (x, y) = MessageChannel::new().unwrap().into_ports();
    x.post(&1u8).unwrap();
    let err = a.try_post_with_ports(&0u8, vec![y]).unwrap_err();
    assert!(matches!(err.error, PostError::Full), "{}", err);
    let y = err.ports.into_iter().next().unwrap();
    // The queued message is still there, and the port still talks.
    assert_eq!(*y.recv().unwrap().get::<u8>().unwrap(), 1);
    y.post(&2u8).unwrap();
    assert_eq!(*x.recv().unwrap().get::<u8>().unwrap(), 2);
    drop(b);
}

#[test]
fn a_port_in_a_message_dropped_unread_is_closed() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (x, y) = MessageChannel::new().unwrap().into_ports();
    x.set_spin(Duration::ZERO);
    a.post_with_ports(&"take this".to_string(), vec![y])
        .unwrap();
    drop(b.recv().unwrap()); // ports never taken
    assert!(matches!(
        x.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}
