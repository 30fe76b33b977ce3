//! An arena: one sealed memfd that holds the segments of many channels
//! between the same two processes (a link's, `crate::link`), each laid out
//! as a channel's own segment is ([`crate::shm::layout`]) at a page-aligned
//! offset. Its creator carves it up; its descriptor crosses to the peer once
//! and is then closed on both sides: the mappings keep the memory.

use std::io;
use std::os::fd::OwnedFd;

use crate::sys::{self, Mapping};

/// Smallest arena: room for a few default channels.
pub const MIN_ARENA: usize = 16 << 20;
/// Largest arena (the address space is reserved, not the memory).
pub const MAX_ARENA: usize = 8 << 30;

/// One arena, mapped read-write.
pub struct Arena {
    map: Mapping,
    len: usize,
    /// The arena's number on its link, chosen by its creator.
    id: u32,
    /// (device, inode) of the memfd: names its segments (`Segment::id`).
    file: (u64, u64),
}

impl Arena {
    /// A new arena of `len` bytes (a multiple of the page), sealed against
    /// shrinking and growing, and its descriptor (to send to the peer once).
    pub fn create(id: u32, len: usize) -> io::Result<(Arena, OwnedFd)> {
        let fd = sys::memfd::create("shmport-link", len)?;
        sys::memfd::seal(&fd, sys::memfd::SIZE_SEALS)?;
        let map = Mapping::new(&fd, len, true, false)?;
        let file = sys::memfd::file_id(&fd)?;
        Ok((Arena { map, len, id, file }, fd))
    }

    /// Map an arena received from the peer, checking its seals and that it
    /// is no larger than `max` bytes.
    pub fn open(id: u32, fd: &OwnedFd, max: usize) -> io::Result<Arena> {
        let f = sys::memfd::checked_file(fd, sys::memfd::SIZE_SEALS)?;
        if f.size == 0 || f.size > max || f.size % 4096 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an arena of a size this side does not take",
            ));
        }
        let map = Mapping::new(fd, f.size, true, false)?;
        Ok(Arena {
            map,
            len: f.size,
            id,
            file: f.id,
        })
    }

    /// The arena's number on its link.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes in the arena.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The mapping.
    pub(crate) fn map(&self) -> &Mapping {
        &self.map
    }

    /// The memfd's identity.
    pub(crate) fn file(&self) -> (u64, u64) {
        self.file
    }
}
