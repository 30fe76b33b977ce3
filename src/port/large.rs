//! Posting a message too large for the ring: into a block of the
//! sending side's pool (up to 64 MiB; `shm/pool/`), or, past that or when
//! the pool cannot serve it, out of line in a sealed memfd of its own. The
//! ring then carries a small record naming where the bytes are.
//!
//! A port on a link uses its side's pool of the link (`crate::link::pool`),
//! shared by every channel on it, whose buffers are announced on the
//! link's socket: no descriptor travels with the record, and the channel
//! stays on the link. Only a message that must go out of line moves it off.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkyv::rancor;

use super::send::check_size;
use super::{Half, PortReceiver, PortSender, Wait};
use crate::error::PostError;
use crate::link::ArenaLink;
use crate::shm::layout::{OOL_DESCRIPTOR, OolDescriptor, POOL_REF, PoolRef};
use crate::shm::pool::writer::{Block, PoolWriter};
use crate::shm::ring::{Kind, RecordMeta, Slot};
use crate::wire::attachment::{Attachment, PortParts};
use crate::wire::writer::{MAX_MESSAGE_SIZE, RecordWriter, WriteFailure};

/// The pool a large message of a port goes into.
pub(super) enum SendPool<'a> {
    /// The channel's own (announced in records' attachments).
    Own(&'a RefCell<PoolWriter>),
    /// This side's pool of the link the port is on (announced on the
    /// link's socket; `queue`: the kit number of its release queue).
    Link {
        link: Arc<ArenaLink>,
        queue: u64,
        pool: Arc<Mutex<PoolWriter>>,
    },
}

impl SendPool<'_> {
    /// Use the pool (the link's is locked for the call: its channels may
    /// post from several threads).
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut PoolWriter) -> R) -> R {
        match self {
            SendPool::Own(p) => f(&mut p.borrow_mut()),
            // A panic elsewhere while it was locked leaves it as consistent
            // as any use of it: no invariant spans a call.
            SendPool::Link { pool, .. } => f(&mut pool.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    fn is_link(&self) -> bool {
        matches!(self, SendPool::Link { .. })
    }
}

/// How long a post waiting for a block of a link's pool sleeps between
/// looks (the link's receivers give blocks back without a wake-up: a wait
/// there is rare, the pool at its cap).
const LINK_POOL_LOOK: Duration = Duration::from_micros(200);

impl PortSender {
    /// The pool a large message posted now goes into: the link's, while
    /// the port is on one (made at its first use), else the channel's own.
    pub(super) fn send_pool(&self) -> Result<SendPool<'_>, PostError> {
        match self.shared.link_only() {
            None => Ok(SendPool::Own(&self.pool)),
            Some(on) => {
                let (queue, pool) = on.link.pool_out().map_err(PostError::Io)?;
                Ok(SendPool::Link {
                    link: on.link.clone(),
                    queue,
                    pool,
                })
            }
        }
    }

    /// A message too large for the ring (or over the inline limit, `max`),
    /// up to the largest pool block: serialize it into a block of this
    /// side's pool, then commit a small record naming the block. The
    /// block's buffer travels as the record's attachment the first time it
    /// is used. A value that outgrows the block moves to the next class
    /// (or, past the largest, out of line); one that turns out to be `max`
    /// bytes or less (`size_hint` was a guess) is posted inside the ring.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_pooled(
        &self,
        meta: RecordMeta,
        size_hint: usize,
        max: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        // A typed value's size is a lower bound (where its serialization
        // stopped): leave room for the rest of the archive (its root comes
        // last), so that a value just past a power of two does not fill a
        // block of the class below first.
        let mut need = match meta.kind {
            Kind::Typed => size_hint.saturating_add(size_hint / 256 + 256),
            Kind::Raw => size_hint,
        };
        loop {
            let pool = match self.send_pool() {
                Ok(p) => p,
                Err(e) => return Err((e, ports)),
            };
            let (block_ptr, block, len) = loop {
                // Past the largest block, or a block larger than the cap allows
                // (a cap of 0 turns the pool off): in a memfd of its own.
                let Some(log2) = pool.with(|p| p.class_for(need)) else {
                    return self.out_of_line_from(&pool, meta, need, wait, fill, ports, rx);
                };
                let block = match self.lend_block(&pool, log2, need, wait, rx) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return self.out_of_line_from(&pool, meta, need, wait, fill, ports, rx);
                    }
                    Err(e) => return Err((e, ports)),
                };
                // SAFETY: the block is `room` bytes of this process's read-write
                // mapping of a pool buffer, lent to this post only: nobody else
                // writes it, and the receiver reads it only after the commit.
                let mut w =
                    unsafe { RecordWriter::slot(block.ptr, block.room) }.out_of_cache(block.cold);
                match fill(&mut w) {
                    Ok(()) => break (block.ptr, block, w.len()),
                    Err(e) => {
                        pool.with(|p| p.give_back(block));
                        match w.wanted() {
                            Some(wanted) => need = wanted.max(need + 1),
                            None => return Err((PostError::Serialize(e), ports)),
                        }
                    }
                }
            };
            if len <= max {
                // Small after all: a copy into the ring, where it belongs.
                // SAFETY: the block's first `len` bytes were written just above,
                // and the block stays lent to this post (nothing else writes
                // it) until it is given back below, after the copy.
                let bytes = unsafe { core::slice::from_raw_parts(block_ptr.as_ptr(), len) };
                self.large_hint.set(0);
                // (Through `dyn`: one more instance of `send_record`, not one
                // per nesting.)
                let mut copy = |w: &mut RecordWriter| w.put(bytes);
                let copy: &mut dyn FnMut(&mut RecordWriter) -> Result<(), rancor::Error> =
                    &mut copy;
                let sent = self.send_record(meta, len, wait, copy, ports, rx);
                pool.with(|p| p.give_back(block));
                return sent;
            }
            let slot = match self.reserve(POOL_REF, wait, rx) {
                Ok(s) => s,
                Err(e) => {
                    pool.with(|p| p.give_back(block));
                    return Err((e, ports));
                }
            };
            if self.left_link_pool(&pool) {
                // The wait for room followed the peer's move off the link: the
                // new segment's reader knows only the channel's own pool. Post
                // again, there (nothing was committed; the next turn takes the
                // channel's pool).
                pool.with(|p| p.give_back(block));
                continue;
            }
            if meta.kind == Kind::Typed {
                self.large_hint.set(len);
            }
            return self.publish_pooled(&pool, slot, block, len, meta, ports, wait, rx);
        }
    }

    /// Did the port leave the link whose pool `pool` is (following its
    /// peer's move, inside a wait)? A record naming a block of it must not
    /// go into the new segment.
    pub(super) fn left_link_pool(&self, pool: &SendPool<'_>) -> bool {
        pool.is_link() && self.shared.link_only().is_none()
    }

    /// Out of line, from a post that meant to use `pool`: a port on a link
    /// moves off it first (the memfd is a descriptor).
    #[allow(clippy::too_many_arguments)]
    fn out_of_line_from(
        &self,
        pool: &SendPool<'_>,
        meta: RecordMeta,
        need: usize,
        wait: Wait,
        fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        if pool.is_link() {
            if let Err(e) = self.off_link(rx) {
                return Err((e, ports));
            }
        }
        self.send_out_of_line(meta, need, wait, fill, ports, rx)
    }

    /// Publish a message written into a block of `pool`: send the block's
    /// buffer if the peer has not got it yet (with the record's attachment,
    /// with any ports, or for a link's pool on the link's socket), then
    /// commit the record naming the block. On failure the block goes back
    /// to the pool and the ports come back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_pooled(
        &self,
        pool: &SendPool<'_>,
        slot: Slot,
        block: Block,
        len: usize,
        mut meta: RecordMeta,
        ports: Vec<PortParts>,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        let key = block.key;
        // A pooled record names a block only the peer where it is now can
        // read: it must not commit after a move began (see `claim_posting`).
        if let Err(e) = self.claim_posting() {
            pool.with(|p| p.give_back(block));
            return Err((e, ports));
        }
        meta.pool = true;
        if let SendPool::Link { link, queue, .. } = pool {
            // Taken and sent under the pool's lock: another thread's post
            // that lends a block of the same new buffer finds the
            // announcement gone only once it is on the link's socket, ahead
            // of its record. Ports never travel with a record on a link
            // (they moved it off first), so there is no attachment.
            let announced = pool.with(|p| match p.take_announcement(key) {
                None => Ok(()),
                Some((info, fd)) => {
                    link.announce_pool_buffer(*queue, info, fd)
                        .map_err(|(e, fd)| {
                            p.restore_announcement(key, fd);
                            e
                        })
                }
            });
            if let Err(e) = announced {
                self.end_posting();
                pool.with(|p| p.give_back(block));
                return Err((PostError::Io(e), ports));
            }
            self.commit_pooled(slot, key, len, meta);
            return Ok(());
        }
        let announce = pool.with(|p| p.take_announcement(key));
        if announce.is_some() || !ports.is_empty() {
            meta.announce = announce.is_some();
            let att = Attachment {
                ool: None,
                pool: announce,
                ports,
                lost: false,
            };
            if let Err(e) = self.attach(&att, wait, rx) {
                self.end_posting();
                pool.with(|p| {
                    if let Some((_, fd)) = att.pool {
                        p.restore_announcement(key, fd);
                    }
                    p.give_back(block)
                });
                return Err((e, att.ports));
            }
        }
        self.commit_pooled(slot, key, len, meta);
        Ok(())
    }

    /// Write the reference to block `key` (`len` bytes of message) into
    /// `slot` and commit it.
    fn commit_pooled(&self, slot: Slot, key: u64, len: usize, meta: RecordMeta) {
        let (buffer, index) = crate::shm::pool::unkey(key);
        // SAFETY: the slot holds at least POOL_REF bytes, 32-byte aligned
        // (more than a PoolRef needs), written only by this producer until
        // commit; the reference is only atomics.
        let r = unsafe { slot.payload.cast::<PoolRef>().as_ref() };
        // Relaxed: published by the commit's Release store, which also
        // publishes the block's bytes written before.
        r.buffer.store(buffer, Ordering::Relaxed);
        r.block.store(index, Ordering::Relaxed);
        r.len.store(len as u64, Ordering::Relaxed);
        self.commit(slot, POOL_REF, meta);
    }

    /// A free block of class `log2` (or larger) of `pool` for a message of
    /// `len` bytes, waiting as `wait` allows: take back released blocks; when
    /// none of the class came, spin for the port's spin time (a reader
    /// about to give one back is cheaper than a new buffer, and keeps the
    /// pool small and hot), then add a buffer if the cap allows, else lend
    /// a free block of a larger class, else sleep until the reader gives a
    /// block back (a link's pool: look again every [`LINK_POOL_LOOK`]). A
    /// class with no block in flight does not spin. `None` when waiting
    /// cannot help (the cap is taken by free buffers of smaller classes and
    /// nothing large enough is lent): the message then travels out of line.
    pub(super) fn lend_block(
        &self,
        pool: &SendPool<'_>,
        log2: u8,
        len: usize,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<Option<Block>, PostError> {
        let mut spin_until: Option<Instant> = None;
        let mut look_at: Option<Instant> = None;
        loop {
            if let Err(e) = self.check_postable() {
                // Nobody will read from the channel's own pool again: free
                // its memory. (A link's pool serves the link's other
                // channels.)
                if let SendPool::Own(p) = pool {
                    p.borrow_mut().clear();
                }
                return Err(e);
            }
            let now = Instant::now();
            let spin_end = *spin_until.get_or_insert_with(|| now + self.shared.spin());
            let may_spin = !matches!(wait, Wait::No);
            let step = pool.with(|p| -> Result<Result<Block, bool>, PostError> {
                match p.lend(log2) {
                    Ok(Some(b)) => return Ok(Ok(b)),
                    Ok(None) => {}
                    Err(c) => return Err(PostError::Closed(self.corrupt(c))),
                }
                let spinning = may_spin && p.in_flight_of(log2) > 0 && now < spin_end;
                if !spinning {
                    if p.grow(log2).map_err(PostError::Io)? {
                        return Ok(p.lend(log2).ok().flatten().ok_or(true));
                    }
                    if let Some(b) = p.lend_larger(log2) {
                        return Ok(Ok(b));
                    }
                    if !p.lent_from(log2) {
                        // Waiting cannot help.
                        return Ok(Err(false));
                    }
                }
                Ok(Err(true))
            })?;
            match step {
                Ok(b) => return Ok(Some(b)),
                Err(false) => return Ok(None),
                Err(true) => {}
            }
            if matches!(wait, Wait::No) {
                self.wanted_room.set(len);
                return Err(PostError::Full);
            }
            if wait.expired() {
                return Err(PostError::Timeout);
            }
            if now < spin_end {
                self.spin_turn(now, &mut look_at)?;
                continue;
            }
            // Our peer may itself be waiting for room or blocks we hold.
            if let Some(rx) = rx {
                rx.flush_releases();
            }
            match pool {
                SendPool::Own(p) => {
                    let p = p.borrow();
                    if p.prepare_wait() {
                        // The consumer's close after our announcement would
                        // find it; one before, we see here.
                        if let Err(e) = self.check_postable() {
                            p.end_wait();
                            return Err(e);
                        }
                        drop(p);
                        let r = self.shared.sleep(Half::Sender, wait, false);
                        self.pool.borrow().end_wait();
                        r.map_err(PostError::Io)?;
                    }
                }
                SendPool::Link { link, .. } => {
                    if link.hung_up() {
                        return Err(PostError::Closed(crate::error::CloseReason::PeerDied));
                    }
                    std::thread::sleep(LINK_POOL_LOOK);
                }
            }
        }
    }

    /// A message too large for the ring: serialize it into its own memfd,
    /// seal it, send it (with any ports) as the record's attachment, then
    /// commit a small record pointing to it. A message that would grow past
    /// [`MAX_MESSAGE_SIZE`] is [`PostError::TooLarge`]; a failed write to
    /// the memfd is [`PostError::Io`].
    pub(super) fn send_out_of_line(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        // A typed value that outgrew the ring may have outgrown any message.
        if let Err(e) = check_size(size_hint) {
            return Err((e, ports));
        }
        let slot = match self.reserve(OOL_DESCRIPTOR, wait, rx) {
            Ok(s) => s,
            Err(e) => return Err((e, ports)),
        };
        let mut w = match RecordWriter::memfd(size_hint) {
            Ok(w) => w,
            Err(e) => return Err((PostError::Io(e), ports)),
        };
        let filled = fill(&mut w);
        // The writer's own failure, if any, is the cause (even if the value's
        // serialization went on past it).
        match (w.take_failure(), filled) {
            (Some(failure), _) => return Err((write_failure(failure), ports)),
            (None, Err(e)) => return Err((PostError::Serialize(e), ports)),
            (None, Ok(())) => {}
        }
        let len = w.len() as u64;
        let fd = match w.finish_memfd() {
            Ok(fd) => fd,
            Err(e) => return Err((PostError::Io(e), ports)),
        };
        let att = Attachment {
            ool: Some(fd),
            pool: None,
            ports,
            lost: false,
        };
        if let Err(e) = self.attach(&att, wait, rx) {
            return Err((e, att.ports));
        }
        // SAFETY: the slot holds at least OOL_DESCRIPTOR bytes, 32-byte
        // aligned (more than an OolDescriptor needs), written only by this
        // producer until commit; the descriptor is only atomics.
        let descriptor = unsafe { slot.payload.cast::<OolDescriptor>().as_ref() };
        // Relaxed: published by the commit's Release store.
        descriptor.len.store(len, Ordering::Relaxed);
        meta.out_of_line = true;
        self.commit(slot, OOL_DESCRIPTOR, meta);
        Ok(())
    }
}

fn write_failure(failure: WriteFailure) -> PostError {
    match failure {
        WriteFailure::TooLarge(len) => PostError::TooLarge {
            len,
            max: MAX_MESSAGE_SIZE,
        },
        WriteFailure::Io(e) => PostError::Io(e),
    }
}
