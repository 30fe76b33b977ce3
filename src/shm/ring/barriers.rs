//! How each side takes part in the sleep/wake handshake: the sleeper's
//! barrier between its announcement and its re-check, and the publisher's
//! between its publication and its look at the sleeper's flag.

use crate::shm::layout::{BARRIER_FENCE, BARRIER_MEMBARRIER};
use crate::shm::sync::{Ordering, compiler_fence, fence};

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
