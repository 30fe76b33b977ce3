//! Posting a message too large for the ring: into a block of the
//! sending side's pool (up to 64 MiB; `shm/pool/`), or, past that or when
//! the pool cannot serve it, out of line in a sealed memfd of its own. The
//! ring then carries a small record naming where the bytes are.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rkyv::rancor;

use super::send::check_size;
use super::{Half, PortReceiver, PortSender, Wait};
use crate::error::PostError;
use crate::shm::layout::{OOL_DESCRIPTOR, OolDescriptor, POOL_REF, PoolRef};
use crate::shm::pool::writer::Block;
use crate::shm::ring::{Kind, RecordMeta, Slot};
use crate::wire::attachment::{Attachment, PortParts};
use crate::wire::writer::{MAX_MESSAGE_SIZE, RecordWriter, WriteFailure};

impl PortSender {
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
        let (block_ptr, block, len) = loop {
            // Past the largest block, or a block larger than the cap allows
            // (a cap of 0 turns the pool off): in a memfd of its own.
            let log2 = self.pool.borrow().class_for(need);
            let Some(log2) = log2 else {
                return self.send_out_of_line(meta, need, wait, fill, ports, rx);
            };
            let block = match self.lend_block(log2, need, wait, rx) {
                Ok(Some(b)) => b,
                Ok(None) => return self.send_out_of_line(meta, need, wait, fill, ports, rx),
                Err(e) => return Err((e, ports)),
            };
            // SAFETY: the block is `room` bytes of this process's read-write
            // mapping of a pool buffer, lent to this post only: nobody else
            // writes it, and the receiver reads it only after the commit.
            let mut w = unsafe { RecordWriter::slot(block.ptr, block.room) };
            match fill(&mut w) {
                Ok(()) => break (block.ptr, block, w.len()),
                Err(e) => {
                    self.pool.borrow_mut().give_back(block);
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
            let copy: &mut dyn FnMut(&mut RecordWriter) -> Result<(), rancor::Error> = &mut copy;
            let sent = self.send_record(meta, len, wait, copy, ports, rx);
            self.pool.borrow_mut().give_back(block);
            return sent;
        }
        let slot = match self.reserve(POOL_REF, wait, rx) {
            Ok(s) => s,
            Err(e) => {
                self.pool.borrow_mut().give_back(block);
                return Err((e, ports));
            }
        };
        if meta.kind == Kind::Typed {
            self.large_hint.set(len);
        }
        self.publish_pooled(slot, block, len, meta, ports, wait, rx)
    }

    /// Publish a message written into a pool block: send the block's
    /// buffer with the record's attachment if the peer has not got it yet
    /// (and any ports), then commit the record naming the block. On
    /// failure the block goes back to the pool and the ports come back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_pooled(
        &self,
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
            self.pool.borrow_mut().give_back(block);
            return Err((e, ports));
        }
        let announce = self.pool.borrow_mut().take_announcement(key);
        meta.pool = true;
        meta.announce = announce.is_some();
        if announce.is_some() || !ports.is_empty() {
            let att = Attachment {
                ool: None,
                pool: announce,
                ports,
                lost: false,
            };
            if let Err(e) = self.attach(&att, wait, rx) {
                self.end_posting();
                let mut pool = self.pool.borrow_mut();
                if let Some((_, fd)) = att.pool {
                    pool.restore_announcement(key, fd);
                }
                pool.give_back(block);
                return Err((e, att.ports));
            }
        }
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
        Ok(())
    }

    /// A free block of class `log2` (or larger) for a message of `len`
    /// bytes, waiting as `wait` allows: take back released blocks; when
    /// none of the class came, spin for the port's spin time (a reader
    /// about to give one back is cheaper than a new buffer, and keeps the
    /// pool small and hot), then add a buffer if the cap allows, else lend
    /// a free block of a larger class, else sleep until the reader gives a
    /// block back. A class with no block in flight does not spin. `None`
    /// when waiting cannot help (the cap is taken by free buffers of
    /// smaller classes and nothing large enough is lent): the message then
    /// travels out of line.
    pub(super) fn lend_block(
        &self,
        log2: u8,
        len: usize,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<Option<Block>, PostError> {
        let mut spin_until: Option<Instant> = None;
        let mut look_at: Option<Instant> = None;
        loop {
            if let Err(e) = self.check_postable() {
                // Nobody will read from the pool again: free its memory.
                self.pool.borrow_mut().clear();
                return Err(e);
            }
            let mut pool = self.pool.borrow_mut();
            match pool.lend(log2) {
                Ok(Some(b)) => return Ok(Some(b)),
                Ok(None) => {}
                Err(c) => return Err(PostError::Closed(self.corrupt(c))),
            }
            let now = Instant::now();
            let spin_end = *spin_until.get_or_insert_with(|| now + self.shared.spin());
            let may_spin = !matches!(wait, Wait::No) && pool.in_flight_of(log2) > 0;
            if !may_spin || now >= spin_end {
                match pool.grow(log2) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => return Err(PostError::Io(e)),
                }
                if let Some(b) = pool.lend_larger(log2) {
                    return Ok(Some(b));
                }
                if !pool.lent_from(log2) {
                    return Ok(None);
                }
            }
            if matches!(wait, Wait::No) {
                self.wanted_room.set(len);
                return Err(PostError::Full);
            }
            if wait.expired() {
                return Err(PostError::Timeout);
            }
            if now < spin_end {
                drop(pool);
                self.spin_turn(now, &mut look_at)?;
                continue;
            }
            drop(pool);
            // Our peer may itself be waiting for room or blocks we hold.
            if let Some(rx) = rx {
                rx.flush_releases();
            }
            let pool = self.pool.borrow();
            if pool.prepare_wait() {
                // The consumer's close after our announcement would find
                // it; one before, we see here.
                if let Err(e) = self.check_postable() {
                    pool.end_wait();
                    return Err(e);
                }
                drop(pool);
                let r = self.shared.sleep(Half::Sender, wait, false);
                self.pool.borrow().end_wait();
                r.map_err(PostError::Io)?;
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
