//! Fault injection, for tests that kill a process at an exact point of the
//! send path. Hidden from the docs: not part of the supported API.
//!
//! A process installs one hook; the library calls it when a post that
//! carries descriptors (ports or an out-of-line payload) reaches a
//! [`Point`], and when a receiving port has taken such descriptors off its
//! socket. The hook may do anything, typically tell the test it is
//! there and then wait to be killed. Without a hook the cost is one atomic
//! load per such post.

use std::sync::OnceLock;

/// Where in a post the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The record is reserved and filled; its descriptors are not sent yet.
    BeforeAttachment,
    /// The descriptors are on the socket; the record is not published yet.
    AfterAttachment,
    /// Receiving side: an attachment was just taken off the port's socket
    /// and is not queued for its record yet.
    TakenIn,
}

static HOOK: OnceLock<fn(Point)> = OnceLock::new();

/// Install the process's hook. Only the first call takes effect; returns
/// whether this one did.
pub fn set_hook(hook: fn(Point)) -> bool {
    HOOK.set(hook).is_ok()
}

#[inline]
pub(crate) fn reach(point: Point) {
    if let Some(hook) = HOOK.get() {
        hook(point);
    }
}
