//! Time from `kill -9` of a peer process to the survivor's wake-up with
//! `Closed(PeerDied)`: the distribution over many kills (median, p90, p99,
//! max), for each way the survivor can be waiting:
//!
//! - `blocked`: parked in `recv` (spin 0), asleep on the port's socket;
//! - `spinning`: spinning in `recv` (spin 10 s), so only the periodic look
//!   at the socket notices;
//! - `port_set`: asleep in `PortSet::wait`.
//!
//! And `link_1000`: the survivor holds 1,000 channels made per request
//! (their far ends posted to the victim, slots of the two processes'
//! link), one thread parked in `recv` on one of them; after the kill that
//! thread wakes, then every channel is asked in turn: `first` is the
//! parked thread's wake-up, `all` the time until each of the 1,000
//! reported `Closed(PeerDied)` (over all channels of all kills), `rest`
//! that time after the first wake-up. (The kernel closes a killed
//! process's descriptors after it has torn down its memory: the victim's
//! 1,000 channels' mappings are part of `first`.) `link_1000_maker`: the
//! other end killed: the victim made the 1,000 channels (posting their far
//! ends to the survivor) and holds their near ends.
//!
//! Each kill uses a fresh child (this binary, re-executed with
//! `SHMPORT_BENCH_ROLE=victim`). `cargo bench --bench kill_to_wake` runs
//! 1,000 kills per mode; `-- --kills N` changes that; `-- --test` (CI) runs
//! 10 and only checks that every wake-up is the right close event.

use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use shmport::{CloseReason, MessageChannel, MessagePort, PortSet, RecvError};

const ROLE_ENV: &str = "SHMPORT_BENCH_ROLE";

#[derive(Clone, Copy, Debug)]
enum Mode {
    Blocked,
    Spinning,
    PortSet,
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("victim") => return victim(),
        Ok("holder") => return holder(),
        Ok("maker") => return maker(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().collect();
    let test = args.iter().any(|a| a == "--test");
    let kills = args
        .iter()
        .position(|a| a == "--kills")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if test { 10 } else { 1000 });
    for mode in [Mode::Blocked, Mode::Spinning, Mode::PortSet] {
        let times: Vec<Duration> = (0..kills).map(|_| one_kill(mode)).collect();
        report(&format!("{mode:?}").to_lowercase(), kills, times);
    }
    // Each kill here makes 1,000 channels: a tenth of the kills.
    let kills = (kills / 10).max(3);
    let runs: Vec<Vec<Duration>> = (0..kills).map(|_| kill_with_link_channels(1000)).collect();
    report(
        "link_1000/first",
        kills,
        runs.iter().map(|r| r[0]).collect(),
    );
    // After the first wake-up: what asking each channel in turn adds.
    report(
        "link_1000/rest",
        kills,
        runs.iter()
            .flat_map(|r| r[1..].iter().map(|t| *t - r[0]))
            .collect(),
    );
    report("link_1000/all", kills, runs.into_iter().flatten().collect());
    // The other end killed: the victim made the 1,000 channels and holds
    // their near ends; the survivor holds the far ends.
    let runs: Vec<Vec<Duration>> = (0..kills)
        .map(|_| kill_maker_of_link_channels(1000))
        .collect();
    report(
        "link_1000_maker/first",
        kills,
        runs.iter().map(|r| r[0]).collect(),
    );
    report(
        "link_1000_maker/all",
        kills,
        runs.into_iter().flatten().collect(),
    );
}

fn report(name: &str, kills: usize, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "kill_to_wake/{name:<15} kills {kills:>5}  median {:>8.1?}  p90 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
    );
}

/// The child for `link_1000`: keep every port that comes until "held",
/// say ready, then wait to be killed.
fn holder() {
    let port = MessagePort::from_parent().expect("holder: adopting the port");
    let mut kept = Vec::new();
    while let Ok(mut m) = port.recv() {
        if m.bytes() == b"held" {
            break;
        }
        kept.extend(m.take_ports().expect("ports"));
    }
    if port.post_bytes(b"ready").is_err() {
        return;
    }
    while port.recv().is_ok() {}
}

/// This binary again, in `role`, and its port; both ends parked (spin 0).
fn spawn_parked(role: &str) -> (Child, MessagePort) {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE_ENV, role);
    MessageChannel::builder()
        .spin(Duration::ZERO)
        .spawn(cmd)
        .unwrap_or_else(|e| panic!("spawning a {role}: {e}"))
}

/// The child for `link_1000_maker`: make the channels the first message
/// asks for, post each far end to the parent, say ready, then wait to be
/// killed holding the near ends.
fn maker() {
    let port = MessagePort::from_parent().expect("maker: adopting the port");
    let n = port
        .recv()
        .expect("how many")
        .get::<u32>()
        .expect("a count")
        .to_native();
    let mut kept = Vec::new();
    for _ in 0..n {
        let (mine, theirs) = MessageChannel::builder()
            .spin(Duration::ZERO)
            .build()
            .expect("channel")
            .into_ports();
        if port
            .post_bytes_with_ports(b"far end", vec![theirs])
            .is_err()
        {
            return;
        }
        kept.push(mine);
    }
    if port.post_bytes(b"ready").is_err() {
        return;
    }
    while port.recv().is_ok() {}
}

/// One kill of a process that made `n` channels per request and holds
/// their near ends (this process the far ends): per channel, the time from
/// the kill to its `PeerDied`.
fn kill_maker_of_link_channels(n: usize) -> Vec<Duration> {
    let (mut child, port) = spawn_parked("maker");
    port.post(&(n as u32)).expect("post the count");
    let mut theirs = Vec::with_capacity(n);
    loop {
        let mut m = port.recv().expect("far ends, then ready");
        if m.bytes() == b"ready" {
            break;
        }
        theirs.extend(m.take_ports().expect("a far end"));
    }
    assert_eq!(theirs.len(), n);
    for p in &theirs {
        p.set_spin(Duration::ZERO);
    }
    wait_for_the_kill(&mut child, theirs)
}

/// Park a thread on the first of `ports` (all on channels whose other
/// ends `child` holds), kill `child`, then ask every port in turn: per
/// port, the time from the kill to its `PeerDied`. Reaps `child`.
fn wait_for_the_kill(child: &mut Child, mut ports: Vec<MessagePort>) -> Vec<Duration> {
    // Each channel in use (built, looked at) before the kill, as a
    // survivor waiting on them would have them.
    for p in &ports {
        assert!(matches!(p.try_recv(), Err(RecvError::Empty)));
    }
    let first = ports.remove(0);
    let waiter = thread::spawn(move || {
        let r = first.recv().map(|m| m.bytes().len());
        (Instant::now(), r)
    });
    thread::sleep(Duration::from_millis(2));
    let t0 = Instant::now();
    child.kill().expect("kill the victim");
    let (woke, r) = waiter.join().expect("waiter thread");
    assert!(
        matches!(r, Err(RecvError::Closed(CloseReason::PeerDied))),
        "link_1000: woke with {r:?}"
    );
    let mut times = vec![woke - t0];
    for m in &ports {
        match m.recv() {
            Err(RecvError::Closed(CloseReason::PeerDied)) => times.push(t0.elapsed()),
            other => panic!("link_1000: a channel got {other:?}, not Closed(PeerDied)"),
        }
    }
    child.wait().expect("reap the victim");
    times
}

/// One kill of a process holding the far ends of `n` channels made per
/// request: per channel, the time from the kill to its `PeerDied`.
fn kill_with_link_channels(n: usize) -> Vec<Duration> {
    let (mut child, port) = spawn_parked("holder");
    let mut mine = Vec::with_capacity(n);
    for _ in 0..n {
        let (m, theirs) = MessageChannel::builder()
            .spin(Duration::ZERO)
            .build()
            .expect("channel")
            .into_ports();
        port.post_bytes_with_ports(b"keep", vec![theirs])
            .expect("post a port");
        mine.push(m);
    }
    port.post_bytes(b"held").expect("post");
    assert_eq!(port.recv().expect("ready").bytes(), b"ready");
    wait_for_the_kill(&mut child, mine)
}

/// The child: say ready, then wait to be killed.
fn victim() {
    let port = MessagePort::from_parent().expect("victim: adopting the port");
    if port.post_bytes(b"ready").is_err() {
        return;
    }
    while port.recv().is_ok() {}
}

/// How the survivor waits for the close event.
fn wait_for_close(port: MessagePort, mode: Mode) -> Result<usize, RecvError> {
    match mode {
        Mode::Blocked => port.recv().map(|m| m.bytes().len()),
        Mode::Spinning => {
            port.set_spin(Duration::from_secs(10));
            port.recv().map(|m| m.bytes().len())
        }
        Mode::PortSet => {
            let mut set = PortSet::new().expect("port set");
            let key = set.add(port).expect("add to the set");
            let ready = set.wait().expect("set wait");
            assert_eq!(ready, Some(key));
            set.get(key).unwrap().try_recv().map(|m| m.bytes().len())
        }
    }
}

fn one_kill(mode: Mode) -> Duration {
    let (mut child, port) = spawn_parked("victim");
    let (ready_tx, ready_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let ready = port.recv().expect("victim's ready message");
        assert_eq!(ready.bytes(), b"ready");
        drop(ready);
        ready_tx.send(()).expect("main thread waits");
        let result = wait_for_close(port, mode);
        (Instant::now(), result)
    });
    if ready_rx.recv().is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("kill_to_wake: the victim never said it was ready");
    }
    // Give the waiter time to park on the socket (or to start spinning).
    thread::sleep(Duration::from_millis(2));
    let t0 = Instant::now();
    child.kill().expect("kill the victim");
    let joined = waiter.join();
    child.wait().expect("reap the victim");
    let (woke, result) = joined.expect("waiter thread");
    match result {
        Err(RecvError::Closed(CloseReason::PeerDied)) => woke - t0,
        other => panic!("kill_to_wake/{mode:?}: woke with {other:?}, not Closed(PeerDied)"),
    }
}
