//! Zero-copy posting of raw bytes: reserve room in the ring (or, for a
//! message too large for it, a block of the port's pool and the ring room
//! of the record that will name it), write into it in place, commit.

use core::ptr::NonNull;

use super::large::SendPool;
use super::{PortReceiver, PortSender, Wait};
use crate::error::PostError;
use crate::shm::layout::POOL_REF;
use crate::shm::pool::writer::Block;
use crate::shm::ring::Slot;

impl PortSender {
    pub(super) fn reserve_raw(
        &self,
        len: usize,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<Reservation<'_>, PostError> {
        self.check_not_reserved()?;
        let max = self.max_inline_payload();
        loop {
            let mut pool = None;
            let block = if len <= max {
                None
            } else {
                let p = pool.insert(self.send_pool()?);
                let Some(log2) = p.with(|p| p.class_for(len)) else {
                    return Err(PostError::TooLarge {
                        len,
                        max: self.max_reservation(),
                    });
                };
                // `lend_block` checks first that the peer can still read.
                match self.lend_block(p, log2, len, wait, rx)? {
                    Some(b) => Some(b),
                    // A post would go out of line; a reservation needs the
                    // memory to write into.
                    None => {
                        return Err(PostError::Io(std::io::Error::new(
                            std::io::ErrorKind::OutOfMemory,
                            "the port's pool is at its cap, held by smaller blocks",
                        )));
                    }
                }
            };
            let need = if block.is_some() { POOL_REF } else { len };
            let slot = self
                .check_postable()
                .and_then(|()| self.reserve(need, wait, rx));
            let give_back = |block: Option<Block>, pool: &Option<SendPool<'_>>| {
                if let (Some(b), Some(p)) = (block, pool) {
                    p.with(|p| p.give_back(b));
                }
            };
            let slot = match slot {
                Ok(slot) => slot,
                Err(e) => {
                    give_back(block, &pool);
                    return Err(e);
                }
            };
            if pool.as_ref().is_some_and(|p| self.left_link_pool(p)) {
                // The wait for room followed the peer's move off the link:
                // a block of the channel's own pool, now.
                give_back(block, &pool);
                continue;
            }
            self.reserving.set(true);
            return Ok(Reservation {
                port: self,
                slot,
                len,
                block,
                pool,
            });
        }
    }
}

/// Room for one raw message, reserved by
/// [`MessagePort::reserve_bytes`](crate::MessagePort::reserve_bytes): in
/// the ring, or for a message too large for it, in a block of the port's
/// pool. The bytes are shared memory the peer cannot see until
/// [`commit`](Reservation::commit); dropping the reservation abandons it.
#[must_use = "a reservation that is not committed sends nothing"]
pub struct Reservation<'p> {
    port: &'p PortSender,
    /// The ring slot of the message, or of the record naming `block`.
    slot: Slot,
    len: usize,
    /// The pool block the message goes in, if it is too large for the ring.
    block: Option<Block>,
    /// The pool the block is lent from.
    pool: Option<SendPool<'p>>,
}

impl Reservation<'_> {
    /// The reserved payload, `len` bytes, to be written in place. Its
    /// initial contents are unspecified (old ring or pool bytes), never
    /// uninitialized memory.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let ptr: NonNull<u8> = match &self.block {
            Some(b) => b.ptr,
            None => self.slot.payload,
        };
        // SAFETY: the slot's payload area holds `slot.room >= len` bytes of
        // ring memory that only this producer touches until it commits
        // (RingMemory guarantee 2: no Rust reference covers it elsewhere),
        // or the pool block holds `room >= len` bytes (its class fits `len`)
        // of this process's writable mapping, lent to this reservation
        // alone; the `reserving` flag keeps every other post on this port
        // out while `self` lives. The bytes are initialized (memfds start
        // zero-filled).
        unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len) }
    }

    /// Reserved length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the reservation empty (zero bytes)?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Publish all reserved bytes as one raw message.
    ///
    /// As for a post, `Ok` means the message is published: the peer reads
    /// it unless it goes first (a peer gone after the publication is
    /// reported by the next post or reservation).
    ///
    /// # Errors
    /// [`PostError::Closed`] with the reason when the peer is known to be
    /// gone at the commit (it closed, or stopped receiving, or was seen to
    /// die or break the protocol since the reservation was made), exactly
    /// as [`post_bytes`](crate::MessagePort::post_bytes) would fail: nothing
    /// is published and the reservation is abandoned (its bytes live in
    /// the ring, which nobody reads any more). No other error is possible.
    ///
    /// ```
    /// use shmport::{CloseReason, MessageChannel, PostError};
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let mut r = a.reserve_bytes(2)?;
    /// r.bytes_mut().copy_from_slice(b"hi");
    /// drop(b);
    /// assert!(matches!(r.commit(), Err(PostError::Closed(CloseReason::Closed))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(self) -> Result<(), PostError> {
        let len = self.len;
        self.commit_len(len)
    }

    /// Publish only the first `len` reserved bytes (`len` is clamped to
    /// the reserved length), for a writer that learns its size as it goes.
    /// Fails as [`commit`](Self::commit) does.
    pub fn commit_len(mut self, len: usize) -> Result<(), PostError> {
        let len = len.min(self.len);
        let port = self.port;
        // The payload pointer stays valid: `slot` owns nothing, and `self`
        // (whose Drop clears the flag) lives until the end of this call.
        let slot = Slot {
            pos: self.slot.pos,
            payload: self.slot.payload,
            room: self.slot.room,
        };
        port.check_postable()?;
        let (Some(block), Some(pool)) = (self.block.take(), self.pool.take()) else {
            port.commit(slot, len, super::send::RAW_META);
            return Ok(());
        };
        // The socket lacks room for the block's buffer (sent with its
        // first record) only while the peer has not taken in earlier
        // attachments: wait for it; only the peer's end stops the wait,
        // and then the commit fails as documented.
        port.publish_pooled(
            &pool,
            slot,
            block,
            len,
            super::send::RAW_META,
            Vec::new(),
            Wait::Forever,
            None,
        )
        .map_err(|(e, _)| e)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.port.reserving.set(false);
        if let (Some(block), Some(pool)) = (self.block.take(), &self.pool) {
            pool.with(|p| p.give_back(block));
        }
    }
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .finish()
    }
}
