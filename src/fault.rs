//! Fault injection, for tests that kill a process at an exact point of the
//! send path. Hidden from the docs: not part of the supported API.
//!
//! A process installs one hook; the library calls it when a post that
//! carries descriptors (ports or an out-of-line payload) reaches a
//! [`Point`], when a receiving port has taken such descriptors off its
//! socket, and when a port's channel moving off its link reaches one. The hook may do anything, typically tell the test it is
//! there and then wait to be killed. Without a hook the cost is one atomic
//! load per such post.
//!
//! [`walk_descriptors_in_children`] makes spawns take the path of kernels
//! without close_range(2), so that tests reach it on any kernel.

use std::sync::OnceLock;

/// Where in a post the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The record is reserved and filled; its descriptors are not sent yet.
    BeforeAttachment,
    /// The descriptors are on the socket; the record is not published yet.
    AfterAttachment,
    /// An attachment sent in several socket messages: some parts are on
    /// the socket, the next is not (reached before each part but the
    /// first).
    BetweenParts,
    /// Receiving side: an attachment was just taken off the port's socket
    /// and is not queued for its record yet.
    TakenIn,
    /// A port's channel moving off its link: both rings closed to the old
    /// segment (the one it writes, and the one it reads sealed), what was
    /// queued for it posted into the new segment; the peer not told yet.
    MoveSealed,
    /// The same move, announced to the peer on the link: it may follow.
    MoveAnnounced,
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

/// Make every later [`spawn`](crate::spawn) mark the child's descriptors
/// close-on-exec one number at a time, as on kernels without
/// close_range(2)'s `CLOSE_RANGE_CLOEXEC` (before 5.11), so that tests can
/// check that walk on any kernel. For the whole process, until called
/// again with `false`.
pub fn walk_descriptors_in_children(on: bool) {
    crate::sys::child::FORCE_WALK.store(on, std::sync::atomic::Ordering::Relaxed);
}
