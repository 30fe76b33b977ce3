//! Round trip of 64-byte messages, both sides busy-spinning: two C
//! processes through the C API (`benches/c/rtt.c`) and two Rust processes
//! through the Rust API, measured in the same run, alternating, so both
//! see the same machine state. Prints the median of each and their ratio.
//!
//! ```sh
//! cargo bench -p shmport-ffi --bench rtt            # 7 runs of 200,000 round trips each
//! cargo bench -p shmport-ffi --bench rtt -- --quick # 3 runs of 20,000
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Build, ROLE};
use shmport_core::{MessagePort, RecvError};

/// Both sides spin this long before sleeping: they stay on their cores.
const SPIN: Duration = Duration::from_secs(1);
const WARMUP: u64 = 10_000;

fn main() {
    if common::role().as_deref() == Some("echo") {
        rust_echo();
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (runs, n) = if quick { (3, 20_000) } else { (7, 200_000) };

    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    // Under `cargo bench` the binary is in target/release: build the C
    // library with the same (bench) profile.
    let profile = (profile_dir.ends_with("release")).then_some("bench");
    common::library_for(profile);
    let c_rtt = common::compile("rtt", &["benches/c/rtt.c"], Build::Optimized);

    let (mut c, mut rust) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternate which goes first, so neither always meets the machine
        // in the same state.
        if run % 2 == 0 {
            c.push(c_rtt_run(&c_rtt, n));
            rust.push(rust_rtt(n));
        } else {
            rust.push(rust_rtt(n));
            c.push(c_rtt_run(&c_rtt, n));
        }
    }
    let (mc, mr) = (median(&mut c), median(&mut rust));
    println!("rtt_64B/spin, {runs} runs of {n} round trips, median (min..max):");
    println!(
        "  C <-> C (C API):       {mc:7.1} ns  ({:.1}..{:.1})",
        c[0],
        c[runs - 1]
    );
    println!(
        "  Rust <-> Rust:         {mr:7.1} ns  ({:.1}..{:.1})",
        rust[0],
        rust[runs - 1]
    );
    println!("  C / Rust:              {:7.3}", mc / mr);
}

/// One run of the C program: `n` round trips, ns each.
fn c_rtt_run(program: &std::path::Path, n: u64) -> f64 {
    let out = Command::new(program)
        .arg(n.to_string())
        .env_remove("SHMPORT_PORT")
        .output()
        .expect("run the C round trips");
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

/// One run: spawn this binary as the echo, time `n` round trips.
fn rust_rtt(n: u64) -> f64 {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, "echo");
    let (mut child, port) = shmport_core::spawn(cmd).expect("spawn the Rust echo");
    port.set_spin(SPIN);
    round_trips(&port, WARMUP);
    let start = Instant::now();
    round_trips(&port, n);
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    drop(port);
    assert!(child.wait().unwrap().success(), "the Rust echo failed");
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
