//! Channels inside links, against faults: a process killed in the middle
//! of moving a channel off its link, and a hostile peer writing over the
//! memory of its link.

mod common;

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::raw::serial;
use common::{Victim, peer, role};
use shmport::testing::fault::{self, Point};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

const PATIENCE: Duration = Duration::from_secs(10);

/// The point a mover stops at, for the hook (set once per process).
static STOP_AT: OnceLock<Point> = OnceLock::new();

fn stop_there(point: Point) {
    if STOP_AT.get() == Some(&point) {
        println!("at the point");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The entry point of every peer process.
#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        // The first message brings a port of a channel made for the link:
        // post 100 numbers on it, then split it (its channel moves off the
        // link) and stop in the middle of that move, to be killed.
        "mover-sealed" | "mover-announced" => {
            let point = if role == "mover-sealed" {
                Point::MoveSealed
            } else {
                Point::MoveAnnounced
            };
            STOP_AT.set(point).unwrap();
            fault::set_hook(stop_there);
            let mut m = port.recv().unwrap();
            let reply = m.take_ports().unwrap().pop().unwrap();
            drop(m);
            for i in 0..100u32 {
                reply.post(&i).unwrap();
            }
            let _halves = reply.split();
            panic!("the move went through without stopping");
        }
        // Keep every port that comes; at "scribble", write noise over the
        // memory of every link this process maps, say so, and wait to be
        // killed.
        "scribbler" => {
            let mut kept = Vec::new();
            loop {
                let mut m = port.recv().unwrap();
                if m.bytes() == b"scribble" {
                    break;
                }
                kept.push(m.take_ports().unwrap().pop().unwrap());
            }
            let n = scribble_on_links();
            assert!(n > 0, "no link memory mapped here");
            println!("scribbled");
            std::io::stdout().flush().unwrap();
            for p in &kept {
                let _ = p.post(&1u32);
            }
            std::thread::sleep(Duration::from_secs(60));
        }
        // Keep every port that comes; answer on each what comes on it
        // (one plus the number), until the first port closes.
        "keeper" => {
            let mut kept: Vec<MessagePort> = Vec::new();
            loop {
                match port.try_recv() {
                    Ok(mut m) => kept.push(m.take_ports().unwrap().pop().unwrap()),
                    Err(RecvError::Empty) => {}
                    Err(_) => return,
                }
                for p in &kept {
                    while let Ok(m) = p.try_recv() {
                        let v = *m.get::<u32>().unwrap();
                        drop(m);
                        p.post(&(v + 1)).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The first message brings the port to forward on: post every
        // port that comes on.
        "forwarder" => {
            let mut m = port.recv().unwrap();
            let onward = m.take_ports().unwrap().pop().unwrap();
            drop(m);
            while let Ok(mut m) = port.recv() {
                let ports = m.take_ports().unwrap();
                drop(m);
                onward.post_with_ports(&(), ports).unwrap();
            }
        }
        // The first message brings the port to forward on, the second a
        // port to forward: post it on, and exit at once.
        "forward-once" => {
            let mut m = port.recv().unwrap();
            let onward = m.take_ports().unwrap().pop().unwrap();
            drop(m);
            let mut m = port.recv().unwrap();
            let ports = m.take_ports().unwrap();
            drop(m);
            onward.post_with_ports(&(), ports).unwrap();
            std::process::exit(0);
        }
        // The first message brings the port whose ports to answer: post
        // one number on each, and drop it.
        "answerer" => {
            let mut m = port.recv().unwrap();
            let on = m.take_ports().unwrap().pop().unwrap();
            drop(m);
            while let Ok(mut m) = on.recv() {
                for p in m.take_ports().unwrap() {
                    p.post(&1u32).unwrap();
                }
            }
        }
        // Each message brings a port: answer on it after 2 ms (its
        // receiver is asleep on its doorbell by then), then drop it.
        "late-answerer" => {
            port.set_spin(Duration::ZERO);
            while let Ok(mut m) = port.recv() {
                let p = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                std::thread::sleep(Duration::from_millis(2));
                p.post(&1u32).unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Overwrite every writable mapping of a link's memory in this process
/// with noise; returns how many bytes were written.
fn scribble_on_links() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut written = 0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for line in maps.lines().filter(|l| l.contains("shmport-link")) {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with("rw") {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap();
        let lo = usize::from_str_radix(lo, 16).unwrap();
        let hi = usize::from_str_radix(hi, 16).unwrap();
        // Only the pages in use (the rest of an arena is never touched):
        // the first 4 MiB of each mapping.
        let end = hi.min(lo + (4 << 20));
        let mut at = lo;
        while at + 8 <= end {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // SAFETY: a writable shared mapping of this process, inside
            // its bounds; a hostile peer is what this test plays.
            unsafe { std::ptr::write_volatile(at as *mut u64, x) };
            at += 8;
        }
        written += end - lo;
    }
    written
}

/// A request channel: its far end goes over `x` into the link.
fn request_channel(x: &MessagePort) -> MessagePort {
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x.post_bytes_with_ports(b"port", vec![theirs]).unwrap();
    mine
}

/// A process killed while it moves a channel off the link (after sealing
/// the ring it reads, before or after telling the peer): the survivor gets
/// every message the dead process posted, once and in order, then
/// `PeerDied`.
#[test]
fn killed_in_the_middle_of_a_move_loses_and_repeats_nothing() {
    let _serial = serial();
    for role in ["mover-sealed", "mover-announced"] {
        let mut cmd = peer(role);
        cmd.stdout(std::process::Stdio::piped());
        let (child, x) = shmport::spawn(cmd).unwrap();
        let mut victim = Victim::new(child);
        let mine = request_channel(&x);
        // Messages the other way, queued when the move begins: the mover
        // carries them to the new segment; they die with it.
        for i in 0..10u32 {
            mine.post(&i).unwrap();
        }
        victim.wait_for("at the point");
        victim.kill();
        for i in 0..100u32 {
            let m = mine
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("{role}: message {i}: {e:?}"));
            assert_eq!(*m.get::<u32>().unwrap(), i, "{role}");
        }
        let end = mine.recv_timeout(PATIENCE);
        assert!(
            matches!(end, Err(RecvError::Closed(CloseReason::PeerDied))),
            "{role}: {end:?}"
        );
        assert!(matches!(
            mine.post(&0u32),
            Err(shmport::PostError::Closed(CloseReason::PeerDied))
        ));
    }
}

/// A peer that writes noise over its link's memory: the channels of that
/// link deliver what validates or close with `ProtocolError` (or
/// `PeerDied` once it is killed), never anything worse; the channels of
/// another link go on.
#[test]
fn a_peer_scribbling_on_its_link_harms_only_that_links_channels() {
    let _serial = serial();
    let mut cmd = peer("scribbler");
    cmd.stdout(std::process::Stdio::piped());
    let (bad, xb) = shmport::spawn(cmd).unwrap();
    let mut bad = Victim::new(bad);
    let (good, xg) = shmport::spawn(peer("keeper")).unwrap();
    let good = Victim::new(good);
    let bad_ports: Vec<MessagePort> = (0..20).map(|_| request_channel(&xb)).collect();
    let good_ports: Vec<MessagePort> = (0..5).map(|_| request_channel(&xg)).collect();
    xb.post_bytes(b"scribble").unwrap();
    bad.wait_for("scribbled");
    // Whatever the bad link's channels do now is allowed, but nothing
    // worse: no panic, no hang past the kill.
    let deadline = Instant::now() + Duration::from_secs(2);
    for p in &bad_ports {
        while Instant::now() < deadline {
            match p.recv_timeout(Duration::from_millis(20)) {
                Ok(m) => {
                    let _ = m.bytes().len();
                    let _ = m.get::<u32>();
                }
                Err(RecvError::Timeout) => break,
                Err(RecvError::Closed(_)) => break,
                Err(_) => {}
            }
        }
        let _ = p.post(&7u32);
    }
    bad.kill();
    for p in &bad_ports {
        let end = loop {
            match p.recv_timeout(PATIENCE) {
                Ok(_) => continue,
                Err(RecvError::Closed(reason)) => break reason,
                Err(RecvError::Timeout) => panic!("a channel of the dead link never closed"),
                Err(_) => continue,
            }
        };
        assert!(
            matches!(end, CloseReason::ProtocolError | CloseReason::PeerDied),
            "{end:?}"
        );
    }
    // The other link is untouched.
    for (i, p) in good_ports.iter().enumerate() {
        p.post(&(i as u32 * 10)).unwrap();
        let m = p.recv_timeout(PATIENCE).unwrap();
        assert_eq!(*m.get::<u32>().unwrap(), i as u32 * 10 + 1);
    }
    drop((good_ports, xg));
    good.wait_success();
}

/// Bytes of link memory this process has touched (resident), from
/// `/proc/self/smaps`.
fn link_memory_resident() -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_link = false;
    let mut total = 0;
    for line in smaps.lines() {
        if line.contains('-') && line.split_whitespace().count() >= 5 && !line.ends_with("kB") {
            in_link = line.contains("shmport-link");
        } else if in_link && line.starts_with("Rss:") {
            let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            total += kb << 10;
        }
    }
    total
}

/// Requests whose port goes on to a third process (each channel moves off
/// the link it was made in): the link's slots are reused once both sides
/// left them, so link memory does not grow with the requests.
#[test]
fn channels_that_moved_off_a_link_give_their_slots_back() {
    let _serial = serial();
    let (fwd, to_fwd) = shmport::spawn(peer("forwarder")).unwrap();
    let fwd = Victim::new(fwd);
    let (ans, to_ans) = shmport::spawn(peer("answerer")).unwrap();
    let ans = Victim::new(ans);
    let (onward, answer_on) = MessageChannel::new().unwrap().into_ports();
    to_ans
        .post_bytes_with_ports(b"on", vec![answer_on])
        .unwrap();
    to_fwd
        .post_bytes_with_ports(b"onward", vec![onward])
        .unwrap();
    let request = |n: u32| {
        let mine = request_channel(&to_fwd);
        let m = mine
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("request {n}: {e:?}"));
        assert_eq!(*m.get::<u32>().unwrap(), 1);
        drop(m);
        assert!(matches!(
            mine.recv_timeout(PATIENCE),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
    };
    for n in 0..300 {
        request(n);
    }
    let before = link_memory_resident();
    for n in 300..3000 {
        request(n);
    }
    let after = link_memory_resident();
    // Without reuse every moved channel leaves its touched pages behind
    // (8 KiB each here: over 20 MiB for these 2,700).
    assert!(
        after <= before + (4 << 20),
        "link memory grew from {before} to {after} bytes"
    );
    drop((to_fwd, to_ans));
    fwd.wait_success();
    ans.wait_success();
}

/// The process a port of a link channel came from may exit as soon as
/// its post returns: the port, posted on to a third process (its channel
/// moving off the link inside that post), works from there.
#[test]
fn the_middle_process_may_exit_once_it_posted_a_link_port_on() {
    let _serial = serial();
    for round in 0..10 {
        let (ans, to_ans) = shmport::spawn(peer("answerer")).unwrap();
        let ans = Victim::new(ans);
        let (mid, to_mid) = shmport::spawn(peer("forward-once")).unwrap();
        let mid = Victim::new(mid);
        let (onward, answer_on) = MessageChannel::new().unwrap().into_ports();
        to_ans
            .post_bytes_with_ports(b"on", vec![answer_on])
            .unwrap();
        to_mid
            .post_bytes_with_ports(b"onward", vec![onward])
            .unwrap();
        // A slot of the link between this process and the middle one.
        let mine = request_channel(&to_mid);
        mid.wait_success();
        let m = mine
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(*m.get::<u32>().unwrap(), 1);
        drop(m);
        assert!(matches!(
            mine.recv_timeout(PATIENCE),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
        drop((to_ans, to_mid));
        ans.wait_success();
    }
}

/// Threads that sleep on link channels and end, one after another and
/// two at a time: each ending thread gives its doorbell's number back, the
/// next takes it with a new doorbell, and the peer, whose table still
/// names the old one, finds that one closed and takes the new one in. No
/// wake-up is lost (a lost one would leave a receiver asleep past
/// `PATIENCE`).
#[test]
fn doorbell_numbers_reused_by_new_threads_wake_them() {
    let _serial = serial();
    let (child, x) = shmport::spawn(peer("late-answerer")).unwrap();
    let child = Victim::new(child);
    let x = std::sync::Mutex::new(x);
    for round in 0..60 {
        std::thread::scope(|s| {
            for t in 0..2 {
                let x = &x;
                s.spawn(move || {
                    let (mine, theirs) = MessageChannel::builder()
                        .spin(Duration::ZERO)
                        .build()
                        .unwrap()
                        .into_ports();
                    x.lock()
                        .unwrap()
                        .post_bytes_with_ports(b"port", vec![theirs])
                        .unwrap();
                    let m = mine
                        .recv_timeout(PATIENCE)
                        .unwrap_or_else(|e| panic!("round {round}, thread {t}: {e:?}"));
                    assert_eq!(*m.get::<u32>().unwrap(), 1);
                });
            }
        });
    }
    drop(x);
    child.wait_success();
}
