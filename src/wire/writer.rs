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
use crate::wire::stream_copy;

/// The largest message a port posts, in bytes: 64 TiB.
///
/// A message over half the ring travels in its own memfd, which the
/// receiver maps whole, so no message can be larger than an address space
/// can map (x86-64 Linux gives a process 128 TiB with 4-level page tables;
/// this leaves room for everything else it maps). A larger size is
/// refused with [`PostError::TooLarge`](crate::PostError::TooLarge) before
/// anything is allocated or sent; a typed value whose archive grows past
/// it is refused when it does. What a given machine can post is usually
/// far less: the memfd lives in memory, and a receiver may refuse large
/// messages of its own accord.
pub const MAX_MESSAGE_SIZE: usize = {
    const SIZE: u64 = 1 << 46;
    // On a target whose `usize` cannot hold it, the most a slice can.
    if SIZE > isize::MAX as u64 {
        isize::MAX as usize
    } else {
        SIZE as usize
    }
};

// A message of the largest size is a slice that can exist.
const _: () = assert!(MAX_MESSAGE_SIZE <= isize::MAX as usize);

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

/// What the serializer sees when a write into a record stopped: the slot
/// has no room left (the writer keeps the size it wanted), or a
/// [`WriteFailure`] (the writer keeps it).
#[derive(Debug)]
struct Stopped(&'static str);

const NO_ROOM: Stopped = Stopped("no room left in the record slot");
const FAILED: Stopped = Stopped("the out-of-line write failed");

impl core::fmt::Display for Stopped {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Stopped {}

/// Why a write into an out-of-line memfd stopped: not a failure of the
/// value's serialization, so it is reported as what it is.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    /// The message would grow past [`MAX_MESSAGE_SIZE`]; at least this many
    /// bytes.
    TooLarge(usize),
    /// The kernel refused a write to the memfd (out of memory, for example).
    Io(io::Error),
}

enum Target {
    Slot {
        ptr: NonNull<u8>,
        room: usize,
        /// The slot was last written long ago (`stream_copy::cold`).
        cold: bool,
    },
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
    /// Set when a write into the memfd failed: the first failure. Once
    /// set, every later write fails too.
    failure: Option<WriteFailure>,
    /// The most bytes this writer takes ([`MAX_MESSAGE_SIZE`], less in
    /// tests).
    limit: usize,
}

impl RecordWriter {
    /// A writer over `room` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of `room` bytes, not covered by any
    /// Rust reference, for as long as the writer is used.
    pub(crate) unsafe fn slot(ptr: NonNull<u8>, room: usize) -> Self {
        RecordWriter {
            target: Target::Slot {
                ptr,
                room,
                cold: false,
            },
            pos: 0,
            wanted: None,
            failure: None,
            limit: MAX_MESSAGE_SIZE,
        }
    }

    /// The slot's memory was last written more than
    /// `stream_copy::reach` bytes of writes ago, or never: large pieces
    /// are written past the caches.
    pub(crate) fn out_of_cache(mut self, yes: bool) -> Self {
        if let Target::Slot { cold, .. } = &mut self.target {
            *cold = yes;
        }
        self
    }

    /// A writer into a fresh memfd, sized for `hint` bytes to start with
    /// (`hint` at most [`MAX_MESSAGE_SIZE`]: the caller checks).
    pub(crate) fn memfd(hint: usize) -> io::Result<Self> {
        Self::memfd_with_limit(hint, MAX_MESSAGE_SIZE)
    }

    fn memfd_with_limit(hint: usize, limit: usize) -> io::Result<Self> {
        debug_assert!(hint <= limit);
        Ok(RecordWriter {
            target: Target::Memfd(OolBuffer::new(hint)?),
            pos: 0,
            wanted: None,
            failure: None,
            limit,
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

    /// Why a memfd write failed, if one did: the failure to report in place
    /// of the serializer's error (which only says that it stopped).
    pub(crate) fn take_failure(&mut self) -> Option<WriteFailure> {
        self.failure.take()
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
        if self.failure.is_some() {
            return Err(E::new(FAILED));
        }
        let end = match self.pos.checked_add(bytes.len()) {
            Some(end) if end <= self.limit => end,
            // Past the largest message (or past usize, which is further).
            _ => {
                let at_least = self.pos.saturating_add(bytes.len());
                if let Target::Slot { .. } = self.target {
                    self.wanted = Some(at_least);
                    return Err(E::new(NO_ROOM));
                }
                self.failure = Some(WriteFailure::TooLarge(at_least));
                return Err(E::new(FAILED));
            }
        };
        match &mut self.target {
            Target::Slot { ptr, room, cold } => {
                if end > *room {
                    self.wanted = Some(end);
                    return Err(E::new(NO_ROOM));
                }
                // SAFETY: pos..end lies within the `room` bytes the slot owns
                // (checked above; `slot`'s contract), which no Rust reference
                // covers, so `bytes` cannot overlap them.
                unsafe {
                    let to = ptr.as_ptr().add(self.pos);
                    if stream_copy::streams(bytes.len())
                        || (*cold && stream_copy::cold(bytes.len()))
                    {
                        stream_copy::copy(bytes, to);
                    } else {
                        core::ptr::copy_nonoverlapping(bytes.as_ptr(), to, bytes.len());
                    }
                };
            }
            Target::Memfd(buf) => {
                if let Err(e) = buf.write_at(self.pos, bytes) {
                    self.failure = Some(WriteFailure::Io(e));
                    return Err(E::new(FAILED));
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn put(w: &mut RecordWriter, bytes: &[u8]) -> bool {
        w.put(bytes).is_ok()
    }

    #[test]
    fn a_message_past_the_limit_is_too_large_not_a_serialization_error() {
        let mut w = RecordWriter::memfd_with_limit(0, 100).unwrap();
        assert!(put(&mut w, &[1; 60]));
        assert!(!put(&mut w, &[2; 60]));
        assert!(matches!(
            w.take_failure(),
            Some(WriteFailure::TooLarge(120))
        ));
        assert_eq!(w.len(), 60, "nothing of the refused write was taken");
    }

    #[test]
    fn a_write_past_usize_is_too_large() {
        let mut w = RecordWriter::memfd_with_limit(0, usize::MAX).unwrap();
        w.pos = usize::MAX - 1;
        assert!(!put(&mut w, &[0; 2]));
        assert!(matches!(
            w.take_failure(),
            Some(WriteFailure::TooLarge(usize::MAX))
        ));
    }

    #[test]
    fn a_failed_memfd_write_is_an_io_failure_and_stops_the_writer() {
        let mut w = RecordWriter::memfd(0).unwrap();
        let Target::Memfd(buf) = &w.target else {
            unreachable!("a memfd writer")
        };
        // Sealed against writing: the kernel refuses the next write.
        sys::memfd::seal(&buf.fd, sys::memfd::OOL_SEALS).unwrap();
        assert!(!put(&mut w, &vec![3; STAGE + 1]));
        // A writer that failed takes nothing more, even a small write that
        // would only be staged.
        assert!(!put(&mut w, &[4; 8]));
        assert_eq!(w.len(), 0);
        match w.take_failure() {
            Some(WriteFailure::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
            other => panic!("expected an I/O failure, got {other:?}"),
        }
    }
}
