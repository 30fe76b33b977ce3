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

mod barriers;
mod consumer;
pub mod heap;
#[cfg(all(test, shmport_loom))]
pub(crate) mod model;
#[cfg(all(test, shmport_loom))]
mod move_model;
mod producer;

pub use barriers::Barriers;
pub(crate) use barriers::process_barriers;
pub use consumer::Consumer;
pub use producer::Producer;

use core::ptr::NonNull;

use crate::shm::layout::{RECORD_ALIGN, RECORD_HEADER, RecordHeader, RingHeader};

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

    /// The producer writes the data area's bytes `offset..offset + len` (a
    /// record it publishes, or a header). Only the model checker's memory
    /// does anything here (it records the access, to catch a write that
    /// races with the consumer's reads); everywhere else it is empty and
    /// compiles to nothing, so the model runs the production code.
    #[inline(always)]
    fn model_write(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }

    /// The consumer reads the data area's bytes `offset..offset + len` (a
    /// record header it takes); see [`RingMemory::model_write`].
    #[inline(always)]
    fn model_read(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

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
    /// Payload is a pool reference.
    pub pool: bool,
    /// The record's attachment announces the pool buffer it names.
    pub announce: bool,
    /// The payload starts with the references of ports travelling as kits.
    pub kits: bool,
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
pub(super) fn header_at<M: RingMemory>(mem: &M, pos: u64) -> &RecordHeader {
    let offset = ring_offset(mem, pos);
    debug_assert!(offset % RECORD_ALIGN == 0);
    // SAFETY: `offset` is below `capacity` (masked) and a multiple of
    // RECORD_ALIGN: positions are kept aligned (checked when loaded from
    // the ring, and every step is a multiple of RECORD_ALIGN).
    unsafe { mem.record_header(offset) }
}

#[inline(always)]
pub(super) fn ring_offset<M: RingMemory>(mem: &M, pos: u64) -> usize {
    (pos as usize) & (mem.capacity() - 1)
}

/// Largest payload a record in a ring of `capacity` bytes may carry: half the
/// ring, less the header, so a record never needs more than half a lap of
/// padding in front of it.
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER
}

/// Check the positions a ring taken over from another segment starts at.
pub fn check_start(head: u64, tail: u64, cap: u64) -> Result<(), Corrupt> {
    check_positions(head, tail, cap)
}

pub(super) fn check_positions(head: u64, tail: u64, cap: u64) -> Result<(), Corrupt> {
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

// These run over `HeapRing`, zeroed memory seen as atomics: not in a model
// build, whose atomics are loom's.
#[cfg(all(test, not(shmport_loom)))]
mod tests;
