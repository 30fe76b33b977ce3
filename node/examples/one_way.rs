//! The Rust API alone, for `bench/bench.js`'s same-run comparison: the
//! one-way throughput of `COUNT` raw messages of `SIZE` bytes from this
//! process to a child it spawns (itself, as the receiver), with rings of
//! `CAPACITY` bytes (default: the core's 1 MiB), measured as the bench
//! measures Node: from the first post to the receiver's ack of the last,
//! the receiver touching each message's first and last byte. One warm-up
//! batch, then one measured; prints MiB/s.
//!
//! ```text
//! cargo build -p shmport-node --release --example one_way
//! target/release/examples/one_way 1048576 128
//! ```

use std::error::Error;
use std::process::Command;
use std::time::Instant;

use shmport::{MessageChannel, MessagePort};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("receiver") {
        return receive(args[2].parse()?);
    }
    let size: usize = args
        .get(1)
        .ok_or("usage: one_way SIZE COUNT [CAPACITY]")?
        .parse()?;
    let count: usize = args
        .get(2)
        .ok_or("usage: one_way SIZE COUNT [CAPACITY]")?
        .parse()?;
    let mut builder = MessageChannel::builder();
    if let Some(c) = args.get(3) {
        builder = builder.capacity(c.parse()?);
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["receiver", &count.to_string()]);
    let (mut child, port) = builder.spawn(cmd)?;
    let payload = vec![1u8; size];
    let batch = || -> Result<f64, Box<dyn Error>> {
        let start = Instant::now();
        for _ in 0..count {
            port.post_bytes(&payload)?;
        }
        port.recv()?; // the ack
        Ok((size * count) as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
    };
    batch()?; // warm-up
    println!("{:.0}", batch()?);
    port.close();
    child.wait()?;
    Ok(())
}

/// Receive batches of `count` messages, acking each batch, until the close.
fn receive(count: usize) -> Result<(), Box<dyn Error>> {
    let port = MessagePort::from_parent()?;
    let mut sum = 0u64;
    loop {
        for _ in 0..count {
            let Ok(msg) = port.recv() else { return Ok(()) };
            let b = msg.bytes();
            sum += u64::from(b[0]) + u64::from(b[b.len() - 1]);
        }
        port.post_bytes(&sum.to_le_bytes())?;
    }
}
