//! The reading end of a ring: take records in order, release them in any
//! order, publish the released space in batches, sleep, close.

use super::{
    Barriers, Corrupt, Kind, Record, RecordMeta, RingMemory, header_at, max_payload, ring_offset,
};
use crate::shm::layout::{
    CLOSED, FLAG_ANNOUNCE, FLAG_KITS, FLAG_OUT_OF_LINE, FLAG_POOL, KIND_PADDING, KIND_RAW,
    KIND_TYPED, RECORD_ALIGN, RECORD_HEADER, RecordInfo, SLEEP_MOVED, align_record, unpack_info,
};
use crate::shm::sync::Ordering;

/// The valid combinations of a record's flags, as a set of bits: none, out
/// of line, pooled, pooled and announcing, kits (alone).
const VALID_FLAGS: u16 = 1 << 0
    | 1 << FLAG_OUT_OF_LINE
    | 1 << FLAG_POOL
    | 1 << (FLAG_POOL | FLAG_ANNOUNCE)
    | 1 << FLAG_KITS;

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
    /// Once sealed ([`Consumer::seal`]): nothing at or after this position
    /// is taken here.
    limit: u64,
    /// What a sleep announcement stores: 1 (woken on the port's socket) or
    /// a doorbell's number + 1.
    bell: core::cell::Cell<u32>,
    /// The wait word the last wake-up this consumer owes swapped out.
    woke: core::cell::Cell<u32>,
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
            limit: u64::MAX,
            bell: core::cell::Cell::new(1),
            woke: core::cell::Cell::new(0),
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
        if self.head >= self.limit {
            return false;
        }
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
            if pos >= self.limit {
                return false;
            }
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
            if pos >= self.limit {
                return Ok(None);
            }
            let h = header_at(&self.mem, pos);
            // Acquire: pairs with the Release store of the commit word in
            // `Producer::commit` / `write_padding`; the fields read below were
            // written before it.
            if h.commit.load(Ordering::Acquire) != pos + 1 {
                return Ok(None);
            }
            let offset = ring_offset(&self.mem, pos);
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
            // One place for the payload (the ring, a memfd or a pool
            // block), an announcement only with a pool reference: bit `f`
            // of VALID_FLAGS says whether flags `f` are valid.
            if flags >= 16 || VALID_FLAGS >> flags & 1 == 0 {
                return Err(Corrupt("unknown or contradictory record flags"));
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
                    pool: flags & FLAG_POOL != 0,
                    announce: flags & FLAG_ANNOUNCE != 0,
                    kits: flags & FLAG_KITS != 0,
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
        if wait.waiting.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let v = wait.waiting.swap(0, Ordering::Relaxed);
        self.woke.set(v);
        v != 0
    }

    /// The wait word the last wake-up this consumer owes swapped out: how
    /// the producer asked to be woken (1, or a doorbell's number + 1).
    pub fn woke(&self) -> u32 {
        self.woke.get()
    }

    /// Sleep announcements from now on store `word` (1: woken on the
    /// port's socket; a doorbell's number + 1).
    pub fn set_bell(&self, word: u32) {
        self.bell.set(word.max(1));
    }

    /// After a move ([`Consumer::seal`]): wake a producer that waits for
    /// room in this ring, so that it sees the move.
    pub fn wake_waiting_producer(&self) -> bool {
        self.producer_needs_wake()
    }

    /// Go on reading in the ring of `mem`, a new segment's, where positions
    /// continue from this one's: everything taken here stays held (and is
    /// released) as before; the next record is taken there.
    pub fn switch_memory(&mut self, mem: M) -> Result<(), Corrupt> {
        if mem.capacity() as u64 != self.cap {
            return Err(Corrupt("a moved ring of another size"));
        }
        self.mem = mem;
        self.limit = u64::MAX;
        // Relaxed: read by the producer only to choose its fence.
        self.mem
            .header()
            .consumer_wait
            .barrier
            .store(self.barriers.code(), Ordering::Relaxed);
        Ok(())
    }

    /// After the producer moved the ring to a new segment (it closed this
    /// one at `tail` and writes on there from `tail`): copy the records not
    /// taken yet, `head..tail`, to the same places in `mem`'s ring and read
    /// on there. The bytes are copied as they are (the records' commit
    /// words with them); what they say is checked when they are taken.
    pub fn carry_over(&mut self, mem: M, tail: u64) -> Result<(), Corrupt> {
        if mem.capacity() as u64 != self.cap {
            return Err(Corrupt("a moved ring of another size"));
        }
        if tail < self.head || tail - self.released > self.cap || tail % RECORD_ALIGN as u64 != 0 {
            return Err(Corrupt("a moved ring's end outside its records"));
        }
        let mut pos = self.head;
        while pos < tail {
            let offset = ring_offset(&self.mem, pos);
            let n = ((tail - pos) as usize).min(self.cap as usize - offset);
            // SAFETY: `offset + n <= cap` in both rings (same capacity,
            // checked); the old ring's bytes `head..tail` are committed and
            // no longer written by anyone (its producer closed it), the new
            // ring's are free space its producer does not touch until this
            // side releases them (they lie below `tail`, where it writes on).
            unsafe {
                core::ptr::copy_nonoverlapping(
                    self.mem.data().as_ptr().add(offset),
                    mem.data().as_ptr().add(offset),
                    n,
                );
            }
            pos += n as u64;
        }
        self.switch_memory(mem)
    }

    /// Restate the record at `pos` (committed, not taken yet) as `meta`
    /// with a payload of `len` bytes, which its owner rewrote in place
    /// (a record of a pool the next holder cannot read, sent on out of
    /// line: `crate::port`). `false`, with nothing changed, if the record
    /// would end elsewhere than it does.
    pub fn restate(&self, pos: u64, end: u64, len: usize, meta: RecordMeta) -> bool {
        if pos.checked_add(align_record(RECORD_HEADER + len) as u64) != Some(end) {
            return false;
        }
        // Relaxed: the record's next reader gets the ring with the port,
        // after a system call (the port's transfer) that orders this store.
        header_at(&self.mem, pos)
            .info
            .store(super::producer::info_word(&meta, len), Ordering::Relaxed);
        true
    }

    /// Where the next record is taken.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Everything below is released.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// A consumer of the ring in `mem` that takes from `head` up to (not
    /// including) `limit`, for carrying a moved ring's records on: it
    /// publishes nothing.
    pub fn reading_between(mem: M, head: u64, limit: u64, barriers: Barriers) -> Self {
        let mut c = Self::starting_at(mem, head, barriers);
        c.limit = limit;
        c
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
        w.swap(self.bell.get(), Ordering::Relaxed);
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
            .swap(self.bell.get(), Ordering::Relaxed);
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
        self.producer_close_code() != 0
    }

    /// The producer's closed flag: 0 while open, else why it closed (a
    /// `CLOSED*` value of the layout, or an unknown one). As
    /// [`Consumer::producer_closed`].
    #[inline]
    pub fn producer_close_code(&self) -> u32 {
        // Acquire: pairs with the Release in `Producer::close_with`.
        self.mem.header().producer.closed.load(Ordering::Acquire)
    }

    /// This end reads no more: publish what was released and the closed
    /// flag.
    ///
    /// Returns `true` when the producer announced it waits for room: the
    /// caller must wake it, so that it learns nobody reads (the socket may
    /// stay open: a half-close of a split port).
    #[must_use = "a waiting producer must be woken to see the close"]
    pub fn close(&mut self) -> bool {
        self.close_with(CLOSED)
    }

    /// [`Consumer::close`] with the reason `code` (a `CLOSED*` value of the
    /// layout). The first close's code stays: a later one only publishes
    /// again.
    #[must_use = "a waiting producer must be woken to see the close"]
    pub fn close_with(&mut self, code: u32) -> bool {
        let hdr = self.mem.header();
        // Release: pairs with the Acquire load in `Producer::refresh_head`.
        hdr.consumer.head.store(self.released, Ordering::Release);
        self.published = self.released;
        // Relaxed: only this consumer writes the flag.
        if hdr.consumer_wait.closed.load(Ordering::Relaxed) == 0 {
            // Release: pairs with the Acquire load in
            // `Producer::consumer_close_code`.
            hdr.consumer_wait.closed.store(code, Ordering::Release);
        }
        self.producer_needs_wake()
    }

    /// Moving this consumer to a new segment: mark the ring moved (the
    /// producer's look after each commit sees it), issue the sleep
    /// barrier, and find where the records committed so far end. Every
    /// record before the returned position is this side's to take (and
    /// carry to the new segment); every one at or after it is the
    /// producer's to re-post there, once it sees the mark and the position
    /// ([`Consumer::publish_moved_at`], [`Producer::moved_at`]). The same
    /// Dekker pair as a sleep: either this look sees a commit, or that
    /// commit's look sees the mark. Nothing at or after the position is
    /// taken here from now on.
    ///
    /// [`Producer::moved_at`]: super::Producer::moved_at
    pub fn seal(&mut self) -> Result<u64, Corrupt> {
        let w = &self.mem.header().consumer_wait.sleeping;
        // Relaxed: ordered by the barrier below. A swap, as a sleep's
        // announcement (see `prepare_sleep`).
        w.swap(SLEEP_MOVED, Ordering::Relaxed);
        // Full barrier: pairs with the one after each commit.
        self.barriers.sleeper();
        let mut pos = self.head;
        // Every committed record, padding included, up to the first gap;
        // at most a ring's worth of them.
        for _ in 0..self.cap / RECORD_ALIGN as u64 + 1 {
            let h = header_at(&self.mem, pos);
            // Acquire: pairs with the Release store of the commit word.
            if h.commit.load(Ordering::Acquire) != pos + 1 {
                self.limit = pos;
                return Ok(pos);
            }
            let info = unpack_info(h.info.load(Ordering::Relaxed));
            let offset = ring_offset(&self.mem, pos);
            let to_end = self.cap as usize - offset;
            let step = if info.kind == KIND_PADDING {
                to_end
            } else if (info.len as usize) <= max_payload(self.cap as usize)
                && RECORD_HEADER + info.len as usize <= to_end
            {
                align_record(RECORD_HEADER + info.len as usize)
            } else {
                return Err(Corrupt("record length outside the ring"));
            };
            if pos + step as u64 - self.released > self.cap {
                return Err(Corrupt("record overruns unreleased space"));
            }
            pos += step as u64;
        }
        Err(Corrupt("more records than the ring holds"))
    }

    /// Publish where the mover stopped ([`Consumer::seal`]'s position),
    /// once every record before it has been taken to the new segment.
    pub fn publish_moved_at(&self, pos: u64) {
        // Release: pairs with the Acquire load in `Producer::moved_at`; the
        // new segment's records written before are visible with it.
        self.mem
            .header()
            .consumer_wait
            .moved_at
            .store(pos + 1, Ordering::Release);
    }
}
