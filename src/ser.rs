//! Serializing straight into a ring slot or an out-of-line memfd, and the
//! type fingerprint that travels with each typed message.

use core::ptr::NonNull;
use std::io;
use std::os::fd::OwnedFd;

use rkyv::rancor::{Source, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::sharing::Share;
use rkyv::ser::{Positional, Serializer, Writer};

use crate::sys;

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

/// A memfd being filled with one out-of-line message, by `pwrite`: no
/// mapping on the sending side, so no page is zeroed before it is written,
/// nothing needs unmapping, and no fork can hold a writable mapping that
/// would block the write seal. Small writes (rkyv's fields) are gathered in a
/// staging buffer; large ones (byte arrays) go straight to the file.
struct OolBuffer {
    fd: OwnedFd,
    stage: Vec<u8>,
    /// File offset of `stage[0]`.
    stage_at: usize,
}

const STAGE: usize = 64 * 1024;

impl OolBuffer {
    fn new(hint: usize) -> io::Result<Self> {
        let fd = sys::memfd::create("shmport-message", 0)?;
        Ok(OolBuffer {
            fd,
            stage: Vec::with_capacity(STAGE.min(hint.max(4096))),
            stage_at: 0,
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        sys::memfd::write_all_at(&self.fd, &self.stage, self.stage_at)?;
        self.stage_at += self.stage.len();
        self.stage.clear();
        Ok(())
    }

    /// Append `bytes`, which start at file offset `pos` (writes are
    /// sequential: `pos` is always where the previous write ended).
    fn write_at(&mut self, pos: usize, bytes: &[u8]) -> io::Result<()> {
        debug_assert_eq!(pos, self.stage_at + self.stage.len());
        if self.stage.len() + bytes.len() <= STAGE {
            self.stage.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush()?;
        if bytes.len() >= STAGE {
            sys::memfd::write_all_at(&self.fd, bytes, pos)?;
            self.stage_at = pos + bytes.len();
        } else {
            self.stage.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Write what is staged and seal the file's size, and if the kernel
    /// allows, its bytes: the receiver maps it read-only, and a write-sealed
    /// file stays as it was validated.
    ///
    /// `F_SEAL_WRITE` fails with `EBUSY` while any page of the file still has
    /// a reference beyond the page cache's (another CPU's page batches can
    /// briefly hold one). The size seals are what memory safety needs (no
    /// `SIGBUS` for the reader), so the message then goes with those alone.
    fn finish(mut self, len: usize) -> io::Result<OwnedFd> {
        self.flush()?;
        debug_assert_eq!(self.stage_at, len);
        // The extra page references are transient: try a few times (an
        // untrusted receiver refuses a payload without the write seal).
        for _ in 0..3 {
            match sys::memfd::seal(&self.fd, sys::memfd::OOL_SEALS) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::yield_now(),
                r => return r.map(|()| self.fd),
            }
        }
        match sys::memfd::seal(&self.fd, sys::memfd::OOL_SEALS) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                sys::memfd::seal(&self.fd, sys::memfd::SIZE_SEALS)?
            }
            r => r?,
        }
        Ok(self.fd)
    }
}
