use core::ffi::c_void;
use core::ptr::NonNull;
use std::io;
use std::os::fd::AsFd;

use rustix::mm::{MapFlags, MremapFlags, ProtFlags, mmap, mremap, munmap};

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

    /// Start of the mapping (page aligned).
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Keep this mapping out of processes forked from this one. A writable
    /// shared mapping that a concurrent `fork` copies into a child (until it
    /// execs) would make sealing the file against writes fail with `EBUSY`.
    pub fn dont_fork(&self) -> io::Result<()> {
        // SAFETY: advice on a range we own; MADV_DONTFORK changes only what
        // a future fork copies, not this process's view of the memory.
        unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                rustix::mm::Advice::LinuxDontFork,
            )
        }?;
        Ok(())
    }

    /// Grow or shrink the mapping (it may move; its advice moves with it). The file must already have
    /// the new size.
    pub fn resize(&mut self, new_len: usize) -> io::Result<()> {
        // SAFETY: `ptr/len` is a mapping we own; no reference into it is
        // held across this call (callers hold only raw pointers, refreshed
        // from `ptr()` afterwards).
        let p = unsafe {
            mremap(
                self.ptr.as_ptr().cast::<c_void>(),
                self.len,
                new_len,
                MremapFlags::MAYMOVE,
            )
        }?;
        self.ptr = NonNull::new(p.cast()).expect("mremap returned null");
        self.len = new_len;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nothing borrows it any more (every
        // borrower holds the Mapping or its owner alive).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
