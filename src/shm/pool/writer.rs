//! The sender's pool: buffers it creates and maps read-write, the blocks
//! it lends, and its private record of which are in flight.

use core::ptr::NonNull;
use std::io;
use std::os::fd::OwnedFd;

use super::reader::{MAX_BUFFERS, MAX_MAPPED};
use super::{BufferInfo, key, unkey};
use crate::shm::layout::{MAX_BLOCK_LOG2, MIN_BLOCK_LOG2, RELEASE_SLOTS};
use crate::shm::release::Reclaimer;
use crate::shm::ring::{Barriers, Corrupt};
use crate::shm::segment::SegmentRelease;
use crate::sys::{self, Mapping};

const CLASSES: usize = (MAX_BLOCK_LOG2 - MIN_BLOCK_LOG2 + 1) as usize;

/// The least pool memory a direction may hold by default, whatever the
/// classes in use: 64 MiB.
pub const DEFAULT_LIMIT_FLOOR: usize = 64 << 20;

/// The first buffer of a class holds this many bytes of blocks (at least
/// one block); each later one twice the blocks of the one before, at most
/// a quarter of the cap (or this much).
const FIRST_BUFFER: usize = 1 << 20;

/// One buffer this process created.
struct WriteBuffer {
    info: BufferInfo,
    map: Mapping,
    /// The memfd, until the buffer is announced (then the peer has it, and
    /// only the mapping is kept).
    fd: Option<OwnedFd>,
    /// One bit per block: lent and not given back.
    lent: Vec<u64>,
    /// Per block: the pool's `written` count just after it was last lent
    /// (0: never).
    last: Vec<u64>,
}

impl WriteBuffer {
    fn is_lent(&self, block: u32) -> bool {
        self.lent[block as usize / 64] & 1 << (block % 64) != 0
    }
    fn set_lent(&mut self, block: u32, lent: bool) {
        let (w, bit) = (block as usize / 64, 1u64 << (block % 64));
        if lent {
            self.lent[w] |= bit;
        } else {
            self.lent[w] &= !bit;
        }
    }
}

/// A block lent for one message: `room` bytes at `ptr`, writable by this
/// process only, until the record naming it is committed (then only the
/// receiver reads it, until it gives it back).
#[derive(Debug)]
pub struct Block {
    /// Its key (buffer id and index).
    pub key: u64,
    /// Its bytes in this process's read-write mapping.
    pub ptr: NonNull<u8>,
    /// Its size.
    pub room: usize,
    /// Never lent before, or last lent more than
    /// [`reach`](crate::sys::cache::reach) bytes of blocks ago: its
    /// lines have left this process's caches (write it past them).
    pub cold: bool,
}

/// The pool a ring's producer owns.
pub struct PoolWriter {
    reclaimer: Result<Reclaimer<SegmentRelease>, Corrupt>,
    /// Ids below this belong to the pool of an earlier owner of the
    /// sending port (it moved here): their keys are dropped when they come
    /// back.
    base: u32,
    /// Buffer `id` is `buffers[id - base]`.
    buffers: Vec<WriteBuffer>,
    /// Free blocks per class, last freed on top.
    free: [Vec<u64>; CLASSES],
    /// Blocks lent and not given back, per class.
    lent: [usize; CLASSES],
    /// Bytes of blocks lent so far: the clock of `WriteBuffer::last`.
    written: u64,
    bytes: usize,
    blocks: usize,
    limit: Option<usize>,
    /// The largest class used so far (for the default limit).
    largest: u8,
}

impl PoolWriter {
    /// The pool of the ring whose release queue is `release`, starting
    /// with no buffer. Buffer ids continue from where an earlier owner's
    /// stopped.
    pub fn new(release: SegmentRelease, barriers: Barriers) -> PoolWriter {
        let reclaimer = Reclaimer::new(release, barriers);
        let base = reclaimer.as_ref().map_or(0, |r| r.next_buffer());
        PoolWriter {
            reclaimer,
            base,
            buffers: Vec::new(),
            free: Default::default(),
            lent: [0; CLASSES],
            written: 0,
            bytes: 0,
            blocks: 0,
            limit: None,
            largest: MIN_BLOCK_LOG2,
        }
    }

    /// The pool of one direction of a link (`crate::link::pool`), shared by
    /// its channels: buffer ids from [`LINK_POOL_IDS`](super::LINK_POOL_IDS)
    /// up, so that a record says by its buffer id alone which pool it names.
    pub fn for_link(release: SegmentRelease, barriers: Barriers) -> PoolWriter {
        let mut w = PoolWriter::new(release, barriers);
        w.base = super::LINK_POOL_IDS;
        w
    }

    /// Cap the bytes of all buffers (`None`: the default, the larger of
    /// 64 MiB and four blocks of the largest class in use).
    pub fn set_limit(&mut self, bytes: Option<usize>) {
        self.limit = bytes;
    }

    /// The cap set by [`set_limit`](Self::set_limit).
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// The cap in force for a message of class `log2`.
    pub fn limit_for(&self, log2: u8) -> usize {
        self.limit
            .unwrap_or_else(|| DEFAULT_LIMIT_FLOOR.max(4 << self.largest.max(log2)))
    }

    /// The class of a message of `len` bytes in this pool: `None` if no
    /// block holds it (past the largest block, or the cap allows no block
    /// that large; a cap of 0 turns the pool off).
    pub fn class_for(&self, len: usize) -> Option<u8> {
        super::class_for(len).filter(|&l| 1 << l <= self.limit_for(l))
    }

    /// The largest block the cap allows (0: none, the pool is off).
    pub fn largest_block(&self) -> usize {
        (MIN_BLOCK_LOG2..=MAX_BLOCK_LOG2)
            .rev()
            .map(|l| 1usize << l)
            .find(|&b| b <= self.limit_for(b.trailing_zeros() as u8))
            .unwrap_or(0)
    }

    /// Bytes of all buffers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Blocks of class `log2` lent and not yet given back.
    pub fn in_flight_of(&self, log2: u8) -> usize {
        self.lent[class(log2)]
    }

    /// Take back every block the receiver gave back, checking each.
    pub fn take_back(&mut self) -> Result<(), Corrupt> {
        let PoolWriter {
            reclaimer,
            base,
            buffers,
            free,
            lent,
            ..
        } = self;
        let reclaimer = reclaimer.as_mut().map_err(|c| *c)?;
        reclaimer.drain(|k| back(*base, buffers, free, lent, k))
    }

    /// The first `len` bytes of block `key`, if it is lent (and `len` fits).
    pub fn lent_bytes(&self, key: u64, len: u64) -> Option<&[u8]> {
        let (id, block) = unkey(key);
        let b = self.buffers.get(id.checked_sub(self.base)? as usize)?;
        let room = 1usize << b.info.log2;
        if block >= b.info.blocks || !b.is_lent(block) || len > room as u64 {
            return None;
        }
        // SAFETY: `block < blocks` and `len <= room`: the bytes lie inside
        // the mapping of `blocks << log2` bytes, which lives as long as
        // `self`. The block is lent and its record unread: nobody writes it.
        Some(unsafe {
            core::slice::from_raw_parts(
                b.map.ptr().add(block as usize * room).as_ptr(),
                len as usize,
            )
        })
    }

    /// A block named by a record its receiver never read, once the
    /// channel has ended at both sides (`crate::link::pool`): free again,
    /// as if given back. Checked as a release is.
    pub fn reclaim(&mut self, key: u64) -> Result<(), Corrupt> {
        let PoolWriter {
            base,
            buffers,
            free,
            lent,
            ..
        } = self;
        back(*base, buffers, free, lent, key)
    }

    /// Lend a free block of class `log2`, after taking back what came back.
    /// `None`: no block of that class is free.
    pub fn lend(&mut self, log2: u8) -> Result<Option<Block>, Corrupt> {
        self.take_back()?;
        self.largest = self.largest.max(log2);
        Ok(self.pop(class(log2)))
    }

    /// Lend the last freed block of class index `c`, if any.
    fn pop(&mut self, c: usize) -> Option<Block> {
        let k = self.free[c].pop()?;
        let (id, block) = unkey(k);
        let b = &mut self.buffers[(id - self.base) as usize];
        b.set_lent(block, true);
        self.lent[c] += 1;
        let room = 1usize << b.info.log2;
        let last = &mut b.last[block as usize];
        let cold = *last == 0 || self.written - *last >= sys::cache::reach() as u64;
        self.written += room as u64;
        *last = self.written;
        // SAFETY: `block < blocks`, so the block lies inside the mapping of
        // `blocks << log2` bytes.
        let ptr = unsafe { b.map.ptr().add(block as usize * room) };
        Some(Block {
            key: k,
            ptr,
            room,
            cold,
        })
    }

    /// Lend a free block of a class larger than `log2` (the smallest there
    /// is), when the class itself has none and cannot grow: memory the cap
    /// gave to larger messages serves smaller ones rather than standing
    /// idle. Call after [`lend`](Self::lend), which took back what came.
    pub fn lend_larger(&mut self, log2: u8) -> Option<Block> {
        let c = (class(log2) + 1..CLASSES).find(|&c| !self.free[c].is_empty())?;
        self.pop(c)
    }

    /// Is a block of class `log2` or larger lent (so that waiting for the
    /// receiver to give it back can help)?
    pub fn lent_from(&self, log2: u8) -> bool {
        self.lent[class(log2)..].iter().any(|&n| n > 0)
    }

    /// Give a lent block back unused (its post failed before the record
    /// was committed).
    pub fn give_back(&mut self, block: Block) {
        let (id, index) = unkey(block.key);
        let b = &mut self.buffers[(id - self.base) as usize];
        b.set_lent(index, false);
        let c = class(b.info.log2);
        self.lent[c] -= 1;
        self.free[c].push(block.key);
    }

    /// Add a buffer of class `log2` if the cap allows one of at least one
    /// block; `false` if it does not. The buffer holds twice the blocks of
    /// the class's last one (the first: [`FIRST_BUFFER`] bytes' worth, at
    /// least one), at most a quarter of the cap (or [`FIRST_BUFFER`]), fewer
    /// if the cap says so.
    pub fn grow(&mut self, log2: u8) -> Result<bool, io::Error> {
        let c = class(log2);
        let block = 1usize << log2;
        let blocks = self.next_buffer_blocks(log2);
        // Ids are consecutive from `base`: buffer `id` is at `id - base`.
        // (The shared word is written for a later owner, never read back.)
        // A channel's own pool stays below the link pools' ids.
        let end = match super::in_link_pool(self.base) {
            true => u32::MAX,
            false => super::LINK_POOL_IDS,
        };
        let id = match u32::try_from(self.buffers.len()) {
            Ok(n) => self.base.checked_add(n).filter(|&id| id < end),
            Err(_) => None,
        };
        let (Some(id), Ok(reclaimer)) = (id, self.reclaimer.as_ref()) else {
            return Ok(false);
        };
        if blocks == 0 {
            return Ok(false);
        }
        let info = BufferInfo {
            id,
            log2,
            blocks: blocks as u32,
        };
        let size = blocks * block;
        let fd = sys::memfd::create("shmport-pool", size)?;
        // Allocated now: out of memory is this error, never a SIGBUS later.
        sys::memfd::allocate(&fd, size)?;
        let map = Mapping::new(&fd, size, true, true)?;
        // Best effort: a fork elsewhere in the process then gets no
        // writable copy of the mapping.
        let _ = map.dont_fork();
        sys::memfd::seal(&fd, sys::memfd::POOL_SEALS)?;
        reclaimer.set_next_buffer(id + 1);
        self.buffers.push(WriteBuffer {
            info,
            map,
            fd: Some(fd),
            lent: vec![0; blocks.div_ceil(64)],
            last: vec![0; blocks],
        });
        // Pushed in reverse, so that block 0 is lent first.
        self.free[c].extend((0..blocks as u32).rev().map(|b| key(id, b)));
        self.bytes += size;
        self.blocks += blocks;
        self.largest = self.largest.max(log2);
        Ok(true)
    }

    /// Blocks the next buffer of class `log2` would hold (0: the cap allows
    /// none).
    fn next_buffer_blocks(&self, log2: u8) -> usize {
        let block = 1usize << log2;
        let last = self.buffers.iter().rev().find(|b| b.info.log2 == log2);
        let mut blocks = match last {
            Some(b) => b.info.blocks as usize * 2,
            None => (FIRST_BUFFER >> log2).max(1),
        };
        if self.buffers.len() >= MAX_BUFFERS {
            return 0;
        }
        // Never more than a receiver maps, whatever the cap says.
        let limit = self.limit_for(log2).min(MAX_MAPPED);
        // No buffer larger than a quarter of the cap (or the first buffer's
        // size): a burst that outruns the receiver's releases adds at most
        // that much to its class, rather than doubling it into the whole
        // cap and leaving no room for another class's blocks.
        let step = (limit / 4).max(FIRST_BUFFER) >> log2;
        blocks = blocks.min(step.max(1));
        while blocks > 0
            && (self.bytes + blocks * block > limit || self.blocks + blocks > RELEASE_SLOTS)
        {
            blocks /= 2;
        }
        blocks
    }

    /// Would a post of class `log2` go on now without waiting: a block of
    /// that class or a larger one is free (after taking back what came),
    /// the cap allows a new buffer, or nothing that could come back is lent
    /// (then the message goes out of line)?
    pub fn has_room(&mut self, log2: u8) -> Result<bool, Corrupt> {
        self.take_back()?;
        Ok(self.free[class(log2)..].iter().any(|f| !f.is_empty())
            || self.next_buffer_blocks(log2) > 0
            || !self.lent_from(log2))
    }

    /// Take the announcement of a lent block's buffer, if the peer has not
    /// been sent it yet: to attach to the record. Put it back with
    /// [`restore_announcement`](Self::restore_announcement) if the send
    /// fails.
    pub fn take_announcement(&mut self, key: u64) -> Option<(BufferInfo, OwnedFd)> {
        let b = &mut self.buffers[(unkey(key).0 - self.base) as usize];
        b.fd.take().map(|fd| (b.info, fd))
    }

    /// The announcement was not sent: keep the descriptor for the next use.
    pub fn restore_announcement(&mut self, key: u64, fd: OwnedFd) {
        self.buffers[(unkey(key).0 - self.base) as usize].fd = Some(fd);
    }

    /// Announce a wait for blocks ([`Reclaimer::prepare_wait`]); `false`:
    /// blocks came back meanwhile (or the queue is broken), do not sleep.
    pub fn prepare_wait(&self) -> bool {
        match &self.reclaimer {
            Ok(r) => r.prepare_wait(),
            Err(_) => false,
        }
    }

    /// Withdraw the wait announcement.
    pub fn end_wait(&self) {
        if let Ok(r) = &self.reclaimer {
            r.end_wait();
        }
    }

    /// The receiver is gone: unmap every buffer (its own mappings, if it
    /// still lives, keep the memory it reads).
    pub fn clear(&mut self) {
        let n = u32::try_from(self.buffers.len()).unwrap_or(u32::MAX);
        self.buffers.clear();
        self.free = Default::default();
        self.lent = [0; CLASSES];
        self.bytes = 0;
        self.blocks = 0;
        // Ids of the cleared buffers are never handed out again.
        self.base = self.base.saturating_add(n);
    }
}

/// Block `k` came back: free it, if it is one this pool lent and has not
/// had back since.
fn back(
    base: u32,
    buffers: &mut [WriteBuffer],
    free: &mut [Vec<u64>; CLASSES],
    lent: &mut [usize; CLASSES],
    k: u64,
) -> Result<(), Corrupt> {
    let (id, block) = unkey(k);
    if id < base {
        // A block of a pool left behind by an earlier owner.
        return Ok(());
    }
    let b = buffers
        .get_mut((id - base) as usize)
        .ok_or(Corrupt("a pool block given back that was never lent"))?;
    if block >= b.info.blocks || !b.is_lent(block) {
        return Err(Corrupt("a pool block given back that is not in flight"));
    }
    b.set_lent(block, false);
    let c = class(b.info.log2);
    lent[c] -= 1;
    free[c].push(k);
    Ok(())
}

fn class(log2: u8) -> usize {
    (log2 - MIN_BLOCK_LOG2) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::segment::Segment;

    fn pool() -> PoolWriter {
        let seg = Segment::create(1 << 16).unwrap();
        PoolWriter::new(SegmentRelease::new(seg, 0), Barriers::FENCES)
    }

    #[test]
    fn a_block_is_cold_when_new_or_lent_again_past_the_caches_reach() {
        let reach = sys::cache::reach();
        let mut w = pool();
        assert!(w.grow(16).unwrap());
        // Never written: cold.
        let a = w.lend(16).unwrap().unwrap();
        assert!(a.cold);
        // Given back and lent again at once (last freed on top): warm.
        let key = a.key;
        w.give_back(a);
        let again = w.lend(16).unwrap().unwrap();
        assert_eq!(again.key, key);
        assert!(!again.cold);
        w.give_back(again);
        // Lent again after `reach` bytes of other blocks: cold. Lend blocks
        // one after another, giving each back under the first, so that the
        // first comes up again only once the others have gone round.
        let first = w.lend(16).unwrap().unwrap();
        let others = reach.div_ceil(1 << 16);
        let mut lent = Vec::new();
        for _ in 0..others {
            let b = match w.lend(16).unwrap() {
                Some(b) => b,
                None => {
                    assert!(w.grow(16).unwrap());
                    w.lend(16).unwrap().unwrap()
                }
            };
            lent.push(b);
        }
        w.give_back(first);
        let first = w.lend(16).unwrap().unwrap();
        assert_eq!(first.key, key);
        assert!(first.cold, "lent again after {others} blocks of 64 KiB");
        // One of the others, given back and lent again at once: warm.
        let b = lent.pop().unwrap();
        let k = b.key;
        w.give_back(b);
        let b = w.lend(16).unwrap().unwrap();
        assert_eq!(b.key, k);
        assert!(!b.cold);
    }
}
