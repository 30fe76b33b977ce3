//! A loom model of the ring protocol: publish and consume, release of space,
//! padding at the end of a lap, and the sleep/wake handshake in both
//! directions, explored over every interleaving (and every value the C11
//! memory model lets a load return) that loom generates.
//!
//! Run it with (see `docs/TESTING.md`):
//!
//! ```text
//! RUSTFLAGS="--cfg shmport_loom" cargo test --release --lib ring::model
//! ```
//!
//! The model runs the ring code itself, [`Producer`] and [`Consumer`], over
//! a [`ModelMemory`] of 256 bytes (four record slots):
//! - the ring header and every record header are loom atomics (in a `--cfg
//!   loom` build, `layout`'s ring words are loom's);
//! - each 64-byte chunk of the data area has a loom cell. The producer
//!   writes the chunks of every record and header it writes
//!   ([`RingMemory::model_write`]); the consumer reads the chunks of every
//!   header it takes and of every payload it reads. Loom fails the model if
//!   two of those accesses are not ordered by the protocol: a producer
//!   overwriting what the consumer may still read, or a consumer reading
//!   what the producer has not published;
//! - the socket's wake-ups are a token per direction (a mutex and a condition
//!   variable); closing hangs the token up for good. A lost wake-up leaves
//!   both sides asleep, which loom reports as a deadlock.
//!
//! Two models close one side while the other sleeps with the socket left
//! open (a split port's half-close): only the close's own wake-up can end
//! that sleep.
//!
//! Only the fence flavour of the handshake ([`Barriers::FENCES`]) can be
//! modelled: loom has no `membarrier`. [`without_barriers_a_wake_up_is_lost`]
//! shows the model has teeth: with the barriers taken away it finds the lost
//! wake-up.

use core::cell::UnsafeCell as StdUnsafeCell;
use core::ptr::NonNull;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;
use loom::sync::{Condvar, Mutex};
// std's Arc, not loom's: loom's cannot be dropped while a failed model unwinds,
// which would abort the `should_panic` test instead of failing it.
use loom::thread;
use std::sync::Arc;

use super::{Barriers, Consumer, Kind, Producer, RecordMeta, RingMemory};
use crate::shm::layout::{RECORD_ALIGN, RecordHeader, RingHeader};

/// Four slots of [`RECORD_ALIGN`] bytes: small enough to explore, big
/// enough to wrap, pad and fill.
pub(super) const CAP: usize = 4 * RECORD_ALIGN;

/// One record slot's bytes, aligned as the ring requires.
#[repr(C, align(64))]
struct Chunk(StdUnsafeCell<[u8; RECORD_ALIGN]>);

/// Ring memory for the model: headers as loom atomics, payload bytes as
/// plain memory, and one loom cell per chunk standing for the accesses to
/// it.
pub(super) struct ModelMemory {
    header: RingHeader,
    records: Box<[RecordHeader]>,
    data: Box<[Chunk]>,
    access: Box<[UnsafeCell<()>]>,
}

// SAFETY: the shared parts are atomics (loom's) and the data area, which is
// accessed only through raw pointers under the ring protocol, exactly as a
// shared segment is; the model's cells check that protocol.
unsafe impl Sync for ModelMemory {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for ModelMemory {}

impl ModelMemory {
    pub(super) fn new() -> Arc<Self> {
        let chunks = CAP / RECORD_ALIGN;
        Arc::new(ModelMemory {
            header: RingHeader::zeroed(),
            records: (0..chunks)
                .map(|_| RecordHeader {
                    commit: AtomicU64::new(0),
                    info: AtomicU64::new(0),
                    fingerprint: AtomicU64::new(0),
                    reserved: AtomicU64::new(0),
                })
                .collect(),
            data: (0..chunks)
                .map(|_| Chunk(StdUnsafeCell::new([0; RECORD_ALIGN])))
                .collect(),
            access: (0..chunks).map(|_| UnsafeCell::new(())).collect(),
        })
    }

    /// The chunks `offset..offset + len` touches.
    fn chunks(offset: usize, len: usize) -> core::ops::Range<usize> {
        assert!(offset + len <= CAP, "access outside the data area");
        offset / RECORD_ALIGN..(offset + len).div_ceil(RECORD_ALIGN)
    }
}

// SAFETY: (1) `header` lives as long as the memory; (2) `data` is CAP bytes
// of `Chunk`s, 64-byte aligned (= RECORD_ALIGN), all inside `StdUnsafeCell`s, so
// writing through the pointer is allowed, and no reference to the bytes is
// ever made; (3) CAP = 4 * RECORD_ALIGN, a power of two, constant.
unsafe impl RingMemory for Arc<ModelMemory> {
    fn header(&self) -> &RingHeader {
        &self.header
    }

    fn data(&self) -> NonNull<u8> {
        NonNull::new(self.data.as_ptr().cast::<u8>().cast_mut()).expect("boxed slice")
    }

    fn capacity(&self) -> usize {
        CAP
    }

    unsafe fn record_header(&self, offset: usize) -> &RecordHeader {
        assert_eq!(offset % RECORD_ALIGN, 0, "misaligned record header");
        &self.records[offset / RECORD_ALIGN]
    }

    fn model_write(&self, offset: usize, len: usize) {
        for c in ModelMemory::chunks(offset, len) {
            self.access[c].with_mut(|_| ());
        }
    }

    fn model_read(&self, offset: usize, len: usize) {
        for c in ModelMemory::chunks(offset, len) {
            self.access[c].with(|_| ());
        }
    }
}

/// The socket, as far as waking goes: one token per direction.
struct Wake {
    /// (a token is waiting, the sender hung up)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Wake {
    fn new() -> Arc<Self> {
        Arc::new(Wake {
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        })
    }

    /// Send a wake-up token.
    fn send(&self) {
        self.state.lock().unwrap().0 = true;
        self.cv.notify_one();
    }

    /// Close the socket: every sleep from now on returns at once.
    fn hang_up(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }

    /// Sleep until a token (taking it) or a hang-up.
    fn sleep(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.0 && !s.1 {
            s = self.cv.wait(s).unwrap();
        }
        s.0 = false;
    }
}

pub(super) const RAW: RecordMeta = RecordMeta {
    kind: Kind::Raw,
    out_of_line: false,
    pool: false,
    announce: false,
    kits: false,
    nports: 0,
    fingerprint: 0,
};

pub(super) type Mem = Arc<ModelMemory>;

/// The bytes of message `i` of length `len`.
pub(super) fn fill(i: usize) -> u8 {
    i as u8 + 1
}

/// Post one message the way a port's blocking post does (without the
/// spin): reserve, or announce the wait for room and sleep on the token.
fn post(p: &mut Producer<Mem>, i: usize, len: usize, wake_consumer: &Wake, room: &Wake) {
    assert!(
        post_unless_closed(p, i, len, wake_consumer, room),
        "the consumer closed while messages were due"
    );
}

/// A record the model's consumer took: its span and payload.
pub(super) struct Taken {
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) bytes: Vec<u8>,
}

/// Take the record at the head, if one is committed, and read its payload.
pub(super) fn take(c: &mut Consumer<Mem>) -> Option<Taken> {
    let r = c.take().unwrap()?;
    let offset = (r.pos as usize) & (CAP - 1);
    c.memory()
        .model_read(offset + crate::shm::layout::RECORD_HEADER, r.len);
    // SAFETY: a taken record's payload is `len` bytes inside the data area,
    // untouched by the producer until released.
    let bytes = unsafe { core::slice::from_raw_parts(r.payload.as_ptr(), r.len) }.to_vec();
    Some(Taken {
        pos: r.pos,
        end: r.end,
        bytes,
    })
}

/// Receive one message the way a port's blocking recv does: take, publish
/// released space, and at an empty ring check for the close before
/// announcing sleep. `None`: the producer closed and everything arrived.
fn recv(c: &mut Consumer<Mem>, arrival: &Wake, wake_producer: &Wake) -> Option<Taken> {
    loop {
        if let Some(t) = take(c) {
            return Some(t);
        }
        if c.unpublished() && c.publish_head() {
            wake_producer.send();
        }
        if c.producer_closed() {
            // Every commit before the close is visible now: one more look.
            if !c.ready() {
                return None;
            }
            continue;
        }
        if c.prepare_sleep() {
            if c.producer_closed() {
                c.end_sleep();
                continue;
            }
            arrival.sleep();
            c.end_sleep();
        }
    }
}

fn release(c: &mut Consumer<Mem>, t: &Taken, wake_producer: &Wake) {
    if c.release(t.pos, t.end) && c.publish_head() {
        wake_producer.send();
    }
}

/// One producer thread posting `lens`; the consumer (this thread) takes
/// them, holding up to `hold` records at once and releasing each batch in
/// reverse order, and checks that every message arrives once, whole and in
/// order. Then it tells the producer (outside the ring), which closes; the
/// consumer must see the close.
///
/// The producer closes only after the consumer has everything, so the
/// hang-up cannot rescue a lost wake-up: one leaves the consumer asleep
/// and the producer waiting, a deadlock.
fn run(lens: &'static [usize], hold: usize, barriers: Barriers) {
    let mem = ModelMemory::new();
    let arrival = Wake::new();
    let room = Wake::new();
    let all_in = Wake::new();
    let mut c = Consumer::new(mem.clone(), barriers).unwrap();
    let producer = {
        let (mem, arrival, room, all_in) =
            (mem.clone(), arrival.clone(), room.clone(), all_in.clone());
        thread::spawn(move || {
            let mut p = Producer::new(mem, barriers).unwrap();
            for (i, &len) in lens.iter().enumerate() {
                post(&mut p, i, len, &arrival, &room);
            }
            all_in.sleep();
            if p.close() {
                arrival.send();
            }
            arrival.hang_up();
        })
    };
    let mut held: Vec<Taken> = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let t = recv(&mut c, &arrival, &room).expect("closed before every message arrived");
        check(&t, i, len);
        held.push(t);
        if held.len() == hold || i + 1 == lens.len() {
            while let Some(t) = held.pop() {
                release(&mut c, &t, &room);
            }
        }
    }
    all_in.send();
    assert!(
        recv(&mut c, &arrival, &room).is_none(),
        "a message after the last one posted"
    );
    producer.join().unwrap();
}

/// Read record `t` as message `i` of `len` bytes, or fail the model.
pub(super) fn check(t: &Taken, i: usize, len: usize) {
    assert_eq!(t.bytes.len(), len, "message {i} has the wrong length");
    assert!(
        t.bytes.iter().all(|&b| b == fill(i)),
        "message {i} has wrong bytes (out of order or torn)"
    );
}

/// A port set's wait: two producers, one ring each, and one consumer that
/// announces its sleep on both rings, issues one barrier for both, and
/// re-checks both before sleeping on one token that either producer's
/// wake-up sets (the set's epoll). Each producer posts `per_ring`
/// one-slot messages, then closes once everything has arrived (and hangs
/// up its own socket, which only the final check sleeps on).
fn run_set(per_ring: usize) {
    let barriers = Barriers::FENCES;
    let wake = Wake::new();
    let room = [Wake::new(), Wake::new()];
    let hung_up = [Wake::new(), Wake::new()];
    let all_in = Wake::new();
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    for k in 0..2 {
        let mem = ModelMemory::new();
        consumers.push(Consumer::new(mem.clone(), barriers).unwrap());
        let (wake, room, hung_up, all_in) = (
            wake.clone(),
            room[k].clone(),
            hung_up[k].clone(),
            all_in.clone(),
        );
        producers.push(thread::spawn(move || {
            let mut p = Producer::new(mem, barriers).unwrap();
            for i in 0..per_ring {
                post(&mut p, i, 8, &wake, &room);
            }
            all_in.sleep();
            if p.close() {
                hung_up.send();
            }
            hung_up.hang_up();
        }));
    }
    let mut got = [0usize; 2];
    while got.iter().sum::<usize>() < 2 * per_ring {
        let mut took = false;
        for (k, c) in consumers.iter_mut().enumerate() {
            if let Some(t) = take(c) {
                check(&t, got[k], 8);
                got[k] += 1;
                release(c, &t, &room[k]);
                took = true;
            }
        }
        if took {
            continue;
        }
        for c in &consumers {
            c.announce_sleep();
        }
        consumers[0].sleep_barrier();
        if consumers.iter().any(|c| c.ready()) {
            consumers.iter().for_each(|c| c.end_sleep());
            continue;
        }
        wake.sleep();
        consumers.iter().for_each(|c| c.end_sleep());
    }
    // Both producers wait on it: wake them for good.
    all_in.hang_up();
    for (k, c) in consumers.iter_mut().enumerate() {
        assert!(
            recv(c, &hung_up[k], &room[k]).is_none(),
            "a message after the last one posted"
        );
    }
    for p in producers {
        p.join().unwrap();
    }
}

/// A half-close while the other side sleeps: the socket stays open (the
/// closing port's other half lives on), so only the close's own wake-up
/// can end the sleep; a lost one is a deadlock.
///
/// The producer posts `lens` and closes its end; the consumer reads them
/// and must then see the close. Closing may race with the consumer's
/// sleep at any point.
fn run_producer_closes() {
    let mem = ModelMemory::new();
    let arrival = Wake::new();
    let room = Wake::new();
    let mut c = Consumer::new(mem.clone(), Barriers::FENCES).unwrap();
    let producer = {
        let (mem, arrival, room) = (mem.clone(), arrival.clone(), room.clone());
        thread::spawn(move || {
            let mut p = Producer::new(mem, Barriers::FENCES).unwrap();
            post(&mut p, 0, 8, &arrival, &room);
            if p.close() {
                arrival.send();
            }
        })
    };
    let t = recv(&mut c, &arrival, &room).expect("closed before the message arrived");
    check(&t, 0, 8);
    release(&mut c, &t, &room);
    assert!(
        recv(&mut c, &arrival, &room).is_none(),
        "a message after the last one posted"
    );
    producer.join().unwrap();
}

/// The mirror case: the producer waits for room in a full ring, and the
/// consumer closes its end without reading: the post must give up. Only
/// the consumer's close can wake the producer.
fn run_consumer_closes() {
    let mem = ModelMemory::new();
    let room = Wake::new();
    let arrival = Wake::new();
    let producer = {
        let (mem, room, arrival) = (mem.clone(), room.clone(), arrival.clone());
        thread::spawn(move || {
            let mut p = Producer::new(mem, Barriers::FENCES).unwrap();
            // Two records of 128 bytes fill the ring; the third waits.
            let mut posted = 0;
            for i in 0..3 {
                if !post_unless_closed(&mut p, i, 90, &arrival, &room) {
                    break;
                }
                posted += 1;
            }
            assert!(posted < 3, "a post succeeded into a full ring nobody reads");
        })
    };
    let mut c = Consumer::new(mem, Barriers::FENCES).unwrap();
    if c.close() {
        room.send();
    }
    producer.join().unwrap();
}

/// [`post`], giving up (`false`) once the consumer has closed, as a port's
/// post does.
fn post_unless_closed(
    p: &mut Producer<Mem>,
    i: usize,
    len: usize,
    wake_consumer: &Wake,
    room: &Wake,
) -> bool {
    loop {
        if p.consumer_closed() {
            return false;
        }
        if let Some(slot) = p.reserve(len).unwrap() {
            // SAFETY: the slot has `room >= len` bytes at `payload`, free
            // space the consumer does not read until the commit.
            unsafe { core::ptr::write_bytes(slot.payload.as_ptr(), fill(i), len) };
            if p.commit(slot, len, RAW) {
                wake_consumer.send();
            }
            return true;
        }
        if p.prepare_wait(len).unwrap() {
            room.sleep();
            p.end_wait();
        }
    }
}

/// Explore `f` with loom, at the preemption bound these models use.
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Keeps the exploration to minutes; loom's own tests use 2–3. Raise it
    // (LOOM_MAX_PREEMPTIONS) for a longer, deeper run.
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Records of one and two slots; the third needs padding at the end of the
/// first lap and waits for room; both sides sleep and wake.
#[test]
fn records_wrap_pad_and_wait_for_room() {
    model(|| run(&[40, 8, 90, 8], 1, Barriers::FENCES));
}

/// The consumer holds two records at a time and releases them out of
/// order; space returns to the producer in order, over two laps.
#[test]
fn records_released_out_of_order() {
    model(|| run(&[8, 8, 8, 8, 8, 8], 2, Barriers::FENCES));
}

/// With no barrier on either side of the sleep handshake (what a
/// "registered" process would do if the membarrier did nothing), the
/// model finds the wake-up that is lost: proof that it explores the case
/// the barriers exist for.
#[test]
#[should_panic(expected = "deadlock; threads =")]
fn without_barriers_a_wake_up_is_lost() {
    fn nothing() {}
    let none = Barriers {
        registered: true,
        heavy: Some(nothing),
    };
    model(move || run(&[8, 8], 1, none));
}

/// A port set's single barrier for two rings, with two producers.
#[test]
fn a_set_waits_on_two_rings_with_one_barrier() {
    model(|| run_set(2));
}

/// The producer's close while the consumer goes to sleep on an empty ring.
#[test]
fn a_sleeping_consumer_wakes_at_the_producers_close() {
    model(run_producer_closes);
}

/// The consumer's close while the producer waits for room.
#[test]
fn a_producer_waiting_for_room_wakes_at_the_consumers_close() {
    model(run_consumer_closes);
}
