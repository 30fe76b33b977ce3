//! The words of a segment that is reused as a **kit**: a channel's memfd
//! (and, beside it, its socket pair) that the two processes which used it
//! keep when the channel closes cleanly, to carry the next channel between
//! them without a system call (`src/port/kit.rs` decides when).
//!
//! Four words of the segment header serve it ([`SegmentHeader`]):
//! `kit_id`, its number, and `kit_gen`, the generation of the channel the
//! kit carries, written by the kit's creator; and `kit_idle[side]`, the generation at which that
//! side's end went idle, written by that side when its port closed.
//!
//! ```text
//! creator (side A)                         other side (side B)
//!   port closes: flags, positions            port closes: positions, closed
//!   kit kept (idle list)                       flags, then kit_idle[B] = gen
//!                                              (Release), kit kept (held)
//!   reuse: kit_idle[B] == gen (Acquire),
//!     both rings read to the end:
//!     clear closed/wait words, kit_idle,
//!     kit_gen = gen + 1 (Relaxed) ...
//!   ... then a record naming (kit, gen + 1)
//!     commits (Release) on a carrier ring ──▶ takes the record (Acquire):
//!                                              kit_gen == gen + 1, takes its
//!                                              end up again
//! ```
//!
//! Every word here is written by a peer too: a wrong value can make a kit
//! look idle when it is not, which only harms channels between the same
//! two processes (the peer owns its end of those anyway), or make a kit
//! never reusable (then a new one is made).

use crate::shm::sync::Ordering;

use super::layout::{RING_HEADER, RingHeader, SegmentHeader};
use super::segment::{Segment, Side};

impl Segment {
    fn ring_header(&self, index: usize) -> &RingHeader {
        // SAFETY: the mapping covers HEADER_AREA bytes (`create`/`open`);
        // RING_HEADER[index] (index < 2) is 128-aligned inside it, and a
        // RingHeader holds only atomics.
        unsafe {
            self.base()
                .add(RING_HEADER[index])
                .cast::<RingHeader>()
                .as_ref()
        }
    }

    fn kit_header(&self) -> &SegmentHeader {
        // SAFETY: as `ring_header`: offset 0, only atomics.
        unsafe { self.base().cast::<SegmentHeader>().as_ref() }
    }

    /// The kit's number (0: not a kit).
    pub(crate) fn kit_id(&self) -> u64 {
        // Relaxed: written once by the creator before the memfd travels
        // (a system call orders it), never after.
        self.kit_header().kit_id.load(Ordering::Relaxed)
    }

    /// Make this new segment kit number `id`, at generation 1; before its
    /// descriptor travels (sending it orders these stores first).
    pub(crate) fn make_kit(&self, id: u64) {
        self.kit_header().kit_id.store(id, Ordering::Relaxed);
        self.kit_header().kit_gen.store(1, Ordering::Relaxed);
    }

    /// The generation of the channel the kit carries now.
    pub(crate) fn kit_gen(&self) -> u32 {
        // Acquire: a receiver reads it after the Acquire of the record that
        // named the kit; this one orders nothing more, but costs nothing.
        self.kit_header().kit_gen.load(Ordering::Acquire)
    }

    /// The generation at which `side`'s end went idle (0: in use).
    pub(crate) fn kit_idle(&self, side: Side) -> u32 {
        // Acquire: pairs with the Release in `set_kit_idle`; what that side
        // published before (positions, closed flags) is visible after.
        self.kit_header().kit_idle[side as usize].load(Ordering::Acquire)
    }

    /// `side`'s end is idle at generation `gen`: its port closed, its
    /// positions and closed flags are published.
    pub(crate) fn set_kit_idle(&self, side: Side, generation: u32) {
        // Release: pairs with the Acquire in `kit_idle` (the creator's check
        // before reuse).
        self.kit_header().kit_idle[side as usize].store(generation, Ordering::Release);
    }

    /// Has every record been read, in both rings? (Positions as the two
    /// ends published them when they closed.)
    pub(crate) fn kit_drained(&self) -> bool {
        (0..2).all(|i| {
            let h = self.ring_header(i);
            // Acquire: ordered after the Acquire of `kit_idle`, which
            // published the peer's positions; ours are our own.
            h.producer.tail.load(Ordering::Acquire) == h.consumer.head.load(Ordering::Acquire)
        })
    }

    /// Have both ends closed the channel of this generation (each end's
    /// closed flags set)? A kit whose peer closed is about to go idle.
    pub(crate) fn kit_closed(&self) -> bool {
        (0..2).all(|i| {
            let h = self.ring_header(i);
            h.producer.closed.load(Ordering::Acquire) != 0
                && h.consumer_wait.closed.load(Ordering::Acquire) != 0
        })
    }

    /// Start generation `gen` on an idle kit: clear both ends' closed and
    /// wait words and idle marks, then store the generation. Call only
    /// when both ends are idle (`kit_idle` of both sides is the current
    /// generation) and the rings drained: nobody reads or writes them.
    /// Published by the record that names the kit (its commit is a
    /// Release store after these).
    pub(crate) fn renew_kit(&self, generation: u32) {
        for i in 0..2 {
            let h = self.ring_header(i);
            // Relaxed: see the doc comment (published by the commit).
            h.producer.closed.store(0, Ordering::Relaxed);
            h.consumer_wait.closed.store(0, Ordering::Relaxed);
            h.consumer_wait.sleeping.store(0, Ordering::Relaxed);
            h.producer_wait.waiting.store(0, Ordering::Relaxed);
        }
        let k = self.kit_header();
        k.kit_idle[0].store(0, Ordering::Relaxed);
        k.kit_idle[1].store(0, Ordering::Relaxed);
        k.kit_gen.store(generation, Ordering::Relaxed);
    }
}
