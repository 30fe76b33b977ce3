//! A lock-free single-producer single-consumer ring of variable-length records.
//!
//! No system calls here: the ring runs over any [`RingMemory`] — a shared
//! segment in production, a heap block ([`heap::HeapRing`]) in unit tests.
//! Waking a sleeper is the caller's job; the ring only says when one is due.
//!
//! Protocol (see [`crate::shm::layout`] for the bytes):
//! - The producer writes a record's payload and header fields, then stores
//!   the commit word `position + 1` with Release. The consumer loads the
//!   commit word at its head with Acquire; a match means the record is whole.
//! - The consumer releases space by storing `head` with Release, in batches
//!   (an eighth of the ring, or whenever it finds the ring empty). The
//!   producer caches `head` and reloads it (Acquire) only when short of room.
//! - Wrap-around is a padding record that reaches the end of the lap. A
//!   producer told to ([`Producer::rewind_from`]) also pads out the lap
//!   when the ring is empty and a large record fits at its start, so that
//!   the record lands in bytes the last ones used.
//! - Sleep/wake is a Dekker pair: the sleeper stores its flag, issues a
//!   full barrier, and re-checks; the other side publishes, issues a full
//!   barrier, and checks the flag. At least one of them sees the other.
//!   With [`Barriers::heavy`] (membarrier) the sleeper's barrier also runs on
//!   the other side's CPU, so a registered publisher needs only a compiler
//!   fence: the per-message cost moves to the rare sleep.
//!
//! Everything loaded from the ring memory is untrusted: a bad value is a
//! [`Corrupt`] error, never a panic or an out-of-bounds access.

pub mod heap;
#[cfg(all(test, shmport_loom))]
mod model;

use core::ptr::NonNull;
#[cfg(not(shmport_loom))]
use core::sync::atomic::fence;
use core::sync::atomic::{Ordering, compiler_fence};
// The model checker must see the fences (`ring::model`).
#[cfg(shmport_loom)]
use loom::sync::atomic::fence;

use crate::shm::layout::{
    BARRIER_FENCE, BARRIER_MEMBARRIER, FLAG_OUT_OF_LINE, KIND_PADDING, KIND_RAW, KIND_TYPED,
    RECORD_ALIGN, RECORD_HEADER, RecordHeader, RecordInfo, RingHeader, align_record, pack_info,
    unpack_info,
};

/// A record whose payload is at least this large may start the next lap
/// when the ring is empty, if the ring's owner asks for it
/// ([`Producer::rewind_from`]). Below it, the extra look at the consumer's
/// position costs more than the caches could save.
pub const REWIND_MIN: usize = 64 * 1024;

/// Memory that holds one ring: a header and a data area.
///
/// # Safety
/// Implementors promise that, for as long as the value lives:
/// 1. `header()` points to a valid, 128-byte aligned [`RingHeader`];
/// 2. `data()` points to `capacity()` bytes, readable and writable, aligned
///    to [`RECORD_ALIGN`], that no Rust reference covers (they are accessed
///    only through raw pointers and atomics);
/// 3. `capacity()` is a power of two, at least `4 * RECORD_ALIGN`, constant
///    (shared segments use at least [`MIN_CAPACITY`](crate::shm::layout::MIN_CAPACITY)).
pub unsafe trait RingMemory {
    /// The ring's control block.
    fn header(&self) -> &RingHeader;
    /// Start of the data area.
    fn data(&self) -> NonNull<u8>;
    /// Size of the data area in bytes.
    fn capacity(&self) -> usize;

    /// The record header at `offset` in the data area: by default the 32
    /// bytes there, seen as atomics. The model checker's memory keeps its
    /// headers apart (loom's atomics cannot lie over raw bytes).
    ///
    /// # Safety
    /// `offset` is below `capacity()` and a multiple of [`RECORD_ALIGN`].
    #[inline(always)]
    unsafe fn record_header(&self, offset: usize) -> &RecordHeader {
        // SAFETY: (1) `offset + RECORD_HEADER <= capacity`, as `offset` is a
        // multiple of RECORD_ALIGN below capacity (the caller's promise) and
        // capacity a multiple of RECORD_ALIGN, so the header lies inside the
        // data area (guarantee 2); (2) the data area is RECORD_ALIGN aligned,
        // which satisfies RecordHeader's 8-byte alignment; (3) every field
        // is an atomic, so a concurrent writer in another process races with
        // atomics only.
        unsafe { &*self.data().as_ptr().add(offset).cast::<RecordHeader>() }
    }

    /// Model-checking builds only: the producer writes the data area's
    /// bytes `offset..offset + len` (a record it publishes, or a header).
    /// The model records the access to catch a write that races with the
    /// consumer's reads.
    #[cfg(shmport_loom)]
    fn model_write(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }

    /// Model-checking builds only: the consumer reads the data area's
    /// bytes `offset..offset + len` (a record header it takes).
    #[cfg(shmport_loom)]
    fn model_read(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

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

    fn code(&self) -> u32 {
        if self.heavy.is_some() {
            BARRIER_MEMBARRIER
        } else {
            BARRIER_FENCE
        }
    }

    /// The sleeper's barrier, between its announcement and its re-check.
    fn sleeper(&self) {
        match self.heavy {
            Some(f) => f(),
            None => fence(Ordering::SeqCst),
        }
    }

    /// The publisher's barrier, between its publication and its look at the
    /// sleeper's flag. `peer` is the sleeper's advertised barrier code.
    #[inline]
    fn publisher(&self, peer: u32) {
        if self.registered && peer == BARRIER_MEMBARRIER {
            // The sleeper's membarrier runs a full barrier on our CPU
            // between our store and our load, if they straddle it.
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
}

/// The ring memory holds values that the protocol forbids: the peer is
/// broken or hostile. The string names the check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

impl core::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "corrupt ring: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An rkyv archive with a type fingerprint.
    Typed,
    /// Opaque bytes.
    Raw,
}

/// Header fields of a record, as the producer states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// Typed or raw.
    pub kind: Kind,
    /// Payload is an out-of-line descriptor.
    pub out_of_line: bool,
    /// Ports carried.
    pub nports: u16,
    /// Type fingerprint (0 for raw).
    pub fingerprint: u64,
}

/// Room for one record at the producer's position. Nothing is visible to
/// the consumer until [`Producer::commit`].
#[derive(Debug)]
pub struct Slot {
    /// Position of the record.
    pub pos: u64,
    /// Where the payload goes (32-byte aligned).
    pub payload: NonNull<u8>,
    /// Bytes available for the payload, contiguous.
    pub room: usize,
}

/// A committed record handed to the consumer. Its bytes stay valid and
/// untouched by the producer until [`Consumer::release`] is called with
/// `pos` and `end`.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// Position of the record.
    pub pos: u64,
    /// Position just past the record.
    pub end: u64,
    /// Header fields.
    pub meta: RecordMeta,
    /// Start of the payload.
    pub payload: NonNull<u8>,
    /// Payload length, checked to lie inside the data area.
    pub len: usize,
}

#[inline]
fn header_at<M: RingMemory>(mem: &M, pos: u64) -> &RecordHeader {
    let offset = ring_offset(mem, pos);
    debug_assert!(offset % RECORD_ALIGN == 0);
    // SAFETY: `offset` is below `capacity` (masked) and a multiple of
    // RECORD_ALIGN: positions are kept aligned (checked when loaded from
    // the ring, and every step is a multiple of RECORD_ALIGN).
    unsafe { mem.record_header(offset) }
}

#[inline(always)]
fn ring_offset<M: RingMemory>(mem: &M, pos: u64) -> usize {
    (pos as usize) & (mem.capacity() - 1)
}

/// Largest payload a record in a ring of `capacity` bytes may carry: half the
/// ring, less the header, so a record never needs more than half a lap of
/// padding in front of it.
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER
}

/// The writing end of a ring.
pub struct Producer<M: RingMemory> {
    mem: M,
    cap: u64,
    /// Next position to write (local; published to `ProducerLine::tail` at
    /// flush points only).
    tail: u64,
    /// Last `head` loaded from the consumer.
    head_cache: u64,
    /// Records with payloads this large go to the start of the ring when
    /// it is empty ([`Producer::rewind_from`]); `usize::MAX`: never.
    rewind_min: usize,
    /// Payload length of the last record committed.
    last_len: usize,
    barriers: Barriers,
}

impl<M: RingMemory> Producer<M> {
    /// Take the producing role of the ring in `mem`, resuming at the tail the
    /// previous producer published.
    pub fn new(mem: M, barriers: Barriers) -> Result<Self, Corrupt> {
        let cap = mem.capacity() as u64;
        let h = mem.header();
        // Acquire: pairs with the Release stores of the previous holder of
        // this role (`publish_tail`) and of the consumer (`publish_head`).
        let tail = h.producer.tail.load(Ordering::Acquire);
        let head = h.consumer.head.load(Ordering::Acquire);
        check_positions(head, tail, cap)?;
        // Relaxed: read by the consumer only to choose its fence; see
        // `Barriers::publisher`.
        h.producer_wait
            .barrier
            .store(barriers.code(), Ordering::Relaxed);
        Ok(Self::starting_at(mem, tail, head, barriers))
    }

    /// A producer for a port that is already broken (its peer corrupted
    /// the positions): it starts at position 0 and is never asked to
    /// publish, because every post checks the port's broken flag first.
    /// Only its closed flag is ever written.
    pub fn broken(mem: M, barriers: Barriers) -> Self {
        Self::starting_at(mem, 0, 0, barriers)
    }

    fn starting_at(mem: M, tail: u64, head: u64, barriers: Barriers) -> Self {
        Producer {
            cap: mem.capacity() as u64,
            mem,
            tail,
            head_cache: head,
            rewind_min: usize::MAX,
            last_len: 0,
            barriers,
        }
    }

    /// Let records of `min_payload` bytes or more start the next lap when
    /// they find the ring empty ([`REWIND_MIN`] is the smallest worth it;
    /// `usize::MAX`, the default, never). Worth it when the ring is too
    /// large for the caches: the record then lands in bytes the last ones
    /// used. While a ring stays in the cache, moving on through it is
    /// faster (ARCHITECTURE.md, "Large records rewind").
    pub fn rewind_from(&mut self, min_payload: usize) {
        self.rewind_min = min_payload.max(REWIND_MIN);
    }

    /// The ring memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Largest payload one record can carry.
    #[inline]
    pub fn max_payload(&self) -> usize {
        max_payload(self.cap as usize)
    }

    fn refresh_head(&mut self) -> Result<(), Corrupt> {
        // Acquire: pairs with the Release store in `Consumer::publish_head`,
        // so the consumer's reads of released records happen before we
        // overwrite them.
        let head = self.mem.header().consumer.head.load(Ordering::Acquire);
        check_positions(head, self.tail, self.cap)?;
        if head < self.head_cache {
            return Err(Corrupt("consumer head moved backwards"));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Find room for a record whose payload is at least `min_payload` bytes.
    /// Returns `None` when the consumer has not released enough yet. May
    /// commit a padding record to skip the end of the lap.
    ///
    /// The slot's `room` is all contiguous free space, so a payload whose
    /// size is unknown in advance can be written and measured afterwards.
    #[inline]
    pub fn reserve(&mut self, min_payload: usize) -> Result<Option<Slot>, Corrupt> {
        if min_payload > self.max_payload() {
            return Ok(None);
        }
        // A payload of unknown size (a typed value, `min_payload` 0) is
        // expected to be about as large as the last one.
        let expected = min_payload.max(self.last_len);
        if expected >= self.rewind_min {
            self.rewind_if_empty(expected)?;
        }
        let to_end = self.cap - (self.tail & (self.cap - 1));
        let required = self.required(min_payload);
        if self.free() < required {
            self.refresh_head()?;
            if self.free() < required {
                return Ok(None);
            }
        }
        if required > align_record(RECORD_HEADER + min_payload) as u64 {
            // Not enough contiguous room before the end of the lap: pad it
            // out; the start of the next lap has room.
            self.write_padding(to_end);
        }
        let offset = (self.tail & (self.cap - 1)) as usize;
        let room = ((self.cap - offset as u64).min(self.free()) as usize)
            .min(RECORD_HEADER + self.max_payload())
            - RECORD_HEADER;
        // SAFETY: offset + RECORD_HEADER <= capacity (room >= need >= header),
        // so the pointer stays inside the data area (RingMemory guarantee 2).
        let payload = unsafe { self.mem.data().add(offset + RECORD_HEADER) };
        Ok(Some(Slot {
            pos: self.tail,
            payload,
            room,
        }))
    }

    /// If the consumer has released everything and a record of
    /// `payload` bytes fits before where the last one ended, pad out
    /// the lap so that the record starts the next one: a large record then
    /// lands in memory the last ones used, still in the caches, instead of
    /// memory untouched for a lap (a request/response stream of large
    /// messages keeps reusing the same bytes). The padding is free space:
    /// nobody waits for it.
    #[cold]
    fn rewind_if_empty(&mut self, payload: usize) -> Result<(), Corrupt> {
        let offset = self.tail & (self.cap - 1);
        let need = align_record(RECORD_HEADER + payload) as u64;
        if offset == 0 || need > offset {
            return Ok(());
        }
        if self.head_cache != self.tail {
            self.refresh_head()?;
        }
        if self.head_cache == self.tail {
            self.write_padding(self.cap - offset);
        }
        Ok(())
    }

    #[inline]
    fn free(&self) -> u64 {
        self.cap - (self.tail - self.head_cache)
    }

    fn write_padding(&mut self, to_end: u64) {
        let pos = self.tail;
        #[cfg(shmport_loom)]
        self.mem
            .model_write(ring_offset(&self.mem, pos), RECORD_HEADER);
        let h = header_at(&self.mem, pos);
        h.info.store(
            pack_info(RecordInfo {
                len: (to_end as usize - RECORD_HEADER) as u32,
                kind: KIND_PADDING,
                flags: 0,
                nports: 0,
            }),
            Ordering::Relaxed,
        );
        h.fingerprint.store(0, Ordering::Relaxed);
        // Release: the header fields above are visible to the consumer's
        // Acquire load of this word in `Consumer::take`.
        h.commit.store(pos + 1, Ordering::Release);
        self.tail += to_end;
    }

    /// Publish the record in `slot` with a payload of `len` bytes (already
    /// written). `len` must not exceed `slot.room`.
    ///
    /// Returns `true` when the consumer announced it is asleep: the caller
    /// must wake it.
    #[inline]
    pub fn commit(&mut self, slot: Slot, len: usize, meta: RecordMeta) -> bool {
        assert!(
            len <= slot.room && slot.pos == self.tail,
            "commit outside its slot"
        );
        // The caller wrote the payload since `reserve`; the model takes
        // the whole record as written here, before it is published.
        #[cfg(shmport_loom)]
        self.mem.model_write(
            ring_offset(&self.mem, slot.pos),
            align_record(RECORD_HEADER + len),
        );
        let h = header_at(&self.mem, slot.pos);
        h.info.store(
            pack_info(RecordInfo {
                len: len as u32,
                kind: match meta.kind {
                    Kind::Typed => KIND_TYPED,
                    Kind::Raw => KIND_RAW,
                },
                flags: if meta.out_of_line {
                    FLAG_OUT_OF_LINE
                } else {
                    0
                },
                nports: meta.nports,
            }),
            Ordering::Relaxed,
        );
        h.fingerprint.store(meta.fingerprint, Ordering::Relaxed);
        let next = slot.pos + align_record(RECORD_HEADER + len) as u64;
        // The next header's commit word may hold stale payload bytes of the
        // previous lap that happen to equal `next + 1`: clear it (if it is
        // free space) before the consumer can look there.
        if next - self.head_cache < self.cap {
            #[cfg(shmport_loom)]
            self.mem.model_write(ring_offset(&self.mem, next), 8);
            header_at(&self.mem, next)
                .commit
                .store(0, Ordering::Relaxed);
        }
        // Release: the payload and header written before are visible to the
        // consumer once its Acquire load in `Consumer::take` sees this value.
        h.commit.store(slot.pos + 1, Ordering::Release);
        self.tail = next;
        self.last_len = len;
        self.consumer_needs_wake()
    }

    /// After a commit: does the consumer sleep? Clears its flag if so, so
    /// that exactly one producer action sends the wake-up.
    #[inline]
    fn consumer_needs_wake(&self) -> bool {
        let w = &self.mem.header().consumer_wait;
        // Full barrier (or the consumer's membarrier): pairs with the barrier
        // in `Consumer::prepare_sleep`. Either the consumer's re-check sees
        // our commit, or we see its flag.
        self.barriers.publisher(w.barrier.load(Ordering::Relaxed));
        // Relaxed: the barrier above orders this load; the swap only decides
        // which of several wakers sends the token.
        w.sleeping.load(Ordering::Relaxed) != 0 && w.sleeping.swap(0, Ordering::Relaxed) != 0
    }

    /// Store the local tail in the shared producer line, so that a later
    /// producer (after this port moves) resumes from it.
    pub fn publish_tail(&self) {
        // Release: pairs with the Acquire load in `Producer::new`.
        self.mem
            .header()
            .producer
            .tail
            .store(self.tail, Ordering::Release);
    }

    /// Announce that the producer is about to sleep until `min_payload`
    /// bytes of room appear. Returns `false` (and withdraws the announcement)
    /// if the room is already there.
    pub fn prepare_wait(&mut self, min_payload: usize) -> Result<bool, Corrupt> {
        self.publish_tail();
        // A swap, not a store: see `Consumer::prepare_sleep`.
        self.mem
            .header()
            .producer_wait
            .waiting
            .swap(1, Ordering::Relaxed);
        // Full barrier: pairs with the one in `Consumer::publish_head`
        // and in `Consumer::close`.
        self.barriers.sleeper();
        self.refresh_head()?;
        // A consumer that closed after our announcement saw it and wakes
        // us; one that closed before is seen here. Either way no sleep
        // outlasts the reader.
        if self.free() >= self.required(min_payload) || self.consumer_closed() {
            self.end_wait();
            return Ok(false);
        }
        Ok(true)
    }

    /// Bytes of free space a record with `min_payload` needs at the current
    /// tail, counting the padding that skips a too-short end of lap.
    #[inline]
    fn required(&self, min_payload: usize) -> u64 {
        let need = align_record(RECORD_HEADER + min_payload) as u64;
        let to_end = self.cap - (self.tail & (self.cap - 1));
        if to_end >= need { need } else { to_end + need }
    }

    /// Withdraw a wait announcement after waking.
    pub fn end_wait(&self) {
        // Relaxed: only this side sets it; a stale 1 costs the consumer one
        // spurious wake-up at most.
        self.mem
            .header()
            .producer_wait
            .waiting
            .store(0, Ordering::Relaxed);
    }

    /// Has the consumer closed its end?
    #[inline]
    pub fn consumer_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `Consumer::close` (the
        // head it published before is then visible too).
        self.mem
            .header()
            .consumer_wait
            .closed
            .load(Ordering::Acquire)
            != 0
    }

    /// No record will follow: publish the tail and the closed flag.
    ///
    /// Returns `true` when the consumer announced it sleeps: the caller
    /// must wake it, as after a commit, so that it reads the close (the
    /// socket may stay open: a half-close of a split port).
    #[must_use = "a sleeping consumer must be woken to see the close"]
    pub fn close(&self) -> bool {
        self.publish_tail();
        // Release: pairs with the Acquire load in `Consumer::producer_closed`;
        // every commit made before is visible once the flag is.
        self.mem
            .header()
            .producer
            .closed
            .store(1, Ordering::Release);
        // The same Dekker pair as a commit: either the consumer's re-check
        // after its announcement (`prepare_sleep`, then `producer_closed`)
        // sees the flag, or we see its announcement.
        self.consumer_needs_wake()
    }
}

fn check_positions(head: u64, tail: u64, cap: u64) -> Result<(), Corrupt> {
    if tail > u64::MAX / 2 {
        return Err(Corrupt("position out of range"));
    }
    if head > tail {
        return Err(Corrupt("head beyond tail"));
    }
    if tail - head > cap {
        return Err(Corrupt("more than a ring of bytes in flight"));
    }
    if head % RECORD_ALIGN as u64 != 0 || tail % RECORD_ALIGN as u64 != 0 {
        return Err(Corrupt("misaligned position"));
    }
    Ok(())
}

/// The reading end of a ring.
pub struct Consumer<M: RingMemory> {
    mem: M,
    cap: u64,
    /// Position of the next record to take.
    head: u64,
    /// Everything below is released locally; records in
    /// `released..head` are held by the application, except the spans in
    /// `ahead`.
    released: u64,
    /// Last value stored in the shared `head`.
    published: u64,
    /// Spans released out of order (and padding behind held records),
    /// waiting for everything before them: `(start, end)`, unsorted, short.
    ahead: Vec<(u64, u64)>,
    /// Records taken and not yet released.
    held: usize,
    barriers: Barriers,
}

impl<M: RingMemory> Consumer<M> {
    /// Take the consuming role of the ring in `mem`, resuming at the head
    /// the previous consumer published.
    pub fn new(mem: M, barriers: Barriers) -> Result<Self, Corrupt> {
        // Acquire: pairs with the Release in `publish_head` of the previous
        // holder of this role.
        let head = mem.header().consumer.head.load(Ordering::Acquire);
        if head % RECORD_ALIGN as u64 != 0 {
            return Err(Corrupt("misaligned position"));
        }
        if head > u64::MAX / 2 {
            return Err(Corrupt("position out of range"));
        }
        // Relaxed: read by the producer only to choose its fence.
        mem.header()
            .consumer_wait
            .barrier
            .store(barriers.code(), Ordering::Relaxed);
        Ok(Self::starting_at(mem, head, barriers))
    }

    /// A consumer for a port that is already broken; see
    /// [`Producer::broken`]: every receive checks the broken flag first.
    pub fn broken(mem: M, barriers: Barriers) -> Self {
        Self::starting_at(mem, 0, barriers)
    }

    fn starting_at(mem: M, head: u64, barriers: Barriers) -> Self {
        Consumer {
            cap: mem.capacity() as u64,
            mem,
            head,
            released: head,
            published: head,
            ahead: Vec::new(),
            held: 0,
            barriers,
        }
    }

    /// The ring memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Hint the CPU to fetch the cache line after the head record's header
    /// line (where a small record's payload ends up), so that while spinning
    /// both lines travel at once instead of one after the other. A prefetch
    /// is not a memory access: it cannot fault or race.
    #[inline]
    pub fn prefetch_next(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let offset = (self.head as usize & (self.cap as usize - 1)) + 64;
            if offset < self.cap as usize {
                // SAFETY: `offset` is inside the data area (checked), so the
                // pointer arithmetic stays in bounds; prefetching reads
                // nothing architecturally.
                unsafe {
                    let p = self.mem.data().as_ptr().add(offset);
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                        p.cast::<i8>(),
                    );
                }
            }
        }
    }

    /// Is a committed record waiting at the head? One Acquire load.
    #[inline]
    pub fn ready(&self) -> bool {
        // Acquire: pairs with the Release store of the commit word in
        // `Producer::commit` / `write_padding`.
        header_at(&self.mem, self.head)
            .commit
            .load(Ordering::Acquire)
            == self.head + 1
    }

    /// Is a committed message (not just padding) waiting? Looks past a
    /// committed padding record to the start of the next lap; takes nothing.
    pub fn has_message(&self) -> bool {
        let mut pos = self.head;
        for _ in 0..2 {
            let h = header_at(&self.mem, pos);
            // Acquire: pairs with the Release store of the commit word.
            if h.commit.load(Ordering::Acquire) != pos + 1 {
                return false;
            }
            if unpack_info(h.info.load(Ordering::Relaxed)).kind != KIND_PADDING {
                return true;
            }
            pos += self.cap - (pos & (self.cap - 1));
        }
        // Padding twice in a row is corrupt: report it, so that `take`
        // finds and names the problem.
        true
    }

    /// Take the next record, skipping padding. `Ok(None)`: nothing committed.
    #[inline]
    pub fn take(&mut self) -> Result<Option<Record>, Corrupt> {
        loop {
            let pos = self.head;
            let h = header_at(&self.mem, pos);
            // Acquire: pairs with the Release store of the commit word in
            // `Producer::commit` / `write_padding`; the fields read below were
            // written before it.
            if h.commit.load(Ordering::Acquire) != pos + 1 {
                return Ok(None);
            }
            let offset = ring_offset(&self.mem, pos);
            #[cfg(shmport_loom)]
            self.mem.model_read(offset, RECORD_HEADER);
            // Relaxed: ordered after the Acquire above. Copied once; only
            // the copies are checked and used.
            let RecordInfo {
                len,
                kind,
                flags,
                nports,
            } = unpack_info(h.info.load(Ordering::Relaxed));
            let len = len as usize;
            let fingerprint = h.fingerprint.load(Ordering::Relaxed);
            let to_end = self.cap as usize - offset;
            if kind == KIND_PADDING {
                if len != to_end - RECORD_HEADER {
                    return Err(Corrupt("padding does not reach the end of the lap"));
                }
                // As for a record: an honest producer pads only free space.
                // Without this, padding taken while messages are held could
                // run the head laps ahead, one queued span per lap.
                if pos + to_end as u64 - self.released > self.cap {
                    return Err(Corrupt("padding overruns unreleased space"));
                }
                self.head += to_end as u64;
                self.release_span(pos, self.head);
                continue;
            }
            let kind = match kind {
                KIND_TYPED => Kind::Typed,
                KIND_RAW => Kind::Raw,
                _ => return Err(Corrupt("unknown record kind")),
            };
            if flags & !FLAG_OUT_OF_LINE != 0 {
                return Err(Corrupt("unknown record flags"));
            }
            if len > max_payload(self.cap as usize) || RECORD_HEADER + len > to_end {
                return Err(Corrupt("record length outside the ring"));
            }
            let end = pos + align_record(RECORD_HEADER + len) as u64;
            if end - self.released > self.cap {
                return Err(Corrupt("record overruns unreleased space"));
            }
            self.head = end;
            self.held += 1;
            // SAFETY: offset + RECORD_HEADER + len <= capacity (checked
            // above), so the payload lies inside the data area.
            let payload = unsafe { self.mem.data().add(offset + RECORD_HEADER) };
            return Ok(Some(Record {
                pos,
                end,
                meta: RecordMeta {
                    kind,
                    out_of_line: flags & FLAG_OUT_OF_LINE != 0,
                    nports,
                    fingerprint,
                },
                payload,
                len,
            }));
        }
    }

    /// Number of records taken and not yet released.
    pub fn in_flight(&self) -> usize {
        self.held
    }

    /// Release the record taken at `pos`, which ends at `end` (both from its
    /// [`Record`]). Records may be released in any order; space returns to
    /// the producer in order. Returns `true` when a batch is due for
    /// publication (call [`Consumer::publish_head`]).
    #[inline]
    pub fn release(&mut self, pos: u64, end: u64) -> bool {
        self.held -= 1;
        self.release_span(pos, end);
        self.released - self.published >= self.cap / 8
    }

    #[inline]
    fn release_span(&mut self, start: u64, end: u64) {
        if start != self.released {
            self.ahead.push((start, end));
            return;
        }
        self.released = end;
        // Spans released earlier that now follow on.
        while !self.ahead.is_empty() {
            match self.ahead.iter().position(|&(s, _)| s == self.released) {
                Some(i) => self.released = self.ahead.swap_remove(i).1,
                None => break,
            }
        }
    }

    /// Is there released space the producer has not been told about?
    #[inline]
    pub fn unpublished(&self) -> bool {
        self.released != self.published
    }

    /// Store the released position in the shared head. Returns `true` when
    /// the producer announced it waits for room: the caller must wake it.
    pub fn publish_head(&mut self) -> bool {
        let hdr = self.mem.header();
        // Release: pairs with the Acquire load in `Producer::refresh_head`;
        // our reads of the released records happen before the producer
        // overwrites them.
        hdr.consumer.head.store(self.released, Ordering::Release);
        self.published = self.released;
        self.producer_needs_wake()
    }

    /// After publishing (a head, the closed flag): does the producer wait
    /// for room? Clears its flag if so, so that exactly one action sends
    /// the wake-up.
    #[inline]
    fn producer_needs_wake(&self) -> bool {
        let wait = &self.mem.header().producer_wait;
        // Full barrier (or the producer's membarrier): pairs with the one in
        // `Producer::prepare_wait`. Either the producer's re-check sees what
        // we published, or we see its announcement.
        self.barriers
            .publisher(wait.barrier.load(Ordering::Relaxed));
        // Relaxed: ordered by the barrier; the swap only picks one waker.
        wait.waiting.load(Ordering::Relaxed) != 0 && wait.waiting.swap(0, Ordering::Relaxed) != 0
    }

    /// Announce that the consumer is about to sleep. Returns `false` (and
    /// withdraws the announcement) if a record arrived meanwhile.
    pub fn prepare_sleep(&self) -> bool {
        let w = &self.mem.header().consumer_wait.sleeping;
        // Relaxed: ordered by the barrier below. A swap, not a store: the
        // announcement must follow, in the flag's modification order, the
        // producer's clearing swap of our last one. C11 already implies it
        // (that swap read our withdrawal), but a checker that orders plain
        // stores by causality alone (loom) does not, and finds a lost
        // wake-up that cannot happen. On the sleep path the RMW costs
        // nothing next to the sleep.
        w.swap(1, Ordering::Relaxed);
        // Full barrier: pairs with the one in `Producer::commit`.
        self.barriers.sleeper();
        if self.ready() {
            w.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Announce a sleep without the barrier and re-check, for a waiter that
    /// announces on many rings and then issues one barrier for all
    /// ([`Consumer::sleep_barrier`]) before re-checking them.
    pub fn announce_sleep(&self) {
        // Relaxed: ordered by the barrier the caller issues next. A swap:
        // see `prepare_sleep`.
        self.mem
            .header()
            .consumer_wait
            .sleeping
            .swap(1, Ordering::Relaxed);
    }

    /// The barrier between [`Consumer::announce_sleep`] and the re-check;
    /// pairs with the one in `Producer::commit`.
    pub fn sleep_barrier(&self) {
        self.barriers.sleeper();
    }

    /// Withdraw a sleep announcement after waking.
    pub fn end_sleep(&self) {
        // Relaxed: a stale 1 costs the producer one needless token at most.
        self.mem
            .header()
            .consumer_wait
            .sleeping
            .store(0, Ordering::Relaxed);
    }

    /// Has the producer closed? Call only after finding the ring empty, and
    /// re-check [`Consumer::ready`] after a `true`.
    #[inline]
    pub fn producer_closed(&self) -> bool {
        // Acquire: pairs with the Release in `Producer::close`.
        self.mem.header().producer.closed.load(Ordering::Acquire) != 0
    }

    /// This end reads no more: publish what was released and the closed
    /// flag.
    ///
    /// Returns `true` when the producer announced it waits for room: the
    /// caller must wake it, so that it learns nobody reads (the socket may
    /// stay open: a half-close of a split port).
    #[must_use = "a waiting producer must be woken to see the close"]
    pub fn close(&mut self) -> bool {
        let hdr = self.mem.header();
        // Release: pairs with the Acquire load in `Producer::refresh_head`.
        hdr.consumer.head.store(self.released, Ordering::Release);
        self.published = self.released;
        // Release: pairs with the Acquire load in `Producer::consumer_closed`.
        hdr.consumer_wait.closed.store(1, Ordering::Release);
        self.producer_needs_wake()
    }
}

// These run over `HeapRing`, zeroed memory seen as atomics: not in a model
// build, whose atomics are loom's.
#[cfg(all(test, not(shmport_loom)))]
mod tests;
