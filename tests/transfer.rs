//! Ports that travel inside messages, within a process and along a chain
//! of processes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{allow_fds, noise, peer, role};
use shmport::testing::fault::{self, Point};
use shmport::{CloseReason, MessageChannel, MessagePort, PostError, RecvError};

/// How long a test waits for a message that must come (a failure shows as
/// a timeout, not a hang).
const PATIENCE: Duration = Duration::from_secs(120);

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        "relay" => relay(),
        "held-relay" => held_relay(),
        "held-reader" => held_reader(),
        "cycle-maker" => cycle_maker(),
        "pausing-sender" => pausing_sender(),
        "partial-reader" => partial_reader(),
        other => panic!("unknown role {other}"),
    }
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
    let big = vec![7u8; 200 * 1024]; // in the pool, with a 64 KiB ring
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
    // The port brought the buffer of x's pool that its queue names.
    let m = t.recv().unwrap();
    assert!(m.is_pooled());
    assert_eq!(m.bytes(), &big[..]);
    drop(m);
    assert_eq!(t.recv().unwrap().bytes(), b"last");
    // The block went back to x's pool, which reuses it.
    let before = x.pool_bytes();
    x.post_bytes(&big).unwrap();
    assert_eq!(t.recv().unwrap().bytes(), &big[..]);
    assert_eq!(x.pool_bytes(), before);

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

// ------------------------------------------ attachments in several messages

/// Unread out-of-line messages on the port that travels in
/// `a_port_holding_a_thousand_out_of_line_messages_moves_through_two_hops`.
const HELD: u64 = 1000;

/// Message `i` of `len` bytes: its number, then noise seeded by it.
fn held_payload(i: u64, len: usize) -> Vec<u8> {
    let mut v = noise(len, i + 1);
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

#[test]
fn a_port_holding_a_thousand_out_of_line_messages_moves_through_two_hops() {
    held_messages_move_through_two_hops(false);
}

#[test]
fn a_port_holding_a_thousand_pooled_messages_moves_through_two_hops() {
    held_messages_move_through_two_hops(true);
}

/// A port holding [`HELD`] messages, each larger than half its ring, in
/// the pool or each in its own memfd, moves through two processes before
/// it is read.
fn held_messages_move_through_two_hops(pooled: bool) {
    allow_fds(4 * HELD + 1000);
    let (far, t) = MessageChannel::builder()
        .capacity(64 * 1024)
        .build()
        .unwrap()
        .into_ports();
    if !pooled {
        // No pool: each message in its own memfd.
        far.set_pool_limit(Some(0));
    }
    // Larger than half the ring.
    let len = (32 * 1024 + 1).max(far.max_inline_payload() + 1);
    // A socket holds only a few hundred such attachments (~280 here), so a
    // port that holds a thousand has taken them into its inbox. This one
    // does so while its sending half waits for room in a full ring: a
    // waiting half takes in whatever arrives on the socket.
    let (ts, tr) = t.split().unwrap();
    while ts.try_post_bytes(b"filler").is_ok() {}
    let waiter = std::thread::spawn(move || {
        ts.post_bytes(b"unblocked").unwrap();
        ts
    });
    for i in 0..HELD {
        far.post_bytes_timeout(&held_payload(i, len), PATIENCE)
            .unwrap();
    }
    // Let the sending half finish: read what t posted.
    while far.recv_timeout(PATIENCE).unwrap().bytes() != b"unblocked" {}
    let t = waiter.join().unwrap().rejoin(tr).unwrap();

    // Its queue (1,002 descriptors with its own two) takes four socket
    // messages on each hop.
    let (mut relay, carrier) = shmport::spawn(peer("held-relay")).unwrap();
    carrier
        .post_with_ports(&(HELD, len as u64, pooled), vec![t])
        .unwrap();
    // Two hops on, the reader read every message, in order, and answers
    // through the port; and the port still works this way.
    assert_eq!(far.recv_timeout(PATIENCE).unwrap().bytes(), b"all read");
    far.post_bytes(b"bye").unwrap();
    assert!(relay.wait().unwrap().success(), "a hop failed");
}

/// First hop: pass the port on without reading it.
fn held_relay() {
    allow_fds(4 * HELD + 1000);
    let up = MessagePort::from_parent().unwrap();
    let mut m = up.recv_timeout(PATIENCE).unwrap();
    let (n, len, pooled) = {
        let v = m.get::<(u64, u64, bool)>().unwrap();
        (v.0.to_native(), v.1.to_native(), v.2)
    };
    let t = m.take_ports().unwrap().pop().expect("a port");
    drop(m);
    let (mut child, down) = shmport::spawn(peer("held-reader")).unwrap();
    down.post_with_ports(&(n, len, pooled), vec![t]).unwrap();
    assert!(child.wait().unwrap().success(), "the reader failed");
}

/// Second hop: read every message.
fn held_reader() {
    allow_fds(4 * HELD + 1000);
    let up = MessagePort::from_parent().unwrap();
    let mut m = up.recv_timeout(PATIENCE).unwrap();
    let (n, len, pooled) = {
        let v = m.get::<(u64, u64, bool)>().unwrap();
        (v.0.to_native(), v.1.to_native() as usize, v.2)
    };
    let t = m.take_ports().unwrap().pop().expect("a port");
    drop(m);
    for i in 0..n {
        let m = t.recv_timeout(PATIENCE).unwrap();
        if pooled {
            assert!(m.is_pooled(), "message {i} not in the pool");
        } else {
            assert!(m.is_out_of_line(), "message {i} not out of line");
        }
        assert!(
            m.bytes() == &held_payload(i, len)[..],
            "message {i} has the wrong bytes"
        );
    }
    t.post_bytes(b"all read").unwrap();
    assert_eq!(t.recv_timeout(PATIENCE).unwrap().bytes(), b"bye");
}

/// `n` messages of 100 ports each posted on `x`; returns the ends kept.
fn post_port_batches(x: &MessagePort, n: usize) -> Vec<MessagePort> {
    post_port_batches_from(x, 0, n)
}

/// [`post_port_batches`], numbering batches from `first`.
fn post_port_batches_from(x: &MessagePort, first: usize, n: usize) -> Vec<MessagePort> {
    post_batches(x, first, n, true)
}

/// [`post_port_batches`] with ports of channels made for the messages.
fn post_batches_new(x: &MessagePort, n: usize) -> Vec<MessagePort> {
    post_batches(x, 0, n, false)
}

/// Batches of [`shmport::MAX_PORTS`] ports: `used` ones (built before
/// they travel: each goes with its descriptors), or ports of channels made
/// for the message (they travel as kits of a link, with no descriptor).
fn post_batches(x: &MessagePort, first: usize, n: usize, used: bool) -> Vec<MessagePort> {
    let mut kept = Vec::new();
    for batch in first..first + n {
        let mut sent = Vec::new();
        for _ in 0..shmport::MAX_PORTS {
            let (k, s) = MessageChannel::builder()
                .capacity(4096)
                .build()
                .unwrap()
                .into_ports();
            if used {
                let _ = s.max_inline_payload();
            }
            kept.push(k);
            sent.push(s);
        }
        x.post_bytes_with_ports(format!("batch {batch}").as_bytes(), sent)
            .unwrap();
    }
    kept
}

#[test]
fn a_port_holding_four_hundred_ports_moves_whole() {
    allow_fds(3000);
    // Four messages of 100 ports each: 802 descriptors and 5 KiB of body
    // when t travels, past both limits of one socket message.
    let (x, t) = MessageChannel::new().unwrap().into_ports();
    let kept = post_port_batches(&x, 4);
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    a.post_bytes_with_ports(b"t", vec![t]).unwrap();
    let t = b.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    c.post_bytes_with_ports(b"t again", vec![t]).unwrap();
    let t = d.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let mut got = Vec::new();
    for batch in 0..4 {
        let mut m = t.recv().unwrap();
        assert_eq!(m.bytes(), format!("batch {batch}").as_bytes());
        got.extend(m.take_ports().unwrap());
    }
    assert_eq!(got.len(), kept.len());
    for (i, (k, g)) in kept.iter().zip(&got).enumerate() {
        k.post(&(i as u32)).unwrap();
        assert_eq!(
            g.recv().unwrap().get::<u32>().unwrap().to_native(),
            i as u32
        );
    }
    t.post_bytes(b"back").unwrap();
    assert_eq!(x.recv().unwrap().bytes(), b"back");
}

/// The same with ports of channels made for the messages: they are kits
/// of a link the holder's peer made; the link's invitation travels with
/// the holder, whose next owner takes it up.
#[test]
fn a_port_holding_four_hundred_ports_of_new_channels_moves_whole() {
    allow_fds(3000);
    // Four messages of 100 ports each: 802 descriptors and 5 KiB of body
    // when t travels, past both limits of one socket message.
    let (x, t) = MessageChannel::new().unwrap().into_ports();
    let kept = post_batches_new(&x, 4);
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    a.post_bytes_with_ports(b"t", vec![t]).unwrap();
    let t = b.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    c.post_bytes_with_ports(b"t again", vec![t]).unwrap();
    let t = d.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let mut got = Vec::new();
    for batch in 0..4 {
        let mut m = t.recv().unwrap();
        assert_eq!(m.bytes(), format!("batch {batch}").as_bytes());
        got.extend(m.take_ports().unwrap());
    }
    assert_eq!(got.len(), kept.len());
    for (i, (k, g)) in kept.iter().zip(&got).enumerate() {
        k.post(&(i as u32)).unwrap();
        assert_eq!(
            g.recv().unwrap().get::<u32>().unwrap().to_native(),
            i as u32
        );
    }
    t.post_bytes(b"back").unwrap();
    assert_eq!(x.recv().unwrap().bytes(), b"back");
}

#[test]
fn a_port_whose_queue_is_more_than_a_receiver_accepts_is_refused_and_handed_back() {
    // 82 messages of 100 ports: 16,400 descriptors, more than the 16,384
    // one attachment may carry. (The ports' far ends are closed, so that
    // each costs this process two descriptors only, once taken in.)
    if allow_fds(18_000) < 18_000 {
        eprintln!("skipped: needs 18,000 descriptors (RLIMIT_NOFILE)");
        return;
    }
    let (x, t) = MessageChannel::new().unwrap().into_ports();
    for batch in 0..82 {
        drop(post_port_batches_from(&x, batch, 1));
    }
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let err = a.post_bytes_with_ports(b"t", vec![t]).unwrap_err();
    assert!(matches!(err.error, PostError::TooManyPorts), "{err}");
    let t = err.ports.into_iter().next().unwrap();
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    // Handed back whole: its queue is intact.
    for batch in 0..82 {
        let mut m = t.recv().unwrap();
        assert_eq!(m.bytes(), format!("batch {batch}").as_bytes());
        let ports = m.take_ports().unwrap();
        assert_eq!(ports.len(), 100);
        assert!(matches!(
            ports[0].recv(),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
    }
    t.post_bytes(b"back").unwrap();
    assert_eq!(x.recv().unwrap().bytes(), b"back");
}

// ---------------------------------------------------------- nesting depth

#[test]
fn ports_nested_deeper_than_a_receiver_accepts_are_refused_and_handed_back() {
    // r0 in a message on r1, r1 in a message on r2, …: posting r_k sends
    // k levels of nesting; a receiver accepts 16.
    let (p0, r0) = MessageChannel::new().unwrap().into_ports();
    let mut senders = vec![p0];
    let mut cur = r0;
    let (refused_on, handed_back) = loop {
        assert!(senders.len() < 40, "never refused");
        let (s, r) = MessageChannel::new().unwrap().into_ports();
        match s.post_bytes_with_ports(format!("level {}", senders.len()).as_bytes(), vec![cur]) {
            Ok(()) => {
                senders.push(s);
                cur = r;
            }
            Err(e) => {
                assert!(matches!(e.error, PostError::NestedTooDeep), "{e}");
                assert_eq!(e.ports.len(), 1);
                break ((s, r), e.ports.into_iter().next().unwrap());
            }
        }
    };
    // r0 .. r16 went; r17 (16 levels below it, 17 in a message) did not.
    assert_eq!(senders.len(), 18);
    // Nothing was sent on the refusing channel, which still works.
    let (s, r) = refused_on;
    assert!(matches!(r.try_recv(), Err(RecvError::Empty)));
    s.post_bytes(b"after").unwrap();
    assert_eq!(r.recv().unwrap().bytes(), b"after");
    // The port handed back holds the whole chain, and each port in it works
    // (the deepest accepted nesting was received whole).
    let mut cur = handed_back;
    for level in (1..senders.len()).rev() {
        senders[level].post_bytes(b"ping").unwrap();
        let mut m = cur.recv().unwrap();
        assert_eq!(m.bytes(), format!("level {level}").as_bytes());
        let inner = m.take_ports().unwrap().pop().unwrap();
        drop(m);
        assert_eq!(cur.recv().unwrap().bytes(), b"ping");
        cur = inner;
    }
    senders[0].post_bytes(b"deepest").unwrap();
    assert_eq!(cur.recv().unwrap().bytes(), b"deepest");
}

// ------------------------------------------------------ the peer in a queue

#[test]
fn the_peer_queued_on_a_transferred_port_is_refused_at_any_depth() {
    // (a, b) and (c, d): c posts b to d, then a posts d. b would travel
    // into its own queue inside d: refused, whether b is still on d's
    // socket, already in d's inbox, or deeper inside another port.
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    c.post_bytes_with_ports(b"b", vec![b]).unwrap();
    let (x, y) = MessageChannel::new().unwrap().into_ports();
    // On d's socket (the check takes it in), then in d's inbox.
    let err = a.post_bytes_with_ports(b"d", vec![y, d]).unwrap_err();
    assert!(matches!(err.error, PostError::PeerInTransfer), "{err}");
    let mut back = err.ports.into_iter();
    let (y, d) = (back.next().unwrap(), back.next().unwrap());
    let err = a.post_bytes_with_ports(b"d", vec![d]).unwrap_err();
    assert!(matches!(err.error, PostError::PeerInTransfer), "{err}");
    let d = err.ports.into_iter().next().unwrap();
    // Deeper: d inside a message on f.
    let (e, f) = MessageChannel::new().unwrap().into_ports();
    e.post_bytes_with_ports(b"d", vec![d]).unwrap();
    let err = a.post_bytes_with_ports(b"f", vec![f]).unwrap_err();
    assert!(matches!(err.error, PostError::PeerInTransfer), "{err}");
    let f = err.ports.into_iter().next().unwrap();
    // Over another channel, the same ports travel.
    let (g, h) = MessageChannel::new().unwrap().into_ports();
    g.post_bytes_with_ports(b"f", vec![f]).unwrap();
    let f = h.recv().unwrap().take_ports().unwrap().pop().unwrap();
    // Nothing was sent over a, and every channel works.
    let d = f.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let b = d.recv().unwrap().take_ports().unwrap().pop().unwrap();
    a.post_bytes(b"to b").unwrap();
    assert_eq!(b.recv().unwrap().bytes(), b"to b");
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    b.post_bytes(b"to a").unwrap();
    assert_eq!(a.recv().unwrap().bytes(), b"to a");
    c.post_bytes(b"to d").unwrap();
    assert_eq!(d.recv().unwrap().bytes(), b"to d");
    x.post_bytes(b"to y").unwrap();
    assert_eq!(y.recv().unwrap().bytes(), b"to y");
    e.post_bytes(b"to f").unwrap();
    assert_eq!(f.recv().unwrap().bytes(), b"to f");
}

#[test]
fn a_port_holding_another_channels_port_is_not_refused() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    let (p, q) = MessageChannel::new().unwrap().into_ports();
    // d holds q, and a's own port side of another channel's segment is
    // not its peer.
    c.post_bytes_with_ports(b"q", vec![q]).unwrap();
    a.post_bytes_with_ports(b"d", vec![d]).unwrap();
    let d = b.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let q = d.recv().unwrap().take_ports().unwrap().pop().unwrap();
    p.post_bytes(b"to q").unwrap();
    assert_eq!(q.recv().unwrap().bytes(), b"to q");
}

#[test]
fn across_processes_the_channel_survives_the_refused_cycle() {
    // Here: a and d. The child: b and c; it posts b to d, so b sits in d's
    // queue. Posting d over a would put d in b's queue and b in d's: the
    // kernel would collect both, and a and c would see PeerDied. Refused,
    // every channel goes on.
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    let (mut child, k) = shmport::spawn(peer("cycle-maker")).unwrap();
    k.post_bytes_with_ports(b"b and c", vec![b, c]).unwrap();
    assert_eq!(k.recv_timeout(PATIENCE).unwrap().bytes(), b"b posted to d");
    let err = a.post_bytes_with_ports(b"d", vec![d]).unwrap_err();
    assert!(matches!(err.error, PostError::PeerInTransfer), "{err}");
    let d = err.ports.into_iter().next().unwrap();
    // Let the kernel's collector run (it runs when a unix socket closes):
    // nothing of this channel is unreachable.
    drop(std::os::unix::net::UnixStream::pair().unwrap());
    let b = d
        .recv_timeout(PATIENCE)
        .unwrap()
        .take_ports()
        .unwrap()
        .pop()
        .unwrap();
    a.post_bytes(b"a to b").unwrap();
    assert_eq!(b.recv_timeout(PATIENCE).unwrap().bytes(), b"a to b");
    b.post_bytes(b"b to a").unwrap();
    assert_eq!(a.recv_timeout(PATIENCE).unwrap().bytes(), b"b to a");
    d.post_bytes(b"d to c").unwrap();
    assert_eq!(d.recv_timeout(PATIENCE).unwrap().bytes(), b"c: d to c");
    drop(d);
    assert!(child.wait().unwrap().success(), "the child failed");
}

fn cycle_maker() {
    let k = MessagePort::from_parent().unwrap();
    let mut m = k.recv_timeout(PATIENCE).unwrap();
    let mut ports = m.take_ports().unwrap().into_iter();
    drop(m);
    let (b, c) = (ports.next().unwrap(), ports.next().unwrap());
    c.post_bytes_with_ports(b"b", vec![b]).unwrap();
    k.post_bytes(b"b posted to d").unwrap();
    // Echo on c until d closes: c must never see its peer die.
    loop {
        match c.recv_timeout(PATIENCE) {
            Ok(m) => {
                let mut reply = b"c: ".to_vec();
                reply.extend_from_slice(m.bytes());
                drop(m);
                c.post_bytes(&reply).unwrap();
            }
            Err(RecvError::Closed(CloseReason::Closed)) => break,
            Err(e) => panic!("c: {e}"),
        }
    }
}

// ------------------------------------- a port leaving with half an attachment

#[test]
fn a_port_that_took_in_part_of_an_attachment_carries_it_to_its_new_owner() {
    // A child posts x a port holding 400 descriptors (two socket messages)
    // and stops between the two; x takes in the first (as the check of a
    // transfer does) and moves to another child; the second goes to x's
    // socket there, where the attachment is put back together.
    allow_fds(3000);
    let (x_far, x) = MessageChannel::new().unwrap().into_ports();
    let (ctrl, ctrl_far) = MessageChannel::new().unwrap().into_ports();
    let (mut sender, s) = shmport::spawn(peer("pausing-sender")).unwrap();
    s.post_bytes_with_ports(b"x and ctrl", vec![x_far, ctrl_far])
        .unwrap();
    assert_eq!(ctrl.recv_timeout(PATIENCE).unwrap().bytes(), b"paused");
    let (mut reader, r) = shmport::spawn(peer("partial-reader")).unwrap();
    r.post_bytes_with_ports(b"x", vec![x]).unwrap();
    ctrl.post_bytes(b"go on").unwrap();
    assert_eq!(
        ctrl.recv_timeout(PATIENCE).unwrap().bytes(),
        b"200 ports work"
    );
    assert!(reader.wait().unwrap().success(), "the reader failed");
    assert!(sender.wait().unwrap().success(), "the sender failed");
}

/// The pausing sender's control port, for its fault hook.
static CTRL: OnceLock<Mutex<MessagePort>> = OnceLock::new();

fn pause_between_parts(point: Point) {
    static ONCE: AtomicBool = AtomicBool::new(false);
    if point == Point::BetweenParts && !ONCE.swap(true, Ordering::Relaxed) {
        let ctrl = CTRL.get().unwrap().lock().unwrap();
        ctrl.post_bytes(b"paused").unwrap();
        assert_eq!(ctrl.recv_timeout(PATIENCE).unwrap().bytes(), b"go on");
    }
}

fn pausing_sender() {
    allow_fds(3000);
    let s = MessagePort::from_parent().unwrap();
    let mut m = s.recv_timeout(PATIENCE).unwrap();
    let mut ports = m.take_ports().unwrap().into_iter();
    drop(m);
    let (x_far, ctrl) = (ports.next().unwrap(), ports.next().unwrap());
    let _ = CTRL.set(Mutex::new(ctrl));
    let (hf, h) = MessageChannel::new().unwrap().into_ports();
    let kept = post_port_batches(&hf, 2);
    fault::set_hook(pause_between_parts);
    x_far.post_bytes_with_ports(b"h", vec![h]).unwrap();
    for (i, k) in kept.iter().enumerate() {
        let m = k.recv_timeout(PATIENCE).unwrap();
        assert_eq!(m.get::<u32>().unwrap().to_native(), i as u32);
    }
    let ctrl = CTRL.get().unwrap().lock().unwrap();
    ctrl.post_bytes(b"200 ports work").unwrap();
}

fn partial_reader() {
    allow_fds(3000);
    let r = MessagePort::from_parent().unwrap();
    let mut m = r.recv_timeout(PATIENCE).unwrap();
    let x = m.take_ports().unwrap().pop().unwrap();
    drop(m);
    let mut m = x.recv_timeout(PATIENCE).unwrap();
    assert_eq!(m.bytes(), b"h");
    let h = m.take_ports().unwrap().pop().unwrap();
    drop(m);
    let mut got = Vec::new();
    for batch in 0..2 {
        let mut m = h.recv_timeout(PATIENCE).unwrap();
        assert_eq!(m.bytes(), format!("batch {batch}").as_bytes());
        got.extend(m.take_ports().unwrap());
    }
    for (i, g) in got.iter().enumerate() {
        g.post(&(i as u32)).unwrap();
    }
}
