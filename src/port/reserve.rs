//! Zero-copy posting of raw bytes: reserve room in the ring, write into it
//! in place, commit.

use std::time::Duration;

use super::{MessagePort, Wait};
use crate::error::PostError;
use crate::ring::Slot;

impl MessagePort {
    /// Reserve `len` bytes in the ring for a raw message, waiting for room
    /// if the ring is full. Write the payload into
    /// [`Reservation::bytes_mut`], then [`commit`](Reservation::commit) it;
    /// dropping the reservation abandons it and the peer sees nothing.
    ///
    /// Only messages that fit in the ring can be reserved
    /// ([`max_inline_payload`](MessagePort::max_inline_payload));
    /// [`PostError::TooLarge`] otherwise. While a reservation is live, other
    /// posts on this port fail with [`PostError::Reserved`].
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let mut r = a.reserve_bytes(5)?;
    /// r.bytes_mut().copy_from_slice(b"hello");
    /// r.commit()?;
    /// assert_eq!(b.recv()?.bytes(), b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve_bytes(&self, len: usize) -> Result<Reservation<'_>, PostError> {
        self.reserve_raw(len, Wait::Forever)
    }

    /// [`reserve_bytes`](MessagePort::reserve_bytes) if there is room now;
    /// [`PostError::Full`] otherwise.
    pub fn try_reserve_bytes(&self, len: usize) -> Result<Reservation<'_>, PostError> {
        self.reserve_raw(len, Wait::No)
    }

    /// [`reserve_bytes`](MessagePort::reserve_bytes), waiting at most
    /// `timeout` for room ([`PostError::Timeout`]).
    pub fn reserve_bytes_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<Reservation<'_>, PostError> {
        self.reserve_raw(len, Wait::after(timeout))
    }

    fn reserve_raw(&self, len: usize, wait: Wait) -> Result<Reservation<'_>, PostError> {
        self.check_not_reserved()?;
        let max = self.max_inline_payload();
        if len > max {
            return Err(PostError::TooLarge { len, max });
        }
        self.check_postable()?;
        let slot = self.reserve(len, wait)?;
        self.reserving.set(true);
        Ok(Reservation {
            port: self,
            slot,
            len,
        })
    }
}

/// Room for one raw message, reserved in the ring by
/// [`MessagePort::reserve_bytes`]. The bytes are shared memory the peer
/// cannot see until [`commit`](Reservation::commit); dropping the
/// reservation abandons it.
#[must_use = "a reservation that is not committed sends nothing"]
pub struct Reservation<'p> {
    port: &'p MessagePort,
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
    pub fn commit(self) -> Result<(), PostError> {
        let len = self.len;
        self.commit_len(len)
    }

    /// Publish only the first `len` reserved bytes (`len` is clamped to
    /// the reserved length), for a writer that learns its size as it goes.
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
        port.commit(slot, len, super::send::RAW_META)
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
