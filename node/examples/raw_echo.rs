//! A Rust peer for Node, in raw bytes: adopts the port of the process that
//! started it (`shmport.spawn` in Node, `shmport::spawn` in Rust), says
//! hello, and answers every raw message with its bytes reversed. A
//! structured-clone message from Node (a typed message) gets `b"typed"`.
//! Exits when the port closes (orderly or not).
//!
//! ```text
//! cargo build -p shmport-node --release --example raw_echo
//! ```
//! Run by `node/test/interop.test.js`.

use std::error::Error;

use shmport::{MessagePort, RecvError};

fn main() -> Result<(), Box<dyn Error>> {
    let port = MessagePort::from_parent()?;
    port.post_bytes(format!("hello from rust, pid {}", std::process::id()).as_bytes())?;
    loop {
        let reply = match port.recv() {
            Ok(msg) if msg.is_typed() => b"typed".to_vec(),
            Ok(msg) => msg.bytes().iter().rev().copied().collect(),
            Err(RecvError::Closed(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if port.post_bytes(&reply).is_err() {
            return Ok(()); // the other side is gone
        }
    }
}
