use core::ptr::NonNull;
use std::io;
use std::os::fd::AsFd;

use rustix::mm::{MapFlags, MprotectFlags, ProtFlags, mmap, mprotect, munmap};

/// An owned shared mapping of a file; unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; concurrent access
// to its bytes is governed by the ring protocol (atomics and raw pointers),
// never by references handed out from here.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` shared; writable if `write`; pages prefaulted
    /// if `populate`.
    pub fn new(fd: impl AsFd, len: usize, write: bool, populate: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let prot = if write {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        let mut flags = MapFlags::SHARED;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a fresh mapping at an address the kernel chooses; it
        // aliases no Rust object. The caller checked the file is at least
        // `len` bytes and sealed against shrinking where that matters.
        let ptr = unsafe { mmap(core::ptr::null_mut(), len, prot, flags, fd, 0) }?;
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
        })
    }

    /// Map `len` bytes of `fd` private and read-only, pages prefaulted if
    /// `populate`: reads see the file's pages (zero copy), and
    /// [`Mapping::make_copy_on_write`] can later make it writable without
    /// the writes reaching the file.
    pub fn private(fd: impl AsFd, len: usize, populate: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let mut flags = MapFlags::PRIVATE;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: as in `new`: a fresh mapping the kernel places, aliasing
        // no Rust object; the caller checked the file's size and seals.
        let ptr = unsafe { mmap(core::ptr::null_mut(), len, ProtFlags::READ, flags, fd, 0) }?;
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
        })
    }

    /// Make a [`Mapping::private`] mapping writable: a write copies its page
    /// for this process only; the file (and every other reader) is untouched.
    pub fn make_copy_on_write(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping, owned by this value;
        // adding write permission to a private mapping changes no byte that
        // any reference observes.
        unsafe {
            mprotect(
                self.ptr.as_ptr().cast(),
                self.len,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        }?;
        Ok(())
    }

    /// Keep the mapping out of children made by `fork` (`MADV_DONTFORK`):
    /// a pool buffer's writable mapping stays the owner's alone.
    pub fn dont_fork(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping; the advice changes no
        // byte and no permission in this process.
        unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                rustix::mm::Advice::LinuxDontFork,
            )
        }?;
        Ok(())
    }

    /// Make the bytes `offset..offset + len` of a [`Mapping::private`]
    /// mapping writable (copy-on-write: a write copies its page for this
    /// process only) or read-only again. Both ends must be page aligned.
    pub fn protect(&self, offset: usize, len: usize, writable: bool) -> io::Result<()> {
        let ptr = self.range(offset, len)?;
        let flags = if writable {
            MprotectFlags::READ | MprotectFlags::WRITE
        } else {
            MprotectFlags::READ
        };
        // SAFETY: the range lies inside this mapping (checked), owned by
        // this value; changing its protection changes no byte that any
        // reference observes (a private mapping's writes stay private).
        unsafe { mprotect(ptr.cast(), len, flags) }?;
        Ok(())
    }

    /// Drop this process's private copies of the pages in `offset..offset +
    /// len` of a [`Mapping::private`] mapping (`MADV_DONTNEED`): later
    /// reads see the file's pages again. Both ends must be page aligned.
    pub fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        let ptr = self.range(offset, len)?;
        // SAFETY: the range lies inside this mapping (checked); for a
        // private file mapping the advice only drops copies of pages, which
        // the file's own pages replace on the next read: nothing that a
        // reference observes changes unless the caller wrote there, and
        // callers discard only ranges no one reads meanwhile.
        unsafe { rustix::mm::madvise(ptr.cast(), len, rustix::mm::Advice::LinuxDontNeed) }?;
        Ok(())
    }

    /// The start of `offset..offset + len`, if it lies in the mapping (the
    /// kernel refuses a range not page aligned).
    fn range(&self, offset: usize, len: usize) -> io::Result<*mut u8> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !inside {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the mapping",
            ));
        }
        // SAFETY: `offset <= len` of this mapping (checked above).
        Ok(unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// Start of the mapping (page aligned).
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nothing borrows it any more (every
        // borrower holds the Mapping or its owner alive).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
