//! The Rust side of `python/examples/rust_peer.py`: a worker that a Python
//! process starts with `shmport.spawn` and talks to in raw bytes.
//!
//! Each request is a raw message of little-endian `f64`s (a numpy array
//! posted with `port.post_bytes(arr)`), read in place here. The reply is a
//! raw message too, written in place in the ring with a reservation: the
//! sum, the minimum and the maximum (three `f64`s), which Python reads with
//! `numpy.frombuffer(msg, numpy.float64)` — no copy on either side, no
//! pickle, no serialization format beyond the bytes.
//!
//! ```sh
//! cargo build --release --example python_peer
//! python python/examples/rust_peer.py
//! ```
//!
//! Run without a parent (not spawned by shmport) it says so and exits 2.

use shmport::{MessagePort, RecvError};

fn main() {
    let port = match MessagePort::from_parent() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("python_peer: start me from Python with shmport.spawn ({e})");
            std::process::exit(2);
        }
    };
    loop {
        let msg = match port.recv() {
            Ok(m) => m,
            // The Python side closed its port: done.
            Err(RecvError::Closed(_)) => break,
            Err(e) => {
                eprintln!("python_peer: {e}");
                std::process::exit(1);
            }
        };
        let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for c in msg.bytes().chunks_exact(8) {
            let x = f64::from_le_bytes(c.try_into().expect("8 bytes"));
            sum += x;
            min = min.min(x);
            max = max.max(x);
        }
        drop(msg); // the request's ring space goes back to Python
        let mut reply = port.reserve_bytes(24).expect("room for the reply");
        for (slot, v) in reply.bytes_mut().chunks_exact_mut(8).zip([sum, min, max]) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        if reply.commit().is_err() {
            break;
        }
    }
}
