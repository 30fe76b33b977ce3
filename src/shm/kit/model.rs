//! A loom model of a kit changing hands between two channels: the peer's
//! port closes (positions, closed flags, then its idle mark), the
//! creator takes the kit up again once it sees the mark (and renews it),
//! and names it in a record; the peer takes the record and builds its
//! port. Run with the other models (docs/TESTING.md):
//!
//! ```text
//! RUSTFLAGS="--cfg shmport_loom" cargo test --release --lib kit::model
//! ```
//!
//! What must hold in every interleaving: the peer's port of the new
//! channel finds it clean (no closed flag, no idle mark, the new
//! generation) — a closed flag of the old channel landing after the
//! renewal would close the new one — and the creator never takes up a kit
//! whose peer has not finished closing. The carrier's record is modelled
//! by one word published with Release.

use loom::sync::atomic::AtomicU32;
use loom::thread;
use std::sync::Arc;

use super::{KitMemory, KitWords};
use crate::shm::layout::{KitLine, RingHeader};
use crate::shm::ring::model::model;
use crate::shm::segment::Side;
use crate::shm::sync::Ordering;

struct Memory {
    kit: KitLine,
    rings: [RingHeader; 2],
    /// The carrier's record naming the kit (0: not yet).
    record: AtomicU32,
}

impl KitMemory for Arc<Memory> {
    fn kit_line(&self) -> &KitLine {
        &self.kit
    }
    fn ring_header(&self, index: usize) -> &RingHeader {
        &self.rings[index]
    }
}

fn ring(tail: u64, head: u64) -> RingHeader {
    let r = RingHeader::zeroed();
    r.producer.tail.store(tail, Ordering::Relaxed);
    r.consumer.head.store(head, Ordering::Relaxed);
    r
}

/// Generation 1 in use; ring 0 (A to B) has one record B has not read
/// yet, ring 1 (B to A) is read to the end. A (the creator) has closed:
/// its closed flags are set.
fn memory() -> Arc<Memory> {
    let mem = Arc::new(Memory {
        kit: KitLine {
            id: core::sync::atomic::AtomicU64::new(7),
            generation: AtomicU32::new(1),
            idle: [AtomicU32::new(0), AtomicU32::new(0)],
            mover: AtomicU32::new(0),
        },
        rings: [ring(64, 0), ring(128, 128)],
        record: AtomicU32::new(0),
    });
    mem.rings[0].producer.closed.store(1, Ordering::Relaxed);
    mem.rings[1]
        .consumer_wait
        .closed
        .store(1, Ordering::Relaxed);
    mem
}

/// B's port closes: it reads the last record (if `read_last`), publishes
/// its head and its closed flags, then marks its end idle.
fn peer_closes(mem: &Arc<Memory>, read_last: bool) {
    if read_last {
        mem.rings[0].consumer.head.store(64, Ordering::Release);
    }
    mem.rings[1].producer.closed.store(1, Ordering::Release);
    mem.rings[0]
        .consumer_wait
        .closed
        .store(1, Ordering::Release);
    mem.set_kit_idle(Side::B, 1);
}

/// The creator's post of a new channel: take the kit up if its peer is
/// idle and the rings read to the end (as `Link::reuse` decides), renew
/// it, publish the record. `false`: not reusable yet.
fn creator_reuses(mem: &Arc<Memory>) -> bool {
    let generation = mem.kit_gen();
    if mem.kit_idle(Side::B) != generation || !mem.kit_drained() {
        return false;
    }
    mem.renew_kit(generation + 1);
    mem.record.store(1, Ordering::Release);
    true
}

#[test]
fn a_kit_is_taken_up_only_once_its_peer_closed_and_then_clean() {
    model(|| {
        let mem = memory();
        let peer = {
            let mem = mem.clone();
            thread::spawn(move || {
                peer_closes(&mem, true);
                // The peer takes the record naming the kit, and builds its
                // port of the new channel from the kit's words.
                while mem.record.load(Ordering::Acquire) == 0 {
                    thread::yield_now();
                }
                assert_eq!(mem.kit_gen(), 2);
                assert_eq!(mem.kit_idle(Side::A), 0);
                assert_eq!(mem.kit_idle(Side::B), 0);
                for r in &mem.rings {
                    assert_eq!(r.producer.closed.load(Ordering::Acquire), 0);
                    assert_eq!(r.consumer_wait.closed.load(Ordering::Acquire), 0);
                }
            })
        };
        // The creator tries until the kit is reusable (a real post makes a
        // new kit instead, after a short wait).
        while !creator_reuses(&mem) {
            thread::yield_now();
        }
        peer.join().unwrap();
    });
}

/// (As it is: the real creator settles such a kit first; see
/// `unread_block_settled` below.)
#[test]
fn a_kit_with_an_unread_record_is_never_taken_up() {
    model(|| {
        let mem = memory();
        let peer = {
            let mem = mem.clone();
            thread::spawn(move || {
                // Closes without reading A's last record.
                mem.rings[1].producer.closed.store(1, Ordering::Release);
                mem.rings[0]
                    .consumer_wait
                    .closed
                    .store(1, Ordering::Release);
                mem.set_kit_idle(Side::B, 1);
            })
        };
        let taken = creator_reuses(&mem);
        peer.join().unwrap();
        assert!(!taken && !creator_reuses(&mem));
    });
}

/// The channel of generation 1 moved off the kit (A claimed the move); B
/// followed and wrote a late record past what A took (ring 1's tail 192,
/// A's head 128), then its port closes: it publishes its last position
/// and marks its end idle. The creator takes the kit up once it sees the
/// mark, with both rings starting empty at their producers' last
/// positions.
#[test]
fn a_moved_kit_is_taken_up_once_its_peer_left_and_starts_past_the_old_records() {
    model(|| {
        let mem = memory();
        mem.kit.mover.store(1, Ordering::Relaxed);
        let peer = {
            let mem = mem.clone();
            thread::spawn(move || {
                // The late record's position, published as B leaves.
                mem.rings[1].producer.tail.store(192, Ordering::Release);
                mem.set_kit_idle(Side::B, 1);
                while mem.record.load(Ordering::Acquire) == 0 {
                    thread::yield_now();
                }
                assert_eq!(mem.kit_gen(), 2);
                for r in &mem.rings {
                    assert_eq!(
                        r.producer.tail.load(Ordering::Acquire),
                        r.consumer.head.load(Ordering::Acquire),
                        "a ring of the new channel starts with an old record"
                    );
                }
                assert_eq!(mem.rings[1].consumer.head.load(Ordering::Acquire), 192);
                assert_eq!(mem.kit.mover.load(Ordering::Acquire), 0);
            })
        };
        let reuse = || {
            let generation = mem.kit_gen();
            if mem.kit_idle(Side::B) != generation || !(mem.kit_drained() || mem.kit_moved()) {
                return false;
            }
            mem.renew_kit(generation + 1);
            mem.record.store(1, Ordering::Release);
            true
        };
        while !reuse() {
            thread::yield_now();
        }
        peer.join().unwrap();
    });
}

/// A record of A's (ring 0's last, [0, 64)) names a block of A's pool on
/// the link. B's port reads it or not (`read`): a read gives the block
/// back when the message drops (after the ring space), then the port
/// closes and marks its end idle. A, the creator, waits for the mark and
/// settles the kit (`crate::link::pool`): the records from B's last
/// position to A's give their blocks back, then both rings count as read.
/// The block comes back exactly once, whether B read it or not, and the
/// kit is then reusable.
fn unread_block_settled(read: bool) {
    model(move || {
        let mem = memory();
        let given_back = Arc::new(AtomicU32::new(0));
        let peer = {
            let (mem, given_back) = (mem.clone(), given_back.clone());
            thread::spawn(move || {
                if read {
                    // The message drops: its ring space, then its block.
                    mem.rings[0].consumer.head.store(64, Ordering::Release);
                    given_back.fetch_add(1, Ordering::Relaxed);
                }
                peer_closes(&mem, false);
            })
        };
        while mem.kit_idle(Side::B) != mem.kit_gen() {
            thread::yield_now();
        }
        for ring in 0..2 {
            if let Some((head, tail)) = mem.kit_unread(ring) {
                // The one pooled record, if it lies in the unread span.
                if ring == 0 && head == 0 && tail >= 64 {
                    given_back.fetch_add(1, Ordering::Relaxed);
                }
                mem.kit_mark_read(ring, tail);
            }
        }
        assert!(mem.kit_drained());
        peer.join().unwrap();
        assert_eq!(given_back.load(Ordering::Relaxed), 1);
    });
}

#[test]
fn a_block_its_reader_gave_back_is_not_given_back_again_at_settling() {
    unread_block_settled(true);
}

#[test]
fn a_block_nobody_read_is_given_back_at_settling() {
    unread_block_settled(false);
}
