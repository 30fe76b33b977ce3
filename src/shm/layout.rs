//! The shared segment, drawn: every byte two processes agree on.
//!
//! One channel is one anonymous memfd, mapped by both ports' processes. It is
//! sealed against shrinking and growing before anyone else sees it, so a peer
//! cannot truncate it under the other (which would turn reads into `SIGBUS`).
//!
//! ```text
//! offset 0            +---------------------------------------------+
//!                     | SegmentHeader (128 B)                        |
//!                     |   magic u64 | version u32 | header_area u32  |
//!                     |   ring_capacity u64 | total_size u64         |
//!                     |   KitLine: id u64 | generation u32 | idle [u32; 2] |
//! RING_HEADER[0] 128  +---------------------------------------------+
//!                     | RingHeader, ring 0: side A -> side B (512 B) |
//!                     |   ProducerLine      tail u64, closed u32     |  128 B, written by producer
//!                     |   ConsumerLine      head u64                 |  128 B, written by consumer
//!                     |   ConsumerWaitLine  sleeping, closed, barrier, |  128 B, written by consumer
//!                     |                     moved_at u64             |
//!                     |   ProducerWaitLine  waiting, barrier (u32s)  |  128 B, written by producer
//! RING_HEADER[1] 640  +---------------------------------------------+
//!                     | RingHeader, ring 1: side B -> side A (512 B) |
//! RELEASE_HEADER[0]   +---------------------------------------------+
//!               1152  | ReleaseHeader, pool of ring 0 (384 B)        |
//!                     |   ReleaserLine      tail u64                 |  written by ring 0's consumer
//!                     |   ReclaimerLine     head u64, next_buffer u32|  written by ring 0's producer
//!                     |   ReclaimWaitLine   waiting, barrier (u32s)  |  set by the producer, swapped by the consumer
//! RELEASE_HEADER[1]   +---------------------------------------------+
//!               1536  | ReleaseHeader, pool of ring 1 (384 B)        |
//!               1920  +---------------------------------------------+
//!                     | zero padding                                 |
//! RELEASE_SLOTS_AT[0] +---------------------------------------------+
//!               4096  | release queue of ring 0's pool:              |
//!                     |   RELEASE_SLOTS u64 block keys (8 KiB)       |
//! RELEASE_SLOTS_AT[1] +---------------------------------------------+
//!              12288  | release queue of ring 1's pool (8 KiB)       |
//! HEADER_AREA  20480  +---------------------------------------------+
//!                     | ring 0 data: `ring_capacity` bytes           |
//!    4096 + capacity  +---------------------------------------------+
//!                     | ring 1 data: `ring_capacity` bytes           |
//! total_size          +---------------------------------------------+
//! ```
//!
//! A ring's data area is a sequence of records, each starting on a
//! [`RECORD_ALIGN`]-byte boundary, none wrapping past the end of the area
//! (a padding record fills the tail of a lap instead):
//!
//! ```text
//! record at position p (offset p mod capacity):
//!   0  commit      u64  p + 1, written last with Release: this publishes the record
//!   8  info        u64  one word, one store (see `pack_info`):
//!                         bits  0..32 len    payload bytes that follow the header
//!                         bits 32..40 kind   1 typed (rkyv archive), 2 raw bytes, 3 padding
//!                         bits 40..48 flags  bit 0: out of line (payload is an
//!                                            OolDescriptor; the bytes are in a memfd)
//!                                            bit 1: pooled (payload is a PoolRef; the
//!                                            bytes are in a block of the sender's pool)
//!                                            bit 2: announces (the record's attachment
//!                                            carries the pool buffer its PoolRef names)
//!                                            bit 3: kits (the payload starts with KitRefs:
//!                                            ports that travel as kits the receiver holds)
//!                         bits 48..64 nports ports carried with the message (0 for now)
//!  16  fingerprint u64  type fingerprint of a typed message, 0 otherwise
//!  24  reserved    u64  0 (never written)
//!  32  payload     `len` bytes, then padding to the next RECORD_ALIGN (64) boundary
//! ```
//!
//! Positions are monotonic `u64` byte counts; the offset in the data area is
//! `position & (capacity - 1)`. The record protocol in one sentence: **writing
//! the commit word (position + 1) last publishes the record**. A stale record
//! from an earlier lap carries an older position, and all-zero memory never
//! matches, so the consumer needs no separate tail line to find new records:
//! one cache-line transfer per message instead of two. Because a record's
//! start may lie inside an earlier lap's payload, the producer zeroes the
//! commit word where the next record will start (when that spot is free)
//! before it publishes a record: payload bytes never pass for a header.
//!
//! A **pool** per direction holds messages too large for the ring: blocks
//! in memfds the ring's producer creates, seals against writes by anyone
//! else (`F_SEAL_FUTURE_WRITE`), and announces once in a record's
//! attachment. A pooled record's payload is a [`PoolRef`]; the consumer
//! reads the block in place and, when done, gives it back through the
//! direction's **release queue**: a single-producer single-consumer queue
//! of `u64` block keys (`buffer << 32 | block`) in this header area, with
//! no system call (`src/shm/release/`):
//!
//! ```text
//! PoolRef (the payload of a pooled record, 16 bytes):
//!   0  buffer  u32  id of a pool buffer announced by this or an earlier record
//!   4  block   u32  index of the block in that buffer
//!   8  len     u64  message bytes at the start of the block (<= the block size)
//! ```
//!
//! Everything here is read from memory a peer can write; the ring code checks
//! every field before use ([`crate::shm::ring`]).

#[cfg(not(shmport_loom))]
use core::mem::offset_of;
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// The words of the ring protocol ([`RingHeader`], [`RecordHeader`]) come
/// from the loom switch ([`crate::shm::sync`]), so that `ring::model` can
/// explore every interleaving of the protocol. The other structures here
/// are never model-checked.
use crate::shm::sync::{AtomicU32 as RingU32, AtomicU64 as RingU64};

/// First word of every segment: `"SHMPORT\x01"` little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPORT\x01");
/// Version of this layout. A segment with another version is refused.
pub const LAYOUT_VERSION: u32 = 5;
/// Bytes before the first ring's data area.
pub const HEADER_AREA: usize = 20480;
/// Records start on this boundary: a cache line, so that consecutive
/// records never share a line (the consumer reading one record would
/// otherwise steal the line the producer is writing the next one into).
pub const RECORD_ALIGN: usize = 64;
/// Size of a record header. Payloads start right after it, so they are
/// 32-byte aligned (rkyv checks absolute alignment; its types need 16 at
/// most).
pub const RECORD_HEADER: usize = 32;
/// Smallest ring data area.
pub const MIN_CAPACITY: usize = 4096;
/// Largest ring data area (1 GiB).
pub const MAX_CAPACITY: usize = 1 << 30;

/// [`ProducerLine::closed`]: the producer's port was closed.
pub const CLOSED: u32 = 1;
/// [`ProducerLine::closed`]: the producer is a relay (a bridge to another
/// host) whose own far peer died; the consumer reports `PeerDied`.
pub const CLOSED_PEER_DIED: u32 = 2;
/// [`ProducerLine::closed`]: the producer is a relay whose far peer broke
/// its protocol; the consumer reports `ProtocolError`.
pub const CLOSED_PROTOCOL_ERROR: u32 = 3;
/// A ring's producer stopped because its port moved to a new segment
/// (`crate::shm::ring`, "Moving a port"): the records before the close are
/// read here, the rest on the new segment.
pub const CLOSED_MOVED: u32 = 4;
/// [`ConsumerWaitLine::sleeping`] of a ring whose consumer moved to a new
/// segment: the producer's post-commit look sees it (the sleep handshake's
/// Dekker pair) and re-posts there what the mover did not take.
pub const SLEEP_MOVED: u32 = u32::MAX;

/// Record kind: an rkyv archive with a type fingerprint.
pub const KIND_TYPED: u8 = 1;
/// Record kind: opaque bytes.
pub const KIND_RAW: u8 = 2;
/// Record kind: fills the rest of a lap; its `len` reaches exactly the end.
pub const KIND_PADDING: u8 = 3;
/// Flag: the payload lives in a sealed memfd sent over the port's socket
/// before the record was committed; the ring holds an [`OolDescriptor`].
pub const FLAG_OUT_OF_LINE: u8 = 1;
/// Flag: the payload lives in a block of the producer's pool; the ring
/// holds a [`PoolRef`].
pub const FLAG_POOL: u8 = 2;
/// Flag: the record's attachment carries the pool buffer its [`PoolRef`]
/// names (the buffer's first use). Only with [`FLAG_POOL`].
pub const FLAG_ANNOUNCE: u8 = 4;
/// Flag: the payload starts with the references of ports that travel as
/// kits the receiver already holds ([`KitRefs`]), then the message; never
/// with another flag.
pub const FLAG_KITS: u8 = 8;

/// Offset of each ring's header in the segment.
pub const RING_HEADER: [usize; 2] = [128, 128 + size_of::<RingHeader>()];

/// Offset of the release header of each ring's pool.
pub const RELEASE_HEADER: [usize; 2] = [
    RING_HEADER[1] + size_of::<RingHeader>(),
    RING_HEADER[1] + size_of::<RingHeader>() + size_of::<ReleaseHeader>(),
];
/// Entries in each release queue: the most pool blocks one direction's
/// pool holds (so a receiver that is not hostile never finds it full).
pub const RELEASE_SLOTS: usize = 1024;
/// Offset of each release queue's entries.
pub const RELEASE_SLOTS_AT: [usize; 2] = [4096, 4096 + RELEASE_SLOTS * 8];

/// The segment header. Written once by the creator before the memfd is
/// shared, read (and checked) by every process that maps it.
#[repr(C, align(128))]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU32,
    /// [`HEADER_AREA`].
    pub header_area: AtomicU32,
    /// Bytes in each ring's data area: a power of two in
    /// [`MIN_CAPACITY`]..=[`MAX_CAPACITY`].
    pub ring_capacity: AtomicU64,
    /// `HEADER_AREA + 2 * ring_capacity`; must equal the memfd's size.
    pub total_size: AtomicU64,
    /// The words of a segment reused as a kit (`src/shm/kit/`).
    pub kit: KitLine,
}

/// A kit is a channel's memfd and socket pair reused between two processes
/// (`src/port/kit.rs`); these words say which channel it carries now.
#[repr(C)]
pub struct KitLine {
    /// The kit's number, chosen by its creator (0: not a kit); written
    /// once, before the memfd travels.
    pub id: AtomicU64,
    /// The kit's generation: written by its creator each time it starts a
    /// new channel on it.
    pub generation: RingU32,
    /// Per side: the generation at which that side's end of the kit is
    /// idle (its port closed cleanly and its end kept for reuse); 0 while
    /// in use. Written by that side; cleared by the creator on reuse.
    pub idle: [RingU32; 2],
    /// A kit in a link's arena: `side + 1` of the side that moves the
    /// channel to a segment of its own (0: neither), taken by a
    /// compare-and-swap, so that only one side moves it.
    pub mover: RingU32,
}

/// Written only by the ring's producer.
#[repr(C, align(128))]
pub struct ProducerLine {
    /// Producer position, published at flush points (before the producer
    /// waits for space, and when the port closes or moves). Consumers find
    /// records through commit words, not through this.
    pub tail: RingU64,
    /// Nonzero once the producer closed: no record will follow the last one
    /// committed. The value says why ([`CLOSED`], or one a relay passes on:
    /// [`CLOSED_PEER_DIED`], [`CLOSED_PROTOCOL_ERROR`]); a reader that does
    /// not know a value takes it as [`CLOSED`]. Written once. Stored with Release after the last commit, then the full
    /// barrier and a look at [`ConsumerWaitLine::sleeping`] (a sleeping
    /// consumer is woken); loaded with Acquire by the consumer when it finds
    /// the ring empty, and after its sleep announcement.
    pub closed: RingU32,
}

/// Written only by the ring's consumer.
#[repr(C, align(128))]
pub struct ConsumerLine {
    /// Everything below this position is released: the producer may reuse
    /// it. Stored with Release in batches by the consumer; loaded with Acquire
    /// by the producer when its cached copy shows too little room.
    pub head: RingU64,
}

/// Written by the consumer (set) and the producer (swap to clear).
/// Read by the producer after every commit, so it lives on its own line that
/// changes only when the consumer goes to sleep.
#[repr(C, align(128))]
pub struct ConsumerWaitLine {
    /// Nonzero while the consumer is about to sleep or sleeping: 1 on its
    /// port's socket, or `n + 1` on doorbell `n` of its link. The producer
    /// that swaps it to 0 sends the wake-up. [`SLEEP_MOVED`] once the
    /// consumer moved to a new segment (then it stays).
    pub sleeping: RingU32,
    /// Nonzero once the consumer closed: posting to this ring fails. The
    /// value says why, as [`ProducerLine::closed`]'s; written once.
    /// Stored with Release after the consumer's last head, then the full
    /// barrier and a look at [`ProducerWaitLine::waiting`] (a producer
    /// waiting for room is woken); loaded with Acquire by the producer.
    pub closed: RingU32,
    /// [`BARRIER_MEMBARRIER`] when the consumer orders its sleep announcement
    /// with `membarrier(2)` (then a registered producer needs no fence after
    /// each commit); [`BARRIER_FENCE`] otherwise. Written when a process
    /// takes the consumer role.
    pub barrier: RingU32,
    /// `position + 1` of the end of what the consumer took with it when
    /// it moved (0: not moved, or not yet published): the records from
    /// there on are the producer's to re-post on the new segment. Stored
    /// with Release by the mover after [`SLEEP_MOVED`]; loaded with Acquire
    /// by the producer once it saw [`SLEEP_MOVED`].
    pub moved_at: RingU64,
}

/// Written by the producer (set) and the consumer (swap to clear).
#[repr(C, align(128))]
pub struct ProducerWaitLine {
    /// 1 while the producer waits for room. The consumer that swaps it from
    /// 1 to 0 after releasing space sends the wake-up.
    pub waiting: RingU32,
    /// As [`ConsumerWaitLine::barrier`], for the producer's wait
    /// announcement. Written when a process takes the producer role.
    pub barrier: RingU32,
}

/// The sleeper fences its announcement with a SeqCst fence; the other side
/// must fence too.
pub const BARRIER_FENCE: u32 = 0;
/// The sleeper fences its announcement with `membarrier(2)` (global,
/// expedited); the other side needs only a compiler fence if its process is
/// registered for those barriers.
pub const BARRIER_MEMBARRIER: u32 = 1;

/// The control block of one ring.
#[repr(C)]
pub struct RingHeader {
    /// Producer-written line.
    pub producer: ProducerLine,
    /// Consumer-written line.
    pub consumer: ConsumerLine,
    /// Consumer's sleep announcement.
    pub consumer_wait: ConsumerWaitLine,
    /// Producer's wait-for-room announcement.
    pub producer_wait: ProducerWaitLine,
}

/// The header in front of every record. Its fields are whole words so that
/// the producer writes a header in three stores: a consumer polling the
/// line of the record being written steals it less often.
#[repr(C)]
pub struct RecordHeader {
    /// `position + 1`; written last (Release), read first (Acquire).
    pub commit: RingU64,
    /// Length, kind, flags and port count, packed by [`pack_info`].
    pub info: RingU64,
    /// Type fingerprint of a typed message.
    pub fingerprint: RingU64,
    /// Zero.
    pub reserved: RingU64,
}

/// The fields of a record header's `info` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Payload length in bytes.
    pub len: u32,
    /// One of the `KIND_*` constants.
    pub kind: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Ports carried with the message.
    pub nports: u16,
}

/// Pack `info` into a header's `info` word.
pub const fn pack_info(info: RecordInfo) -> u64 {
    info.len as u64
        | (info.kind as u64) << 32
        | (info.flags as u64) << 40
        | (info.nports as u64) << 48
}

/// Unpack a header's `info` word (every bit pattern is some `RecordInfo`;
/// the ring checks the values).
pub const fn unpack_info(word: u64) -> RecordInfo {
    RecordInfo {
        len: word as u32,
        kind: (word >> 32) as u8,
        flags: (word >> 40) as u8,
        nports: (word >> 48) as u16,
    }
}

/// Written only by the consumer of a ring: it gives pool blocks back.
#[repr(C, align(128))]
pub struct ReleaserLine {
    /// Keys written below this position are there to read. Stored with
    /// Release after the entry; loaded with Acquire by the producer.
    pub tail: RingU64,
}

/// Written only by the producer of a ring, which owns the pool.
#[repr(C, align(128))]
pub struct ReclaimerLine {
    /// Entries below this position were read: the consumer may reuse them.
    /// Stored with Release; loaded with Acquire by the consumer when its
    /// cached copy shows the queue full.
    pub head: RingU64,
    /// The id the next pool buffer of this direction gets. Kept here so
    /// that a process that receives the sending port starts its own pool
    /// with ids the receiver has not seen.
    pub next_buffer: RingU32,
}

/// The pool owner's announcement that it waits for a block to come back.
#[repr(C, align(128))]
pub struct ReclaimWaitLine {
    /// 1 while the producer waits for released blocks. The consumer that
    /// swaps it from 1 to 0 after a release (or at its close) sends the
    /// wake-up.
    pub waiting: RingU32,
    /// As [`ConsumerWaitLine::barrier`], for this announcement.
    pub barrier: RingU32,
}

/// The control block of one direction's release queue.
#[repr(C)]
pub struct ReleaseHeader {
    /// The consumer's line.
    pub releaser: ReleaserLine,
    /// The producer's line.
    pub reclaimer: ReclaimerLine,
    /// The producer's wait for blocks.
    pub wait: ReclaimWaitLine,
}

impl RingHeader {
    /// A ring header of zeros, in private memory (the loom models; a
    /// segment's is zero as the memfd is).
    #[cfg(test)]
    pub fn zeroed() -> RingHeader {
        RingHeader {
            producer: ProducerLine {
                tail: RingU64::new(0),
                closed: RingU32::new(0),
            },
            consumer: ConsumerLine {
                head: RingU64::new(0),
            },
            consumer_wait: ConsumerWaitLine {
                sleeping: RingU32::new(0),
                closed: RingU32::new(0),
                barrier: RingU32::new(0),
                moved_at: RingU64::new(0),
            },
            producer_wait: ProducerWaitLine {
                waiting: RingU32::new(0),
                barrier: RingU32::new(0),
            },
        }
    }
}

impl ReleaseHeader {
    /// A release header of zeros, for a queue in private memory (the
    /// tests and the loom model; a segment's is zero as the memfd is).
    #[cfg(test)]
    pub fn zeroed() -> ReleaseHeader {
        ReleaseHeader {
            releaser: ReleaserLine {
                tail: RingU64::new(0),
            },
            reclaimer: ReclaimerLine {
                head: RingU64::new(0),
                next_buffer: RingU32::new(0),
            },
            wait: ReclaimWaitLine {
                waiting: RingU32::new(0),
                barrier: RingU32::new(0),
            },
        }
    }
}

/// Smallest pool block: 64 KiB (`1 << MIN_BLOCK_LOG2`).
pub const MIN_BLOCK_LOG2: u8 = 16;
/// Largest pool block: 64 MiB. A larger message travels in its own memfd.
pub const MAX_BLOCK_LOG2: u8 = 26;

/// The ring payload of a pooled record.
#[repr(C)]
pub struct PoolRef {
    /// Id of the pool buffer: below `pool::LINK_POOL_IDS` (2^31) one of the
    /// channel's own pool, from there one of its link's pool (announced
    /// on the link's socket).
    pub buffer: AtomicU32,
    /// Block index in the buffer.
    pub block: AtomicU32,
    /// Message length.
    pub len: AtomicU64,
}

/// Size in bytes of a [`PoolRef`] in the ring.
pub const POOL_REF: usize = size_of::<PoolRef>();

/// The ring payload of an out-of-line record.
#[repr(C)]
pub struct OolDescriptor {
    /// Length of the message in the memfd.
    pub len: AtomicU64,
}

/// Size in bytes of the out-of-line descriptor stored in the ring.
pub const OOL_DESCRIPTOR: usize = size_of::<OolDescriptor>();

/// The start of a [`FLAG_KITS`] record's payload: how many ports travel as
/// kits, then a [`KitRef`] each; the message follows at the next multiple
/// of 32 bytes ([`kit_refs_size`]), so its alignment is the ring's.
#[repr(C)]
pub struct KitRefs {
    /// Number of [`KitRef`]s that follow (the record's port count).
    pub count: AtomicU32,
    /// [`KITS_IN_ARENAS`], or 0.
    pub flags: AtomicU32,
    /// With [`KITS_IN_ARENAS`]: the link whose arenas hold the kits (its
    /// number, chosen by its creator); 0 otherwise.
    pub link: AtomicU64,
}

/// [`KitRefs::flags`]: the kits are segments in the arenas of link
/// [`KitRefs::link`] (`crate::link`), not memfds of their own.
pub const KITS_IN_ARENAS: u32 = 1;

/// [`KitRef::reserved`] of a kit in an arena that the receiver does not
/// hold yet: it opens the kit's segment in the arena the number names.
pub const KIT_NEW: u32 = 1;

/// One port that travels as a kit: the receiver holds the kit's idle end
/// (given to it earlier with a port over the same channel) and takes it up
/// at this generation.
#[repr(C)]
pub struct KitRef {
    /// The kit's number, chosen by its creator (the sender). A kit in an
    /// arena: the arena's number << 32 | the segment's offset / 4096.
    pub id: AtomicU64,
    /// The generation the kit's header must show.
    pub generation: AtomicU32,
    /// [`KIT_NEW`], or 0.
    pub reserved: AtomicU32,
    /// The port's spin time, in nanoseconds.
    pub spin_ns: AtomicU64,
}

/// Bytes the kit references of `count` ports take at the start of a
/// [`FLAG_KITS`] record's payload.
pub const fn kit_refs_size(count: usize) -> usize {
    (size_of::<KitRefs>() + count * size_of::<KitRef>()).next_multiple_of(32)
}

/// Bytes a segment with rings of `capacity` bytes occupies.
pub const fn segment_size(capacity: usize) -> usize {
    HEADER_AREA + 2 * capacity
}

/// Offset of ring `index`'s data area.
pub const fn ring_data(index: usize, capacity: usize) -> usize {
    HEADER_AREA + index * capacity
}

/// Round `n` up to the record alignment (saturating near `usize::MAX`).
pub const fn align_record(n: usize) -> usize {
    match n.checked_add(RECORD_ALIGN - 1) {
        Some(v) => v & !(RECORD_ALIGN - 1),
        None => usize::MAX & !(RECORD_ALIGN - 1),
    }
}

// Pin the layout: a change to any of these is a new LAYOUT_VERSION. (A
// model-checking build's atomics are loom's, of other sizes.)
#[cfg(not(shmport_loom))]
const _: () = {
    assert!(size_of::<SegmentHeader>() == 128);
    assert!(offset_of!(SegmentHeader, magic) == 0);
    assert!(offset_of!(SegmentHeader, version) == 8);
    assert!(offset_of!(SegmentHeader, header_area) == 12);
    assert!(offset_of!(SegmentHeader, ring_capacity) == 16);
    assert!(offset_of!(SegmentHeader, total_size) == 24);
    assert!(offset_of!(SegmentHeader, kit) == 32);
    assert!(offset_of!(KitLine, id) == 0);
    assert!(offset_of!(KitLine, generation) == 8);
    assert!(offset_of!(KitLine, idle) == 12);
    assert!(offset_of!(KitLine, mover) == 20);
    assert!(size_of::<KitRefs>() == 16);
    assert!(size_of::<KitRef>() == 24);
    assert!(kit_refs_size(1) == 64);
    assert!(kit_refs_size(2) == 64);

    assert!(size_of::<ProducerLine>() == 128);
    assert!(offset_of!(ProducerLine, tail) == 0);
    assert!(offset_of!(ProducerLine, closed) == 8);
    assert!(size_of::<ConsumerLine>() == 128);
    assert!(size_of::<ConsumerWaitLine>() == 128);
    assert!(offset_of!(ConsumerWaitLine, sleeping) == 0);
    assert!(offset_of!(ConsumerWaitLine, closed) == 4);
    assert!(offset_of!(ConsumerWaitLine, barrier) == 8);
    assert!(offset_of!(ConsumerWaitLine, moved_at) == 16);
    assert!(offset_of!(ProducerWaitLine, waiting) == 0);
    assert!(offset_of!(ProducerWaitLine, barrier) == 4);
    assert!(size_of::<ProducerWaitLine>() == 128);

    assert!(size_of::<RingHeader>() == 512);
    assert!(offset_of!(RingHeader, producer) == 0);
    assert!(offset_of!(RingHeader, consumer) == 128);
    assert!(offset_of!(RingHeader, consumer_wait) == 256);
    assert!(offset_of!(RingHeader, producer_wait) == 384);
    assert!(RING_HEADER[0] == 128);
    assert!(RING_HEADER[1] == 640);
    assert!(RING_HEADER[1] + size_of::<RingHeader>() <= HEADER_AREA);
    assert!(size_of::<ReleaseHeader>() == 384);
    assert!(offset_of!(ReleaseHeader, releaser) == 0);
    assert!(offset_of!(ReleaseHeader, reclaimer) == 128);
    assert!(offset_of!(ReleaseHeader, wait) == 256);
    assert!(offset_of!(ReclaimerLine, next_buffer) == 8);
    assert!(offset_of!(ReclaimWaitLine, barrier) == 4);
    assert!(RELEASE_HEADER[0] == 1152 && RELEASE_HEADER[1] == 1536);
    assert!(RELEASE_HEADER[1] + size_of::<ReleaseHeader>() <= RELEASE_SLOTS_AT[0]);
    assert!(RELEASE_SLOTS.is_power_of_two());
    assert!(RELEASE_SLOTS_AT[1] + RELEASE_SLOTS * 8 == HEADER_AREA);
    assert!(POOL_REF == 16);
    assert!(offset_of!(PoolRef, block) == 4 && offset_of!(PoolRef, len) == 8);

    assert!(size_of::<RecordHeader>() == RECORD_HEADER);
    assert!(offset_of!(RecordHeader, commit) == 0);
    assert!(offset_of!(RecordHeader, info) == 8);
    assert!(offset_of!(RecordHeader, fingerprint) == 16);
    assert!(offset_of!(RecordHeader, reserved) == 24);
    assert!(RECORD_ALIGN % RECORD_HEADER == 0 && RECORD_HEADER % 16 == 0);
    assert!(RECORD_ALIGN.is_power_of_two() && RECORD_ALIGN >= 16);
    assert!(OOL_DESCRIPTOR == 8);
    assert!(MIN_CAPACITY.is_power_of_two() && MAX_CAPACITY.is_power_of_two());
    assert!(HEADER_AREA % 4096 == 0);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_record_rounds_up_and_saturates() {
        assert_eq!(align_record(0), 0);
        assert_eq!(align_record(1), 64);
        assert_eq!(align_record(64), 64);
        assert_eq!(align_record(65), 128);
        assert_eq!(align_record(usize::MAX), usize::MAX & !63);
    }

    #[test]
    fn info_word_round_trips() {
        let i = RecordInfo {
            len: 0xdead_beef,
            kind: KIND_TYPED,
            flags: FLAG_OUT_OF_LINE,
            nports: 0xabcd,
        };
        assert_eq!(unpack_info(pack_info(i)), i);
        assert_eq!(pack_info(i) >> 48, 0xabcd);
    }

    #[test]
    fn segment_geometry() {
        assert_eq!(segment_size(4096), HEADER_AREA + 4096 * 2);
        assert_eq!(ring_data(0, 8192), HEADER_AREA);
        assert_eq!(ring_data(1, 8192), HEADER_AREA + 8192);
    }
}
