//! The only module that makes system calls (Linux).
//!
//! - [`memfd`]: anonymous memory files, their seals and sizes.
//! - [`Mapping`]: an owned `mmap` region.
//! - [`socket`]: the port's `SOCK_SEQPACKET` socket: wake tokens, descriptor
//!   passing (`SCM_RIGHTS`), hang-up detection.
//! - [`membarrier`]: asymmetric fences for the sleep/wake handshake.
//! - [`poller`]: epoll over many ports.
//! - [`child`]: what runs between `fork` and `exec` of a spawned peer.
//! - [`cache`]: the last-level cache's size (sysfs), for the ring's
//!   placement of large records.

pub mod cache;
pub mod child;
pub mod kick;
mod mapping;
pub mod membarrier;
pub mod memfd;
pub mod poller;
pub mod socket;

pub use mapping::Mapping;
