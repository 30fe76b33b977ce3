//! Large messages with the default channel: a producer process hands 4 MiB
//! frames (think camera images or tensors) to a worker process, which
//! reads each in place and answers with a small result.
//!
//! Each frame is written straight into a block of the producer's pool
//! (`reserve_bytes`: no copy at all), read in place by the worker, and the
//! block goes back to the pool when the worker drops the message: once the
//! first frames have grown the pool, the same few blocks carry every frame,
//! with no system call and no page fault per frame while both sides spin.
//!
//! ```text
//! cargo run --release --example large_frames
//! cargo run --release --example large_frames -- --frames 10000 --size-kib 1024
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use shmport::{MessageChannel, MessagePort, RecvError};

/// Set in the worker process.
const WORKER_ENV: &str = "SHMPORT_LARGE_FRAMES_WORKER";

/// Both sides spin this long before they sleep: frames come every few
/// hundred microseconds, so neither side parks between them.
const SPIN: Duration = Duration::from_millis(10);

fn main() {
    if std::env::var_os(WORKER_ENV).is_some() {
        worker();
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let frames = arg("--frames", 500);
    let size = arg("--size-kib", 4096) * 1024;

    let mut cmd = Command::new(std::env::current_exe().expect("this program"));
    cmd.env(WORKER_ENV, "1");
    let (mut child, port) = MessageChannel::builder()
        .spin(SPIN)
        .spawn(cmd)
        .expect("starting the worker");

    let start = Instant::now();
    let mut in_flight = 0;
    for i in 0..frames {
        // Up to two frames in flight: the worker reads one while the next
        // is written.
        if in_flight == 2 {
            check_result(&port.recv().expect("a result"), i - 2, size);
            in_flight -= 1;
        }
        let mut frame = port.reserve_bytes(size).expect("a pool block");
        let bytes = frame.bytes_mut();
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        bytes[8..].fill(i as u8);
        frame.commit().expect("the worker is there");
        in_flight += 1;
    }
    for i in frames - in_flight..frames {
        check_result(&port.recv().expect("a result"), i, size);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{frames} frames of {} KiB: {:.1} frames/s, {:.2} GiB/s; pool {} MiB",
        size / 1024,
        frames as f64 / secs,
        (frames * size) as f64 / secs / f64::from(1u32 << 30),
        port.pool_bytes() >> 20
    );
    drop(port);
    assert!(child.wait().expect("the worker").success());
}

/// The worker's answer to frame `i`: its number and a sum of some bytes.
fn check_result(msg: &shmport::Message<'_>, i: usize, size: usize) {
    let (n, sum) = msg.deserialize::<(u64, u64)>().expect("a result");
    assert_eq!(n, i as u64, "results in order");
    assert_eq!(sum, sample_sum(i as u8, size), "frame {i} arrived whole");
}

/// What the worker computes for a frame filled with `b`: a byte of every
/// 4 KiB page after the header, summed.
fn sample_sum(b: u8, size: usize) -> u64 {
    ((size - 8).div_ceil(4096) as u64) * u64::from(b)
}

fn worker() {
    let port = MessagePort::from_parent().expect("the port from the parent");
    port.set_spin(SPIN);
    loop {
        let frame = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("worker: {e}"),
        };
        let bytes = frame.bytes();
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("a header"));
        let sum: u64 = bytes[8..].iter().step_by(4096).map(|&b| u64::from(b)).sum();
        // The block goes back to the producer's pool here.
        drop(frame);
        if port.post(&(n, sum)).is_err() {
            return;
        }
    }
}
