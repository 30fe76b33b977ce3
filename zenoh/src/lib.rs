//! shmport ports whose peer is on another host, carried by
//! [zenoh](https://zenoh.io).
//!
//! A process offers ports under a zenoh key ([`serve`]); a process on
//! another host connects ([`connect`]) and gets a normal
//! [`shmport::MessagePort`]: the local end of a shmport channel whose other
//! end a bridge thread of this library pumps to and from zenoh. Everything
//! that works on a port works on it unchanged — port sets, split halves,
//! async, push, the C ABI, transfer to a local process.
//!
//! Across hosts a bridged port keeps shmport's semantics:
//!
//! - **order**: messages are numbered per port and direction, and put back
//!   in order if zenoh delivers them otherwise;
//! - **raw and typed messages**: the archive's bytes travel as they are,
//!   with their type fingerprint, and land aligned in the receiver's ring,
//!   validated there as any message;
//! - **any size**: messages travel in chunks of at most 30 KiB (what one
//!   unfragmented batch of zenoh's low-latency transport holds), sent
//!   straight from the ring as far as the window allows;
//! - **back-pressure**: a port has at most its window ([`Options::window`])
//!   of data in flight per direction; the sender's bridge stops reading
//!   its ring until the receiver's application reads, so posts wait;
//! - **close after drain**: the peer receives every message, then
//!   [`CloseReason::Closed`](shmport::CloseReason::Closed);
//! - **death**: a peer whose process dies, or whose host goes silent past
//!   zenoh's lease, is reported as
//!   [`CloseReason::PeerDied`](shmport::CloseReason::PeerDied), through
//!   zenoh liveliness tokens;
//! - **bad input** from the network closes that port only, with
//!   [`CloseReason::ProtocolError`](shmport::CloseReason::ProtocolError);
//! - **ports inside messages** cross hosts: each is bridged the same way.
//!
//! Zero copy stops at the host boundary: the bridge copies each message
//! out of the ring into zenoh, and into the ring on the other side. Each
//! bridged port has a thread of its own (its endpoint), which spins 20 µs
//! when idle before it sleeps.
//!
//! A process that exits while its bridges still run takes them down (their
//! peers see `PeerDied`): close the ports, then [`wait_idle`].
//!
//! # Example
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use zenoh::Wait;
//!
//! // Host B: a worker.
//! let config = shmport_zenoh::peer_config(&["tcp/127.0.0.1:7447"], &[], Duration::from_secs(2))?;
//! let session = zenoh::open(config).wait()?;
//! let server = shmport_zenoh::serve(&session, "jobs/worker")?;
//! std::thread::spawn(move || {
//!     let port = server.accept().unwrap();
//!     while let Ok(job) = port.recv() {
//!         let n = job.get::<u64>().unwrap().to_native();
//!         port.post(&(n * 2)).unwrap();
//!     }
//! });
//!
//! // Host A: a client.
//! let config = shmport_zenoh::peer_config(&[], &["tcp/127.0.0.1:7447"], Duration::from_secs(2))?;
//! let session = zenoh::open(config).wait()?;
//! let port = shmport_zenoh::connect(&session, "jobs/worker")?;
//! port.post(&21u64)?;
//! assert_eq!(port.recv()?.get::<u64>()?.to_native(), 42);
//! # Ok(()) }
//! ```

#![cfg(target_os = "linux")]

mod config;
mod endpoint;
mod error;
mod frame;
mod idle;
mod inbox;
mod keys;
mod options;
mod server;

pub use config::peer_config;
pub use error::ConnectPortError;
pub use idle::{running_bridges, wait_idle};
pub use options::{MIN_WINDOW, Options};
pub use server::{Server, connect, connect_port, connect_with, serve, serve_with};

/// zenoh, re-exported so users open sessions with the same version.
pub use zenoh;

#[doc(hidden)]
pub mod testing;
