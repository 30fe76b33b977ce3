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

use crate::shm::layout::{KitLine, RingHeader};
use crate::shm::segment::{Segment, Side};
use crate::shm::sync::Ordering;

#[cfg(all(test, shmport_loom))]
mod model;

/// Where a kit's words are: a segment, or the loom model's memory.
pub(crate) trait KitMemory {
    /// The kit's line of the segment header.
    fn kit_line(&self) -> &KitLine;
    /// Ring `index`'s header (index < 2).
    fn ring_header(&self, index: usize) -> &RingHeader;
}

impl KitMemory for Segment {
    fn kit_line(&self) -> &KitLine {
        &self.header().kit
    }

    fn ring_header(&self, index: usize) -> &RingHeader {
        Segment::ring_header(self, index)
    }
}

/// The kit protocol over a kit's words.
pub(crate) trait KitWords: KitMemory {
    /// The kit's number (0: not a kit).
    fn kit_id(&self) -> u64 {
        // Relaxed: written once by the creator before the memfd travels
        // (a system call orders it), never after.
        self.kit_line()
            .id
            .load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Make this new segment kit number `id`, at generation 1; before its
    /// descriptor travels (sending it orders these stores first).
    fn make_kit(&self, id: u64) {
        let k = self.kit_line();
        k.id.store(id, core::sync::atomic::Ordering::Relaxed);
        k.generation.store(1, Ordering::Relaxed);
    }

    /// The generation of the channel the kit carries now.
    fn kit_gen(&self) -> u32 {
        // Acquire: a receiver reads it after the Acquire of the record that
        // named the kit (which orders the creator's renewal before); the
        // creator reads its own.
        self.kit_line().generation.load(Ordering::Acquire)
    }

    /// The generation at which `side`'s end went idle (0: in use).
    fn kit_idle(&self, side: Side) -> u32 {
        // Acquire: pairs with the Release in `set_kit_idle`; what that side
        // published before (positions, closed flags) is visible after.
        self.kit_line().idle[side as usize].load(Ordering::Acquire)
    }

    /// `side`'s end is idle at generation `generation`: its port closed,
    /// its positions and closed flags are published.
    fn set_kit_idle(&self, side: Side, generation: u32) {
        // Release: pairs with the Acquire in `kit_idle` (the creator's
        // check before reuse): the closed flags and positions stored
        // before come before the creator's renewal, which clears them.
        self.kit_line().idle[side as usize].store(generation, Ordering::Release);
    }

    /// Has every record been read, in both rings? (Positions as the two
    /// ends published them when they closed.)
    fn kit_drained(&self) -> bool {
        (0..2).all(|i| {
            let h = self.ring_header(i);
            // Acquire: ordered after the Acquire of `kit_idle`, which
            // published the peer's positions; ours are our own.
            h.producer.tail.load(Ordering::Acquire) == h.consumer.head.load(Ordering::Acquire)
        })
    }

    /// Ring `index`'s records nobody read, as the two ends left them:
    /// `(head, tail)`, the consumer's last position and the producer's, if
    /// they differ. Only once both ends are idle (`kit_idle`, Acquire,
    /// for the far end; this side's own stores for its end).
    fn kit_unread(&self, index: usize) -> Option<(u64, u64)> {
        let h = self.ring_header(index);
        // Acquire: ordered after the Acquire of `kit_idle`, as in
        // `kit_drained`.
        let head = h.consumer.head.load(Ordering::Acquire);
        let tail = h.producer.tail.load(Ordering::Acquire);
        (head != tail).then_some((head, tail))
    }

    /// Ring `index` read to `tail` (its unread records settled: their pool
    /// blocks given back), so the kit counts as drained.
    fn kit_mark_read(&self, index: usize, tail: u64) {
        // Relaxed: nobody reads the rings of a kit idle at both ends; the
        // next channel on the kit gets this with the record naming it
        // (its commit is a Release store).
        self.ring_header(index)
            .consumer
            .head
            .store(tail, Ordering::Relaxed);
    }

    /// Did the channel of this generation move off the kit (one side
    /// claimed the move)? Its rings then end anywhere: the next
    /// generation starts each where its producer stopped.
    fn kit_moved(&self) -> bool {
        // Acquire: ordered after the Acquire of `kit_idle`, as in
        // `kit_drained`.
        self.kit_line().mover.load(Ordering::Acquire) & MOVER != 0
    }

    /// Have both ends closed the channel of this generation (each end's
    /// closed flags set)? A kit whose peer closed is about to go idle.
    fn kit_closed(&self) -> bool {
        (0..2).all(|i| {
            let h = self.ring_header(i);
            h.producer.closed.load(Ordering::Acquire) != 0
                && h.consumer_wait.closed.load(Ordering::Acquire) != 0
        })
    }

    /// Start generation `generation` on an idle kit: clear both ends'
    /// closed and wait words and idle marks, then store the generation.
    /// Call only when the peer's end is idle at the current generation
    /// (`kit_idle`, Acquire) and the rings drained, or the channel moved
    /// off the kit ([`KitWords::kit_moved`]; each ring then starts empty at
    /// its producer's last position): nobody reads or writes them. Published by the record that names the kit (its commit is a
    /// Release store after these, taken with Acquire by the receiver).
    fn renew_kit(&self, generation: u32) {
        let moved = self.kit_moved();
        for i in 0..2 {
            let h = self.ring_header(i);
            if moved {
                // Each ring starts empty where its producer stopped (it
                // published its last position before it left).
                let tail = h.producer.tail.load(Ordering::Relaxed);
                h.consumer.head.store(tail, Ordering::Relaxed);
            }
            // Relaxed: see the doc comment (published by the commit).
            h.producer.closed.store(0, Ordering::Relaxed);
            h.consumer_wait.closed.store(0, Ordering::Relaxed);
            h.consumer_wait.sleeping.store(0, Ordering::Relaxed);
            h.producer_wait.waiting.store(0, Ordering::Relaxed);
            h.consumer_wait.moved_at.store(0, Ordering::Relaxed);
        }
        let k = self.kit_line();
        k.idle[0].store(0, Ordering::Relaxed);
        k.idle[1].store(0, Ordering::Relaxed);
        k.mover.store(0, Ordering::Relaxed);
        k.generation.store(generation, Ordering::Relaxed);
    }

    /// Claim the move of the channel for `side`: [`Claim::Mine`] if this
    /// side moves it (or already did), [`Claim::Theirs`] if the other side
    /// claimed it first, [`Claim::Busy`] while the other side posts with
    /// descriptors or kit references ([`KitWords::claim_posting`]): try
    /// again (taking in what it sends meanwhile).
    fn claim_move(&self, side: Side) -> Claim {
        let me = side as u32 + 1;
        let word = &self.kit_line().mover;
        loop {
            // Acquire / AcqRel: the winner's later stores (the move) and
            // the loser's later loads are ordered by this word.
            let v = word.load(Ordering::Acquire);
            if v & MOVER == me {
                return Claim::Mine;
            }
            if v & MOVER != 0 {
                return Claim::Theirs;
            }
            if v & posting_bit(side.other()) != 0 {
                return Claim::Busy;
            }
            if word
                .compare_exchange(v, v | me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Claim::Mine;
            }
        }
    }

    /// Has the other side than `side` claimed the channel's move (it moves
    /// the channel, or did)? Acquire: pairs with the claim's AcqRel
    /// exchange, as in [`KitWords::claim_move`].
    fn moved_by_other(&self, side: Side) -> bool {
        self.kit_line().mover.load(Ordering::Acquire) & MOVER == side.other() as u32 + 1
    }

    /// `side` is about to post a record whose descriptors or kit
    /// references must reach the peer where it is now: `false` if a move
    /// has begun (follow it first). Ended by [`KitWords::end_posting`].
    fn claim_posting(&self, side: Side) -> bool {
        let word = &self.kit_line().mover;
        loop {
            // Acquire: see `claim_move`.
            let v = word.load(Ordering::Acquire);
            if v & MOVER != 0 {
                return false;
            }
            if word
                .compare_exchange(
                    v,
                    v | posting_bit(side),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                return true;
            }
        }
    }

    /// The post [`claim_posting`](KitWords::claim_posting) covered is
    /// committed (or given up).
    fn end_posting(&self, side: Side) {
        // Release: the commit before comes before a mover's claim.
        self.kit_line()
            .mover
            .fetch_and(!posting_bit(side), Ordering::Release);
    }
}

impl<M: KitMemory + ?Sized> KitWords for M {}

/// The mover word's bits that name the mover (`side + 1`).
const MOVER: u32 = 3;

/// The mover word's bit of `side` posting ([`KitWords::claim_posting`]).
fn posting_bit(side: Side) -> u32 {
    4 << side as u32
}

/// What [`KitWords::claim_move`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    Mine,
    Theirs,
    Busy,
}
