//! The Rust client of the C host in `examples/c_host/host.c`: connects to
//! its socket path and sends each kind of request, printing the replies.
//!
//! ```sh
//! cargo run --release -p shmport-ffi --example c_host_client -- /tmp/c_host.sock
//! ```

use std::error::Error;

use shmport_core::{MessageChannel, RecvError};

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: c_host_client <socket path>")?;
    let port = shmport_core::connect(&path)?;

    let ask = |label: &str, request: &[u8]| -> Result<(), Box<dyn Error>> {
        port.post_bytes(request)?;
        let reply = port.recv()?;
        println!("{label}: {}", String::from_utf8_lossy(reply.bytes()));
        Ok(())
    };
    ask("upper", b"upper hello from rust")?;
    ask("sum", b"sum 1 2 3 40")?;

    // A request carrying a fresh port: the host streams on it, then closes
    // it, and the close event ends the stream.
    let (mine, theirs) = MessageChannel::new()?.into_ports();
    port.post_bytes_with_ports(b"stream 3", vec![theirs])?;
    loop {
        match mine.recv() {
            Ok(item) => println!("{}", String::from_utf8_lossy(item.bytes())),
            Err(RecvError::Closed(reason)) => {
                println!("stream ended: {reason}");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "streamed: {}",
        String::from_utf8_lossy(port.recv()?.bytes())
    );
    ask("unknown", b"what is this")?;
    Ok(())
}
