//! A channel's shared segment: creating it, and mapping and checking one
//! received from elsewhere.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::{fmt, io};

use crate::shm::arena::Arena;
use crate::shm::layout::{
    HEADER_AREA, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MIN_CAPACITY, RELEASE_HEADER, RELEASE_SLOTS,
    RELEASE_SLOTS_AT, RING_HEADER, ReleaseHeader, RingHeader, SegmentHeader, ring_data,
    segment_size,
};
use crate::shm::release::ReleaseMemory;
use crate::shm::ring::{Corrupt, RingMemory};
use crate::shm::sync::AtomicU64;
use crate::sys::{self, Mapping};

/// One mapped segment and its memfd (kept to hand the segment on), or a
/// segment inside a link's arena (no memfd of its own: it never travels).
pub struct Segment {
    base: Base,
    fd: Option<OwnedFd>,
    capacity: usize,
    /// (device, inode) of the memfd: the same in every process that maps it.
    /// Known at once for a received segment; looked up when first needed
    /// for one created here (a system call fewer per channel).
    id: std::sync::OnceLock<(u64, u64)>,
    /// Created by this process (not received): every port of it made here
    /// shares this one `Arc`.
    local: bool,
}

/// Where a segment's bytes are mapped.
enum Base {
    /// Its own memfd's mapping.
    Own(Mapping),
    /// At `offset` in an arena.
    Arena(Arc<Arena>, usize),
}

impl Base {
    fn ptr(&self) -> NonNull<u8> {
        match self {
            Base::Own(map) => map.ptr(),
            // SAFETY: `offset + segment_size` lies inside the arena's
            // mapping (checked when the segment was made or opened).
            Base::Arena(arena, offset) => unsafe { arena.map().ptr().add(*offset) },
        }
    }
}

impl Segment {
    /// A new segment with two rings of `capacity` bytes, sealed against
    /// shrinking and growing.
    pub fn create(capacity: usize) -> std::io::Result<Arc<Segment>> {
        assert!(
            capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity),
            "ring capacity must be a power of two in 4 KiB..=1 GiB"
        );
        let size = segment_size(capacity);
        let fd = sys::memfd::create("shmport-channel", size)?;
        sys::memfd::seal(&fd, sys::memfd::SIZE_SEALS)?;
        let map = Mapping::new(&fd, size, true, false)?;
        let seg = Segment {
            base: Base::Own(map),
            fd: Some(fd),
            capacity,
            id: std::sync::OnceLock::new(),
            local: true,
        };
        seg.write_header(capacity);
        Ok(Arc::new(seg))
    }

    /// A new segment with two rings of `capacity` bytes at `offset` in
    /// `arena` (page aligned, inside it, over bytes this process zeroed or
    /// that no port uses any more: the caller's promise).
    pub fn in_arena(arena: Arc<Arena>, offset: usize, capacity: usize) -> Arc<Segment> {
        assert!(
            capacity.is_power_of_two()
                && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
                && offset % 4096 == 0
                && offset
                    .checked_add(segment_size(capacity))
                    .is_some_and(|end| end <= arena.len()),
            "a segment outside its arena"
        );
        let id = (arena.file().1 | 1 << 63, offset as u64);
        let seg = Segment {
            base: Base::Arena(arena, offset),
            fd: None,
            capacity,
            id: std::sync::OnceLock::from(id),
            local: false,
        };
        seg.write_header(capacity);
        Arc::new(seg)
    }

    /// Open the segment the peer made at `offset` in `arena`, checking it as
    /// [`Segment::open`] checks a memfd.
    pub fn open_in_arena(arena: Arc<Arena>, offset: usize) -> Result<Arc<Segment>, OpenError> {
        if offset % 4096 != 0 || offset.saturating_add(HEADER_AREA) > arena.len() {
            return Err(OpenError::BadGeometry("a segment outside its arena"));
        }
        let id = (arena.file().1 | 1 << 63, offset as u64);
        let room = arena.len() - offset;
        let mut seg = Segment {
            base: Base::Arena(arena, offset),
            fd: None,
            capacity: 0,
            id: std::sync::OnceLock::from(id),
            local: false,
        };
        seg.capacity = seg.check_header(room)?;
        Ok(Arc::new(seg))
    }

    /// Write the header of a segment with rings of `capacity` bytes.
    fn write_header(&self, capacity: usize) {
        let size = segment_size(capacity);
        let h = self.header();
        // Relaxed: nobody else can see the segment before its descriptor is
        // sent, and sending it (a system call) orders these stores first.
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.header_area.store(HEADER_AREA as u32, Ordering::Relaxed);
        h.ring_capacity.store(capacity as u64, Ordering::Relaxed);
        h.total_size.store(size as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
    }

    /// Map a segment received as a descriptor, and check it: sealed size,
    /// magic, version, geometry.
    pub fn open(fd: OwnedFd) -> Result<Arc<Segment>, OpenError> {
        let file = sys::memfd::checked_file(&fd, sys::memfd::SIZE_SEALS)
            .map_err(|e| OpenError::BadDescriptor(e.to_string()))?;
        let size = file.size;
        if size < HEADER_AREA {
            return Err(OpenError::BadGeometry("file smaller than the header"));
        }
        let map = Mapping::new(&fd, size, true, false)?;
        // Capacity is set below once checked; 0 until then.
        let mut seg = Segment {
            base: Base::Own(map),
            fd: Some(fd),
            capacity: 0,
            id: std::sync::OnceLock::from(file.id),
            local: false,
        };
        let cap = seg.check_header(size)?;
        if segment_size(cap) != size {
            return Err(OpenError::BadGeometry(
                "segment size does not match its rings",
            ));
        }
        seg.capacity = cap;
        Ok(Arc::new(seg))
    }

    /// Check the header of a segment with `room` bytes mapped from its
    /// start; its ring capacity if it is sound.
    fn check_header(&self, room: usize) -> Result<usize, OpenError> {
        let h = self.header();
        // Acquire: pairs with the Release store of the magic in
        // `write_header`.
        let magic = h.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(OpenError::BadMagic(magic));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(OpenError::BadVersion(version));
        }
        if h.header_area.load(Ordering::Relaxed) as usize != HEADER_AREA {
            return Err(OpenError::BadGeometry("unexpected header area size"));
        }
        let cap = h.ring_capacity.load(Ordering::Relaxed);
        if !cap.is_power_of_two() || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&cap) {
            return Err(OpenError::BadGeometry(
                "ring capacity is not a power of two in range",
            ));
        }
        let cap = cap as usize;
        if h.total_size.load(Ordering::Relaxed) != segment_size(cap) as u64
            || segment_size(cap) > room
        {
            return Err(OpenError::BadGeometry(
                "segment size does not match its rings",
            ));
        }
        Ok(cap)
    }

    pub(super) fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping is at least HEADER_AREA bytes (checked or
        // created so), page aligned, and SegmentHeader holds only atomics.
        unsafe { self.base.ptr().cast::<SegmentHeader>().as_ref() }
    }

    /// Ring `index`'s header (index < 2).
    pub(crate) fn ring_header(&self, index: usize) -> &RingHeader {
        // SAFETY: the mapping is at least HEADER_AREA bytes (checked or
        // created so); RING_HEADER[index] is 128-aligned inside it (layout.rs
        // asserts it, and indexing panics past 2); RingHeader holds only
        // atomics.
        unsafe {
            self.base
                .ptr()
                .add(RING_HEADER[index])
                .cast::<RingHeader>()
                .as_ref()
        }
    }

    /// Set ring `index`'s positions in a segment made here and not yet
    /// shared: a ring taken over from another segment starts where that
    /// one stopped (released up to `head`, written up to `tail`).
    pub fn start_ring(&self, index: usize, head: u64, tail: u64) -> Result<(), Corrupt> {
        crate::shm::ring::check_start(head, tail, self.capacity as u64)?;
        let h = self.ring_header(index);
        // Relaxed: nobody else sees this segment before its descriptor is
        // sent (a system call orders these stores first) or, for the side
        // that stays, before this thread's own loads.
        h.producer.tail.store(tail, Ordering::Relaxed);
        h.consumer.head.store(head, Ordering::Relaxed);
        Ok(())
    }

    /// Ring `index`'s producer position as last published.
    pub fn published_tail(&self, index: usize) -> u64 {
        // Acquire: pairs with the producer's Release store of its tail.
        self.ring_header(index)
            .producer
            .tail
            .load(Ordering::Acquire)
    }

    /// Ring `index`'s consumer position as last published.
    pub fn published_head(&self, index: usize) -> u64 {
        // Acquire: pairs with the consumer's Release store of its head.
        self.ring_header(index)
            .consumer
            .head
            .load(Ordering::Acquire)
    }

    /// The memfd; `None` for a segment inside an arena.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// Do `self` and `other` map the same shared memory? Two segments
    /// created here are the same only as the same `Arc` (no system call);
    /// otherwise their file identities are compared.
    pub fn same(self: &Arc<Self>, other: &Arc<Segment>) -> bool {
        if Arc::ptr_eq(self, other) {
            return true;
        }
        if self.local && other.local {
            return false;
        }
        matches!((self.id(), other.id()), (Some(a), Some(b)) if a == b)
    }

    /// Identity of the shared memory (the same in every process); `None`
    /// if it cannot be looked up (then no two segments compare equal).
    pub fn id(&self) -> Option<(u64, u64)> {
        if let Some(id) = self.id.get() {
            return Some(*id);
        }
        let id = sys::memfd::file_id(self.fd.as_ref()?).ok()?;
        Some(*self.id.get_or_init(|| id))
    }

    /// Bytes in each ring.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl AsFd for Segment {
    /// The memfd. A segment inside an arena never travels (its port moves
    /// to a segment of its own first), so it is never asked for one.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("a segment inside an arena has no descriptor to send")
            .as_fd()
    }
}

/// One of the segment's two rings.
#[derive(Clone)]
pub struct SegmentRing {
    seg: Arc<Segment>,
    index: usize,
}

impl SegmentRing {
    /// Ring `index` (0: side A to side B, 1: side B to side A).
    pub fn new(seg: Arc<Segment>, index: usize) -> Self {
        assert!(index < 2);
        SegmentRing { seg, index }
    }

    /// The segment the ring is in.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }
}

// SAFETY: `Segment::create`/`open` guarantee the mapping covers
// HEADER_AREA + 2 * capacity bytes with capacity a power of two >= 4096; ring
// headers sit at RING_HEADER[i] (128-aligned, inside HEADER_AREA) and data
// areas at HEADER_AREA + i * capacity (page aligned). The Arc keeps the
// mapping alive as long as this value.
unsafe impl RingMemory for SegmentRing {
    fn header(&self) -> &RingHeader {
        self.seg.ring_header(self.index)
    }
    fn data(&self) -> NonNull<u8> {
        // SAFETY: inside the mapping, see the impl's comment.
        unsafe {
            self.seg
                .base
                .ptr()
                .add(ring_data(self.index, self.seg.capacity))
        }
    }
    fn capacity(&self) -> usize {
        self.seg.capacity
    }
}

/// The release queue of one ring's pool (index as the ring's).
#[derive(Clone)]
pub struct SegmentRelease {
    seg: Arc<Segment>,
    index: usize,
}

impl SegmentRelease {
    /// The release queue of ring `index`'s pool.
    pub fn new(seg: Arc<Segment>, index: usize) -> Self {
        assert!(index < 2);
        SegmentRelease { seg, index }
    }
}

// SAFETY: the mapping covers HEADER_AREA bytes (`Segment::create`/`open`);
// the release header sits at RELEASE_HEADER[i] (128-aligned) and its
// RELEASE_SLOTS 8-byte entries at RELEASE_SLOTS_AT[i], all inside
// HEADER_AREA (layout.rs asserts it); they hold only atomics. The Arc keeps
// the mapping alive as long as this value.
unsafe impl ReleaseMemory for SegmentRelease {
    fn header(&self) -> &ReleaseHeader {
        // SAFETY: see the impl's comment.
        unsafe {
            self.seg
                .base
                .ptr()
                .add(RELEASE_HEADER[self.index])
                .cast::<ReleaseHeader>()
                .as_ref()
        }
    }
    fn entry(&self, i: usize) -> &AtomicU64 {
        assert!(i < RELEASE_SLOTS);
        // SAFETY: see the impl's comment; `i` is in range (checked).
        unsafe {
            self.seg
                .base
                .ptr()
                .add(RELEASE_SLOTS_AT[self.index] + i * 8)
                .cast::<AtomicU64>()
                .as_ref()
        }
    }
    fn slots(&self) -> usize {
        RELEASE_SLOTS
    }
}

/// Which side of the segment a port owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Writes ring 0, reads ring 1.
    A,
    /// Writes ring 1, reads ring 0.
    B,
}

impl Side {
    /// The rings this side writes and reads, by index.
    pub(crate) fn rings(self) -> (usize, usize) {
        match self {
            Side::A => (0, 1),
            Side::B => (1, 0),
        }
    }

    /// The side across the channel.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Opening a port from descriptors (a spawned child adopting its port, or a
/// segment received from elsewhere) failed.
///
/// Later versions may add variants: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// No port was passed to this process (`SHMPORT_PORT` is not set).
    NoPort,
    /// The port passed to this process was already adopted.
    AlreadyAdopted,
    /// `SHMPORT_PORT` does not name a port (bad syntax, closed or wrong kind
    /// of descriptors).
    BadDescriptor(String),
    /// The segment does not start with shmport's magic word.
    BadMagic(u64),
    /// The segment was laid out by another version of shmport.
    BadVersion(u32),
    /// The segment's sizes disagree with each other or with the file.
    BadGeometry(&'static str),
    /// The ring state in the segment is inconsistent.
    Corrupt(&'static str),
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NoPort => f.write_str("no port was passed to this process"),
            OpenError::AlreadyAdopted => f.write_str("the inherited port was already adopted"),
            OpenError::BadDescriptor(s) => write!(f, "bad port descriptor: {s}"),
            OpenError::BadMagic(m) => write!(f, "not a shmport segment (magic {m:#018x})"),
            OpenError::BadVersion(v) => write!(
                f,
                "segment layout version {v}, this build reads version {}",
                LAYOUT_VERSION
            ),
            OpenError::BadGeometry(s) => write!(f, "bad segment geometry: {s}"),
            OpenError::Corrupt(s) => write!(f, "corrupt segment: {s}"),
            OpenError::Io(e) => write!(f, "opening the segment failed: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}
