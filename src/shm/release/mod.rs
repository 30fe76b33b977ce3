//! The release queue of one direction's pool: the consumer of a ring gives
//! pool blocks back to the producer that lent them, with no system call.
//!
//! A single-producer single-consumer queue of `u64` block keys in the
//! segment's header area ([`crate::shm::layout`], `ReleaseHeader`). The
//! *releaser* (the ring's consumer) writes a key, then stores its `tail`
//! with Release; the *reclaimer* (the ring's producer, which owns the pool)
//! loads `tail` with Acquire when it needs a block, reads the keys, and
//! stores its `head` with Release so the releaser may reuse the entries.
//! There are no wake-ups for releases in the common case: the reclaimer
//! looks when it lends. Only a reclaimer that found no block and no room
//! to grow waits: it announces it (`waiting`), as a ring's producer waiting
//! for room does, and the releaser that sees the announcement after its
//! push (or after its close) sends the wake-up.
//!
//! The wait is a Dekker pair like the ring's: the reclaimer swaps
//! `waiting` to 1, issues the sleeper's barrier, and looks at `tail` (and
//! its caller at the consumer's closed flag) again; the releaser stores
//! `tail`, issues the publisher's barrier, and looks at `waiting`. At least
//! one of them sees the other (`model.rs` checks it under loom).
//!
//! Everything loaded from the queue is untrusted: positions out of order or
//! out of range are a [`Corrupt`] error; the keys themselves are checked by
//! the pool's owner against its own record of what it lent.

#[cfg(all(test, shmport_loom))]
mod model;

use crate::shm::layout::ReleaseHeader;
use crate::shm::ring::{Barriers, Corrupt};
use crate::shm::sync::{AtomicU64, Ordering};

/// Memory that holds one release queue.
///
/// # Safety
/// Implementors promise that, for as long as the value lives, `header()`
/// is a valid [`ReleaseHeader`] and `entry(i)` a valid atomic word for
/// every `i < slots()`, and that `slots()` is a constant power of two.
pub unsafe trait ReleaseMemory {
    /// The queue's control block.
    fn header(&self) -> &ReleaseHeader;
    /// Entry `i` (`i < slots()`).
    fn entry(&self, i: usize) -> &AtomicU64;
    /// Number of entries.
    fn slots(&self) -> usize;
}

/// Check positions loaded from the queue: in order, at most a queue apart,
/// far from overflow.
fn check(head: u64, tail: u64, slots: u64) -> Result<(), Corrupt> {
    if tail > u64::MAX / 2 {
        return Err(Corrupt("release position out of range"));
    }
    if head > tail {
        return Err(Corrupt("release head beyond tail"));
    }
    if tail - head > slots {
        return Err(Corrupt("more releases queued than the queue holds"));
    }
    Ok(())
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The key is queued; `wake`: the reclaimer waits for it, send it the
    /// wake-up.
    Queued {
        /// Send the wake-up.
        wake: bool,
    },
    /// The queue is full: keep the key and push it later.
    Full,
}

/// The consumer's end: gives blocks back.
pub struct Releaser<M: ReleaseMemory> {
    mem: M,
    tail: u64,
    head_cache: u64,
    barriers: Barriers,
}

impl<M: ReleaseMemory> Releaser<M> {
    /// Take the releaser role, resuming at the published positions.
    pub fn new(mem: M, barriers: Barriers) -> Result<Self, Corrupt> {
        let h = mem.header();
        // Acquire: pairs with the Release stores of the previous holder of
        // this role (`push`) and of the reclaimer (`drain`).
        let tail = h.releaser.tail.load(Ordering::Acquire);
        let head = h.reclaimer.head.load(Ordering::Acquire);
        check(head, tail, mem.slots() as u64)?;
        Ok(Releaser {
            mem,
            tail,
            head_cache: head,
            barriers,
        })
    }

    /// Queue `key`; see [`Pushed`].
    pub fn push(&mut self, key: u64) -> Result<Pushed, Corrupt> {
        let slots = self.mem.slots() as u64;
        if self.tail - self.head_cache >= slots {
            // Acquire: pairs with the Release store in `Reclaimer::drain`,
            // so its reads of the entries happen before we overwrite them.
            let head = self.mem.header().reclaimer.head.load(Ordering::Acquire);
            check(head, self.tail, slots)?;
            if head < self.head_cache {
                return Err(Corrupt("release head moved backwards"));
            }
            self.head_cache = head;
            if self.tail - head >= slots {
                return Ok(Pushed::Full);
            }
        }
        let i = (self.tail & (slots - 1)) as usize;
        // Relaxed: published by the Release store of `tail` below.
        self.mem.entry(i).store(key, Ordering::Relaxed);
        self.tail += 1;
        // Release: pairs with the Acquire load in `Reclaimer::drain`, which
        // then reads the key written above.
        self.mem
            .header()
            .releaser
            .tail
            .store(self.tail, Ordering::Release);
        Ok(Pushed::Queued {
            wake: self.reclaimer_waits(),
        })
    }

    /// After the consumer's close (its closed flag stored with Release):
    /// does the reclaimer wait, and so need the wake-up to see the close?
    pub fn wake_due_at_close(&self) -> bool {
        self.reclaimer_waits()
    }

    /// The publisher's half of the Dekker pair: barrier, then the flag.
    /// Swapping it to 0 makes exactly one of several calls send the wake-up.
    fn reclaimer_waits(&self) -> bool {
        let wait = &self.mem.header().wait;
        // Relaxed: which barrier the sleeper uses; see `Barriers::publisher`.
        self.barriers
            .publisher(wait.barrier.load(Ordering::Relaxed));
        // Relaxed: ordered after our tail store (or closed flag) by the
        // barrier above; the sleeper's barrier orders its side.
        wait.waiting.load(Ordering::Relaxed) != 0 && wait.waiting.swap(0, Ordering::Relaxed) != 0
    }
}

/// The pool owner's end: takes released blocks back.
pub struct Reclaimer<M: ReleaseMemory> {
    mem: M,
    head: u64,
    barriers: Barriers,
}

impl<M: ReleaseMemory> Reclaimer<M> {
    /// Take the reclaimer role, resuming at the published positions. Keys
    /// already queued belong to an earlier owner's pool (a sending port
    /// that moved here leaves its pool behind): they are read and dropped
    /// by the caller like any key of a retired pool.
    pub fn new(mem: M, barriers: Barriers) -> Result<Self, Corrupt> {
        let h = mem.header();
        // Acquire: pairs with the Release stores of `drain` (an earlier
        // holder of this role) and of `Releaser::push`.
        let head = h.reclaimer.head.load(Ordering::Acquire);
        let tail = h.releaser.tail.load(Ordering::Acquire);
        check(head, tail, mem.slots() as u64)?;
        // Relaxed: read by the releaser only to choose its fence.
        h.wait.barrier.store(barriers.code(), Ordering::Relaxed);
        Ok(Reclaimer {
            mem,
            head,
            barriers,
        })
    }

    /// Hand every queued key to `take`, then give the entries back to the
    /// releaser. Stops at the first key `take` refuses (the error is the
    /// caller's: a key that was never lent).
    pub fn drain(
        &mut self,
        mut take: impl FnMut(u64) -> Result<(), Corrupt>,
    ) -> Result<(), Corrupt> {
        let slots = self.mem.slots() as u64;
        // Acquire: pairs with the Release store in `Releaser::push`, so the
        // keys below it are visible.
        let tail = self.mem.header().releaser.tail.load(Ordering::Acquire);
        if tail == self.head {
            return Ok(());
        }
        check(self.head, tail, slots)?;
        while self.head < tail {
            let i = (self.head & (slots - 1)) as usize;
            // Relaxed: ordered after the Acquire load of `tail`.
            let key = self.mem.entry(i).load(Ordering::Relaxed);
            self.head += 1;
            take(key)?;
        }
        // Release: our reads of the entries happen before the releaser,
        // which loads `head` with Acquire, overwrites them.
        self.mem
            .header()
            .reclaimer
            .head
            .store(self.head, Ordering::Release);
        Ok(())
    }

    /// Are keys queued? (One Acquire load.)
    pub fn pending(&self) -> bool {
        self.mem.header().releaser.tail.load(Ordering::Acquire) != self.head
    }

    /// Announce a wait for released blocks: the sleeper's half of the
    /// Dekker pair. `false`: keys came meanwhile, do not sleep (the
    /// announcement is withdrawn). After `true`, the caller re-checks the
    /// consumer's closed flag before it sleeps, then calls
    /// [`end_wait`](Self::end_wait) when it wakes.
    pub fn prepare_wait(&self) -> bool {
        let w = &self.mem.header().wait.waiting;
        // A swap, as the ring's announcements (ring/producer.rs): it
        // follows the releaser's clearing swap in every order of the flag.
        w.swap(1, Ordering::Relaxed);
        self.barriers.sleeper();
        if self.pending() {
            w.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Withdraw the wait announcement.
    pub fn end_wait(&self) {
        self.mem.header().wait.waiting.store(0, Ordering::Relaxed);
    }

    /// The id the next pool buffer of this direction gets.
    pub fn next_buffer(&self) -> u32 {
        // Relaxed: written by this role only (an earlier holder published it
        // with the port's move, which a system call ordered).
        self.mem
            .header()
            .reclaimer
            .next_buffer
            .load(Ordering::Relaxed)
    }

    /// Record the id the next pool buffer gets.
    pub fn set_next_buffer(&self, id: u32) {
        // Relaxed: see `next_buffer`.
        self.mem
            .header()
            .reclaimer
            .next_buffer
            .store(id, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(shmport_loom)))]
mod tests {
    use super::*;
    use crate::shm::layout::ReleaseHeader;

    struct Heap {
        header: Box<ReleaseHeader>,
        entries: Vec<AtomicU64>,
    }

    // SAFETY: a boxed header and `entries.len()` (a power of two) words,
    // owned by the value.
    unsafe impl ReleaseMemory for &Heap {
        fn header(&self) -> &ReleaseHeader {
            &self.header
        }
        fn entry(&self, i: usize) -> &AtomicU64 {
            &self.entries[i]
        }
        fn slots(&self) -> usize {
            self.entries.len()
        }
    }

    fn heap(slots: usize) -> Heap {
        let header = Box::new(ReleaseHeader::zeroed());
        Heap {
            header,
            entries: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn drained(r: &mut Reclaimer<&Heap>) -> Vec<u64> {
        let mut got = Vec::new();
        r.drain(|k| {
            got.push(k);
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn keys_arrive_in_order_and_a_full_queue_says_so() {
        let h = heap(4);
        let mut tx = Releaser::new(&h, Barriers::FENCES).unwrap();
        let mut rx = Reclaimer::new(&h, Barriers::FENCES).unwrap();
        for k in 1..=4 {
            assert_eq!(tx.push(k).unwrap(), Pushed::Queued { wake: false });
        }
        assert_eq!(tx.push(5).unwrap(), Pushed::Full);
        assert_eq!(drained(&mut rx), [1, 2, 3, 4]);
        assert_eq!(tx.push(5).unwrap(), Pushed::Queued { wake: false });
        assert_eq!(drained(&mut rx), [5]);
        assert!(!rx.pending());
    }

    #[test]
    fn a_waiting_reclaimer_is_woken_once() {
        let h = heap(4);
        let mut tx = Releaser::new(&h, Barriers::FENCES).unwrap();
        let rx = Reclaimer::new(&h, Barriers::FENCES).unwrap();
        assert!(rx.prepare_wait());
        assert_eq!(tx.push(7).unwrap(), Pushed::Queued { wake: true });
        assert_eq!(tx.push(8).unwrap(), Pushed::Queued { wake: false });
        assert!(!rx.prepare_wait(), "keys are queued: no sleep");
        rx.end_wait();
        assert!(!tx.wake_due_at_close());
    }

    #[test]
    fn corrupt_positions_are_refused() {
        let h = heap(4);
        h.header.releaser.tail.store(9, Ordering::Relaxed);
        assert!(Reclaimer::new(&h, Barriers::FENCES).is_err());
        assert!(Releaser::new(&h, Barriers::FENCES).is_err());
        h.header.releaser.tail.store(2, Ordering::Relaxed);
        let mut rx = Reclaimer::new(&h, Barriers::FENCES).unwrap();
        // A releaser that claims more than a queue of keys.
        h.header.releaser.tail.store(100, Ordering::Relaxed);
        assert!(rx.drain(|_| Ok(())).is_err());
        // A reclaimer head beyond the tail, seen by a releaser that finds
        // its cached view full.
        let h = heap(1);
        let mut tx = Releaser::new(&h, Barriers::FENCES).unwrap();
        tx.push(1).unwrap();
        h.header.reclaimer.head.store(5, Ordering::Relaxed);
        assert!(tx.push(2).is_err());
    }
}
