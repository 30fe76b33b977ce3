//! Zero-copy posting of raw bytes: reserve room in the ring, write into it
//! in place, commit.

use super::{PortReceiver, PortSender, Wait};
use crate::error::PostError;
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
        if len > max {
            return Err(PostError::TooLarge { len, max });
        }
        self.check_postable()?;
        let slot = self.reserve(len, wait, rx)?;
        self.reserving.set(true);
        Ok(Reservation {
            port: self,
            slot,
            len,
        })
    }
}

/// Room for one raw message, reserved in the ring by
/// [`MessagePort::reserve_bytes`](crate::MessagePort::reserve_bytes). The bytes are shared memory the peer
/// cannot see until [`commit`](Reservation::commit); dropping the
/// reservation abandons it.
#[must_use = "a reservation that is not committed sends nothing"]
pub struct Reservation<'p> {
    port: &'p PortSender,
    slot: Slot,
    len: usize,
}

impl Reservation<'_> {
    /// The reserved payload, `len` bytes, to be written in place. Its
    /// initial contents are unspecified (old ring bytes), never
    /// uninitialized memory.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the slot's payload area holds `slot.room >= len` bytes of
        // ring memory that only this producer touches until it commits
        // (RingMemory guarantee 2: no Rust reference covers it elsewhere),
        // and the `reserving` flag keeps every other post on this port out
        // while `self` lives. The bytes are initialized (the segment is a
        // zero-filled memfd).
        unsafe { std::slice::from_raw_parts_mut(self.slot.payload.as_ptr(), self.len) }
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
    pub fn commit_len(self, len: usize) -> Result<(), PostError> {
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
        port.commit(slot, len, super::send::RAW_META);
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.port.reserving.set(false);
    }
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .finish()
    }
}
