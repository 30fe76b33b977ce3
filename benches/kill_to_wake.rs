//! Time from `kill -9` of a peer process to the survivor's wake-up with
//! `Closed(PeerDied)`: the distribution over many kills (median, p90, p99,
//! max), for each way the survivor can be waiting:
//!
//! - `blocked`: parked in `recv` (spin 0), asleep on the port's socket;
//! - `spinning`: spinning in `recv` (spin 10 s), so only the periodic look
//!   at the socket notices;
//! - `port_set`: asleep in `PortSet::wait`.
//!
//! Each kill uses a fresh child (this binary, re-executed with
//! `SHMPORT_BENCH_ROLE=victim`). `cargo bench --bench kill_to_wake` runs
//! 1,000 kills per mode; `-- --kills N` changes that; `-- --test` (CI) runs
//! 10 and only checks that every wake-up is the right close event.

use std::process::Command;
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
    if std::env::var(ROLE_ENV).as_deref() == Ok("victim") {
        victim();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let test = args.iter().any(|a| a == "--test");
    let kills = args
        .iter()
        .position(|a| a == "--kills")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if test { 10 } else { 1000 });
    for mode in [Mode::Blocked, Mode::Spinning, Mode::PortSet] {
        let mut times: Vec<Duration> = (0..kills).map(|_| one_kill(mode)).collect();
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "kill_to_wake/{:<9} kills {kills:>5}  median {:>8.1?}  p90 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}",
            format!("{mode:?}").to_lowercase(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0),
        );
    }
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
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE_ENV, "victim");
    let (mut child, port) = MessageChannel::builder()
        .spin(Duration::ZERO)
        .spawn(cmd)
        .expect("spawning a victim");
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
