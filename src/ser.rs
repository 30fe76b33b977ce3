//! Serializing straight into a ring slot or an out-of-line memfd, and the
//! type fingerprint that travels with each typed message.

use core::ptr::NonNull;
use std::io;
use std::os::fd::OwnedFd;

use rkyv::rancor::{Source, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::sharing::Share;
use rkyv::ser::{Positional, Serializer, Writer};

use crate::sys::{self, Mapping};

/// The serializer shmport hands to `rkyv::Serialize` implementations.
pub type RecordSerializer<'a, 'w> =
    Strategy<Serializer<&'w mut RecordWriter, ArenaHandle<'a>, Share>, rkyv::rancor::Error>;

/// A value that can be posted as a typed message: anything rkyv can
/// serialize (derive `rkyv::Archive` and `rkyv::Serialize`).
///
/// Implemented automatically; do not implement it yourself.
pub trait Postable: rkyv::Archive + for<'a, 'w> rkyv::Serialize<RecordSerializer<'a, 'w>> {}

impl<T> Postable for T where T: rkyv::Archive + for<'a, 'w> rkyv::Serialize<RecordSerializer<'a, 'w>>
{}

/// The fingerprint of `T`: a hash of its type name and its archived size and
/// alignment. Two processes built from the same definitions agree on it;
/// a message asked for as another type fails with a type mismatch.
///
/// Computed on every typed post and `get`, so it hashes eight bytes per
/// step (a few nanoseconds; the name is a constant, so the compiler often
/// folds it away).
#[inline]
pub fn fingerprint<T: rkyv::Archive + ?Sized>() -> u64 {
    #[inline(always)]
    fn mix(h: u64, word: u64) -> u64 {
        (h ^ word)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
    }
    let name = core::any::type_name::<T>().as_bytes();
    let mut h = mix(
        0xcbf2_9ce4_8422_2325,
        (core::mem::size_of::<T::Archived>() as u64) << 8
            | core::mem::align_of::<T::Archived>() as u64,
    );
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        h = mix(
            h,
            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        );
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = mix(h, u64::from_le_bytes(tail) ^ (name.len() as u64) << 56);
    h | 1 // never 0, which marks raw messages
}

/// Why a write into a record stopped.
#[derive(Debug)]
struct NoRoom;

impl core::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no room left in the record slot")
    }
}

impl std::error::Error for NoRoom {}

enum Target {
    Slot { ptr: NonNull<u8>, room: usize },
    Memfd(OolBuffer),
}

/// The rkyv writer behind every post: it writes into a reserved ring slot,
/// or into a growing memfd for a message too large for the ring.
pub struct RecordWriter {
    target: Target,
    pos: usize,
    /// Set when a write did not fit the slot: the least size the message
    /// needs (a lower bound: serialization stopped there).
    wanted: Option<usize>,
}

impl RecordWriter {
    /// A writer over `room` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of `room` bytes, not covered by any
    /// Rust reference, for as long as the writer is used.
    pub(crate) unsafe fn slot(ptr: NonNull<u8>, room: usize) -> Self {
        RecordWriter {
            target: Target::Slot { ptr, room },
            pos: 0,
            wanted: None,
        }
    }

    /// A writer into a fresh memfd, sized for `hint` bytes to start with.
    pub(crate) fn memfd(hint: usize) -> io::Result<Self> {
        Ok(RecordWriter {
            target: Target::Memfd(OolBuffer::new(hint)?),
            pos: 0,
            wanted: None,
        })
    }

    /// Bytes written.
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    /// Lower bound on the size of a message that did not fit.
    pub(crate) fn wanted(&self) -> Option<usize> {
        self.wanted
    }

    /// Seal the memfd and hand it over (memfd writers only).
    pub(crate) fn finish_memfd(self) -> io::Result<OwnedFd> {
        match self.target {
            Target::Memfd(buf) => buf.finish(self.pos),
            Target::Slot { .. } => unreachable!("finish_memfd on a slot writer"),
        }
    }

    /// Append raw bytes.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), rkyv::rancor::Error> {
        Writer::<rkyv::rancor::Error>::write(self, bytes)
    }
}

impl Positional for RecordWriter {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: Source> Writer<E> for RecordWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or_else(|| E::new(NoRoom))?;
        match &mut self.target {
            Target::Slot { ptr, room } => {
                if end > *room {
                    self.wanted = Some(end);
                    return Err(E::new(NoRoom));
                }
                // SAFETY: pos..end lies within the `room` bytes the slot owns
                // (checked above; `slot`'s contract).
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        ptr.as_ptr().add(self.pos),
                        bytes.len(),
                    )
                };
            }
            Target::Memfd(buf) => buf.write_at(self.pos, bytes).map_err(E::new)?,
        }
        self.pos = end;
        Ok(())
    }
}

/// A memfd being filled with one out-of-line message.
struct OolBuffer {
    fd: OwnedFd,
    map: Mapping,
}

const PAGE: usize = 4096;

fn round_page(n: usize) -> usize {
    n.div_ceil(PAGE).max(1) * PAGE
}

impl OolBuffer {
    fn new(hint: usize) -> io::Result<Self> {
        let size = round_page(hint);
        let fd = sys::memfd::create("shmport-message", size)?;
        let map = Mapping::new(&fd, size, true, true)?;
        // A fork elsewhere in the process must not copy this writable
        // mapping: the F_SEAL_WRITE in `finish` would fail while it exists.
        map.dont_fork()?;
        Ok(OolBuffer { fd, map })
    }

    fn write_at(&mut self, pos: usize, bytes: &[u8]) -> io::Result<()> {
        let end = pos + bytes.len();
        if end > self.map.len() {
            let size = round_page(end.max(self.map.len().saturating_mul(2)));
            sys::memfd::set_size(&self.fd, size)?;
            self.map.resize(size)?;
        }
        // SAFETY: pos..end lies within the mapping (grown above), which this
        // buffer owns exclusively; nothing else references it.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.ptr().as_ptr().add(pos),
                bytes.len(),
            )
        };
        Ok(())
    }

    /// Trim to `len`, unmap, and seal the file's size, and if the kernel
    /// allows, its bytes: the receiver maps it read-only, and a write-sealed
    /// file stays as it was validated.
    ///
    /// `F_SEAL_WRITE` fails with `EBUSY` while any page of the file still has
    /// a reference beyond its mappings; right after the unmap, another CPU's
    /// page-cache batches can briefly hold one. The size seals are what
    /// memory safety needs (no `SIGBUS` for the reader), so the message then
    /// goes with those alone.
    fn finish(self, len: usize) -> io::Result<OwnedFd> {
        let OolBuffer { fd, map } = self;
        drop(map); // F_SEAL_WRITE needs no writable mapping left
        sys::memfd::set_size(&fd, round_page(len))?;
        match sys::memfd::seal(&fd, sys::memfd::OOL_SEALS) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                sys::memfd::seal(&fd, sys::memfd::SIZE_SEALS)?
            }
            r => r?,
        }
        Ok(fd)
    }
}
