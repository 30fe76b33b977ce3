//! Round trip of 64-byte messages, both sides busy-spinning, through the C
//! API (`benches/c/rtt.c`) and through the Rust API, measured in the same
//! run: C↔C, Rust↔Rust, and the two mixed pairs (which side the C API's
//! cost falls on).
//!
//! Each round runs the four pairs once, in an order that rotates from round
//! to round, so that every pair meets the machine in every state. The
//! ratio of each pair to Rust↔Rust is taken within a round, where both saw
//! the same machine, and the median of those ratios is the figure to quote:
//! a VM's round trip can move by a factor of three between seconds (vCPUs
//! placed near or far), which medians taken apart do not cancel.
//!
//! ```sh
//! cargo bench -p shmport-ffi --bench rtt            # 31 rounds of 50,000 round trips per pair
//! cargo bench -p shmport-ffi --bench rtt -- --quick # 5 rounds of 10,000
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Build, ROLE};
use shmport_core::{MessagePort, RecvError};

/// Both sides spin this long before sleeping: they stay on their cores.
const SPIN: Duration = Duration::from_secs(1);
const WARMUP: u64 = 10_000;

/// Who plays the main side and who the echo.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    C,
    Rust,
}

/// The pairs, Rust↔Rust first: the reference of every ratio.
const PAIRS: [(Side, Side, &str); 4] = [
    (Side::Rust, Side::Rust, "Rust <-> Rust"),
    (Side::C, Side::C, "C <-> C (C API)"),
    (Side::Rust, Side::C, "Rust main, C echo"),
    (Side::C, Side::Rust, "C main, Rust echo"),
];

fn main() {
    if common::role().as_deref() == Some("echo") {
        rust_echo();
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (rounds, n) = if quick { (5, 10_000) } else { (31, 50_000) };

    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    // Under `cargo bench` the binary is in target/release: build the C
    // library with the same (bench) profile.
    let profile = (profile_dir.ends_with("release")).then_some("bench");
    common::library_for(profile);
    let c_rtt = common::compile("rtt", &["benches/c/rtt.c"], Build::Optimized);

    // ns per round trip, per pair, per round.
    let mut ns = vec![Vec::with_capacity(rounds); PAIRS.len()];
    for round in 0..rounds {
        let mut this = [0.0; PAIRS.len()];
        for k in 0..PAIRS.len() {
            let pair = (round + k) % PAIRS.len();
            let (main_side, echo_side, _) = PAIRS[pair];
            this[pair] = run_pair(main_side, echo_side, &c_rtt, n);
        }
        for (v, x) in ns.iter_mut().zip(this) {
            v.push(x);
        }
    }

    println!(
        "rtt_64B/spin, {rounds} rounds of {n} round trips per pair; \
         ns per round trip, median (min..max); ratio to Rust <-> Rust within \
         each round, median (middle half):"
    );
    for (k, (_, _, name)) in PAIRS.iter().enumerate() {
        let mut ratios: Vec<f64> = ns[k].iter().zip(&ns[0]).map(|(x, r)| x / r).collect();
        let mut times = ns[k].clone();
        let (t, r) = (median(&mut times), median(&mut ratios));
        let (q1, q3) = (ratios[rounds / 4], ratios[rounds - 1 - rounds / 4]);
        println!(
            "  {name:<18} {t:7.1} ns ({:.1}..{:.1})   ratio {r:.3} ({q1:.3}..{q3:.3})",
            times[0],
            times[rounds - 1]
        );
    }
}

/// One run of `n` round trips with the given sides: ns per round trip.
fn run_pair(main_side: Side, echo_side: Side, c_rtt: &Path, n: u64) -> f64 {
    match main_side {
        Side::Rust => rust_rtt(n, echo_side, c_rtt),
        Side::C => c_rtt_run(n, echo_side, c_rtt),
    }
}

/// The C program as the main side: `n` round trips, ns each.
fn c_rtt_run(n: u64, echo_side: Side, program: &Path) -> f64 {
    let mut cmd = Command::new(program);
    cmd.arg(n.to_string()).env_remove("SHMPORT_PORT");
    if echo_side == Side::Rust {
        // The C program spawns this binary, which the role makes an echo.
        cmd.env("SHMPORT_RTT_ECHO", std::env::current_exe().unwrap())
            .env(ROLE, "echo");
    }
    let out = cmd.output().expect("run the C round trips");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "C round trips failed: {text}");
    text.trim()
        .strip_prefix("ns_per_rtt ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {text:?}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rust as the main side: spawn the echo, time `n` round trips.
fn rust_rtt(n: u64, echo_side: Side, c_rtt: &Path) -> f64 {
    let cmd = match echo_side {
        Side::Rust => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.env(ROLE, "echo");
            c
        }
        Side::C => {
            let mut c = Command::new(c_rtt);
            c.arg("echo");
            c
        }
    };
    let (mut child, port) = shmport_core::spawn(cmd).expect("spawn the echo");
    port.set_spin(SPIN);
    round_trips(&port, WARMUP);
    let start = Instant::now();
    round_trips(&port, n);
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    drop(port);
    assert!(child.wait().unwrap().success(), "the echo failed");
    ns
}

fn round_trips(port: &MessagePort, n: u64) {
    let mut block = [0u8; 64];
    for i in 0..n {
        block[0] = i as u8;
        port.post_bytes(&block).expect("post");
        let msg = port.recv().expect("echo");
        let bytes = black_box(msg.bytes());
        assert!(bytes.len() == 64 && bytes[0] == i as u8, "wrong echo");
    }
}

fn rust_echo() {
    let port = MessagePort::from_parent().expect("adopt the port");
    port.set_spin(SPIN);
    loop {
        match port.recv() {
            Ok(msg) => port.post_bytes(msg.bytes()).expect("post the echo"),
            Err(RecvError::Closed(_)) => break,
            Err(e) => panic!("echo: {e}"),
        }
    }
}
