//! A link's large-message pools: one per direction, shared by every channel
//! on the link, so that a channel made per request sends a message too
//! large for its ring into a block that earlier channels warmed, with no
//! descriptor and no move off the link.
//!
//! - **The sender's pool** ([`PoolWriter::for_link`]) is made at the first
//!   such message, with its release queue in a small segment carved from
//!   the sender's arenas. Its buffers (memfds, as a channel's pool's) are
//!   announced on the link's socket ([`Control::PoolBuffer`], naming the
//!   queue's segment), before the first record that names them. Its buffer
//!   ids start at [`LINK_POOL_IDS`](crate::shm::pool::LINK_POOL_IDS): a record's reference says by its id
//!   alone that it names a block of the link's pool.
//! - **The receiver's reader** ([`PoolReader::for_link`]) is made at the
//!   first announcement; a message read from it holds it, and gives its
//!   block back to the queue when dropped, whatever became of its port.
//! - **Records never read** (a channel whose receiver closed first) would
//!   hold their blocks for ever: once both ends of a kit are idle, its
//!   creator gives the blocks those records name back to their pools (its
//!   own: reclaimed; the peer's: released as a read would) and marks the
//!   rings read ([`ArenaLink::settle_unread`]).
//! - **No wake-up** goes with a release on a link: a post waiting for a
//!   block of the link's pool looks again at short intervals (a wait there
//!   needs the whole pool held by the receiver).
//!
//! A lying peer can only name blocks of its own pool to this side's reader
//! (checked there), or give back blocks of this side's that its records
//! did not hold (checked against what is in flight): either breaks the
//! link.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use super::control::Control;
use super::{ArenaKit, ArenaLink, State};
use crate::shm::kit::KitWords;
use crate::shm::layout::MIN_CAPACITY;
use crate::shm::pool::reader::{AddError, PoolReader};
use crate::shm::pool::writer::PoolWriter;
use crate::shm::pool::{BufferInfo, in_link_pool, key, reference};
use crate::shm::ring::process_barriers;
use crate::shm::ring::{Consumer, Corrupt};
use crate::shm::segment::{SegmentRelease, SegmentRing};

/// The release queue of a link's pool is that of ring 0 of its segment.
const QUEUE_RING: usize = 0;

/// The two pools of a link, as this side holds them.
#[derive(Default)]
pub(crate) struct Pools {
    /// This side's pool, once made, and the kit number of its queue's
    /// segment.
    out: Mutex<Option<(u64, Arc<Mutex<PoolWriter>>)>>,
    /// The peer's pool as read here, once announced, and its queue's
    /// kit number.
    inn: Mutex<Option<(u64, Arc<Mutex<PoolReader>>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change is whole before the next lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ArenaLink {
    /// This side's pool on the link, made the first time: its queue's kit
    /// number (for announcements) and the pool.
    pub(crate) fn pool_out(&self) -> io::Result<(u64, Arc<Mutex<PoolWriter>>)> {
        let mut out = lock(&self.pools.out);
        if let Some((queue, pool)) = out.as_ref() {
            return Ok((*queue, pool.clone()));
        }
        let kit = self.make_kit(MIN_CAPACITY)?;
        let release = SegmentRelease::new(kit.seg.clone(), QUEUE_RING);
        let pool = Arc::new(Mutex::new(PoolWriter::for_link(
            release,
            process_barriers(),
        )));
        *out = Some((kit.id, pool.clone()));
        Ok((kit.id, pool))
    }

    /// Bytes of this side's pool (0 before its first use).
    pub(crate) fn pool_bytes(&self) -> usize {
        let out = lock(&self.pools.out).as_ref().map(|(_, p)| p.clone());
        out.map_or(0, |p| lock(&p).bytes())
    }

    /// Announce a buffer of this side's pool (before any record names
    /// it). On failure the descriptor comes back, to announce later.
    pub(crate) fn announce_pool_buffer(
        &self,
        queue: u64,
        info: BufferInfo,
        fd: OwnedFd,
    ) -> Result<(), (io::Error, OwnedFd)> {
        let c = Control::PoolBuffer { queue, info, fd };
        match self.announce(&c) {
            Ok(()) => Ok(()),
            Err(e) => match c {
                Control::PoolBuffer { fd, .. } => Err((e, fd)),
                _ => unreachable!("the announcement made just above"),
            },
        }
    }

    /// Take in a buffer the peer announced: the reader is made at the
    /// first, its queue in the peer's arena at kit `queue`.
    pub(super) fn accept_pool_buffer(
        &self,
        st: &State,
        queue: u64,
        info: BufferInfo,
        fd: OwnedFd,
    ) -> Result<(), Corrupt> {
        if !in_link_pool(info.id) {
            return Err(Corrupt("a link's pool buffer with a channel's id"));
        }
        let mut inn = lock(&self.pools.inn);
        if inn.is_none() {
            let seg = super::peer_segment(st, queue)?;
            let release = SegmentRelease::new(seg, QUEUE_RING);
            let reader = PoolReader::for_link(release, process_barriers());
            *inn = Some((queue, Arc::new(Mutex::new(reader))));
        }
        let (q, reader) = inn.as_ref().expect("made just above");
        if *q != queue {
            return Err(Corrupt("a link's pool with two queues"));
        }
        match lock(reader).add(info, fd) {
            Ok(()) => Ok(()),
            Err(AddError::Corrupt(c)) => Err(c),
            // Mapping it failed here: records naming it cannot be read.
            Err(AddError::Io(_)) => Err(Corrupt("a link's pool buffer that cannot be mapped")),
        }
    }

    /// The reader of the peer's pool, taking in what the link's socket
    /// holds if none was announced yet (a record naming a block comes
    /// after its buffer's announcement).
    pub(crate) fn pool_in(&self) -> Option<Arc<Mutex<PoolReader>>> {
        let known = || lock(&self.pools.inn).as_ref().map(|(_, r)| r.clone());
        known().or_else(|| {
            self.take_in();
            known()
        })
    }

    /// Run `f` on the block a record names in the peer's pool (`buffer`,
    /// `block`, `len` as the record says): its bytes, resolved and checked,
    /// and its key, with the reader locked. A buffer not known yet is
    /// looked for once in what the link's socket holds (its announcement
    /// comes before any record that names it).
    pub(crate) fn with_peer_block<R>(
        &self,
        buffer: u32,
        block: u32,
        len: u64,
        f: impl FnOnce(&mut PoolReader, &[u8], u64) -> R,
    ) -> Result<R, Corrupt> {
        let never = Corrupt("a record names a block of a pool never announced");
        let mut reader = self.pool_in().ok_or(never)?;
        if !lock(&reader).knows(buffer) {
            self.take_in();
            reader = self.pool_in().ok_or(never)?;
        }
        let mut pool = lock(&reader);
        let (ptr, len, key) = pool.resolve(buffer, block, len)?;
        // SAFETY: `resolve` checked that `len` bytes at `ptr` lie inside
        // the buffer's mapping, which the reader (locked) keeps.
        let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), len) };
        Ok(f(&mut pool, bytes, key))
    }

    /// The bytes a record of a channel that was on this link names in the
    /// peer's pool, copied, and the block given back: for a record that
    /// goes on elsewhere.
    pub(crate) fn copy_out_block(
        &self,
        buffer: u32,
        block: u32,
        len: u64,
    ) -> Result<Vec<u8>, Corrupt> {
        self.with_peer_block(buffer, block, len, |pool, bytes, key| {
            let copy = bytes.to_vec();
            pool.release(key).map(|_| copy)
        })?
    }

    /// Kit `kit`, made here, is idle at both ends with records unread:
    /// give the blocks those records name back to their pools (this side's
    /// reclaimed, the peer's released as a read would), then mark both
    /// rings read to the end. Nobody reads or writes the kit's rings any
    /// more (both ports closed, their last positions published before
    /// their idle marks, which the caller loaded with Acquire).
    pub(crate) fn settle_unread(&self, kit: &ArenaKit) -> Result<(), Corrupt> {
        let (out, _) = kit.side.rings();
        let barriers = process_barriers();
        for ring in 0..2 {
            let Some((head, tail)) = kit.seg.kit_unread(ring) else {
                continue;
            };
            let mem = SegmentRing::new(kit.seg.clone(), ring);
            let mut reader = Consumer::reading_between(mem, head, tail, barriers);
            while let Some(rec) = reader.take()? {
                let Some((buffer, block, _)) = reference(&rec).filter(|_| rec.meta.pool) else {
                    continue;
                };
                if !in_link_pool(buffer) {
                    continue;
                }
                if ring == out {
                    // (No pool here: the record is not one of ours.)
                    let pool = lock(&self.pools.out).as_ref().map(|(_, p)| p.clone());
                    if let Some(pool) = pool {
                        lock(&pool).reclaim(key(buffer, block))?;
                    }
                } else if let Some(reader) = self.pool_in() {
                    lock(&reader).release_unread(key(buffer, block))?;
                }
            }
            kit.seg.kit_mark_read(ring, tail);
        }
        Ok(())
    }
}
