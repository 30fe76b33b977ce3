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

/// Bytes of this process's large-message pools on the links of the
/// channels `port` carries.
pub fn link_pool_bytes(port: &crate::MessagePort) -> usize {
    port.link_pools().0
}

/// Does `port` still live on a link (no socket of its own)?
pub fn on_link(port: &crate::MessagePort) -> bool {
    port.link_pools().1
}
