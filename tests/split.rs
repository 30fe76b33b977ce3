//! Split ports: a sending half and a receiving half on two threads, talking
//! to a real peer process; half-closes; rejoining.

mod common;

use std::thread;
use std::time::Duration;

use common::{Victim, noise, peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

const N: u64 = 100_000;

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        "echo" => {
            port.set_spin(Duration::ZERO);
            loop {
                let m = match port.recv() {
                    Ok(m) => m,
                    Err(RecvError::Closed(_)) => return,
                    Err(e) => panic!("{e}"),
                };
                let bytes = m.bytes().to_vec();
                drop(m);
                if port.post_bytes(&bytes).is_err() {
                    return;
                }
            }
        }
        "answer-after-close" => {
            // Read until the parent closes its sending side, then answer
            // with how many arrived, and a few more, then close.
            let mut n = 0u64;
            loop {
                match port.recv() {
                    Ok(_) => n += 1,
                    Err(RecvError::Closed(CloseReason::Closed)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            for i in 0..10 {
                port.post(&(n + i)).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn payload(i: u64) -> Vec<u8> {
    noise(8 + (i % 200) as usize, i)
}

/// The halves on two threads, both parking at once (spin 0) on a small
/// ring, so that every wait crosses over: each half takes in the socket's
/// wake-ups for the other and must hand them over.
#[test]
fn halves_on_two_threads_stream_both_ways_with_a_process() {
    let (child, port) = MessageChannel::builder()
        .capacity(4096)
        .spin(Duration::ZERO)
        .spawn(peer("echo"))
        .unwrap();
    let victim = Victim::new(child);
    let (tx, rx) = port.split().unwrap();
    let receiver = thread::spawn(move || {
        for i in 0..N {
            let m = rx.recv().unwrap();
            assert_eq!(m.bytes(), &payload(i)[..], "echo {i}");
        }
        rx
    });
    for i in 0..N {
        tx.post_bytes(&payload(i)).unwrap();
    }
    let rx = receiver.join().unwrap();
    let port = tx.rejoin(rx).unwrap();
    // Whole again: a round trip, then the close.
    port.post_bytes(b"whole").unwrap();
    assert_eq!(port.recv().unwrap().bytes(), b"whole");
    drop(port);
    victim.wait_success();
}

#[test]
fn dropping_the_sending_half_closes_one_direction_only() {
    let (child, port) = shmport::spawn(peer("answer-after-close")).unwrap();
    let victim = Victim::new(child);
    let (tx, rx) = port.split().unwrap();
    for i in 0..100u64 {
        tx.post(&i).unwrap();
    }
    drop(tx);
    // The peer saw our close, and can still post to us.
    for i in 0..10u64 {
        let m = rx.recv().unwrap();
        assert_eq!(*m.get::<u64>().unwrap(), 100 + i);
    }
    assert!(matches!(
        rx.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    victim.wait_success();
}

#[test]
fn dropping_the_receiving_half_stops_the_peers_posts() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (tx, rx) = b.split().unwrap();
    drop(rx);
    assert!(matches!(
        a.post_bytes(b"nobody reads"),
        Err(shmport::PostError::Closed(CloseReason::Closed))
    ));
    // The other direction still works.
    tx.post_bytes(b"still sending").unwrap();
    assert_eq!(a.recv().unwrap().bytes(), b"still sending");
    drop(tx);
    assert!(matches!(
        a.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn halves_of_different_ports_do_not_rejoin_and_a_rejoined_port_travels() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    let (atx, arx) = a.split().unwrap();
    let (ctx, crx) = c.split().unwrap();
    let (atx, crx) = atx.rejoin(crx).unwrap_err();
    let a = atx.rejoin(arx).unwrap();
    let c = ctx.rejoin(crx).unwrap();
    // The rejoined port can be sent and keeps working where it lands.
    b.post_bytes(b"queued").unwrap();
    c.post_bytes_with_ports(b"take a", vec![a]).unwrap();
    let mut m = d.recv().unwrap();
    let a = m.take_ports().unwrap().pop().unwrap();
    drop(m);
    assert_eq!(a.recv().unwrap().bytes(), b"queued");
    a.post_bytes(b"back").unwrap();
    assert_eq!(b.recv().unwrap().bytes(), b"back");
}
