//! Posting: reserve, serialize in place, attach descriptors, commit, wake.
//!
//! The work is done by the sending half ([`PortSender`]); a whole
//! [`MessagePort`] passes its receiving half along, so that a post that
//! waits for room first publishes the room this port's own receiving side
//! released (the peer may be waiting for it).

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rkyv::rancor;

use super::TransferError;
use super::recv::LOOK_EVERY;
use super::{Half, MAX_PORTS, MessagePort, PortReceiver, PortSender, Reservation, Wait};
use crate::error::PostError;
use crate::fault;
use crate::shm::layout::{OOL_DESCRIPTOR, OolDescriptor};
use crate::shm::ring::{Corrupt, Kind, RecordMeta, Slot};
use crate::sys;
use crate::wire::attachment::{
    self, Attachment, MAX_ATTACH_BODY, MAX_ATTACH_FDS, MAX_DEPTH, PortParts,
};
use crate::wire::writer::{MAX_MESSAGE_SIZE, Postable, RecordWriter, WriteFailure, fingerprint};

/// The posting API, on [`MessagePort`] and on [`PortSender`] alike: each
/// entry names the method, its parameters, and the internal call (which
/// gets the receiving half, if any, as its last argument).
macro_rules! post_api {
    ($(
        $(#[$doc:meta])*
        fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $ty:ty),*) -> $ret:ty
            => $inner:ident($($call:expr),*);
    )*) => {
        impl MessagePort {
            $(
                $(#[$doc])*
                pub fn $name $(<$g: $bound>)? (&self, $($arg: $ty),*) -> $ret {
                    self.tx.$inner($($call,)* Some(&self.rx))
                }
            )*
        }

        impl PortSender {
            $(
                $(#[$doc])*
                pub fn $name $(<$g: $bound>)? (&self, $($arg: $ty),*) -> $ret {
                    self.$inner($($call,)* None)
                }
            )*
        }
    };
}

post_api! {
    /// Post `value` as a typed message, waiting for room if the ring is
    /// full. The value is serialized straight into shared memory.
    ///
    /// Fails with [`PostError::Closed`] when the peer is gone (the value was
    /// only borrowed: the caller still has it).
    fn post<T: Postable>(value: &T) -> Result<(), PostError>
        => post_typed(value, Wait::Forever);

    /// Post `value` if there is room now; [`PostError::Full`] otherwise.
    fn try_post<T: Postable>(value: &T) -> Result<(), PostError>
        => post_typed(value, Wait::No);

    /// Post `value`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`]).
    fn post_timeout<T: Postable>(value: &T, timeout: Duration) -> Result<(), PostError>
        => post_typed(value, Wait::after(timeout));

    /// Post opaque bytes, waiting for room if the ring is full.
    fn post_bytes(bytes: &[u8]) -> Result<(), PostError>
        => post_raw(bytes, Wait::Forever);

    /// Post opaque bytes if there is room now; [`PostError::Full`] otherwise.
    fn try_post_bytes(bytes: &[u8]) -> Result<(), PostError>
        => post_raw(bytes, Wait::No);

    /// Post opaque bytes, waiting at most `timeout` for room.
    fn post_bytes_timeout(bytes: &[u8], timeout: Duration) -> Result<(), PostError>
        => post_raw(bytes, Wait::after(timeout));

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
    fn post_with_ports<T: Postable>(value: &T, ports: Vec<MessagePort>) -> Result<(), TransferError>
        => transfer_typed(value, ports, Wait::Forever);

    /// `post_with_ports` for raw bytes.
    fn post_bytes_with_ports(bytes: &[u8], ports: Vec<MessagePort>) -> Result<(), TransferError>
        => transfer_raw(bytes, ports, Wait::Forever);

    /// `post_with_ports` without waiting for room ([`PostError::Full`]).
    fn try_post_with_ports<T: Postable>(value: &T, ports: Vec<MessagePort>) -> Result<(), TransferError>
        => transfer_typed(value, ports, Wait::No);

    /// `post_bytes_with_ports` without waiting for room
    /// ([`PostError::Full`]).
    fn try_post_bytes_with_ports(bytes: &[u8], ports: Vec<MessagePort>) -> Result<(), TransferError>
        => transfer_raw(bytes, ports, Wait::No);

    /// Reserve `len` bytes in the ring for a raw message, waiting for room
    /// if the ring is full. Write the payload into
    /// [`Reservation::bytes_mut`], then [`commit`](Reservation::commit) it;
    /// dropping the reservation abandons it and the peer sees nothing.
    ///
    /// Only messages that fit in the ring can be reserved
    /// (`max_inline_payload`); [`PostError::TooLarge`] otherwise. While a
    /// reservation is live, other posts on this port fail with
    /// [`PostError::Reserved`].
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
    fn reserve_bytes(len: usize) -> Result<Reservation<'_>, PostError>
        => reserve_raw(len, Wait::Forever);

    /// `reserve_bytes` if there is room now; [`PostError::Full`] otherwise.
    fn try_reserve_bytes(len: usize) -> Result<Reservation<'_>, PostError>
        => reserve_raw(len, Wait::No);

    /// `reserve_bytes`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`]).
    fn reserve_bytes_timeout(len: usize, timeout: Duration) -> Result<Reservation<'_>, PostError>
        => reserve_raw(len, Wait::after(timeout));
}

impl PortSender {
    fn transfer_typed<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), TransferError> {
        let fill = |w: &mut RecordWriter| self.serialize(value, w);
        self.transfer(typed_meta::<T>(), 0, wait, ports, fill, rx)
    }

    fn transfer_raw(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), TransferError> {
        let fill = |w: &mut RecordWriter| w.put(bytes);
        self.transfer(RAW_META, bytes.len(), wait, ports, fill, rx)
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        ports: Vec<MessagePort>,
        fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), TransferError> {
        let refuse = |error, ports| Err(TransferError { error, ports });
        if ports.iter().any(|p| p.is_peer_of(&self.shared)) {
            return refuse(PostError::PeerInTransfer, ports);
        }
        if ports.len() > MAX_PORTS {
            return refuse(PostError::TooManyPorts, ports);
        }
        // Each port first takes in what its socket holds (as a receive
        // would): its whole queue is then in its inbox, where this sender
        // sees it. The receiver must accept the nesting, and this port's
        // own peer must not be in there: it would travel into its own
        // socket's queue (directly, or inside a port in there), where
        // nobody can ever take it out, and the kernel's collector of
        // unreachable descriptors would close both ends of this channel
        // (ARCHITECTURE.md, failure model).
        let checked = ports.iter().try_for_each(|p| {
            p.take_in().map_err(PostError::Io)?;
            let scan = p.scan_inbox(&self.shared);
            if scan.holds_peer {
                return Err(PostError::PeerInTransfer);
            }
            if scan.depth > MAX_DEPTH {
                return Err(PostError::NestedTooDeep);
            }
            Ok(())
        });
        if let Err(e) = checked {
            return refuse(e, ports);
        }
        meta.nports = ports.len() as u16;
        let parts = ports.into_iter().map(MessagePort::into_parts).collect();
        self.send_record(meta, size_hint, wait, fill, parts, rx)
            .map_err(|(error, parts)| TransferError {
                error,
                ports: reassemble(parts),
            })
    }

    fn serialize<T: Postable>(&self, value: &T, w: &mut RecordWriter) -> Result<(), rancor::Error> {
        let mut arena = self.arena.borrow_mut();
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, w, arena.acquire())
            .map(|_| ())
    }

    fn post_typed<T: Postable>(
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

    fn post_raw(
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
    fn send_record(
        &self,
        meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        if let Err(e) = check_size(size_hint)
            .and_then(|()| self.check_not_reserved())
            .and_then(|()| self.check_postable())
        {
            return Err((e, ports));
        }
        let max = self.max_inline_payload();
        let mut need = size_hint;
        while need <= max {
            let slot = match self.reserve(need, wait, rx) {
                Ok(s) => s,
                Err(e) => return Err((e, ports)),
            };
            // SAFETY: the slot's payload area is `room` bytes of ring memory
            // that only this producer writes until it commits.
            let mut w = unsafe { RecordWriter::slot(slot.payload, slot.room) };
            match fill(&mut w) {
                Ok(()) => {
                    let len = w.len();
                    if !ports.is_empty() {
                        let att = Attachment {
                            ool: None,
                            ports,
                            lost: false,
                        };
                        if let Err(e) = self.attach(&att, wait, rx) {
                            return Err((e, att.ports));
                        }
                    }
                    self.commit(slot, len, meta);
                    return Ok(());
                }
                Err(e) => match w.wanted() {
                    // It did not fit: ask for at least what it wanted.
                    Some(wanted) => need = wanted.max(need + 1),
                    None => return Err((PostError::Serialize(e), ports)),
                },
            }
        }
        self.send_out_of_line(meta, need, wait, fill, ports, rx)
    }

    /// A message too large for the ring: serialize it into its own memfd,
    /// seal it, send it (with any ports) as the record's attachment, then
    /// commit a small record pointing to it. A message that would grow past
    /// [`MAX_MESSAGE_SIZE`] is [`PostError::TooLarge`]; a failed write to
    /// the memfd is [`PostError::Io`].
    fn send_out_of_line(
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

    /// Send a record's attachment, between the two fault-injection points
    /// of the send path.
    fn attach(
        &self,
        att: &Attachment,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        fault::reach(fault::Point::BeforeAttachment);
        self.send_attachment(att, wait, rx)?;
        fault::reach(fault::Point::AfterAttachment);
        Ok(())
    }

    /// Send an attachment: one socket message, or its parts back to back
    /// (`crate::wire::attachment`). Once a part is on the socket the rest must
    /// follow whatever `wait` says (the receiver would otherwise hold half
    /// an attachment, and copies of the descriptors in it): later parts
    /// wait for room as long as it takes. Only the end of the channel stops
    /// them (`Closed`: the peer hung up, broke the protocol, or stopped
    /// reading — then the parts sent stay in its socket, holding copies of
    /// the descriptors in them, until its port is gone). A system call
    /// failing between parts leaves the channel out of step: this port is
    /// then broken (`ProtocolError`), and the error returned.
    pub(super) fn send_attachment(
        &self,
        att: &Attachment,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        let mut body = Vec::new();
        let mut fds = Vec::new();
        att.encode(&mut body, &mut fds);
        if body.len() > MAX_ATTACH_BODY || fds.len() > MAX_ATTACH_FDS {
            // More than a receiver accepts in one attachment.
            return Err(PostError::TooManyPorts);
        }
        for (i, (part, part_fds, last)) in attachment::parts(&body, &fds).enumerate() {
            if i == 0 {
                self.send_part(part, part_fds, last, wait, rx)?;
                continue;
            }
            fault::reach(fault::Point::BetweenParts);
            match self.send_part(part, part_fds, last, Wait::Forever, rx) {
                Ok(()) => {}
                Err(e @ PostError::Closed(_)) => return Err(e),
                Err(e) => {
                    let _ = self.corrupt(Corrupt("an attachment could not be sent whole"));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Send one socket message of an attachment, waiting for room as
    /// `wait` allows, or until the peer is gone or stopped reading.
    fn send_part(
        &self,
        body: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
        last: bool,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        loop {
            match sys::socket::send_attachment(&self.shared.sock, body, fds, last, false) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The peer has not taken earlier attachments in yet.
                    if matches!(wait, Wait::No) {
                        return Err(PostError::Full);
                    }
                    if wait.expired() {
                        return Err(PostError::Timeout);
                    }
                    // A peer that stopped reading takes nothing in: do not
                    // wait for it.
                    self.check_postable()?;
                    if let Some(rx) = rx {
                        // Our peer may be waiting for room we released.
                        rx.flush_releases();
                    }
                    // Until the socket takes messages again (or the peer
                    // goes): takes in what it holds meanwhile.
                    self.shared
                        .sleep(Half::Sender, wait, true)
                        .map_err(PostError::Io)?;
                    self.check_postable()?;
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.shared.hung_up.store(true, Ordering::Release);
                    return Err(PostError::Closed(self.peer_gone_reason()));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    return Err(PostError::TooManyPorts);
                }
                Err(e) => return Err(PostError::Io(e)),
            }
        }
    }

    /// Publish a reserved record and wake the peer if it sleeps. This
    /// cannot fail: once the record is published the post has succeeded,
    /// even if the peer has read it and gone meanwhile (the wake-up then
    /// finds the socket closed; the hang-up is noted for the next call).
    /// Whether the peer is still there is checked before, by the callers.
    #[inline]
    pub(super) fn commit(&self, slot: Slot, len: usize, meta: RecordMeta) {
        let wake = self.tx.borrow_mut().commit(slot, len, meta);
        if wake {
            let _ = self.wake_peer();
        }
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
                // Only the socket learns of a peer killed while we spin.
                let look = look_at.get_or_insert(now + LOOK_EVERY);
                if now >= *look {
                    self.drain_socket().map_err(PostError::Io)?;
                    *look = now + LOOK_EVERY;
                }
                std::hint::spin_loop();
                continue;
            }
            // Our peer may itself be waiting for room we released.
            if let Some(rx) = rx {
                rx.flush_releases();
            }
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

/// Refuse a message of `len` bytes if no message can be that large.
fn check_size(len: usize) -> Result<(), PostError> {
    if len > MAX_MESSAGE_SIZE {
        return Err(PostError::TooLarge {
            len,
            max: MAX_MESSAGE_SIZE,
        });
    }
    Ok(())
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

pub(super) const RAW_META: RecordMeta = RecordMeta {
    kind: Kind::Raw,
    out_of_line: false,
    nports: 0,
    fingerprint: 0,
};

fn typed_meta<T: Postable>() -> RecordMeta {
    RecordMeta {
        kind: Kind::Typed,
        out_of_line: false,
        nports: 0,
        fingerprint: fingerprint::<T>(),
    }
}

/// Rebuild ports that were taken apart for a transfer that failed. Their
/// segments are still mapped here: every one comes back, in order.
fn reassemble(parts: Vec<PortParts>) -> Vec<MessagePort> {
    parts.into_iter().filter_map(PortParts::rebuild).collect()
}
