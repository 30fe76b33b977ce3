//! What the project's own fuzzers, hostile-peer tests and benchmarks need
//! of the internals. Hidden from the docs and outside the supported API:
//! it may change in any release.

pub use crate::shm::{layout, ring};

pub mod fuzzing;

/// Fault injection: the points where a test's hook may interrupt the
/// library.
pub mod fault {
    pub use crate::fault::*;
}

/// The kits a port keeps for the channels it carries: (made by this end
/// and idle, held for the peer).
pub fn kits(port: &crate::MessagePort) -> (usize, usize) {
    port.kits_kept()
}
