//! How each side takes part in the sleep/wake handshake: the sleeper's
//! barrier between its announcement and its re-check, and the publisher's
//! between its publication and its look at the sleeper's flag.

use crate::shm::layout::{BARRIER_FENCE, BARRIER_MEMBARRIER};
use crate::shm::sync::{Ordering, compiler_fence, fence};
use crate::sys;

/// How this process takes part in the sleep/wake handshake.
#[derive(Debug, Clone, Copy)]
pub struct Barriers {
    /// This process is registered for the peers' heavy barriers: when the
    /// sleeper on the other side uses one, our publishes need no fence.
    pub registered: bool,
    /// A barrier that runs on every CPU of registered processes
    /// (`membarrier(2)`), used before re-checking after a sleep
    /// announcement; `None`: a SeqCst fence, and the other side fences too.
    pub heavy: Option<fn()>,
}

impl Barriers {
    /// Plain SeqCst fences on both sides (tests, models).
    pub const FENCES: Barriers = Barriers {
        registered: false,
        heavy: None,
    };

    pub(crate) fn code(&self) -> u32 {
        if self.heavy.is_some() {
            BARRIER_MEMBARRIER
        } else {
            BARRIER_FENCE
        }
    }

    /// The sleeper's barrier, between its announcement and its re-check.
    pub(crate) fn sleeper(&self) {
        match self.heavy {
            Some(f) => f(),
            None => fence(Ordering::SeqCst),
        }
    }

    /// The publisher's barrier, between its publication and its look at the
    /// sleeper's flag. `peer` is the sleeper's advertised barrier code.
    #[inline]
    pub(crate) fn publisher(&self, peer: u32) {
        if self.registered && peer == BARRIER_MEMBARRIER {
            // The sleeper's membarrier runs a full barrier on our CPU
            // between our store and our load, if they straddle it.
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
}

/// The barriers this process uses. As a sleeper: the heavy barrier
/// whenever the kernel lets this process issue it, registered or not. As a
/// publisher: only a compiler fence when this process is registered (so
/// the sleeper's heavy barrier reaches it) and the sleeper advertises the
/// heavy barrier.
///
/// Sleeping with the heavy barrier even when unregistered closes the
/// window of a port move: a publisher may read the advertised barrier
/// kind just before the port's new holder writes its own, so the kind it
/// acts on can be the old holder's. Since every sleeper that can issue the
/// heavy barrier does, a stale "heavy" is still true (ARCHITECTURE.md,
/// failure model, "Barrier kinds across a move").
pub(crate) fn process_barriers() -> Barriers {
    let registered = sys::membarrier::registered();
    Barriers {
        registered,
        heavy: if registered || sys::membarrier::available() {
            Some(sys::membarrier::heavy)
        } else {
            None
        },
    }
}
