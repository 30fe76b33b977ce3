//! Posting: reserve, serialize in place, attach descriptors, commit, wake.
//!
//! The work is done by the sending half ([`PortSender`]); a whole
//! [`MessagePort`] passes its receiving half along, so that a post that
//! waits for room first publishes the room this port's own receiving side
//! released (the peer may be waiting for it).

use std::time::{Duration, Instant};

use rkyv::rancor;

use super::TransferError;
use super::recv::LOOK_EVERY;
use super::{Half, MessagePort, PortReceiver, PortSender, Reservation, Wait};
use crate::error::{CloseReason, PostError};
use crate::shm::pool::MAX_POOLED;
use crate::shm::ring::{Kind, RecordMeta, Slot};
use crate::wire::attachment::{Attachment, PortParts};
use crate::wire::writer::{MAX_MESSAGE_SIZE, Postable, RecordWriter, fingerprint};

// The posting API, written out on the port and on its sending half; each
// method is one call of the internal function that does the work (which gets
// the receiving half, if any, as its last argument, to publish released room
// before it waits).
impl MessagePort {
    /// Post `value` as a typed message, waiting for room if the ring is
    /// full. The value is serialized straight into shared memory.
    ///
    /// Fails with [`PostError::Closed`] when the peer is gone (the value was
    /// only borrowed: the caller still has it).
    pub fn post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.tx().post_typed(value, Wait::Forever, Some(self.rx()))
    }

    /// Post `value` if there is room now; [`PostError::Full`] otherwise.
    pub fn try_post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.tx().post_typed(value, Wait::No, Some(self.rx()))
    }

    /// Post `value`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`]).
    pub fn post_timeout<T: Postable>(&self, value: &T, timeout: Duration) -> Result<(), PostError> {
        self.tx()
            .post_typed(value, Wait::after(timeout), Some(self.rx()))
    }

    /// Post opaque bytes, waiting for room if the ring is full.
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.tx().post_raw(bytes, Wait::Forever, Some(self.rx()))
    }

    /// Post opaque bytes if there is room now; [`PostError::Full`] otherwise.
    pub fn try_post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.tx().post_raw(bytes, Wait::No, Some(self.rx()))
    }

    /// Post opaque bytes, waiting at most `timeout` for room.
    pub fn post_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), PostError> {
        self.tx()
            .post_raw(bytes, Wait::after(timeout), Some(self.rx()))
    }

    /// Post `value` with `ports` attached (like `postMessage(message,
    /// [ports])`): the receiver takes them from the message, in the same
    /// order, as working ports ([`Message::take_ports`](crate::Message::take_ports)).
    /// Messages already queued on a transferred port, and ports inside
    /// them, move with it.
    ///
    /// Atomic: on any error nothing is sent and every port comes back in
    /// the error. Refused: this port's own peer, in the list or queued on
    /// a port in it at any depth ([`PostError::PeerInTransfer`]: it would
    /// travel into its own queue and the channel be lost); ports nested
    /// deeper than a receiver accepts ([`PostError::NestedTooDeep`]); more
    /// than [`MAX_PORTS`](crate::MAX_PORTS) ports, or queues larger than a
    /// receiver accepts in one message ([`PostError::TooManyPorts`]). To
    /// check, each port first takes in what its socket holds (as a receive
    /// would); a port comes back with that in its queue.
    ///
    /// Any queue moves, however many descriptors it holds: past what one
    /// socket message carries (253 descriptors, 4 KiB), it goes in several,
    /// and once the first is sent the others follow even past a `try_` or
    /// timed post's wait.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let (mine, theirs) = MessageChannel::new()?.into_ports();
    /// a.post_with_ports(&"here is a port".to_string(), vec![theirs])?;
    /// let mut msg = b.recv()?;
    /// let got = msg.take_ports()?.pop().unwrap();
    /// mine.post_bytes(b"hello")?;
    /// assert_eq!(got.recv()?.bytes(), b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.tx()
            .transfer_typed(value, ports, Wait::Forever, Some(self.rx()))
    }

    /// `post_with_ports` for raw bytes.
    pub fn post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.tx()
            .transfer_raw(bytes, ports, Wait::Forever, Some(self.rx()))
    }

    /// `post_with_ports` without waiting for room ([`PostError::Full`]).
    pub fn try_post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.tx()
            .transfer_typed(value, ports, Wait::No, Some(self.rx()))
    }

    /// `post_bytes_with_ports` without waiting for room
    /// ([`PostError::Full`]).
    pub fn try_post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.tx()
            .transfer_raw(bytes, ports, Wait::No, Some(self.rx()))
    }

    /// `post_with_ports`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`], every port handed back).
    pub fn post_with_ports_timeout<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        self.tx()
            .transfer_typed(value, ports, Wait::after(timeout), Some(self.rx()))
    }

    /// `post_bytes_with_ports`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`], every port handed back).
    pub fn post_bytes_with_ports_timeout(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        self.tx()
            .transfer_raw(bytes, ports, Wait::after(timeout), Some(self.rx()))
    }

    /// Reserve `len` bytes for a raw message, waiting for room if the ring
    /// (or, for a message larger than
    /// [`max_inline_payload`](Self::max_inline_payload), the port's pool)
    /// is full. Write the payload into [`Reservation::bytes_mut`], then
    /// [`commit`](Reservation::commit) it; dropping the reservation
    /// abandons it and the peer sees nothing. A large message is written in
    /// place in the pool block the receiver will read it from: no copy at
    /// all.
    ///
    /// Up to the largest pool block (64 MiB) can be reserved;
    /// [`PostError::TooLarge`] beyond. While a reservation is live, other
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
        self.tx().reserve_raw(len, Wait::Forever, Some(self.rx()))
    }

    /// `reserve_bytes` if there is room now; [`PostError::Full`] otherwise.
    pub fn try_reserve_bytes(&self, len: usize) -> Result<Reservation<'_>, PostError> {
        self.tx().reserve_raw(len, Wait::No, Some(self.rx()))
    }

    /// `reserve_bytes`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`]).
    pub fn reserve_bytes_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<Reservation<'_>, PostError> {
        self.tx()
            .reserve_raw(len, Wait::after(timeout), Some(self.rx()))
    }
}

impl PortSender {
    /// [`MessagePort::post`], from the sending half.
    pub fn post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.post_typed(value, Wait::Forever, None)
    }

    /// [`MessagePort::try_post`], from the sending half.
    pub fn try_post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.post_typed(value, Wait::No, None)
    }

    /// [`MessagePort::post_timeout`], from the sending half.
    pub fn post_timeout<T: Postable>(&self, value: &T, timeout: Duration) -> Result<(), PostError> {
        self.post_typed(value, Wait::after(timeout), None)
    }

    /// [`MessagePort::post_bytes`], from the sending half.
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::Forever, None)
    }

    /// [`MessagePort::try_post_bytes`], from the sending half.
    pub fn try_post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::No, None)
    }

    /// [`MessagePort::post_bytes_timeout`], from the sending half.
    pub fn post_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::after(timeout), None)
    }

    /// [`MessagePort::post_with_ports`], from the sending half.
    pub fn post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer_typed(value, ports, Wait::Forever, None)
    }

    /// [`MessagePort::post_bytes_with_ports`], from the sending half.
    pub fn post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer_raw(bytes, ports, Wait::Forever, None)
    }

    /// [`MessagePort::try_post_with_ports`], from the sending half.
    pub fn try_post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer_typed(value, ports, Wait::No, None)
    }

    /// [`MessagePort::try_post_bytes_with_ports`], from the sending half.
    pub fn try_post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer_raw(bytes, ports, Wait::No, None)
    }

    /// [`MessagePort::post_with_ports_timeout`], from the sending half.
    pub fn post_with_ports_timeout<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        self.transfer_typed(value, ports, Wait::after(timeout), None)
    }

    /// [`MessagePort::post_bytes_with_ports_timeout`], from the sending half.
    pub fn post_bytes_with_ports_timeout(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        self.transfer_raw(bytes, ports, Wait::after(timeout), None)
    }

    /// [`MessagePort::reserve_bytes`], from the sending half.
    pub fn reserve_bytes(&self, len: usize) -> Result<Reservation<'_>, PostError> {
        self.reserve_raw(len, Wait::Forever, None)
    }

    /// [`MessagePort::try_reserve_bytes`], from the sending half.
    pub fn try_reserve_bytes(&self, len: usize) -> Result<Reservation<'_>, PostError> {
        self.reserve_raw(len, Wait::No, None)
    }

    /// [`MessagePort::reserve_bytes_timeout`], from the sending half.
    pub fn reserve_bytes_timeout(
        &self,
        len: usize,
        timeout: Duration,
    ) -> Result<Reservation<'_>, PostError> {
        self.reserve_raw(len, Wait::after(timeout), None)
    }
}

impl PortSender {
    pub(super) fn serialize<T: Postable>(
        &self,
        value: &T,
        w: &mut RecordWriter,
    ) -> Result<(), rancor::Error> {
        let mut arena = self.arena.borrow_mut();
        let arena = arena.get_or_insert_with(rkyv::ser::allocator::Arena::new);
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, w, arena.acquire())
            .map(|_| ())
    }

    pub(super) fn post_typed<T: Postable>(
        &self,
        value: &T,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        self.send_record(
            typed_meta::<T>(),
            0,
            wait,
            |w| self.serialize(value, w),
            Vec::new(),
            rx,
        )
        .map_err(|(e, _)| e)
    }

    pub(super) fn post_raw(
        &self,
        bytes: &[u8],
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        let fill = |w: &mut RecordWriter| w.put(bytes);
        self.send_record(RAW_META, bytes.len(), wait, fill, Vec::new(), rx)
            .map_err(|(e, _)| e)
    }

    /// Write one record: reserve, fill in place, send the attachment (if
    /// ports travel), commit, wake the peer if it sleeps. `size_hint` is a
    /// known lower bound on the payload size; one over [`MAX_MESSAGE_SIZE`]
    /// is refused before anything is reserved or allocated. On failure
    /// nothing was committed and the ports' parts come back.
    #[inline]
    pub(super) fn send_record(
        &self,
        meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        let mut r = self.send_record_once(meta, size_hint, wait, &mut fill, ports, rx);
        // The channel moved under a post with descriptors: follow the
        // move, then post there (once is enough; a second move cannot
        // begin before this end takes up the first).
        for _ in 0..2 {
            match r {
                Err((e, ports)) if super::attach::is_moving(&e) => {
                    if let Err(reason) = self.follow_now() {
                        return Err((PostError::Closed(reason), ports));
                    }
                    r = self.send_record_once(meta, size_hint, wait, &mut fill, ports, rx);
                }
                r => return r,
            }
        }
        r
    }

    #[inline]
    fn send_record_once(
        &self,
        meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        fill: &mut impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        if let Err(e) = check_size(size_hint)
            .and_then(|()| self.check_not_reserved())
            .and_then(|()| self.check_postable())
            .and_then(|()| match ports.is_empty() {
                true => Ok(()),
                false => self.off_link(rx),
            })
        {
            return Err((e, ports));
        }
        let max = self.max_inline_payload().min(self.inline_limit.get());
        let mut need = size_hint;
        // A typed value of unknown size after one that went outside the
        // ring is likely as large again: serialize it there at once, rather
        // than into the ring first (a message that turns out small is still
        // posted inside the ring).
        let hint = self.large_hint.get();
        if size_hint == 0 && hint > max {
            need = hint;
        }
        match self.fill_slot(need, 0, max, wait, rx, fill) {
            Ok(Ok((slot, len))) => {
                if !ports.is_empty() {
                    let att = Attachment {
                        ool: None,
                        pool: None,
                        ports,
                        lost: false,
                    };
                    if let Err(e) = self.attach(&att, wait, rx) {
                        return Err((e, att.ports));
                    }
                }
                self.commit(slot, len, meta);
                if meta.kind == Kind::Typed {
                    self.large_hint.set(0);
                }
                return Ok(());
            }
            // Larger than the ring takes: in the pool (a link's, for a
            // port on one), or out of line (off the link first).
            Ok(Err(larger)) => need = larger,
            Err(e) => return Err((e, ports)),
        }
        if need <= MAX_POOLED {
            return self.send_pooled(meta, need, max, wait, fill, ports, rx);
        }
        if let Err(e) = self.off_link(rx) {
            return Err((e, ports));
        }
        self.send_out_of_line(meta, need, wait, fill, ports, rx)
    }

    /// Serialize a message into a ring slot, after `prefix` bytes (a
    /// multiple of 32, left for the caller to write), asking for a larger
    /// slot until it fits. `Ok(Ok((slot, len)))`: written, `len` bytes with
    /// the prefix, not committed; `Ok(Err(need))`: it takes more than
    /// `max` bytes with the prefix (`need`, a lower bound): it does not
    /// belong in the ring, and nothing was written that counts.
    #[inline]
    pub(super) fn fill_slot<F>(
        &self,
        mut need: usize,
        prefix: usize,
        max: usize,
        wait: Wait,
        rx: Option<&PortReceiver>,
        fill: &mut F,
    ) -> Result<Result<(Slot, usize), usize>, PostError>
    where
        F: FnMut(&mut RecordWriter) -> Result<(), rancor::Error> + ?Sized,
    {
        while need <= max {
            let slot = self.reserve(need, wait, rx)?;
            // SAFETY: the slot's payload area is `room >= need >= prefix`
            // bytes of ring memory that only this producer writes until it
            // commits (no more than `max` of them: a larger message goes
            // elsewhere anyway); the message goes after the prefix, a
            // multiple of 32, so the ring's alignment holds.
            let mut w = unsafe {
                RecordWriter::slot(slot.payload.add(prefix), slot.room.min(max) - prefix)
            };
            match fill(&mut w) {
                // It fit in the slot but is over the inline limit: out of
                // line (the slot is left uncommitted, as when it is too small).
                Ok(()) if w.len() + prefix > max => return Ok(Err(w.len() + prefix)),
                Ok(()) => return Ok(Ok((slot, prefix + w.len()))),
                Err(e) => match w.wanted() {
                    // It did not fit: ask for at least what it wanted.
                    Some(wanted) => need = (wanted + prefix).max(need + 1),
                    None => return Err(PostError::Serialize(e)),
                },
            }
        }
        Ok(Err(need))
    }

    /// Publish a reserved record and wake the peer if it sleeps. This
    /// cannot fail: once the record is published the post has succeeded,
    /// even if the peer has read it and gone meanwhile (the wake-up then
    /// finds the socket closed; the hang-up is noted for the next call).
    /// Whether the peer is still there is checked before, by the callers.
    #[inline]
    pub(super) fn commit(&self, slot: Slot, len: usize, meta: RecordMeta) {
        let wake = self.tx.borrow_mut().commit(slot, len, meta);
        self.end_posting();
        if wake {
            let _ = self.wake_peer();
        }
        if self.tx.borrow().moved_record().is_some() {
            // The consumer moved the channel off its link as we posted:
            // go there, with this record if it did not take it. A peer
            // gone meanwhile is seen by the next call.
            let _ = self.follow_now();
        }
    }

    /// Follow the consumer's move of the channel (to its new segment).
    pub(super) fn follow_now(&self) -> Result<(), CloseReason> {
        let from = self.tx.borrow().memory().segment().clone();
        self.shared.take_up_move(&from)?;
        self.follow()
    }

    /// A slot with room for at least `need` payload bytes, waiting as `wait`
    /// allows: spin, then sleep on the socket until the consumer frees room.
    #[inline]
    pub(super) fn reserve(
        &self,
        need: usize,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<Slot, PostError> {
        let mut spin_until: Option<Instant> = None;
        let mut look_at: Option<Instant> = None;
        loop {
            if self.tx.borrow().consumer_moved() {
                self.follow_now().map_err(PostError::Closed)?;
            }
            let r = self.tx.borrow_mut().reserve(need);
            match r {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => {}
                Err(c) => return Err(PostError::Closed(self.corrupt(c))),
            }
            self.check_postable()?;
            if matches!(wait, Wait::No) {
                self.wanted_room.set(need);
                return Err(PostError::Full);
            }
            if wait.expired() {
                return Err(PostError::Timeout);
            }
            let now = Instant::now();
            let spin_end = *spin_until.get_or_insert_with(|| now + self.shared.spin());
            if now < spin_end {
                self.spin_turn(now, &mut look_at)?;
                continue;
            }
            // Our peer may itself be waiting for room we released.
            if let Some(rx) = rx {
                rx.flush_releases();
            }
            let word = self.shared.bell_word().map_err(PostError::Io)?;
            self.tx.borrow().set_bell(word);
            let sleep = self
                .tx
                .borrow_mut()
                .prepare_wait(need)
                .map_err(|c| PostError::Closed(self.corrupt(c)))?;
            if sleep {
                let r = self.shared.sleep(Half::Sender, wait, false);
                self.tx.borrow().end_wait();
                r.map_err(PostError::Io)?;
            }
        }
    }
}

impl PortSender {
    /// Before descriptors travel from a port on a link: move its channel
    /// off the link (a whole port's halves; split halves are never on one).
    pub(super) fn off_link(&self, rx: Option<&PortReceiver>) -> Result<(), PostError> {
        if self.shared.link_only().is_none() {
            return Ok(());
        }
        match rx {
            Some(rx) => super::promote::leave_link_or_io(self, rx).map_err(|e| match e {
                super::promote::Leave::Closed(reason) => PostError::Closed(reason),
                // Out of descriptors: nothing happened, the port is whole.
                super::promote::Leave::Io(e) => PostError::Io(e),
            }),
            None => Err(PostError::Closed(CloseReason::ProtocolError)),
        }
    }

    /// One turn of a spinning wait for room or a block. Every
    /// [`LOOK_EVERY`] it looks at the socket: only the socket learns of a
    /// peer killed while we spin.
    pub(super) fn spin_turn(
        &self,
        now: Instant,
        look_at: &mut Option<Instant>,
    ) -> Result<(), PostError> {
        let look = look_at.get_or_insert(now + LOOK_EVERY);
        if now >= *look {
            self.drain_socket().map_err(PostError::Io)?;
            *look = now + LOOK_EVERY;
        }
        std::hint::spin_loop();
        Ok(())
    }
}

/// Refuse a message of `len` bytes if no message can be that large.
pub(super) fn check_size(len: usize) -> Result<(), PostError> {
    if len > MAX_MESSAGE_SIZE {
        return Err(PostError::TooLarge {
            len,
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(())
}

pub(super) const RAW_META: RecordMeta = RecordMeta {
    kind: Kind::Raw,
    out_of_line: false,
    pool: false,
    announce: false,
    kits: false,
    nports: 0,
    fingerprint: 0,
};

pub(super) fn typed_meta<T: Postable>() -> RecordMeta {
    RecordMeta {
        kind: Kind::Typed,
        out_of_line: false,
        pool: false,
        announce: false,
        kits: false,
        nports: 0,
        fingerprint: fingerprint::<T>(),
    }
}
