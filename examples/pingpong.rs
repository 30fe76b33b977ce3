//! Ping-pong between two processes over shmport, in plain numbers.
//!
//! ```text
//! cargo run --release --example pingpong            # full counts, a few seconds
//! cargo run --release --example pingpong -- --quick # small counts, for tests
//! ```
//!
//! The example starts copies of itself as peer processes (with
//! `SHMPORT_PINGPONG_ROLE` set, `main` plays the peer) and measures:
//! - round-trip latency of a 64-byte typed message, spinning (both sides
//!   busy-wait) and blocking (both sides sleep on every message), each timed
//!   per round trip; a pipe ping-pong of 64 bytes for comparison;
//! - one-way throughput of 64-byte typed messages and of 1 MiB messages
//!   (inside an 8 MiB ring, and out of line with the default 1 MiB ring);
//! - the time from `kill -9` of the peer to the wake-up of a thread blocked
//!   in `recv`, which returns `Closed(PeerDied)`;
//! - for reference, the hardware's floor for the spin path: a cache-line
//!   round trip between two threads of one process.
//!
//! Every peer exits by itself when its port (or pipe) closes; the example
//! waits for each one.

use std::error::Error;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::reap;
use shmport::rkyv::{Archive, Serialize};
use shmport::{CloseReason, DEFAULT_CAPACITY, Message, MessageChannel, MessagePort, RecvError};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Which peer role a re-executed copy plays.
const ROLE_ENV: &str = "SHMPORT_PINGPONG_ROLE";
/// The peer's spin time, in nanoseconds.
const SPIN_ENV: &str = "SHMPORT_PINGPONG_SPIN_NS";

/// Spin "for ever": blocking calls never park while the peer is busy.
const BUSY: Duration = Duration::from_secs(10);
/// Park at once.
const PARK: Duration = Duration::ZERO;

const MIB: usize = 1 << 20;

/// The 64-byte typed message.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Msg64 {
    words: [u64; 8],
}

const _: () = assert!(size_of::<ArchivedMsg64>() == 64);

/// How much to measure.
struct Counts {
    rtt_spin: usize,
    rtt_block: usize,
    oneway_64: u64,
    oneway_1mib: u64,
    oneway_ool: u64,
    kills: usize,
}

const FULL: Counts = Counts {
    rtt_spin: 100_000,
    rtt_block: 2_000,
    oneway_64: 5_000_000,
    oneway_1mib: 5_000,
    oneway_ool: 200,
    kills: 7,
};

const QUICK: Counts = Counts {
    rtt_spin: 5_000,
    rtt_block: 500,
    oneway_64: 5_000,
    oneway_1mib: 50,
    oneway_ool: 10,
    kills: 2,
};

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return run_role(&role);
    }
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            other => return Err(format!("unknown argument {other:?} (try --quick)").into()),
        }
    }
    let n = if quick { &QUICK } else { &FULL };
    let started = Instant::now();

    {
        let peer = Peer::spawn("echo", DEFAULT_CAPACITY, BUSY)?;
        rtt_typed(peer.port(), n.rtt_spin / 10)?; // warm up
        let times = rtt_typed(peer.port(), n.rtt_spin)?;
        print_latency("rtt 64 B spin", &times, "round trips");
        peer.finish()?;
    }
    {
        let peer = Peer::spawn("echo", DEFAULT_CAPACITY, PARK)?;
        rtt_typed(peer.port(), n.rtt_block / 10)?;
        let times = rtt_typed(peer.port(), n.rtt_block)?;
        print_latency("rtt 64 B block", &times, "round trips");
        peer.finish()?;
    }
    {
        let mut peer = PipePeer::spawn()?;
        peer.rtt(n.rtt_block / 10)?;
        let times = peer.rtt(n.rtt_block)?;
        print_latency("rtt 64 B pipe (for comparison)", &times, "round trips");
        peer.finish()?;
    }
    {
        let peer = Peer::spawn("sink", DEFAULT_CAPACITY, BUSY)?;
        let port = peer.port();
        let post = |i: u64| {
            let mut words = [0u64; 8];
            words[7] = i;
            port.post(&Msg64 { words })
        };
        oneway(port, n.oneway_64 / 10, post)?;
        let t = oneway(port, n.oneway_64, post)?;
        println!(
            "one-way 64 B typed: {:.2} million messages/s ({} messages in {})",
            n.oneway_64 as f64 / t.as_secs_f64() / 1e6,
            n.oneway_64,
            fmt_duration(t),
        );
        peer.finish()?;
    }
    let payload: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    for (what, capacity, count) in [
        ("inline, 8 MiB ring", 8 * MIB, n.oneway_1mib),
        ("out of line, 1 MiB ring", DEFAULT_CAPACITY, n.oneway_ool),
    ] {
        let peer = Peer::spawn("sink", capacity, BUSY)?;
        let port = peer.port();
        let post = |_| port.post_bytes(&payload);
        oneway(port, count / 10 + 1, post)?;
        let t = oneway(port, count, post)?;
        println!(
            "one-way 1 MiB {what}: {:.2} GB/s ({count} messages in {})",
            (count as usize * MIB) as f64 / t.as_secs_f64() / 1e9,
            fmt_duration(t),
        );
        peer.finish()?;
    }
    {
        let mut times = Vec::with_capacity(n.kills);
        for _ in 0..n.kills {
            times.push(kill_to_wake()?);
        }
        times.sort_unstable();
        println!(
            "kill -9 of the peer to wake-up of its blocked receiver: median {}, max {} ({} kills, recv returned Closed(PeerDied))",
            fmt_duration(times[times.len() / 2]),
            fmt_duration(times[times.len() - 1]),
            n.kills,
        );
    }
    {
        let times = cache_line_rtt(n.rtt_spin);
        print_latency(
            "reference, not shmport: cache-line round trip between two threads",
            &times,
            "round trips",
        );
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ------------------------------------------------------------------ peers

fn run_role(role: &str) -> Result<()> {
    match role {
        "echo" => echo(adopt()?),
        "sink" => sink(adopt()?),
        "victim" => victim(adopt()?),
        "pipe" => pipe_echo(),
        other => Err(format!("{ROLE_ENV}={other:?}: unknown role").into()),
    }
}

/// Adopt the port the parent passed, with the spin time it asked for.
fn adopt() -> Result<MessagePort> {
    let port = MessagePort::from_parent()?;
    let spin = std::env::var(SPIN_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(shmport::DEFAULT_SPIN, Duration::from_nanos);
    port.set_spin(spin);
    Ok(port)
}

/// The next message, or `None` once the parent's port is gone (for any
/// reason): the peer then returns and exits.
fn next(port: &MessagePort) -> Result<Option<Message<'_>>> {
    match port.recv() {
        Ok(m) => Ok(Some(m)),
        Err(RecvError::Closed(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reply to every `Msg64` with the same message, first word plus one.
fn echo(port: MessagePort) -> Result<()> {
    while let Some(msg) = next(&port)? {
        let mut words = msg.get::<Msg64>()?.words.map(|w| w.to_native());
        drop(msg);
        words[0] = words[0].wrapping_add(1);
        if port.post(&Msg64 { words }).is_err() {
            break; // the parent is gone
        }
    }
    Ok(())
}

/// Batches: a typed `u64` count, then that many messages, each read
/// cheaply; then an ack (the count) back.
fn sink(port: MessagePort) -> Result<()> {
    while let Some(head) = next(&port)? {
        let n = head.get::<u64>()?.to_native();
        drop(head);
        let mut acc = 0u64;
        for _ in 0..n {
            let Some(msg) = next(&port)? else {
                return Ok(());
            };
            acc = acc.wrapping_add(touch(&msg)?);
        }
        black_box(acc);
        if port.post(&n).is_err() {
            break;
        }
    }
    Ok(())
}

/// One word of a typed `Msg64` (after validation), or the first and last
/// byte of raw bytes: enough to prove the message arrived, without reading
/// all of a large one.
fn touch(msg: &Message<'_>) -> Result<u64> {
    if msg.is_typed() {
        return Ok(msg.get::<Msg64>()?.words[7].to_native());
    }
    let b = msg.bytes();
    Ok(match (b.first(), b.last()) {
        (Some(&x), Some(&y)) => u64::from(x) + u64::from(y),
        _ => 0,
    })
}

/// Say "ready", then wait (asleep) until killed or the port closes.
fn victim(port: MessagePort) -> Result<()> {
    port.set_spin(PARK);
    if port.post_bytes(b"ready").is_ok() {
        while next(&port)?.is_some() {}
    }
    Ok(())
}

/// Echo 64-byte blocks from stdin to stdout, unbuffered, until end of input.
fn pipe_echo() -> Result<()> {
    let mut input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut buf = [0u8; 64];
    while input.read_exact(&mut buf).is_ok() {
        if output.write_all(&buf).is_err() {
            break;
        }
    }
    Ok(())
}

// ------------------------------------------------------- the parent's side

fn peer_command(role: &str, spin: Duration) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role)
        .env(SPIN_ENV, spin.as_nanos().to_string());
    Ok(cmd)
}

/// A peer process with a port; closing the port makes the peer exit.
struct Peer {
    port: Option<MessagePort>,
    child: Child,
    role: &'static str,
}

impl Peer {
    fn spawn(role: &'static str, capacity: usize, spin: Duration) -> Result<Peer> {
        let (child, port) = MessageChannel::builder()
            .capacity(capacity)
            .spin(spin)
            .spawn(peer_command(role, spin)?)?;
        Ok(Peer {
            port: Some(port),
            child,
            role,
        })
    }

    fn port(&self) -> &MessagePort {
        self.port.as_ref().expect("the port is open until finish")
    }

    /// Close the port and check that the peer exited cleanly.
    fn finish(mut self) -> Result<()> {
        drop(self.port.take());
        reap(&mut self.child, self.role)
    }
}

impl Drop for Peer {
    /// On an early return: close the port and reap the peer anyway.
    fn drop(&mut self) {
        if self.port.take().is_some() {
            let _ = reap(&mut self.child, self.role);
        }
    }
}

/// A pipe echo peer; closing its stdin makes it exit.
struct PipePeer {
    child: Child,
}

impl PipePeer {
    fn spawn() -> Result<PipePeer> {
        let mut cmd = peer_command("pipe", PARK)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        Ok(PipePeer {
            child: cmd.spawn()?,
        })
    }

    fn rtt(&mut self, count: usize) -> Result<Vec<Duration>> {
        let to = self.child.stdin.as_mut().ok_or("pipe closed")?;
        let from = self.child.stdout.as_mut().ok_or("pipe closed")?;
        let mut times = Vec::with_capacity(count);
        let mut buf = [0u8; 64];
        for i in 0..count as u64 {
            buf[..8].copy_from_slice(&i.to_le_bytes());
            let t = Instant::now();
            to.write_all(&buf)?;
            from.read_exact(&mut buf)?;
            times.push(t.elapsed());
            if buf[..8] != i.to_le_bytes() {
                return Err("pipe peer echoed the wrong block".into());
            }
        }
        Ok(times)
    }

    fn finish(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        reap(&mut self.child, "pipe")
    }
}

impl Drop for PipePeer {
    fn drop(&mut self) {
        if self.child.stdin.take().is_some() {
            let _ = reap(&mut self.child, "pipe");
        }
    }
}

/// `count` round trips of a `Msg64`, each timed.
fn rtt_typed(port: &MessagePort, count: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(count);
    let mut words = [0u64; 8];
    for i in 0..count as u64 {
        words[0] = i;
        let t = Instant::now();
        port.post(&Msg64 { words })?;
        let reply = port.recv()?;
        let got = reply.get::<Msg64>()?.words[0].to_native();
        drop(reply);
        times.push(t.elapsed());
        if got != i.wrapping_add(1) {
            return Err(format!("echo replied {got} to {i}").into());
        }
    }
    Ok(times)
}

/// Announce `count`, post that many messages, wait for the sink's ack: the
/// time until the last message was delivered and read.
fn oneway<E: Error + 'static>(
    port: &MessagePort,
    count: u64,
    mut post: impl FnMut(u64) -> Result<(), E>,
) -> Result<Duration> {
    let start = Instant::now();
    port.post(&count)?;
    for i in 0..count {
        post(i)?;
    }
    let ack = port.recv()?;
    let elapsed = start.elapsed();
    if ack.get::<u64>()?.to_native() != count {
        return Err("the sink acked the wrong count".into());
    }
    Ok(elapsed)
}

/// Spawn a victim, wait until it is ready and a thread of ours is asleep in
/// `recv`, `kill -9` it, and time until that `recv` returns.
fn kill_to_wake() -> Result<Duration> {
    let (mut child, port) = MessageChannel::builder()
        .spin(PARK)
        .spawn(peer_command("victim", PARK)?)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let ready = port.recv().map(|m| m.bytes() == b"ready");
        let _ = ready_tx.send(matches!(ready, Ok(true)));
        let result = port.recv().map(|m| m.bytes().len());
        (Instant::now(), result)
    });
    let ready = ready_rx.recv().unwrap_or(false);
    // Give the waiter time to fall asleep on the port's socket.
    thread::sleep(Duration::from_millis(2));
    let t0 = Instant::now();
    child.kill()?;
    let joined = waiter.join();
    child.wait()?;
    let (woke, result) = joined.map_err(|_| "the waiting thread panicked")?;
    if !ready {
        return Err("the victim did not say it was ready".into());
    }
    match result {
        Err(RecvError::Closed(CloseReason::PeerDied)) => Ok(woke - t0),
        other => Err(format!("recv after kill -9 returned {other:?}, not Closed(PeerDied)").into()),
    }
}

/// The hardware's floor for the spin path: two threads of this process bounce
/// a counter through one cache line (each round trip timed like the port's).
fn cache_line_rtt(count: usize) -> Vec<Duration> {
    let ping = Arc::new(AtomicU64::new(0));
    let pong = Arc::new(AtomicU64::new(0));
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let total = (count + count / 10) as u64;
    let echo = thread::spawn(move || {
        for i in 1..=total {
            while ping2.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            pong2.store(i, Ordering::Release);
        }
    });
    let mut times = Vec::with_capacity(count);
    for i in 1..=total {
        let t = Instant::now();
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        if i > total - count as u64 {
            times.push(t.elapsed());
        }
    }
    echo.join().expect("echo thread");
    times
}

// ----------------------------------------------------------------- output

fn print_latency(what: &str, times: &[Duration], unit: &str) {
    let mut ns: Vec<u64> = times.iter().map(|t| t.as_nanos() as u64).collect();
    ns.sort_unstable();
    let pick = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    println!(
        "{what}: median {}, p99 {} ({} {unit})",
        fmt_us(pick(0.5)),
        fmt_us(pick(0.99)),
        ns.len(),
    );
}

fn fmt_us(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 10.0 {
        format!("{us:.2} us")
    } else {
        format!("{us:.1} us")
    }
}

fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as u64;
    if ns < 1_000_000 {
        fmt_us(ns)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}
