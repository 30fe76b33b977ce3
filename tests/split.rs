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
        "split-stream" => {
            // Both halves busy at once, as in the parent: our own stream
            // to the parent on this thread, the parent's checked on another.
            port.set_spin(Duration::ZERO);
            let (tx, rx) = port.split().unwrap();
            let receiver = thread::spawn(move || {
                for i in 0..STREAM {
                    let m = rx
                        .recv_timeout(PATIENCE)
                        .unwrap_or_else(|e| panic!("child: message {i}: {e:?}"));
                    assert!(m.bytes() == &stream(i, TO_CHILD)[..], "child: message {i}");
                }
                rx
            });
            for i in 0..STREAM {
                tx.post_bytes_timeout(&stream(i, TO_PARENT), PATIENCE)
                    .unwrap_or_else(|e| panic!("child: post {i}: {e:?}"));
            }
            let rx = receiver.join().unwrap();
            drop(tx.rejoin(rx).unwrap());
        }
        "taken-in-race" => {
            // The sending half parks for room (the parent reads nothing
            // yet) and so takes in what arrives on the socket; the hook
            // holds each attachment it takes between the socket and the
            // inbox. The receiving half comes late for each message, so it
            // finds the record while the attachment is held.
            shmport::testing::fault::set_hook(hold_taken_in);
            port.set_spin(Duration::ZERO);
            let (tx, rx) = port.split().unwrap();
            let sender = thread::Builder::new()
                .name(SENDING_HALF.into())
                .spawn(move || {
                    let mut i = 0u64;
                    while !STOP.load(std::sync::atomic::Ordering::Relaxed) && tx.post(&i).is_ok() {
                        i += 1;
                    }
                })
                .unwrap();
            for i in 0..RACES {
                // Long enough, even on a loaded machine, for the sending
                // half to fill the ring and park on the socket first.
                thread::sleep(Duration::from_millis(if i == 0 { 300 } else { 50 }));
                let m = rx
                    .recv_timeout(PATIENCE)
                    .unwrap_or_else(|e| panic!("child: message {i}: {e:?}"));
                assert!(m.bytes() == &race_payload(i)[..], "child: message {i}");
            }
            let held = HELD.load(std::sync::atomic::Ordering::Relaxed);
            assert!(held > 0, "the sending half never took an attachment in");
            println!("held {held} DONE");
            STOP.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(rx);
            sender.join().unwrap();
        }
        "drop-receiving-half-later" => {
            // Read nothing; after a while stop reading for good, keeping
            // the sending half (and so the socket) open.
            let (tx, rx) = port.split().unwrap();
            thread::sleep(Duration::from_millis(200));
            drop(rx);
            // Stay until the parent closes: then our posts fail.
            while tx.post_bytes(b"still here").is_ok() {
                thread::sleep(Duration::from_millis(20));
            }
        }
        "drop-sending-half-later" => {
            // Post nothing; after a while close the sending direction,
            // keeping the receiving half (and so the socket) open.
            let (tx, rx) = port.split().unwrap();
            thread::sleep(Duration::from_millis(200));
            drop(tx);
            // Stay until the parent closes.
            assert!(matches!(rx.recv(), Err(RecvError::Closed(_))));
        }
        "split-out-of-descriptors" => {
            // No descriptor left for the halves' eventfds: the split fails
            // and the port comes back whole and connected.
            use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
            let was = getrlimit(Resource::Nofile);
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
                .max()
                .unwrap();
            let tight = Rlimit {
                current: Some(highest + 1),
                maximum: was.maximum,
            };
            setrlimit(Resource::Nofile, tight).unwrap();
            // Take every free number below the limit too.
            let mut filler = Vec::new();
            while let Ok(fd) = rustix::io::dup(std::io::stdin()) {
                filler.push(fd);
            }
            let port = match port.split() {
                Ok(_) => panic!("split made eventfds past the descriptor limit"),
                Err(e) => {
                    assert_eq!(
                        e.error.raw_os_error(),
                        Some(rustix::io::Errno::MFILE.raw_os_error())
                    );
                    e.port
                }
            };
            drop(filler);
            setrlimit(Resource::Nofile, was).unwrap();
            // Still connected: an echo, then a split that works.
            let m = port.recv().unwrap();
            port.post_bytes(m.bytes()).unwrap();
            drop(m);
            let (tx, rx) = port.split().unwrap();
            tx.post_bytes(b"split now").unwrap();
            drop(tx.rejoin(rx).unwrap());
        }
        other => panic!("unknown role {other}"),
    }
}

/// Messages each way in the split streaming test.
const STREAM: u64 = 20_000;
/// Seeds of the two directions' payloads.
const TO_CHILD: u64 = 0;
const TO_PARENT: u64 = 1 << 32;
/// How long one message may take before a test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// Message `i` of a stream: every eighth is larger than half a 4 KiB ring,
/// so it travels out of line, with its memfd on the socket.
fn stream(i: u64, seed: u64) -> Vec<u8> {
    let len = if i % 8 == 7 {
        3000 + (i % 5) as usize
    } else {
        8 + (i % 200) as usize
    };
    noise(len, seed + i)
}

/// Out-of-line messages in the deterministic take-in race.
const RACES: u64 = 4;
const SENDING_HALF: &str = "sending-half";
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static HELD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn race_payload(i: u64) -> Vec<u8> {
    noise(600 * 1024 + i as usize, 77 + i)
}

fn hold_taken_in(point: shmport::testing::fault::Point) {
    if point == shmport::testing::fault::Point::TakenIn
        && thread::current().name() == Some(SENDING_HALF)
    {
        HELD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        thread::sleep(Duration::from_millis(200));
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

/// Both processes split their ports and stream both ways at once, with
/// out-of-line messages: each half of each port takes in attachments from
/// the shared socket while the other looks for them. Before the take-in
/// became one step for the other half this closed a port with
/// `ProtocolError`, or paired a record with the next message's memfd, in
/// most runs.
#[test]
fn split_halves_in_both_processes_stream_out_of_line_messages_both_ways() {
    let (child, port) = MessageChannel::builder()
        .capacity(4096)
        .spin(Duration::ZERO)
        .spawn(peer("split-stream"))
        .unwrap();
    let victim = Victim::new(child);
    let (tx, rx) = port.split().unwrap();
    assert!(tx.max_inline_payload() < 3000);
    let receiver = thread::spawn(move || {
        for i in 0..STREAM {
            let m = rx
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("message {i}: {e:?}"));
            assert!(
                m.bytes() == &stream(i, TO_PARENT)[..],
                "message {i}: wrong payload"
            );
        }
        rx
    });
    for i in 0..STREAM {
        tx.post_bytes_timeout(&stream(i, TO_CHILD), PATIENCE)
            .unwrap_or_else(|e| panic!("post {i}: {e:?}"));
    }
    let rx = receiver.join().unwrap();
    drop(tx.rejoin(rx).unwrap());
    victim.wait_success();
}

/// The same race made certain with a fault hook: the peer's sending half
/// holds every attachment it takes in for 200 ms before queuing it, while
/// its receiving half reads the record. The receive must wait for it.
#[test]
fn a_receive_waits_for_an_attachment_the_other_half_is_taking_in() {
    let (child, port) = MessageChannel::builder()
        .capacity(4096)
        .spawn({
            let mut c = peer("taken-in-race");
            c.stdout(std::process::Stdio::piped());
            c
        })
        .unwrap();
    let mut victim = Victim::new(child);
    for i in 0..RACES {
        port.post_bytes(&race_payload(i)).unwrap();
    }
    victim.wait_for("DONE");
    // Read (and so free) what the peer's sending half posted meanwhile,
    // up to its close.
    while port.recv_timeout(PATIENCE).is_ok() {}
    drop(port);
    victim.wait_success();
}

/// A post that waits for room wakes when the peer drops its receiving
/// half while it sleeps: the peer's socket stays open (its sending half
/// lives), so only the close's own wake-up tells it. It slept until its
/// deadline before.
#[test]
fn a_post_waiting_for_room_sees_the_peer_drop_its_receiving_half() {
    let (child, port) = MessageChannel::builder()
        .capacity(4096)
        .spin(Duration::ZERO)
        .spawn(peer("drop-receiving-half-later"))
        .unwrap();
    let victim = Victim::new(child);
    let (tx, rx) = port.split().unwrap();
    let (err, posted) = within_patience(move || {
        let mut posted = 0u64;
        loop {
            match tx.post_bytes(&[7; 100]) {
                Ok(()) => posted += 1,
                Err(e) => return (e, posted),
            }
        }
    })
    .expect("the post waiting for room never woke");
    assert!(
        posted > 0 && posted < 64,
        "{posted} posts into a 4 KiB ring"
    );
    assert!(
        matches!(err, shmport::PostError::Closed(CloseReason::Closed)),
        "{err:?}"
    );
    drop(rx);
    victim.wait_success();
}

/// Run `f` on a thread; `None` if it has not returned after [`PATIENCE`]
/// (the thread is left to the peer's death, which ends any wait).
fn within_patience<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(f());
    });
    result.recv_timeout(PATIENCE).ok()
}

#[test]
fn a_sleeping_receive_sees_the_peer_drop_its_sending_half() {
    let (child, port) = MessageChannel::builder()
        .spin(Duration::ZERO)
        .spawn(peer("drop-sending-half-later"))
        .unwrap();
    let victim = Victim::new(child);
    let (tx, rx) = port.split().unwrap();
    let rx = within_patience(move || {
        assert!(
            matches!(rx.recv(), Err(RecvError::Closed(CloseReason::Closed))),
            "not the close event"
        );
        rx
    })
    .expect("the sleeping receive never woke");
    // Closing our side ends the peer's wait for us.
    drop(tx);
    drop(rx);
    victim.wait_success();
}

/// A split that cannot get its descriptors hands the port back: the peer
/// sees no close and the channel goes on. The port was dropped before
/// (the peer saw `Closed`).
#[test]
fn a_failed_split_hands_the_port_back() {
    let (child, port) = shmport::spawn(peer("split-out-of-descriptors")).unwrap();
    let victim = Victim::new(child);
    port.post_bytes(b"echo me").unwrap();
    assert_eq!(port.recv().unwrap().bytes(), b"echo me");
    assert_eq!(port.recv().unwrap().bytes(), b"split now");
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
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

/// `close_receiving` refuses the peer's posts at once (a post waiting for
/// room wakes up to it), while a message received before stays readable.
#[test]
fn close_receiving_keeps_held_messages_and_refuses_posts() {
    let (a, b) = MessageChannel::builder()
        .capacity(4096)
        .build()
        .unwrap()
        .into_ports();
    let (_tx, rx) = b.split().unwrap();
    a.post_bytes(&[7; 1500]).unwrap();
    let held = rx.recv().unwrap();
    a.post_bytes(&[8; 1500]).unwrap();
    let waiter = thread::spawn(move || {
        // No room for a third: it waits until the close wakes it.
        let r = a.post_bytes(&[9; 1500]);
        (a, r)
    });
    thread::sleep(Duration::from_millis(50));
    rx.close_receiving();
    let (a, r) = waiter.join().unwrap();
    assert!(matches!(
        r,
        Err(shmport::PostError::Closed(CloseReason::Closed))
    ));
    assert!(matches!(
        a.post_bytes(b"x"),
        Err(shmport::PostError::Closed(CloseReason::Closed))
    ));
    assert_eq!(held.bytes(), &[7; 1500][..]);
}

/// `prepare_poll` on a receiving half: `false` with a message waiting;
/// after `true`, the peer's next post makes the socket readable.
#[test]
fn prepare_poll_on_the_receiving_half() {
    use rustix::event::{PollFd, PollFlags, poll};
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (_tx, rx) = b.split().unwrap();
    assert!(rx.prepare_poll());
    a.post_bytes(b"wake").unwrap();
    let mut fds = [PollFd::new(&rx, PollFlags::IN)];
    poll(&mut fds, None).unwrap();
    assert!(!rx.prepare_poll());
    assert_eq!(rx.try_recv().unwrap().bytes(), b"wake");
}

/// A foreign loop waiting for a receiving half's messages while the
/// sending half, on another thread, waits for room: the wake-up meant for
/// the receiving half reaches the socket, the sending half takes it in,
/// and `wake_fd` turns readable instead; `prepare_poll` clears it.
#[test]
fn wake_fd_is_set_when_the_sending_half_takes_in_the_receivers_wake_up() {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let (a, b) = shmport::ChannelBuilder::new()
        .capacity(4096)
        .spin(Duration::ZERO)
        .build()
        .unwrap()
        .into_ports();
    let (tx, rx) = b.split().unwrap();
    while tx.try_post_bytes(&[1; 512]).is_ok() {}
    // The ring towards `a` is full and `a` does not read: this post sleeps
    // on the port's socket until `a` reads.
    let poster = thread::spawn(move || {
        tx.post_bytes(&[2; 512]).unwrap();
        tx
    });
    thread::sleep(Duration::from_millis(100));
    assert!(rx.prepare_poll());
    a.post_bytes(b"for the receiving half").unwrap();
    // Only the poster reads the socket now: it takes the wake-up in and
    // sets the receiving half's eventfd.
    let guard = Timespec {
        tv_sec: 30,
        tv_nsec: 0,
    };
    let wake = rx.wake_fd();
    let mut fds = [PollFd::new(&wake, PollFlags::IN)];
    assert_eq!(poll(&mut fds, Some(&guard)).unwrap(), 1);
    assert!(rx.has_event());
    assert!(!rx.prepare_poll());
    assert_eq!(rx.try_recv().unwrap().bytes(), b"for the receiving half");
    assert!(!rx.has_event());
    // Cleared by the next prepare.
    assert!(rx.prepare_poll());
    let mut fds = [PollFd::new(&wake, PollFlags::IN)];
    assert_eq!(poll(&mut fds, Some(&Timespec::default())).unwrap(), 0);
    // Let the poster finish.
    while a.try_recv().is_ok() {}
    let tx = poster.join().unwrap();
    drop((tx, rx));
}
