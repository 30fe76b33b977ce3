//! The receiver's view of the peer's pool: the buffers it announced, mapped
//! read-only, and the way blocks go back.

use core::ptr::NonNull;
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;

use super::{BufferInfo, key};
use crate::shm::layout::RELEASE_SLOTS;
use crate::shm::release::{Pushed, Releaser};
use crate::shm::ring::{Barriers, Corrupt};
use crate::shm::segment::SegmentRelease;
use crate::sys::{self, Mapping};

/// The most buffers a receiver maps for one direction of a channel.
pub const MAX_BUFFERS: usize = 256;

/// The most bytes of pool buffers a receiver maps for one direction (an
/// address-space bound: the memory itself is the sender's).
pub const MAX_MAPPED: usize = 16 << 30;

/// One announced buffer.
pub struct ReadBuffer {
    info: BufferInfo,
    map: Mapping,
    /// Kept to hand the buffer on with the port.
    fd: OwnedFd,
}

/// Why an announced buffer was not taken.
#[derive(Debug)]
pub enum AddError {
    /// The announcement or the memfd is wrong: the peer broke the protocol.
    Corrupt(Corrupt),
    /// Mapping it failed here (out of address space).
    Io(io::Error),
}

/// The buffers of the peer's pool, and the release queue.
pub struct PoolReader {
    buffers: Vec<ReadBuffer>,
    mapped: usize,
    releaser: Result<Releaser<SegmentRelease>, Corrupt>,
    /// Keys the queue had no room for yet.
    backlog: VecDeque<u64>,
    /// The port moved to another process: blocks still shared here (see
    /// [`open_block`](Self::open_block)) are not given back from here.
    moved: bool,
    /// The reader of a link's pool (`crate::link::pool`): buffer ids from
    /// [`LINK_POOL_IDS`](super::LINK_POOL_IDS) up; a channel's: below.
    link: bool,
}

impl PoolReader {
    /// The reader of the pool whose release queue is `release`, knowing no
    /// buffer yet.
    pub fn new(release: SegmentRelease, barriers: Barriers) -> PoolReader {
        PoolReader {
            buffers: Vec::new(),
            mapped: 0,
            releaser: Releaser::new(release, barriers),
            backlog: VecDeque::new(),
            moved: false,
            link: false,
        }
    }

    /// The reader of one direction of a link's pool.
    pub fn for_link(release: SegmentRelease, barriers: Barriers) -> PoolReader {
        PoolReader {
            link: true,
            ..PoolReader::new(release, barriers)
        }
    }

    /// Take an announced buffer: check the announcement, the memfd's seals
    /// (size fixed, writes impossible) and size, and map it read-only.
    pub fn add(&mut self, info: BufferInfo, fd: OwnedFd) -> Result<(), AddError> {
        let bad = |s| Err(AddError::Corrupt(Corrupt(s)));
        let Some(size) = info.size() else {
            return bad("pool buffer announcement out of range");
        };
        if info.blocks as usize > RELEASE_SLOTS || super::in_link_pool(info.id) != self.link {
            return bad("pool buffer announcement out of range");
        }
        if self.buffers.iter().any(|b| b.info.id == info.id) {
            return bad("pool buffer announced twice");
        }
        if self.buffers.len() >= MAX_BUFFERS || self.mapped + size > MAX_MAPPED {
            return bad("more pool buffers than a receiver maps");
        }
        match sys::memfd::checked_file(&fd, sys::memfd::POOL_SEALS) {
            // Allocated in full by its sender, as the protocol asks: else
            // reading it would allocate its holes here, charged to this
            // process (the seals keep holes from being punched later).
            Ok(f) if f.size == size && f.allocated >= size as u64 => {}
            Ok(f) if f.size == size => return bad("pool buffer not allocated by its sender"),
            Ok(_) => return bad("pool buffer of the wrong size"),
            Err(_) => return bad("pool buffer not sealed against writes"),
        }
        // Private and read-only: reads are the file's pages, which the
        // sender writes (zero copy); a block handed out as writable memory
        // (`open_block`) takes copies of the pages written, for this process
        // only. Populated: the pages exist (the sender allocated them), so
        // reading a block later takes no page fault.
        let map = Mapping::private(&fd, size, true).map_err(AddError::Io)?;
        self.buffers.push(ReadBuffer { info, map, fd });
        self.mapped += size;
        Ok(())
    }

    /// The bytes a record's reference names: `len` bytes at the start of
    /// block `block` of buffer `buffer`, and the block's key.
    pub fn resolve(
        &self,
        buffer: u32,
        block: u32,
        len: u64,
    ) -> Result<(NonNull<u8>, usize, u64), Corrupt> {
        let b = self
            .buffers
            .iter()
            .rev()
            .find(|b| b.info.id == buffer)
            .ok_or(Corrupt("pooled record names an unknown buffer"))?;
        if block >= b.info.blocks {
            return Err(Corrupt("pooled record names a block outside its buffer"));
        }
        let room = 1u64 << b.info.log2;
        if len > room {
            return Err(Corrupt("pooled record longer than its block"));
        }
        // SAFETY: `block < blocks` and the mapping is `blocks << log2`
        // bytes: the block lies inside it.
        let ptr = unsafe { b.map.ptr().add(block as usize * room as usize) };
        Ok((ptr, len as usize, key(buffer, block)))
    }

    /// Give a block back. `true`: the owner waits for blocks; wake it.
    /// A key the queue has no room for is kept and sent first next time.
    pub fn release(&mut self, key: u64) -> Result<bool, Corrupt> {
        if self.moved {
            return Ok(false);
        }
        self.backlog.push_back(key);
        self.flush()
    }

    /// Is buffer `id` announced here?
    pub fn knows(&self, id: u32) -> bool {
        self.buffers.iter().any(|b| b.info.id == id)
    }

    /// Give back the block of a record never read (`crate::link::pool`),
    /// if it is one of an announced buffer.
    pub fn release_unread(&mut self, key: u64) -> Result<(), Corrupt> {
        if self.block(key).is_none() {
            return Err(Corrupt("an unread record names a block never announced"));
        }
        self.release(key).map(|_| ())
    }

    /// The buffer of `key` and the block's offset and size in it.
    fn block(&self, key: u64) -> Option<(&ReadBuffer, usize, usize)> {
        let (id, block) = super::unkey(key);
        let b = self.buffers.iter().rev().find(|b| b.info.id == id)?;
        let room = 1usize << b.info.log2;
        (block < b.info.blocks).then_some((b, block as usize * room, room))
    }

    /// The size of the block of `key` (resolved before) and the number of
    /// blocks of that size in the buffers announced so far.
    pub fn class_of(&self, key: u64) -> Option<(usize, usize)> {
        let (b, _, room) = self.block(key)?;
        let blocks = self
            .buffers
            .iter()
            .filter(|o| o.info.log2 == b.info.log2)
            .map(|o| o.info.blocks as usize)
            .sum();
        Some((room, blocks))
    }

    /// Make the block of `key` (resolved before) writable for this process
    /// only: a write copies its page, never reaching the sender's file.
    /// For memory handed to a runtime that may write it (a binding's
    /// external buffer). [`close_block`](Self::close_block) undoes it.
    pub fn open_block(&self, key: u64) -> io::Result<()> {
        let (b, offset, room) = self
            .block(key)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such pool block"))?;
        b.map.protect(offset, room, true)
    }

    /// Undo [`open_block`](Self::open_block): read-only again, and the
    /// pages this process wrote dropped (later reads see the sender's
    /// file again, whatever it writes there next); then give the block
    /// back. `true`: wake the owner.
    pub fn close_block(&mut self, key: u64) -> Result<bool, Corrupt> {
        if let Some((b, offset, room)) = self.block(key) {
            // Both succeed on a range inside the mapping; if one failed, the
            // block is not given back (it would show stale private pages).
            if b.map.protect(offset, room, false).is_err() || b.map.discard(offset, room).is_err() {
                return Ok(false);
            }
        }
        self.release(key)
    }

    /// The buffers, to hand on with the port, when blocks of them may still
    /// be shared here ([`open_block`](Self::open_block)): copies of the
    /// descriptors (a buffer whose descriptor cannot be copied is left
    /// out, and the new owner refuses records that name it), and from now
    /// on nothing is given back from here.
    pub fn export(&mut self) -> Vec<(BufferInfo, OwnedFd)> {
        self.moved = true;
        self.buffers
            .iter()
            .filter_map(|b| Some((b.info, b.fd.try_clone().ok()?)))
            .collect()
    }

    /// Send what the queue had no room for; `true`: wake the owner.
    pub fn flush(&mut self) -> Result<bool, Corrupt> {
        let releaser = self.releaser.as_mut().map_err(|c| *c)?;
        let mut wake = false;
        while let Some(&k) = self.backlog.front() {
            match releaser.push(k)? {
                Pushed::Queued { wake: w } => {
                    wake |= w;
                    self.backlog.pop_front();
                }
                Pushed::Full => break,
            }
        }
        Ok(wake)
    }

    /// After the receiving side's close: does the owner wait (and need a
    /// wake-up to see the close)?
    pub fn wake_due_at_close(&self) -> bool {
        self.releaser.as_ref().is_ok_and(|r| r.wake_due_at_close())
    }
}
