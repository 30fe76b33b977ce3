//! Large messages between two processes: the default channel (messages too
//! large for its 1 MiB ring go into the sender's pool) against a channel
//! whose ring holds the message, the out-of-line path (pool turned off: a
//! memfd per message), and a one-thread `memcpy` of the same size.
//!
//! ```text
//! cargo bench --bench pool              # 7 rounds, about a minute
//! cargo bench --bench pool -- --quick   # one short round (CI)
//! cargo bench --bench pool -- --rounds 11 --sizes 1,4,16
//! ```
//!
//! Each round measures every transport once, in an order that rotates from
//! round to round, at each size (MiB): a round trip (the same size each
//! way: the echo process posts the received bytes back) with both sides
//! spinning, and with both sides parking on every message; and one-way
//! throughput (the sender copies each message from a buffer with
//! `post_bytes`, the receiver reads its first and last byte). Printed:
//! per transport the median over rounds, and the median over rounds of the
//! ratio to the ring that holds the message, taken within each round (this
//! VM's speed drifts between minutes; ratios within a round do not).
//!
//! The peers are this binary, re-executed with `SHMPORT_POOL_BENCH_ROLE`.

use std::hint::black_box;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shmport::{Message, MessageChannel, MessagePort, RecvError};

const ROLE_ENV: &str = "SHMPORT_POOL_BENCH_ROLE";
const SPIN_ENV: &str = "SHMPORT_POOL_BENCH_SPIN_NS";
const NOPOOL_ENV: &str = "SHMPORT_POOL_BENCH_NO_POOL";
const MIB: usize = 1 << 20;

/// The ways a message of a given size can travel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    /// The default channel: the pool.
    Pool,
    /// A channel whose ring holds the message.
    Ring,
    /// The default channel with its pool turned off: a memfd per message.
    OutOfLine,
}

const TRANSPORTS: [Transport; 3] = [Transport::Pool, Transport::Ring, Transport::OutOfLine];

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Pool => "pool (default channel)",
            Transport::Ring => "ring holds it",
            Transport::OutOfLine => "memfd per message",
        }
    }

    /// Ring capacity for messages of `size` bytes.
    fn capacity(self, size: usize) -> usize {
        match self {
            // Up to half a ring is inline (less its 32-byte header).
            Transport::Ring => (2 * size + 64).next_power_of_two(),
            _ => shmport::DEFAULT_CAPACITY,
        }
    }
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        peer(&role);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick" || a == "--test");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds = value("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 7 });
    let sizes: Vec<usize> = value("--sizes")
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4])
        .into_iter()
        .map(|m: usize| m * MIB)
        .collect();
    let scale = if quick { 0.05 } else { 1.0 };
    for &size in &sizes {
        run_size(size, rounds, scale);
    }
}

/// One figure per transport per round.
#[derive(Default)]
struct Series {
    per_round: Vec<[f64; 3]>,
}

impl Series {
    fn push(&mut self, row: [f64; 3]) {
        self.per_round.push(row);
    }

    fn report(&self, what: &str, unit: &str, lower_is_better: bool) {
        println!("  {what}:");
        let ring = index(Transport::Ring);
        for t in TRANSPORTS {
            let i = index(t);
            let values: Vec<f64> = self.per_round.iter().map(|r| r[i]).collect();
            let ratios: Vec<f64> = self.per_round.iter().map(|r| r[i] / r[ring]).collect();
            let (lo, hi) = (min(&values), max(&values));
            println!(
                "    {:<24} median {:>9.2} {unit} (range {:.2}–{:.2}); {} / ring: {:.2}",
                t.name(),
                median(&values),
                lo,
                hi,
                if lower_is_better { "time" } else { "rate" },
                median(&ratios),
            );
        }
    }
}

fn index(t: Transport) -> usize {
    TRANSPORTS
        .iter()
        .position(|&x| x == t)
        .expect("a transport")
}

fn run_size(size: usize, rounds: usize, scale: f64) {
    let rtt_count = ((200.0 * scale * (4.0 * MIB as f64 / size as f64).sqrt()) as usize).max(5);
    let oneway_count = ((2000.0 * scale * MIB as f64 / size as f64) as usize).max(10);
    let (mut spin, mut block, mut oneway) =
        (Series::default(), Series::default(), Series::default());
    let mut floor = Vec::new();
    for round in 0..rounds {
        let mut rows = [[0.0; 3]; 3];
        for k in 0..TRANSPORTS.len() {
            let t = TRANSPORTS[(k + round) % TRANSPORTS.len()];
            let i = index(t);
            rows[0][i] = round_trip(t, size, rtt_count, true);
            rows[1][i] = round_trip(t, size, rtt_count / 2 + 1, false);
            rows[2][i] = one_way(t, size, oneway_count);
        }
        floor.push(memcpy_rate(size, oneway_count));
        spin.push(rows[0]);
        block.push(rows[1]);
        oneway.push(rows[2]);
    }
    println!(
        "{} MiB messages, {rounds} rounds (round trips: {rtt_count} spinning, {} parking; one way: {oneway_count}):",
        size / MIB,
        rtt_count / 2 + 1
    );
    spin.report("round trip, both sides spinning", "µs", true);
    block.report("round trip, both sides parking", "µs", true);
    oneway.report("one way", "GiB/s", false);
    let pool = index(Transport::Pool);
    let to_floor: Vec<f64> = oneway
        .per_round
        .iter()
        .zip(&floor)
        .map(|(r, f)| r[pool] / f)
        .collect();
    println!(
        "    {:<24} median {:>9.2} GiB/s; pool / memcpy: {:.2}",
        "memcpy, one thread",
        median(&floor),
        median(&to_floor)
    );
}

// ------------------------------------------------------------------ peers

fn peer(role: &str) {
    let port = MessagePort::from_parent().expect("peer: adopting the port");
    if let Some(ns) = std::env::var(SPIN_ENV).ok().and_then(|s| s.parse().ok()) {
        port.set_spin(Duration::from_nanos(ns));
    }
    if std::env::var_os(NOPOOL_ENV).is_some() {
        port.set_pool_limit(Some(0));
    }
    match role {
        "echo" => {
            while let Some(m) = next(&port) {
                if port.post_bytes(m.bytes()).is_err() {
                    return;
                }
            }
        }
        "sink" => {
            while let Some(head) = next(&port) {
                let n = u64::from_le_bytes(head.bytes().try_into().expect("a count"));
                drop(head);
                let mut acc = 0u64;
                for _ in 0..n {
                    let Some(m) = next(&port) else { return };
                    let b = m.bytes();
                    acc = acc.wrapping_add(u64::from(b[0]) + u64::from(b[b.len() - 1]));
                }
                black_box(acc);
                if port.post_bytes(&n.to_le_bytes()).is_err() {
                    return;
                }
            }
        }
        other => panic!("{ROLE_ENV}={other:?}: unknown role"),
    }
}

fn next(port: &MessagePort) -> Option<Message<'_>> {
    match port.recv() {
        Ok(m) => Some(m),
        Err(RecvError::Closed(_)) => None,
        Err(e) => panic!("peer: recv failed: {e}"),
    }
}

// ------------------------------------------------------- the bench's side

struct Peer {
    port: Option<MessagePort>,
    child: Child,
}

impl Peer {
    fn spawn(role: &str, t: Transport, size: usize, spin: Duration) -> Peer {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, role)
            .env(SPIN_ENV, spin.as_nanos().to_string());
        if t == Transport::OutOfLine {
            cmd.env(NOPOOL_ENV, "1");
        }
        let (child, port) = MessageChannel::builder()
            .capacity(t.capacity(size))
            .spin(spin)
            .spawn(cmd)
            .expect("spawning a peer");
        if t == Transport::OutOfLine {
            port.set_pool_limit(Some(0));
        }
        Peer {
            port: Some(port),
            child,
        }
    }

    fn port(&self) -> &MessagePort {
        self.port.as_ref().expect("open while the peer lives")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.port.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Microseconds per round trip of `size` bytes each way.
fn round_trip(t: Transport, size: usize, count: usize, spinning: bool) -> f64 {
    let spin = if spinning {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    let peer = Peer::spawn("echo", t, size, spin);
    let port = peer.port();
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let exchange = || {
        port.post_bytes(&payload).expect("post");
        let m = port.recv().expect("the echo");
        assert_eq!(m.bytes().len(), size, "the echo has the wrong size");
    };
    // Warm up: the pool grows, pages are touched.
    for _ in 0..3 {
        exchange();
    }
    let start = Instant::now();
    for _ in 0..count {
        exchange();
    }
    start.elapsed().as_secs_f64() * 1e6 / count as f64
}

/// GiB/s of `count` messages of `size` bytes, one way, until acknowledged.
fn one_way(t: Transport, size: usize, count: usize) -> f64 {
    let peer = Peer::spawn("sink", t, size, Duration::from_secs(10));
    let port = peer.port();
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let batch = |n: u64| {
        port.post_bytes(&n.to_le_bytes()).expect("post the count");
        for _ in 0..n {
            port.post_bytes(&payload).expect("post");
        }
        let ack = port.recv().expect("the ack");
        assert_eq!(ack.bytes(), n.to_le_bytes(), "the sink lost messages");
    };
    batch(4);
    let start = Instant::now();
    batch(count as u64);
    (count * size) as f64 / start.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

/// GiB/s of a one-thread copy of `size` bytes between two warm buffers.
fn memcpy_rate(size: usize, count: usize) -> f64 {
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    for _ in 0..count {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    (count * size) as f64 / start.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
