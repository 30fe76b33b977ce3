//! The writing end of a ring: reserve, commit, pad the end of a lap,
//! wait for room, close.

use super::{
    Barriers, Corrupt, Kind, REWIND_MIN, RecordMeta, RingMemory, Slot, check_positions, header_at,
    max_payload, ring_offset,
};
use core::cell::Cell;

use crate::shm::layout::{
    CLOSED, FLAG_ANNOUNCE, FLAG_KITS, FLAG_OUT_OF_LINE, FLAG_POOL, KIND_PADDING, KIND_RAW,
    KIND_TYPED, RECORD_ALIGN, RECORD_HEADER, RecordInfo, SLEEP_MOVED, align_record, pack_info,
};
use crate::shm::sync::Ordering;

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
    /// The consumer moved away (its sleep word holds [`SLEEP_MOVED`]):
    /// seen after a commit or a close, or by [`Producer::consumer_moved`].
    moved: Cell<bool>,
    /// The position of the record whose commit first saw the move: it is
    /// the producer's to re-post if the mover's `moved_at` does not cover it.
    moved_record: Option<u64>,
    /// The sleep word the last wake-up swapped out (the sleeper's choice of
    /// how to be woken: 1, or a doorbell's number + 1).
    woke: Cell<u32>,
    /// What a wait announcement stores (as `Consumer`'s).
    bell: Cell<u32>,
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
            moved: Cell::new(false),
            moved_record: None,
            woke: Cell::new(0),
            bell: Cell::new(1),
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
        self.mem.model_write(
            ring_offset(&self.mem, slot.pos),
            align_record(RECORD_HEADER + len),
        );
        let h = header_at(&self.mem, slot.pos);
        h.info.store(info_word(&meta, len), Ordering::Relaxed);
        h.fingerprint.store(meta.fingerprint, Ordering::Relaxed);
        let next = slot.pos + align_record(RECORD_HEADER + len) as u64;
        // The next header's commit word may hold stale payload bytes of the
        // previous lap that happen to equal `next + 1`: clear it (if it is
        // free space) before the consumer can look there.
        if next - self.head_cache < self.cap {
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
        let wake = self.consumer_needs_wake();
        if self.moved.get() && self.moved_record.is_none() {
            self.moved_record = Some(slot.pos);
        }
        wake
    }

    /// After a commit: does the consumer sleep? Clears its flag if so, so
    /// that exactly one producer action sends the wake-up. A consumer that
    /// moved away is noted instead ([`Producer::moved_record`]).
    #[inline]
    fn consumer_needs_wake(&self) -> bool {
        let w = &self.mem.header().consumer_wait;
        // Full barrier (or the consumer's membarrier): pairs with the barrier
        // in `Consumer::prepare_sleep` and `Consumer::seal`. Either the
        // consumer's re-check (or the mover's look for records) sees our
        // commit, or we see its flag.
        self.barriers.publisher(w.barrier.load(Ordering::Relaxed));
        // Relaxed: the barrier above orders this load; the swap only decides
        // which of several wakers sends the token.
        match w.sleeping.load(Ordering::Relaxed) {
            0 => false,
            SLEEP_MOVED => {
                self.moved.set(true);
                false
            }
            _ => match w.sleeping.swap(0, Ordering::Relaxed) {
                0 => false,
                SLEEP_MOVED => {
                    // The mover's mark replaced the sleeper's between our
                    // load and swap; only this producer reads it from now
                    // on, so it is put back as it was.
                    w.sleeping.store(SLEEP_MOVED, Ordering::Relaxed);
                    self.moved.set(true);
                    false
                }
                v => {
                    self.woke.set(v);
                    true
                }
            },
        }
    }

    /// The sleep word the last wake-up this producer owes swapped out: how
    /// the consumer asked to be woken (1, or a doorbell's number + 1).
    pub fn woke(&self) -> u32 {
        self.woke.get()
    }

    /// Wait announcements from now on store `word` (1: woken on the port's
    /// socket; a doorbell's number + 1).
    pub fn set_bell(&self, word: u32) {
        self.bell.set(word.max(1));
    }

    /// The next position to write.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Has the consumer moved to a new segment? Seen by a commit or a
    /// close, or here with one load (before a post, to go there at once).
    pub fn consumer_moved(&self) -> bool {
        if !self.moved.get()
            // Relaxed: a hint before posting; the commit's look after the
            // barrier is what decides.
            && self.mem.header().consumer_wait.sleeping.load(Ordering::Relaxed) == SLEEP_MOVED
        {
            self.moved.set(true);
        }
        self.moved.get()
    }

    /// The position of the record whose commit first saw the consumer
    /// moved, if one did.
    pub fn moved_record(&self) -> Option<u64> {
        self.moved_record
    }

    /// Where the mover stopped taking records (`None` until it published
    /// it): every record at or after it is the producer's to re-post on the
    /// new segment. Only after [`Producer::consumer_moved`].
    pub fn moved_at(&self) -> Result<Option<u64>, Corrupt> {
        // Acquire: pairs with the Release store in `Consumer::publish_moved_at`.
        let v = self
            .mem
            .header()
            .consumer_wait
            .moved_at
            .load(Ordering::Acquire);
        if v == 0 {
            return Ok(None);
        }
        let at = v - 1;
        if at > self.tail || at % RECORD_ALIGN as u64 != 0 {
            return Err(Corrupt("the mover's position is outside what was posted"));
        }
        Ok(Some(at))
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
            .swap(self.bell.get(), Ordering::Relaxed);
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
        self.consumer_close_code() != 0
    }

    /// The consumer's closed flag: 0 while open, else why it closed (a
    /// `CLOSED*` value of the layout, or an unknown one).
    #[inline]
    pub fn consumer_close_code(&self) -> u32 {
        // Acquire: pairs with the Release store in `Consumer::close_with`
        // (the head it published before is then visible too).
        self.mem
            .header()
            .consumer_wait
            .closed
            .load(Ordering::Acquire)
    }

    /// No record will follow: publish the tail and the closed flag.
    ///
    /// Returns `true` when the consumer announced it sleeps: the caller
    /// must wake it, as after a commit, so that it reads the close (the
    /// socket may stay open: a half-close of a split port).
    #[must_use = "a sleeping consumer must be woken to see the close"]
    pub fn close(&self) -> bool {
        self.close_with(CLOSED)
    }

    /// [`Producer::close`] with the reason `code` (a `CLOSED*` value of the
    /// layout). The first close's code stays: a later one only publishes
    /// again.
    #[must_use = "a sleeping consumer must be woken to see the close"]
    pub fn close_with(&self, code: u32) -> bool {
        self.publish_tail();
        let closed = &self.mem.header().producer.closed;
        // Relaxed: only this producer writes the flag.
        if closed.load(Ordering::Relaxed) == 0 {
            // Release: pairs with the Acquire load in
            // `Consumer::producer_close_code`; every commit made before is
            // visible once the flag is.
            closed.store(code, Ordering::Release);
        }
        // The same Dekker pair as a commit: either the consumer's re-check
        // after its announcement (`prepare_sleep`, then `producer_closed`)
        // sees the flag, or we see its announcement.
        self.consumer_needs_wake()
    }
}

#[inline(always)]
/// The header's `info` word of a record of `len` payload bytes stated by
/// `meta`.
pub(super) fn info_word(meta: &RecordMeta, len: usize) -> u64 {
    let flag = |set: bool, bit: u8| if set { bit } else { 0 };
    pack_info(RecordInfo {
        len: len as u32,
        kind: match meta.kind {
            Kind::Typed => KIND_TYPED,
            Kind::Raw => KIND_RAW,
        },
        flags: flag(meta.out_of_line, FLAG_OUT_OF_LINE)
            | flag(meta.pool, FLAG_POOL)
            | flag(meta.announce, FLAG_ANNOUNCE)
            | flag(meta.kits, FLAG_KITS),
        nports: meta.nports,
    })
}
