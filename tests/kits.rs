//! Channels made per request travel as kits of the channel that carries
//! them: reused once closed at both ends, named in the record with no
//! descriptor, and closed, kept or carried along as a user of ports would
//! expect (order, close after drain, death, ports that travel on).

mod common;

use std::time::Duration;

use common::raw::serial;
use common::{Victim, open_fds, peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

/// The entry point of every peer process.
#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        // Each message brings a port: answer on it with the number the
        // message holds, doubled, and drop it.
        "responder" => {
            while let Ok(mut m) = port.recv() {
                let n = m.get::<u32>().unwrap().to_native();
                let reply = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                reply.post(&(n * 2)).unwrap();
            }
        }
        // Keep every port that comes (answering "kept" on each), until told
        // to stop; then wait to be killed.
        "hoarder" => {
            let mut kept = Vec::new();
            loop {
                let mut m = port.recv().unwrap();
                if m.bytes() == b"stop" {
                    break;
                }
                let p = m.take_ports().unwrap().pop().unwrap();
                p.post_bytes(b"kept").unwrap();
                kept.push(p);
            }
            println!("holding {}", kept.len());
            std::thread::sleep(Duration::from_secs(60));
        }
        // The first message brings a port to another process: post every
        // port that comes on it.
        "forwarder" => {
            let mut first = port.recv().unwrap();
            let onward = first.take_ports().unwrap().pop().unwrap();
            drop(first);
            while let Ok(mut m) = port.recv() {
                let n = m.get::<u32>().unwrap().to_native();
                let ports = m.take_ports().unwrap();
                onward.post_with_ports(&n, ports).unwrap();
            }
        }
        // The first message brings a port to another process, the second
        // a carrier `x`: answer requests on `x` until one holds u32::MAX,
        // then post `x` onward (the kits held for it go along) and exit.
        "hand-over" => {
            let mut first = port.recv().unwrap();
            let onward = first.take_ports().unwrap().pop().unwrap();
            drop(first);
            let mut second = port.recv().unwrap();
            let x = second.take_ports().unwrap().pop().unwrap();
            drop(second);
            loop {
                let mut m = x.recv().unwrap();
                let n = m.get::<u32>().unwrap().to_native();
                if n == u32::MAX {
                    break;
                }
                let reply = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                reply.post(&(n * 2)).unwrap();
            }
            onward.post_bytes_with_ports(b"x", vec![x]).unwrap();
        }
        // The first message brings a port `via`, whose first message
        // brings a carrier: answer requests on the carrier.
        "adopt-responder" => {
            let mut first = port.recv().unwrap();
            let via = first.take_ports().unwrap().pop().unwrap();
            drop(first);
            let mut second = via.recv().unwrap();
            let x = second.take_ports().unwrap().pop().unwrap();
            drop(second);
            loop {
                let mut m = match x.recv() {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("responder: {e:?} {x:?}");
                        break;
                    }
                };
                let n = m.get::<u32>().unwrap().to_native();
                let reply = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                reply.post(&(n * 2)).unwrap();
            }
        }
        // Each message brings a port: split it, stream three answers on
        // its sending half, then drop both halves (as the Python binding
        // uses every port: split at first use, a descriptor asked for).
        "split-streamer" => {
            while let Ok(mut m) = port.recv() {
                let n = m.get::<u32>().unwrap().to_native();
                let reply = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                let _ = std::os::fd::AsFd::as_fd(&reply);
                let (tx, rx) = reply.split().unwrap();
                for i in 0..3 {
                    tx.post(&(n + i)).unwrap();
                }
                drop((tx, rx));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// One request: a channel, its far end posted over `x`, the reply, the
/// close event.
fn request(x: &MessagePort, n: u32) {
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x.post_with_ports(&n, vec![theirs]).unwrap();
    let reply = mine.recv().unwrap_or_else(|e| panic!("request {n}: {e:?}"));
    assert_eq!(*reply.get::<u32>().unwrap(), n * 2);
    drop(reply);
    assert!(matches!(
        mine.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn in_one_process_request_channels_reuse_one_kit() {
    let _serial = serial();
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    for n in 0..1000u32 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        x1.post_with_ports(&n, vec![theirs]).unwrap();
        let mut msg = x2.recv().unwrap();
        let reply = msg.take_ports().unwrap().pop().unwrap();
        drop(msg);
        reply.post(&(n * 2)).unwrap();
        drop(reply);
        assert_eq!(*mine.recv().unwrap().get::<u32>().unwrap(), n * 2);
        assert!(matches!(
            mine.recv(),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
    }
    // One kit, idle at the end that made it, its far end held by the other.
    assert_eq!(shmport::testing::kits(&x1), (1, 0));
    assert_eq!(shmport::testing::kits(&x2), (0, 1));
}

#[test]
fn a_process_answers_ten_thousand_requests_on_a_handful_of_descriptors() {
    let _serial = serial();
    let before = open_fds();
    let (child, x) = shmport::spawn(peer("responder")).unwrap();
    let victim = Victim::new(child);
    for n in 0..10_000u32 {
        request(&x, n);
    }
    let (made, held) = shmport::testing::kits(&x);
    assert_eq!(held, 0);
    assert!(made <= 2, "{made} kits for one request at a time");
    // The port, its kits, and nothing else.
    // (And one unused segment and socket pair, kept for the next channel.)
    assert!(open_fds().len() <= before.len() + 2 + 2 * made + 3);
    drop(x);
    victim.wait_success();
    assert_eq!(open_fds(), before, "descriptors left behind");
}

/// Requests that overlap (several channels open at once) each get a kit:
/// as many as were open together, all reused afterwards.
#[test]
fn overlapping_requests_take_as_many_kits_as_were_open_together() {
    let _serial = serial();
    let (child, x) = shmport::spawn(peer("responder")).unwrap();
    let _victim = Victim::new(child);
    for round in 0..50u32 {
        let mine: Vec<_> = (0..8u32)
            .map(|i| {
                let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
                x.post_with_ports(&(round * 8 + i), vec![theirs]).unwrap();
                mine
            })
            .collect();
        for (i, m) in mine.iter().enumerate() {
            let n = round * 8 + i as u32;
            assert_eq!(*m.recv().unwrap().get::<u32>().unwrap(), n * 2);
            assert!(matches!(
                m.recv(),
                Err(RecvError::Closed(CloseReason::Closed))
            ));
        }
    }
    let (made, _) = shmport::testing::kits(&x);
    assert!(
        (8..=16).contains(&made),
        "{made} kits for 8 requests at a time"
    );
}

/// What was posted on the port that stays, before its peer even arrived,
/// is read first, in order; the close comes after the last message.
#[test]
fn messages_posted_before_the_port_arrives_come_first_and_in_order() {
    let _serial = serial();
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    // Warm a kit, so that the next channel is named in the record.
    for n in 0..3u32 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        x1.post_with_ports(&n, vec![theirs]).unwrap();
        let p = x2.recv().unwrap().take_ports().unwrap().pop().unwrap();
        drop(p);
        assert!(matches!(
            mine.recv(),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
    }
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x1.post_with_ports(&7u32, vec![theirs]).unwrap();
    assert_eq!(shmport::testing::kits(&x1).0, 0, "the idle kit was taken");
    for i in 0..5u32 {
        mine.post(&i).unwrap();
    }
    drop(mine);
    let p = x2.recv().unwrap().take_ports().unwrap().pop().unwrap();
    for i in 0..5u32 {
        assert_eq!(*p.recv().unwrap().get::<u32>().unwrap(), i);
    }
    assert!(matches!(
        p.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

/// A port of a new channel dropped before use closes its peer, wherever
/// the peer went.
#[test]
fn an_unused_port_dropped_closes_its_peer() {
    let _serial = serial();
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    drop(a);
    assert!(matches!(
        b.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    for _ in 0..3 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        x1.post_bytes_with_ports(b"", vec![theirs]).unwrap();
        drop(mine);
        let p = x2.recv().unwrap().take_ports().unwrap().pop().unwrap();
        assert!(matches!(
            p.recv(),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
    }
}

/// 100,000 channels made and dropped, used or not, posted or not: the
/// descriptors and kits come back.
#[test]
fn a_hundred_thousand_channels_leave_nothing_behind() {
    let _serial = serial();
    let before = open_fds();
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    for n in 0..100_000u32 {
        let (a, b) = MessageChannel::new().unwrap().into_ports();
        match n % 4 {
            0 => drop((a, b)),
            1 => {
                a.post(&n).unwrap();
                assert_eq!(*b.recv().unwrap().get::<u32>().unwrap(), n);
            }
            _ => {
                x1.post_with_ports(&n, vec![b]).unwrap();
                let p = x2.recv().unwrap().take_ports().unwrap().pop().unwrap();
                p.post(&n).unwrap();
                drop(p);
                assert_eq!(*a.recv().unwrap().get::<u32>().unwrap(), n);
            }
        }
    }
    // Kits are reused, not made per request: at most a few are idle (a
    // request posted while the carrier's end moved took a kit of its own
    // descriptors, and the creator may see a channel closed just before
    // the peer marks its end idle, and make another); reuse looks at the
    // last 8 made.
    let kept = shmport::testing::kits(&x1);
    assert!(kept.0 <= 8, "{kept:?}");
    drop((x1, x2));
    assert_eq!(open_fds(), before, "descriptors left behind");
}

/// `kill -9` of the process holding 1,000 request ports (some on reused
/// kits, named in records; most on new ones): every port here reports
/// `PeerDied` after what was posted.
#[test]
fn a_killed_peer_holding_a_thousand_kit_ports_is_reported_on_every_one() {
    let _serial = serial();
    let mut cmd = peer("hoarder");
    cmd.stdout(std::process::Stdio::piped());
    let (child, x) = shmport::spawn(cmd).unwrap();
    let mut victim = Victim::new(child);
    // Ten kits made and left idle by closed channels first.
    let warm: Vec<_> = (0..10)
        .map(|_| MessageChannel::new().unwrap().into_ports())
        .collect();
    let (responder, y) = shmport::spawn(peer("responder")).unwrap();
    let _responder = Victim::new(responder);
    for (n, (mine, theirs)) in warm.into_iter().enumerate() {
        y.post_with_ports(&(n as u32), vec![theirs]).unwrap();
        assert_eq!(*mine.recv().unwrap().get::<u32>().unwrap(), 2 * n as u32);
    }
    let mut mine = Vec::new();
    for _ in 0..1000 {
        let (m, theirs) = MessageChannel::new().unwrap().into_ports();
        x.post_bytes_with_ports(b"keep", vec![theirs]).unwrap();
        mine.push(m);
    }
    x.post_bytes(b"stop").unwrap();
    victim.wait_for("holding 1000");
    victim.kill();
    for m in &mine {
        assert_eq!(m.recv().unwrap().bytes(), b"kept");
        assert!(matches!(
            m.recv_timeout(Duration::from_secs(10)),
            Err(RecvError::Closed(CloseReason::PeerDied))
        ));
    }
}

/// A request port posted on to a third process (it leaves the kit's two
/// processes with its descriptors): the reply comes from there, then the
/// close, every time.
#[test]
fn a_port_forwarded_to_a_third_process_works_from_there() {
    let _serial = serial();
    let (fwd, x) = shmport::spawn(peer("forwarder")).unwrap();
    let _fwd = Victim::new(fwd);
    let (resp, y) = shmport::spawn(peer("adopt-responder")).unwrap();
    let _resp = Victim::new(resp);
    let (to_resp, via) = MessageChannel::new().unwrap().into_ports();
    let (c1, c2) = MessageChannel::new().unwrap().into_ports();
    // The responder's carrier is c2, reached through `via`.
    y.post_bytes_with_ports(b"via", vec![via]).unwrap();
    to_resp.post_bytes_with_ports(b"x", vec![c2]).unwrap();
    x.post_bytes_with_ports(b"onward", vec![c1]).unwrap();
    for n in 0..50u32 {
        request(&x, n);
    }
}

/// The end of a carrier that holds kits for it moves to another process:
/// the kits go with it, and the requests named on them are answered there.
#[test]
fn held_kits_travel_with_their_carrier() {
    let _serial = serial();
    let (hand, h) = shmport::spawn(peer("hand-over")).unwrap();
    let hand = Victim::new(hand);
    let (resp, r) = shmport::spawn(peer("adopt-responder")).unwrap();
    let _resp = Victim::new(resp);
    let (onward, via) = MessageChannel::new().unwrap().into_ports();
    h.post_bytes_with_ports(b"onward", vec![onward]).unwrap();
    r.post_bytes_with_ports(b"via", vec![via]).unwrap();
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    h.post_bytes_with_ports(b"x", vec![x2]).unwrap();
    for n in 0..50u32 {
        request(&x1, n);
    }
    x1.post(&u32::MAX).unwrap();
    for n in 50..100u32 {
        request(&x1, n);
    }
    // Kits are reused, not made per request: at most a few are idle (a
    // request posted while the carrier's end moved took a kit of its own
    // descriptors, and the creator may see a channel closed just before
    // the peer marks its end idle, and make another); reuse looks at the
    // last 8 made.
    let kept = shmport::testing::kits(&x1);
    assert!(kept.0 <= 8, "{kept:?}");
    hand.wait_success();
}

/// A record naming a kit this port does not hold, or with references that
/// do not match it, closes that port with `ProtocolError`; others go on.
#[test]
fn forged_kit_references_are_a_protocol_error() {
    let _serial = serial();
    use shmport::testing::fuzzing::victim_and_raw_peer;
    use shmport::testing::layout::kit_refs_size;
    use shmport::testing::ring::{Kind, RecordMeta};
    let meta = |nports| RecordMeta {
        kind: Kind::Raw,
        out_of_line: false,
        pool: false,
        announce: false,
        kits: true,
        nports,
        fingerprint: 0,
    };
    let refs = |count: u32, id: u64, generation: u32| {
        let mut b = vec![0u8; kit_refs_size(1)];
        b[0..4].copy_from_slice(&count.to_le_bytes());
        b[8..16].copy_from_slice(&id.to_le_bytes());
        b[16..20].copy_from_slice(&generation.to_le_bytes());
        b
    };
    let cases: [(&str, RecordMeta, Vec<u8>); 4] = [
        ("an unknown kit", meta(1), refs(1, 77, 1)),
        ("a count that disagrees", meta(1), refs(2, 77, 1)),
        ("no ports", meta(0), refs(0, 77, 1)),
        ("references longer than the record", meta(3), refs(3, 77, 1)),
    ];
    for (what, meta, payload) in cases {
        let (victim, mut raw) = victim_and_raw_peer(1 << 16).unwrap();
        raw.commit(meta, &payload).unwrap();
        raw.wake();
        let got = victim.recv();
        assert!(
            matches!(got, Err(RecvError::Closed(CloseReason::ProtocolError))),
            "{what}: {:?}",
            got.map(|m| m.bytes().to_vec())
        );
    }
}

/// A port that arrived as a kit of a link carries requests itself: its
/// channel moves off the link at the first port it carries, and the
/// requests go on over the moved channel.
#[test]
fn requests_over_a_port_that_came_on_a_link() {
    let _serial = serial();
    let (resp, r) = shmport::spawn(peer("adopt-responder")).unwrap();
    let _resp = Victim::new(resp);
    let (v1, via) = MessageChannel::new().unwrap().into_ports();
    r.post_bytes_with_ports(b"via", vec![via]).unwrap();
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    v1.post_bytes_with_ports(b"x", vec![x2]).unwrap();
    for n in 0..20u32 {
        request(&x1, n);
    }
}

/// Ten thousand live channels to one peer, made here and posted before
/// use: each is a kit in the link's arenas, so both processes hold a
/// handful of descriptors, not two per channel. Then the peer is killed:
/// every channel reports it.
#[test]
fn ten_thousand_live_channels_to_one_peer_hold_a_handful_of_descriptors() {
    let _serial = serial();
    let before = open_fds().len();
    let (child, x) = shmport::spawn(peer("hoarder")).unwrap();
    let pid = child.id();
    let victim = Victim::new(child);
    let mut mine = Vec::new();
    for _ in 0..10_000 {
        let (m, theirs) = shmport::ChannelBuilder::new()
            .capacity(16 * 1024)
            .build()
            .unwrap()
            .into_ports();
        x.post_bytes_with_ports(b"p", vec![theirs]).unwrap();
        mine.push(m);
    }
    for m in &mine {
        assert_eq!(m.recv().unwrap().bytes(), b"kept");
    }
    let here = open_fds().len() - before;
    let there = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    println!("descriptors for 10,000 live channels: {here} here, {there} in the peer");
    assert!(here <= 16, "{here} descriptors here");
    assert!(there <= 24, "{there} descriptors in the peer");
    drop(victim);
    for m in &mine {
        assert!(matches!(
            m.recv_timeout(Duration::from_secs(10)),
            Err(RecvError::Closed(CloseReason::PeerDied))
        ));
    }
}

/// Both ends of a channel made per request are split at once (their
/// channel moves off its link from both sides): every answer arrives, then
/// the close.
#[test]
fn a_request_channel_split_at_both_ends_streams_and_closes() {
    let _serial = serial();
    let (child, x) = shmport::spawn(peer("split-streamer")).unwrap();
    let victim = Victim::new(child);
    for n in 0..200u32 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        x.post_with_ports(&(n * 10), vec![theirs]).unwrap();
        let _ = std::os::fd::AsFd::as_fd(&mine);
        let (_tx, rx) = mine.split().unwrap();
        for i in 0..3 {
            let m = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("request {n}, answer {i}: {e:?}"));
            assert_eq!(*m.get::<u32>().unwrap(), n * 10 + i);
        }
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
    }
    drop(x);
    victim.wait_success();
}

/// A port whose peer closed while both were on a link still sees the close
/// after its channel moves off the link (here: split, which gives it a
/// socket of its own), in one process and across two.
#[test]
fn a_port_whose_peer_closed_on_the_link_sees_the_close_after_moving() {
    let _serial = serial();
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    a.post_bytes_with_ports(b"d inside", vec![d]).unwrap();
    // The message is dropped with its port not taken: d closes.
    drop(b.recv().unwrap());
    let (_tx, rx) = c.split().unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Closed(CloseReason::Closed))
    ));

    let (child, x) = shmport::spawn(peer("split-streamer")).unwrap();
    let victim = Victim::new(child);
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x.post_with_ports(&7u32, vec![theirs]).unwrap();
    // The child streams three answers and drops its end; then this end
    // leaves the link.
    let first = mine.recv().unwrap();
    assert_eq!(*first.get::<u32>().unwrap(), 7);
    drop(first);
    std::thread::sleep(Duration::from_millis(50));
    let (_tx, rx) = mine.split().unwrap();
    for i in 1..3 {
        assert_eq!(*rx.recv().unwrap().get::<u32>().unwrap(), 7 + i);
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    drop(x);
    victim.wait_success();
}
