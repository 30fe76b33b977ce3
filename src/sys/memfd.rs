//! Anonymous memory files: nothing is created under `/dev/shm`, and the
//! memory goes away with its last descriptor or mapping.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FileType, MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, fstat};

/// Seals that keep a shared file's size fixed.
pub const SIZE_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// A new memfd of `size` bytes, close-on-exec, sealing allowed.
pub fn create(name: &str, size: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    Ok(fd)
}

/// Allocate the file's first `len` bytes now (`fallocate`): running out of
/// memory is this call's error, never a `SIGBUS` at a later write through
/// a mapping.
pub fn allocate(fd: impl AsFd, len: usize) -> io::Result<()> {
    loop {
        match rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, len as u64) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// Write all of `bytes` at file offset `at` (the file grows as needed).
pub fn write_all_at(fd: impl AsFd, mut bytes: &[u8], mut at: usize) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::pwrite(&fd, bytes, at as u64) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                at += n;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Add `seals` and forbid further seals.
pub fn seal(fd: impl AsFd, seals: SealFlags) -> io::Result<()> {
    Ok(fcntl_add_seals(fd, seals | SealFlags::SEAL)?)
}

/// Identity of the file behind `fd`: (device, inode), the same in every
/// process that has it.
pub fn file_id(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let st = fstat(&fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// The file's size, if it is a regular file (memfds are) carrying at least
/// `required` seals; an error naming what is wrong otherwise.
pub fn checked_size(fd: impl AsFd, required: SealFlags) -> io::Result<usize> {
    checked_file(fd, required).map(|f| f.size)
}

/// What [`checked_file`] learned of a memfd.
pub struct CheckedFile {
    /// Its size in bytes.
    pub size: usize,
    /// Bytes of memory allocated to it (written, or `fallocate`d).
    pub allocated: u64,
    /// (device, inode): the same in every process that has the file.
    pub id: (u64, u64),
}

/// [`checked_size`], also giving the file's identity (from the same
/// `fstat`).
pub fn checked_file(fd: impl AsFd, required: SealFlags) -> io::Result<CheckedFile> {
    let st = fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptor is not a memory file",
        ));
    }
    let seals = fcntl_get_seals(&fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "descriptor is not a memfd"))?;
    if !seals.contains(required) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "memfd is missing required seals",
        ));
    }
    let size = usize::try_from(st.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "memfd size out of range"))?;
    Ok(CheckedFile {
        size,
        allocated: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
        id: (st.st_dev, st.st_ino),
    })
}

/// Seals of a pool buffer: a fixed size, and no new writable mapping or
/// write by anyone (`F_SEAL_FUTURE_WRITE`); the owner's mapping made before
/// the seal stays writable.
pub const POOL_SEALS: SealFlags = SIZE_SEALS
    .union(SealFlags::FUTURE_WRITE)
    .union(SealFlags::SEAL);

/// Seals of an out-of-line message: its size and its bytes are fixed
/// (the write seal when the kernel grants it; see `ser::OolBuffer::finish`).
pub const OOL_SEALS: SealFlags = SIZE_SEALS.union(SealFlags::WRITE);
