//! Fault injection: peer processes killed (`kill -9`) at every place that
//! matters, stopped with SIGSTOP, exiting without closing, and short of
//! descriptors. The survivor must wake with the right close reason, get
//! every message the peer fully posted first, never see half a message,
//! and keep its other ports working.
//!
//! Every peer is this test binary re-executed in a role (`peer_entry`);
//! a peer that is to be killed announces on stdout that it is in place,
//! then waits to be killed.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{Victim, noise, open_fds, peer, role};
use rustix::process::Signal;
use shmport::testing::fault::{self, Point};
use shmport::{CloseReason, MessageChannel, MessagePort, PortSet, PostError, RecvError};

/// Messages a peer posts before it is killed: small, mid-sized, one out of
/// line (larger than half the default 1 MiB ring), and typed ones.
const POSTED: u64 = 40;

fn size_of(i: u64) -> usize {
    match i % 10 {
        3 => 4096,
        7 if i == 7 => 2 << 20,
        9 => 0,
        _ => 64 + i as usize,
    }
}

fn post_numbered(port: &MessagePort, i: u64) {
    if i % 5 == 4 {
        port.post(&(i, format!("typed {i}"))).unwrap();
    } else {
        port.post_bytes(&noise(size_of(i), i)).unwrap();
    }
}

fn check_numbered(m: &shmport::Message<'_>, i: u64) {
    if i % 5 == 4 {
        let v = m.get::<(u64, String)>().unwrap();
        assert_eq!(v.0, i);
        assert_eq!(v.1.as_str(), format!("typed {i}"));
    } else {
        assert_eq!(m.bytes(), &noise(size_of(i), i)[..], "message {i}");
    }
}

/// Say `word` on stdout (the test waits for it), then wait to be killed.
fn announce_and_hang(word: &str) -> ! {
    println!("{word}");
    std::io::stdout().flush().unwrap();
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn hang_at(point: Point) {
    if point == Point::AfterAttachment {
        announce_and_hang("in-flight");
    }
}

fn hang_between_parts(point: Point) {
    if point == Point::BetweenParts {
        announce_and_hang("in-flight");
    }
}

fn hang_before(point: Point) {
    if point == Point::BeforeAttachment {
        announce_and_hang("in-flight");
    }
}

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        "post-then-hang" => {
            for i in 0..POSTED {
                post_numbered(&port, i);
            }
            announce_and_hang("ready");
        }
        "read-nothing" => announce_and_hang("ready"),
        "unread-then-post" => {
            // Wait until the parent's message (with its descriptor) is
            // queued on our socket, leave it unread, post one out of line.
            use rustix::event::{PollFd, PollFlags, poll};
            use std::os::fd::AsFd;
            let fd = port.as_fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            poll(&mut fds, None).unwrap();
            post_numbered(&port, 7);
            announce_and_hang("ready");
        }
        "half-written" => {
            for i in 0..3 {
                post_numbered(&port, i);
            }
            let mut r = port.reserve_bytes(1000).unwrap();
            r.bytes_mut()[..500].fill(0xAB);
            announce_and_hang("ready");
        }
        "carry-back-after-attachment" | "carry-back-before-attachment" | "carry-back" => {
            let mut m = port.recv().unwrap();
            let carried = m.take_ports().unwrap();
            drop(m);
            match role.as_str() {
                "carry-back-after-attachment" => fault::set_hook(hang_at),
                "carry-back-before-attachment" => fault::set_hook(hang_before),
                _ => false,
            };
            port.post_bytes_with_ports(b"carry", carried).unwrap();
            announce_and_hang("ready");
        }
        "carry-back-between-parts" => {
            // The port carried back goes first, so that it is in the first
            // socket message of an attachment that takes two: a port
            // holding 200 ports (400 descriptors) follows it.
            let mut m = port.recv().unwrap();
            let mut carried = m.take_ports().unwrap();
            drop(m);
            let (hf, h) = MessageChannel::new().unwrap().into_ports();
            let mut kept = Vec::new();
            for _ in 0..2 {
                let (k, sent): (Vec<_>, Vec<_>) = (0..100)
                    .map(|_| {
                        let (k, s) = MessageChannel::builder()
                            .capacity(4096)
                            .build()
                            .unwrap()
                            .into_ports();
                        // Built before it travels: it goes with its
                        // descriptors, in the attachment this test cuts.
                        let _ = s.max_inline_payload();
                        (k, s)
                    })
                    .unzip();
                kept.extend(k);
                hf.post_bytes_with_ports(b"batch", sent).unwrap();
            }
            carried.push(h);
            fault::set_hook(hang_between_parts);
            port.post_bytes_with_ports(b"carry", carried).unwrap();
            unreachable!("the hook hangs");
        }
        "holder-a" => {
            // Gets the travelling port and a port to B; says hello on it,
            // hands it to B, then lives on until killed.
            let mut m = port.recv().unwrap();
            let mut got = m.take_ports().unwrap();
            drop(m);
            let to_b = got.pop().unwrap();
            let travelling = got.pop().unwrap();
            travelling.post_bytes(b"hello from A").unwrap();
            to_b.post_bytes_with_ports(b"yours", vec![travelling])
                .unwrap();
            announce_and_hang("handed over");
        }
        "holder-b" => {
            let mut m = port.recv().unwrap();
            let from_a = m.take_ports().unwrap().pop().unwrap();
            drop(m);
            let mut m = from_a.recv().unwrap();
            let travelling = m.take_ports().unwrap().pop().unwrap();
            drop(m);
            println!("holding");
            std::io::stdout().flush().unwrap();
            // Echo on the travelling port until it closes.
            while let Ok(m) = travelling.recv() {
                let mut reply = b"B: ".to_vec();
                reply.extend_from_slice(m.bytes());
                drop(m);
                if travelling.post_bytes(&reply).is_err() {
                    break;
                }
            }
            announce_and_hang("done");
        }
        "exit-open" => {
            port.post_bytes(b"last words").unwrap();
            // Ends the process without running destructors: no close.
            std::process::exit(0);
        }
        "return" => {
            port.post_bytes(b"last words").unwrap();
            // Returning drops the port: a close.
        }
        "stream" => {
            // Number messages until the parent says stop.
            let mut i = 0u64;
            loop {
                match port.try_recv() {
                    Ok(_) => break,
                    Err(RecvError::Empty) => {}
                    Err(e) => panic!("{e}"),
                }
                if port.post_timeout(&i, Duration::from_millis(20)).is_ok() {
                    i += 1;
                }
            }
        }
        "nofile" => short_of_descriptors(port),
        other => panic!("unknown role {other}"),
    }
}

/// The tests here compare descriptor tables and time wake-ups: one at a
/// time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn(role: &str) -> (Victim, MessagePort) {
    let mut cmd = peer(role);
    cmd.stdout(Stdio::piped());
    let (child, port) = shmport::spawn(cmd).unwrap();
    (Victim::new(child), port)
}

/// Kill `victim` from another thread after `delay`, while this thread is
/// (by then) blocked in whatever `block` does; returns what `block` gave.
fn kill_during<T>(victim: Victim, delay: Duration, block: impl FnOnce() -> T) -> T {
    let killer = thread::spawn(move || {
        thread::sleep(delay);
        victim.kill();
    });
    let out = block();
    killer.join().unwrap();
    out
}

/// Receive the `POSTED` numbered messages the peer posted before dying.
fn receive_posted(port: &MessagePort) {
    for i in 0..POSTED {
        check_numbered(&port.recv().unwrap(), i);
    }
}

fn assert_peer_died<T: std::fmt::Debug>(r: Result<T, RecvError>) {
    match r {
        Err(RecvError::Closed(CloseReason::PeerDied)) => {}
        other => panic!("expected Closed(PeerDied), got {other:?}"),
    }
}

// ------------------------------------------------------------ peer killed

#[test]
fn killed_while_the_survivor_is_blocked_in_recv() {
    let _serial = serial();
    let (mut victim, port) = spawn("post-then-hang");
    victim.wait_for("ready");
    port.set_spin(Duration::ZERO);
    receive_posted(&port);
    let r = kill_during(victim, Duration::from_millis(50), || port.recv());
    assert_peer_died(r);
    // The close event stays: every later call says the same.
    assert_peer_died(port.try_recv());
}

#[test]
fn killed_while_the_survivor_spins_in_recv() {
    let _serial = serial();
    let (mut victim, port) = spawn("post-then-hang");
    victim.wait_for("ready");
    receive_posted(&port);
    // Spin far longer than the test: the death must be seen while spinning.
    let spin = Duration::from_secs(120);
    port.set_spin(spin);
    let start = Instant::now();
    let r = kill_during(victim, Duration::from_millis(50), || port.recv());
    assert_peer_died(r);
    assert!(
        start.elapsed() < spin / 4,
        "noticed only when the spin ended"
    );
}

#[test]
fn killed_while_the_survivor_is_blocked_posting_to_a_full_ring() {
    let _serial = serial();
    for spin in [Duration::ZERO, Duration::from_secs(120)] {
        let (mut victim, port) = spawn("read-nothing");
        victim.wait_for("ready");
        port.set_spin(spin);
        while port.try_post_bytes(&[1u8; 1000]).is_ok() {}
        let start = Instant::now();
        let r = kill_during(victim, Duration::from_millis(50), || {
            port.post_bytes(&[2u8; 1000])
        });
        assert!(
            matches!(r, Err(PostError::Closed(CloseReason::PeerDied))),
            "spin {spin:?}: {r:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(30), "spin {spin:?}");
    }
}

#[test]
fn killed_while_the_survivor_waits_in_a_port_set() {
    let _serial = serial();
    let (mut v1, p1) = spawn("post-then-hang");
    let (mut v2, p2) = spawn("post-then-hang");
    v1.wait_for("ready");
    v2.wait_for("ready");
    let (local, local_peer) = MessageChannel::new().unwrap().into_ports();
    let mut set = PortSet::new().unwrap();
    let k1 = set.add(p1).unwrap();
    let k2 = set.add(p2).unwrap();
    let kl = set.add(local_peer).unwrap();

    // Take everything both peers posted, through the set.
    let mut next = [0u64; 2];
    while next != [POSTED; 2] {
        let k = set.wait().unwrap().unwrap();
        let which = usize::from(k == k2);
        assert!(k == k1 || k == k2);
        let m = set.get(k).unwrap().try_recv().unwrap();
        check_numbered(&m, next[which]);
        next[which] += 1;
    }
    // Nothing more: the set sleeps until v1 dies; then it names p1, whose
    // close event is "peer died"; p2 and the local port are unaffected.
    let k = kill_during(v1, Duration::from_millis(50), || set.wait().unwrap());
    assert_eq!(k, Some(k1));
    assert_peer_died(set.get(k1).unwrap().try_recv());
    set.remove(k1);
    assert!(matches!(
        set.get(k2).unwrap().try_recv(),
        Err(RecvError::Empty)
    ));
    local.post_bytes(b"still here").unwrap();
    assert_eq!(set.wait().unwrap(), Some(kl));
    assert_eq!(set.get(kl).unwrap().recv().unwrap().bytes(), b"still here");
    let k = kill_during(v2, Duration::from_millis(20), || set.wait().unwrap());
    assert_eq!(k, Some(k2));
    assert_peer_died(set.get(k2).unwrap().try_recv());
}

#[test]
fn messages_held_when_the_peer_dies_stay_readable() {
    let _serial = serial();
    let fds = open_fds();
    let (mut victim, port) = spawn("post-then-hang");
    victim.wait_for("ready");
    let held: Vec<_> = (0..POSTED).map(|_| port.recv().unwrap()).collect();
    victim.kill();
    // The dead peer's segment stays mapped while anything refers to it.
    for (i, m) in held.iter().enumerate() {
        check_numbered(m, i as u64);
    }
    assert_peer_died(port.recv());
    for (i, m) in held.iter().enumerate().rev() {
        check_numbered(m, i as u64);
    }
    drop(held);
    drop(port);
    assert_eq!(open_fds(), fds, "descriptors left behind");
}

#[test]
fn a_record_half_written_when_the_peer_dies_is_never_delivered() {
    let _serial = serial();
    let (mut victim, port) = spawn("half-written");
    victim.wait_for("ready");
    victim.kill();
    for i in 0..3 {
        check_numbered(&port.recv().unwrap(), i);
    }
    assert_peer_died(port.recv());
}

/// A peer that dies with our messages unread makes the kernel report a
/// reset before the messages it sent: they must still arrive.
#[test]
fn a_peer_killed_with_our_messages_unread_still_delivers_its_own() {
    let _serial = serial();
    let (mut victim, port) = spawn("unread-then-post");
    port.post_bytes(&vec![9u8; 3 << 20]).unwrap();
    victim.wait_for("ready");
    victim.kill();
    check_numbered(&port.recv().unwrap(), 7);
    assert_peer_died(port.recv());
}

// --------------------------------------------------------- ports in flight

/// The peer is sent a port `y` (its far end `x` stays here) and posts it
/// back, stopping at `role`'s point; it is killed there.
fn carry_back(role: &str) -> (MessagePort, MessagePort) {
    let (mut victim, port) = spawn(role);
    let (x, y) = MessageChannel::new().unwrap().into_ports();
    x.post_bytes(b"queued on y").unwrap();
    port.post_bytes_with_ports(b"take this", vec![y]).unwrap();
    victim.wait_for(if role == "carry-back" {
        "ready"
    } else {
        "in-flight"
    });
    victim.kill();
    (port, x)
}

#[test]
fn killed_after_sending_a_ports_descriptors_but_before_publishing() {
    let _serial = serial();
    let fds = open_fds();
    let (port, x) = carry_back("carry-back-after-attachment");
    // The descriptors arrived; the record never will: no message, the
    // close event, and the port that was in flight dies with the carrier.
    assert_peer_died(port.recv());
    assert_peer_died(x.recv_timeout(Duration::from_secs(10)));
    drop((port, x));
    assert_eq!(open_fds(), fds, "descriptors left behind");
}

#[test]
fn killed_between_the_socket_messages_of_an_attachment() {
    let _serial = serial();
    let fds = open_fds();
    let (port, x) = carry_back("carry-back-between-parts");
    // Part of the attachment arrived, the rest and the record never will:
    // no message, the close event, and what came is closed then (the port
    // that was in it dies with the carrier, as if still in its hands).
    assert_peer_died(port.recv());
    assert_peer_died(x.recv_timeout(Duration::from_secs(10)));
    drop((port, x));
    assert_eq!(open_fds(), fds, "descriptors left behind");
}

#[test]
fn killed_before_sending_a_ports_descriptors() {
    let _serial = serial();
    let fds = open_fds();
    let (port, x) = carry_back("carry-back-before-attachment");
    assert_peer_died(port.recv());
    assert_peer_died(x.recv_timeout(Duration::from_secs(10)));
    drop((port, x));
    assert_eq!(open_fds(), fds, "descriptors left behind");
}

#[test]
fn killed_after_publishing_a_port_the_port_arrives_and_works() {
    let _serial = serial();
    let (port, x) = carry_back("carry-back");
    let mut m = port.recv().unwrap();
    assert_eq!(m.bytes(), b"carry");
    let y = m.take_ports().unwrap().pop().unwrap();
    drop(m);
    assert_peer_died(port.recv());
    // It kept its queued message through both hops.
    assert_eq!(y.recv().unwrap().bytes(), b"queued on y");
    y.post_bytes(b"back").unwrap();
    assert_eq!(x.recv().unwrap().bytes(), b"back");
    drop(y);
    assert!(matches!(
        x.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn a_published_port_nobody_takes_closes_when_the_message_is_dropped() {
    let _serial = serial();
    let (port, x) = carry_back("carry-back");
    drop(port.recv().unwrap());
    assert_peer_died(port.recv());
    assert!(matches!(
        x.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

// ----------------------------------------------------- death follows ports

/// A gets the travelling port `t` (far end `x` stays here) and hands it to
/// B over a direct channel.
fn hand_over() -> (Victim, MessagePort, Victim, MessagePort, MessagePort) {
    let (mut a, pa) = spawn("holder-a");
    let (mut b, pb) = spawn("holder-b");
    let (x, t) = MessageChannel::new().unwrap().into_ports();
    let (ab, ba) = MessageChannel::new().unwrap().into_ports();
    pa.post_bytes_with_ports(b"go", vec![t, ab]).unwrap();
    pb.post_bytes_with_ports(b"go", vec![ba]).unwrap();
    a.wait_for("handed over");
    b.wait_for("holding");
    assert_eq!(x.recv().unwrap().bytes(), b"hello from A");
    (a, pa, b, pb, x)
}

fn round_trip(x: &MessagePort, text: &[u8]) {
    x.post_bytes(text).unwrap();
    let m = x.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(m.bytes(), [b"B: ", text].concat());
}

#[test]
fn death_follows_the_port_killing_the_old_holder_does_not_close_it() {
    let _serial = serial();
    let (a, pa, b, _pb, x) = hand_over();
    round_trip(&x, b"one");
    a.kill();
    assert_peer_died(pa.recv());
    round_trip(&x, b"two");
    assert!(matches!(x.try_recv(), Err(RecvError::Empty)));
    b.kill();
    assert_peer_died(x.recv_timeout(Duration::from_secs(10)));
}

#[test]
fn death_follows_the_port_killing_the_new_holder_closes_it() {
    let _serial = serial();
    let (_a, pa, b, _pb, x) = hand_over();
    round_trip(&x, b"one");
    // A is alive and must hold no copy of the port: B's death closes it.
    b.kill();
    assert_peer_died(x.recv_timeout(Duration::from_secs(10)));
    assert!(matches!(pa.try_recv(), Err(RecvError::Empty)));
}

// ------------------------------------------------------------ normal exits

#[test]
fn exiting_without_closing_is_peer_died_and_returning_is_closed() {
    let _serial = serial();
    let (victim, port) = spawn("exit-open");
    assert_eq!(port.recv().unwrap().bytes(), b"last words");
    assert_peer_died(port.recv());
    victim.wait_success();

    let (victim, port) = spawn("return");
    assert_eq!(port.recv().unwrap().bytes(), b"last words");
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    victim.wait_success();
}

// ----------------------------------------------------------------- SIGSTOP

#[test]
fn a_stopped_peer_is_not_dead() {
    let _serial = serial();
    let (victim, port) = spawn("stream");
    let mut next = 0u64;
    let mut take = |port: &MessagePort, n: u64| {
        for _ in 0..n {
            let m = port.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(*m.get::<u64>().unwrap(), next);
            next += 1;
        }
    };
    take(&port, 100);
    victim.signal(Signal::STOP);
    // Drain what it posted before it stopped; then silence, not a close.
    loop {
        match port.recv_timeout(Duration::from_millis(300)) {
            Ok(m) => {
                assert_eq!(*m.get::<u64>().unwrap(), next);
                next += 1;
            }
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("a stopped peer read as {e:?}"),
        }
    }
    let mut set = PortSet::new().unwrap();
    let key = set.add(port).unwrap();
    assert_eq!(set.wait_timeout(Duration::from_millis(300)).unwrap(), None);
    let port = set.remove(key).unwrap();
    port.post(&0u64).unwrap();
    // Posting reached it, but it cannot answer while stopped.
    assert!(matches!(
        port.recv_timeout(Duration::from_millis(100)),
        Err(RecvError::Timeout)
    ));
    victim.signal(Signal::CONT);
    // It goes on where it was, sees our message, and closes.
    loop {
        match port.recv_timeout(Duration::from_secs(10)) {
            Ok(m) => {
                assert_eq!(*m.get::<u64>().unwrap(), next);
                next += 1;
            }
            Err(RecvError::Closed(CloseReason::Closed)) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    victim.wait_success();
}

// ------------------------------------------------------ out of descriptors

/// In a process whose descriptor limit is almost reached: creating a
/// channel fails with EMFILE; the existing port keeps working; a message
/// whose ports cannot be installed is an error for that message only.
fn short_of_descriptors(port: MessagePort) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = Some(64);
    setrlimit(Resource::Nofile, lim).unwrap();
    let mut hold = Vec::new();
    while let Ok(fd) = rustix::io::dup(std::io::stdin()) {
        hold.push(fd);
    }
    let emfile = Some(rustix::io::Errno::MFILE.raw_os_error());
    match MessageChannel::new() {
        Err(e) => assert_eq!(e.raw_os_error(), emfile, "{e}"),
        Ok(_) => panic!("a channel without descriptors"),
    }
    // The port we have still posts and receives.
    port.post(&"starved".to_string()).unwrap();
    assert_eq!(port.recv().unwrap().bytes(), b"plain");
    // The parent now sends a port: it cannot be installed here.
    match port.recv() {
        Err(RecvError::Io(e)) => assert_eq!(e.raw_os_error(), emfile, "{e}"),
        other => panic!("expected EMFILE for the message with a port, got {other:?}"),
    }
    // The next message is fine, and so is a port once descriptors are free.
    assert_eq!(port.recv().unwrap().bytes(), b"after");
    drop(hold);
    port.post(&"freed".to_string()).unwrap();
    let mut m = port.recv().unwrap();
    let got = m.take_ports().unwrap().pop().unwrap();
    drop(m);
    got.post_bytes(b"through the second port").unwrap();
    port.post(&"recovered".to_string()).unwrap();
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn out_of_descriptors_is_a_clear_error_and_breaks_nothing() {
    let _serial = serial();
    let (victim, port) = spawn("nofile");
    assert_eq!(
        port.recv().unwrap().get::<String>().unwrap().as_str(),
        "starved"
    );
    port.post_bytes(b"plain").unwrap();
    let (lost_far, lost) = MessageChannel::new().unwrap().into_ports();
    port.post_bytes_with_ports(b"lost", vec![lost]).unwrap();
    port.post_bytes(b"after").unwrap();
    // The port whose descriptors never arrived: its peer sees the close.
    assert!(matches!(
        lost_far.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Closed(_))
    ));
    // A port posted once the child has descriptors again arrives. (Posted
    // while it is still short, its descriptors, or the invitation to the
    // link its channel is made in, could be lost as the first port's.)
    assert_eq!(
        port.recv().unwrap().get::<String>().unwrap().as_str(),
        "freed"
    );
    let (far, second) = MessageChannel::new().unwrap().into_ports();
    port.post_bytes_with_ports(b"second", vec![second]).unwrap();
    assert_eq!(far.recv().unwrap().bytes(), b"through the second port");
    assert_eq!(
        port.recv().unwrap().get::<String>().unwrap().as_str(),
        "recovered"
    );
    drop(port);
    victim.wait_success();
}
