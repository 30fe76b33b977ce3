//! Transport benchmarks between two real processes.
//!
//! ```text
//! cargo bench --bench transport            # the full run, about 40 s
//! cargo bench --bench transport -- --test  # every benchmark once (CI)
//! cargo bench --bench transport -- rtt_64B # one group
//! ```
//!
//! Groups:
//! - `rtt_64B/{spin,block,pipe}`: round trip of a 64-byte message. `spin`
//!   busy-spins on both sides, `block` parks on the port's socket for every
//!   message, `pipe` is a plain pipe ping-pong for comparison with `block`.
//! - `oneway_64B/{typed,raw}`: stream of 64-byte messages, one way; the
//!   receiver acks after the last one, so delivery of all of them is timed.
//! - `oneway_1MiB/{inline,out_of_line}`: 1 MiB messages, one way, inside an
//!   8 MiB ring, or out of line (a sealed memfd each) with the default ring.
//!
//! The time from `kill -9` to the survivor's wake-up is measured by the
//! `kill_to_wake` bench (a distribution over many kills, not criterion).
//!
//! Warm-up 1 s and measurement 3 s per benchmark (criterion's
//! `--warm-up-time` / `--measurement-time` override them).
//!
//! The peer processes are this binary, re-executed: with `SHMPORT_BENCH_ROLE`
//! set, `main` runs that role instead of criterion. Every peer exits on its
//! own when the bench's end of the port (or pipe) closes.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shmport::rkyv::{Archive, Serialize};
use shmport::{DEFAULT_CAPACITY, Message, MessageChannel, MessagePort, RecvError};

/// Which peer role a re-executed bench binary plays.
const ROLE_ENV: &str = "SHMPORT_BENCH_ROLE";
/// The peer's spin time, in nanoseconds.
const SPIN_ENV: &str = "SHMPORT_BENCH_SPIN_NS";

/// Spin "for ever": blocking calls never park while the peer is busy.
const BUSY: Duration = Duration::from_secs(10);
/// Park at once.
const PARK: Duration = Duration::ZERO;

const MIB: usize = 1 << 20;
/// Ring capacity for inline 1 MiB messages (up to half a ring is inline).
const BIG_RING: usize = 8 * MIB;

/// The 64-byte typed message.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Msg64 {
    words: [u64; 8],
}

const _: () = assert!(size_of::<ArchivedMsg64>() == 64);

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        run_role(&role);
        return;
    }
    let mut c = common::criterion();
    rtt_64b(&mut c);
    oneway_64b(&mut c);
    oneway_1mib(&mut c);
    c.final_summary();
}

// ------------------------------------------------------------------ peers

fn run_role(role: &str) {
    match role {
        "echo" => echo(adopt()),
        "sink" => sink(adopt()),
        "pipe" => pipe_echo().expect("pipe peer: stdin/stdout"),
        other => panic!("{ROLE_ENV}={other:?}: unknown role"),
    }
}

/// Adopt the port the bench passed, with the spin time it asked for.
fn adopt() -> MessagePort {
    let port = MessagePort::from_parent().expect("peer: adopting the port");
    let spin = std::env::var(SPIN_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(shmport::DEFAULT_SPIN, Duration::from_nanos);
    port.set_spin(spin);
    port
}

/// The next message, or `None` once the bench's port is gone (any reason):
/// the peer then returns and exits.
fn next(port: &MessagePort) -> Option<Message<'_>> {
    match port.recv() {
        Ok(m) => Some(m),
        Err(RecvError::Closed(_)) => None,
        Err(e) => panic!("peer: recv failed: {e}"),
    }
}

/// Reply to every `Msg64` with the same message, first word plus one.
fn echo(port: MessagePort) {
    while let Some(msg) = next(&port) {
        let mut words = msg
            .get::<Msg64>()
            .expect("echo peer: expected a Msg64")
            .words
            .map(|w| w.to_native());
        drop(msg);
        words[0] = words[0].wrapping_add(1);
        if port.post(&Msg64 { words }).is_err() {
            return;
        }
    }
}

/// Batches: a typed `u64` count, then that many messages, each touched
/// cheaply; then an ack (the count) back.
fn sink(port: MessagePort) {
    while let Some(head) = next(&port) {
        let n = head
            .get::<u64>()
            .expect("sink peer: expected a u64 count")
            .to_native();
        drop(head);
        let mut acc = 0u64;
        for _ in 0..n {
            let Some(msg) = next(&port) else { return };
            acc = acc.wrapping_add(touch(&msg));
        }
        black_box(acc);
        if port.post(&n).is_err() {
            return;
        }
    }
}

/// Read a message the cheap way: one word of a typed `Msg64` (after
/// validation), or the first and last byte of raw bytes.
fn touch(msg: &Message<'_>) -> u64 {
    if msg.is_typed() {
        msg.get::<Msg64>()
            .expect("sink peer: expected a Msg64")
            .words[7]
            .to_native()
    } else {
        let b = msg.bytes();
        match (b.first(), b.last()) {
            (Some(&x), Some(&y)) => u64::from(x) + u64::from(y),
            _ => 0,
        }
    }
}

/// Echo 64-byte blocks from stdin to stdout, unbuffered, until end of input.
fn pipe_echo() -> io::Result<()> {
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

// ------------------------------------------------------- the bench's side

fn peer_command(role: &str, spin: Duration) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.env(ROLE_ENV, role)
        .env(SPIN_ENV, spin.as_nanos().to_string());
    cmd
}

/// Wait for a child that should be exiting; kill it if it has not after a
/// while, so that no process is left behind whatever happens.
fn reap(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() && !thread::panicking() {
                    eprintln!("{what} peer exited with {status}");
                }
                return;
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                eprintln!("{what} peer did not exit in 10 s; killing it");
                break;
            }
            Err(e) => {
                eprintln!("{what} peer: wait failed: {e}; killing it");
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A peer process with a port; dropping it closes the port, which makes the
/// peer exit, and reaps the peer.
struct Peer {
    port: Option<MessagePort>,
    child: Child,
    role: &'static str,
}

impl Peer {
    fn spawn(role: &'static str, capacity: usize, spin: Duration) -> Peer {
        let (child, port) = MessageChannel::builder()
            .capacity(capacity)
            .spin(spin)
            .spawn(peer_command(role, spin))
            .expect("spawning a peer");
        Peer {
            port: Some(port),
            child,
            role,
        }
    }

    fn port(&self) -> &MessagePort {
        self.port
            .as_ref()
            .expect("port is open while the peer lives")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.port.take());
        reap(&mut self.child, self.role);
    }
}

/// A pipe echo peer; dropping it closes its stdin, which makes it exit.
struct PipePeer {
    child: Child,
    to: Option<ChildStdin>,
    from: ChildStdout,
}

impl PipePeer {
    fn spawn() -> PipePeer {
        let mut cmd = peer_command("pipe", PARK);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the pipe peer");
        let to = child.stdin.take().expect("piped stdin");
        let from = child.stdout.take().expect("piped stdout");
        PipePeer {
            child,
            to: Some(to),
            from,
        }
    }
}

impl Drop for PipePeer {
    fn drop(&mut self) {
        drop(self.to.take());
        reap(&mut self.child, "pipe");
    }
}

fn rtt_typed(port: &MessagePort, iters: u64) -> Duration {
    let mut words = [0u64; 8];
    let start = Instant::now();
    for i in 0..iters {
        words[0] = i;
        port.post(&Msg64 { words }).expect("post");
        let reply = port.recv().expect("recv");
        let got = reply.get::<Msg64>().expect("reply is a Msg64").words[0].to_native();
        if got != i.wrapping_add(1) {
            panic!("echo replied {got} to {i}");
        }
    }
    start.elapsed()
}

fn rtt_pipe(peer: &mut PipePeer, iters: u64) -> Duration {
    let to = peer.to.as_mut().expect("pipe open");
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for i in 0..iters {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        to.write_all(&buf).expect("pipe write");
        peer.from.read_exact(&mut buf).expect("pipe read");
    }
    let elapsed = start.elapsed();
    assert_eq!(
        buf[..8],
        iters.wrapping_sub(1).to_le_bytes()[..],
        "pipe echo"
    );
    elapsed
}

/// Announce `iters`, post that many messages with `post_one`, wait for the
/// sink's ack: the time until the last message was delivered and read.
fn oneway(port: &MessagePort, iters: u64, mut post_one: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    port.post(&iters).expect("post count");
    for i in 0..iters {
        post_one(i);
    }
    let ack = port.recv().expect("recv ack");
    let elapsed = start.elapsed();
    assert_eq!(ack.get::<u64>().expect("ack is a u64").to_native(), iters);
    elapsed
}

/// The benchmark's peer, spawned on first use (so that benchmarks filtered
/// out start no process) and kept for all its samples.
fn with_peer<'a>(
    slot: &'a mut Option<Peer>,
    role: &'static str,
    capacity: usize,
    spin: Duration,
) -> &'a Peer {
    slot.get_or_insert_with(|| Peer::spawn(role, capacity, spin))
}

// ------------------------------------------------------------- benchmarks

fn rtt_64b(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtt_64B");
    group.sample_size(50);

    let mut spin = None;
    group.bench_function("spin", |b| {
        let peer = with_peer(&mut spin, "echo", DEFAULT_CAPACITY, BUSY);
        b.iter_custom(|iters| rtt_typed(peer.port(), iters));
    });
    drop(spin);

    let mut block = None;
    group.bench_function("block", |b| {
        let peer = with_peer(&mut block, "echo", DEFAULT_CAPACITY, PARK);
        b.iter_custom(|iters| rtt_typed(peer.port(), iters));
    });
    drop(block);

    let mut pipe = None;
    group.bench_function("pipe", |b| {
        let peer = pipe.get_or_insert_with(PipePeer::spawn);
        b.iter_custom(|iters| rtt_pipe(peer, iters));
    });
    drop(pipe);

    group.finish();
}

fn oneway_64b(c: &mut Criterion) {
    let mut group = c.benchmark_group("oneway_64B");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));

    let mut typed = None;
    group.bench_function("typed", |b| {
        let port = with_peer(&mut typed, "sink", DEFAULT_CAPACITY, BUSY).port();
        b.iter_custom(|iters| {
            oneway(port, iters, |i| {
                let mut words = [0u64; 8];
                words[7] = i;
                port.post(&Msg64 { words }).expect("post");
            })
        });
    });
    drop(typed);

    let mut raw = None;
    group.bench_function("raw", |b| {
        let port = with_peer(&mut raw, "sink", DEFAULT_CAPACITY, BUSY).port();
        let mut bytes = [0u8; 64];
        b.iter_custom(|iters| {
            oneway(port, iters, |i| {
                bytes[0] = i as u8;
                port.post_bytes(&bytes).expect("post_bytes");
            })
        });
    });
    drop(raw);

    group.finish();
}

fn oneway_1mib(c: &mut Criterion) {
    let mut group = c.benchmark_group("oneway_1MiB");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(MIB as u64));
    let payload: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();

    let mut inline = None;
    group.bench_function("inline", |b| {
        let port = with_peer(&mut inline, "sink", BIG_RING, BUSY).port();
        assert!(port.max_inline_payload() >= MIB, "1 MiB must travel inline");
        b.iter_custom(|iters| {
            oneway(port, iters, |_| {
                port.post_bytes(&payload).expect("post_bytes");
            })
        });
    });
    drop(inline);

    let mut ool = None;
    group.bench_function("out_of_line", |b| {
        let port = with_peer(&mut ool, "sink", DEFAULT_CAPACITY, BUSY).port();
        assert!(port.max_inline_payload() < MIB, "1 MiB must go out of line");
        b.iter_custom(|iters| {
            oneway(port, iters, |_| {
                port.post_bytes(&payload).expect("post_bytes");
            })
        });
    });
    drop(ool);

    group.finish();
}
