//! A loom model of the release queue: the pool owner lends blocks, the
//! consumer gives them back through the queue, and the owner, short of
//! blocks, waits with the Dekker handshake; explored over every
//! interleaving loom generates. Run with the ring's model (docs/TESTING.md):
//!
//! ```text
//! RUSTFLAGS="--cfg shmport_loom" cargo test --release --lib release::model
//! ```
//!
//! The ring that carries the lent blocks to the consumer is modelled by a
//! mutex-guarded queue (the ring's own model covers it); the socket's
//! wake-ups by a token. A lost wake-up leaves the owner asleep with a block
//! released, which loom reports as a deadlock.

use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::{Condvar, Mutex};
use loom::thread;
use std::collections::VecDeque;
use std::sync::Arc;

use super::{Pushed, Reclaimer, ReleaseMemory, Releaser};
use crate::shm::layout::ReleaseHeader;
use crate::shm::ring::Barriers;
use crate::shm::ring::model::model;
use crate::shm::sync::Ordering;

/// Entries in the model's queue: fewer than the blocks in flight would
/// ever need, so the full queue is explored too.
const SLOTS: usize = 2;

struct Memory {
    header: ReleaseHeader,
    entries: Vec<AtomicU64>,
    /// Stands for the consumer's closed flag (`ConsumerWaitLine::closed`).
    closed: AtomicU32,
}

// SAFETY: a header and SLOTS (a power of two) words owned by the Arc.
unsafe impl ReleaseMemory for Arc<Memory> {
    fn header(&self) -> &ReleaseHeader {
        &self.header
    }
    fn entry(&self, i: usize) -> &AtomicU64 {
        &self.entries[i]
    }
    fn slots(&self) -> usize {
        SLOTS
    }
}

fn memory() -> Arc<Memory> {
    Arc::new(Memory {
        header: ReleaseHeader::zeroed(),
        entries: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        closed: AtomicU32::new(0),
    })
}

/// A token: the socket as far as waking goes.
struct Wake {
    state: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    fn new() -> Arc<Self> {
        Arc::new(Wake {
            state: Mutex::new(false),
            cv: Condvar::new(),
        })
    }
    fn send(&self) {
        *self.state.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn sleep(&self) {
        let mut s = self.state.lock().unwrap();
        while !*s {
            s = self.cv.wait(s).unwrap();
        }
        *s = false;
    }
}

/// The ring, reduced to what the model needs: lent block keys in order.
struct Lent {
    queue: Mutex<VecDeque<u64>>,
    cv: Condvar,
}

impl Lent {
    fn send(&self, key: u64) {
        self.queue.lock().unwrap().push_back(key);
        self.cv.notify_one();
    }
    fn try_recv(&self) -> Option<u64> {
        self.queue.lock().unwrap().pop_front()
    }
    fn wait(&self) {
        let mut q = self.queue.lock().unwrap();
        while q.is_empty() {
            q = self.cv.wait(q).unwrap();
        }
    }
}

/// The owner's side: a free list it fills from the queue, and the wait a
/// blocking post makes when it finds no block. `None`: the consumer closed.
fn lend(
    owner: &mut Reclaimer<Arc<Memory>>,
    free: &mut Vec<u64>,
    lent: &mut [bool],
    mem: &Memory,
    wake: &Wake,
) -> Option<u64> {
    loop {
        take_back(owner, free, lent);
        if let Some(k) = free.pop() {
            lent[k as usize] = true;
            return Some(k);
        }
        if mem.closed.load(Ordering::Acquire) != 0 {
            return None;
        }
        if owner.prepare_wait() {
            // The re-check of the close after the announcement's barrier.
            if mem.closed.load(Ordering::Acquire) != 0 {
                owner.end_wait();
                return None;
            }
            wake.sleep();
            owner.end_wait();
        }
    }
}

/// The consumer gives a block back, keeping it privately while the queue
/// is full (as a port's receiving half does) and retrying before each
/// receive.
fn release(
    r: &mut Releaser<Arc<Memory>>,
    backlog: &mut VecDeque<u64>,
    key: Option<u64>,
    wake: &Wake,
) {
    backlog.extend(key);
    while let Some(&k) = backlog.front() {
        match r.push(k).unwrap() {
            Pushed::Queued { wake: w } => {
                backlog.pop_front();
                if w {
                    wake.send();
                }
            }
            Pushed::Full => break,
        }
    }
}

/// The owner lends `messages` blocks from a pool of `blocks`; the consumer
/// gives each back. Every block must come back and be lent again.
fn run(blocks: u64, messages: usize, barriers: Barriers) {
    let mem = memory();
    let wake = Wake::new();
    let ring = Arc::new(Lent {
        queue: Mutex::new(VecDeque::new()),
        cv: Condvar::new(),
    });
    let consumer = {
        let (mem, wake, ring) = (mem.clone(), wake.clone(), ring.clone());
        thread::spawn(move || {
            let mut r = Releaser::new(mem, barriers).unwrap();
            let mut backlog = VecDeque::new();
            for _ in 0..messages {
                // As a port's receive: what is held back goes out before it
                // sleeps.
                let k = loop {
                    if let Some(k) = ring.try_recv() {
                        break k;
                    }
                    release(&mut r, &mut backlog, None, &wake);
                    ring.wait();
                };
                release(&mut r, &mut backlog, Some(k), &wake);
            }
            // What the queue had no room for stays here until the next
            // receive (the owner, with blocks enough, had no need to drain).
            release(&mut r, &mut backlog, None, &wake);
            backlog
        })
    };
    let mut owner = Reclaimer::new(mem.clone(), barriers).unwrap();
    let mut free: Vec<u64> = (0..blocks).collect();
    let mut lent = vec![false; blocks as usize];
    for _ in 0..messages {
        let k = lend(&mut owner, &mut free, &mut lent, &mem, &wake).expect("not closed");
        ring.send(k);
    }
    let backlog = consumer.join().unwrap();
    // Every block came back exactly once: through the queue, or still held
    // back by the consumer.
    take_back(&mut owner, &mut free, &mut lent);
    let mut held: Vec<u64> = (0..blocks).filter(|&b| lent[b as usize]).collect();
    let mut back: Vec<u64> = backlog.into_iter().collect();
    held.sort_unstable();
    back.sort_unstable();
    assert_eq!(held, back, "a block lost or given back twice");
}

/// Take back what the queue holds, checking each key was lent.
fn take_back(owner: &mut Reclaimer<Arc<Memory>>, free: &mut Vec<u64>, lent: &mut [bool]) {
    owner
        .drain(|k| {
            assert!(
                lent[k as usize],
                "block {k} released but not lent (or twice)"
            );
            lent[k as usize] = false;
            free.push(k);
            Ok(())
        })
        .unwrap();
}

/// One block, three messages: the owner waits for every block to come back.
#[test]
fn the_owner_waits_for_each_block_and_is_woken() {
    model(|| run(1, 3, Barriers::FENCES));
}

/// Three blocks through a queue of two entries: the consumer finds it full
/// and keeps a release back until the owner drains.
#[test]
fn a_full_queue_delays_a_release_but_loses_none() {
    model(|| run(3, 4, Barriers::FENCES));
}

/// The consumer closes while the owner waits for a block it holds.
#[test]
fn a_waiting_owner_wakes_at_the_consumers_close() {
    model(|| {
        let mem = memory();
        let wake = Wake::new();
        let consumer = {
            let (mem, wake) = (mem.clone(), wake.clone());
            thread::spawn(move || {
                let r = Releaser::new(mem.clone(), Barriers::FENCES).unwrap();
                // The closed flag, then the look at the waiting flag.
                mem.closed.store(1, Ordering::Release);
                if r.wake_due_at_close() {
                    wake.send();
                }
            })
        };
        let mut owner = Reclaimer::new(mem.clone(), Barriers::FENCES).unwrap();
        let mut free = vec![0];
        let mut lent = vec![false];
        assert_eq!(lend(&mut owner, &mut free, &mut lent, &mem, &wake), Some(0));
        assert_eq!(lend(&mut owner, &mut free, &mut lent, &mem, &wake), None);
        consumer.join().unwrap();
    });
}

/// Without the barriers (a "registered" process whose membarrier does
/// nothing), the model finds the lost wake-up.
#[test]
#[should_panic(expected = "deadlock; threads =")]
fn without_barriers_a_release_wake_up_is_lost() {
    fn nothing() {}
    let none = Barriers {
        registered: true,
        heavy: Some(nothing),
    };
    model(move || run(1, 2, none));
}
