//! The large-message pool of one direction of a channel: blocks the
//! ring's producer lends for messages too large for the ring, read in
//! place by the consumer and given back through the release queue
//! ([`crate::shm::release`]).
//!
//! - **Owned by the sender** ([`writer::PoolWriter`]): blocks come in
//!   power-of-two size classes from 64 KiB to 64 MiB; each class grows by
//!   buffers (memfds) of 1, 2, 4 … blocks (none over a quarter of the
//!   cap, so that a burst leaves room for other classes), created when the class runs dry
//!   and nothing came back within the port's spin time. A buffer is
//!   allocated in full when it is made (`fallocate`: no `SIGBUS` later),
//!   mapped read-write by the sender, then sealed with `F_SEAL_FUTURE_WRITE`
//!   (and against resizing and further seals), and announced once in the
//!   attachment of the first record that uses it. Free blocks go last
//!   freed, first lent: a steady stream reuses the block the reader just
//!   gave back, still in the caches.
//! - **Read in place by the receiver** ([`reader::PoolReader`]): it checks
//!   the seals and the size of an announced buffer, maps it read-only (the
//!   seal makes a writable mapping impossible), and resolves each record's
//!   [`PoolRef`](crate::shm::layout::PoolRef) inside it.
//! - **Given back without a system call**: the receiver queues the block's
//!   key; the sender takes keys when it lends, and checks each against its
//!   own record of blocks in flight: a key it did not lend, or one given
//!   back twice, is a protocol error, never a block lent twice.

pub mod reader;
pub mod writer;

use core::sync::atomic::Ordering;

use crate::shm::layout::{MAX_BLOCK_LOG2, MIN_BLOCK_LOG2, POOL_REF, PoolRef};
use crate::shm::ring::Record;

/// A block's key in the release queue: its buffer's id and its index.
#[inline]
pub const fn key(buffer: u32, block: u32) -> u64 {
    (buffer as u64) << 32 | block as u64
}

/// The buffer id and block index of a key.
#[inline]
pub const fn unkey(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// What a pooled record's reference says: buffer id, block index and the
/// message's length, each read once (a peer may write them meanwhile:
/// only these copies are checked and used). `None` if the payload is not
/// a reference's size.
pub fn reference(rec: &Record) -> Option<(u32, u32, u64)> {
    if rec.len != POOL_REF {
        return None;
    }
    // SAFETY: the record's payload holds POOL_REF bytes inside the ring,
    // 32-byte aligned (more than a PoolRef needs); the reference is only
    // atomics, so a peer writing it races with atomics only.
    let r = unsafe { rec.payload.cast::<PoolRef>().as_ref() };
    // Relaxed: ordered after the Acquire load of the commit word that
    // handed the record over.
    Some((
        r.buffer.load(Ordering::Relaxed),
        r.block.load(Ordering::Relaxed),
        r.len.load(Ordering::Relaxed),
    ))
}

/// The size class (log2 of the block size) for a message of `len` bytes,
/// `None` if it is larger than the largest block.
pub fn class_for(len: usize) -> Option<u8> {
    if len > MAX_POOLED {
        return None;
    }
    let log2 = len.max(1).next_power_of_two().trailing_zeros() as u8;
    Some(log2.max(MIN_BLOCK_LOG2))
}

/// Buffer ids of a link's pools start here (`crate::link::pool`); a
/// channel's own pool counts up from 0 and never gets this far.
pub const LINK_POOL_IDS: u32 = 1 << 31;

/// Does buffer id `id` name a block of a link's pool?
#[inline]
pub const fn in_link_pool(id: u32) -> bool {
    id >= LINK_POOL_IDS
}

/// The largest message a pool block holds.
pub const MAX_POOLED: usize = 1 << MAX_BLOCK_LOG2;

/// What an announcement says of a pool buffer (its descriptor travels
/// beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferInfo {
    /// Its id, unique in its direction of the channel.
    pub id: u32,
    /// log2 of its block size.
    pub log2: u8,
    /// Its number of blocks.
    pub blocks: u32,
}

impl BufferInfo {
    /// Its size in bytes, if the fields are in range (the receiver's first
    /// check of an announcement).
    pub fn size(&self) -> Option<usize> {
        if !(MIN_BLOCK_LOG2..=MAX_BLOCK_LOG2).contains(&self.log2) || self.blocks == 0 {
            return None;
        }
        (self.blocks as usize).checked_mul(1 << self.log2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two_from_64_kib() {
        assert_eq!(class_for(0), Some(16));
        assert_eq!(class_for(65536), Some(16));
        assert_eq!(class_for(65537), Some(17));
        assert_eq!(class_for(1 << 20), Some(20));
        assert_eq!(class_for(64 << 20), Some(26));
        assert_eq!(class_for((64 << 20) + 1), None);
        assert_eq!(class_for(usize::MAX), None);
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(unkey(key(7, 9)), (7, 9));
        assert_eq!(unkey(key(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
    }
}
