//! A port: one end of a channel.

use core::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::rancor;
use rkyv::ser::allocator::Arena;

use crate::error::{CloseReason, PostError, RecvError, TransferError};
use crate::layout::OOL_DESCRIPTOR;
use crate::message::{Body, Message};
use crate::ring::{Barriers, Consumer, Corrupt, Kind, Producer, Record, RecordMeta, Slot};
use crate::segment::{Segment, SegmentRing};
use crate::ser::{Postable, RecordWriter, fingerprint};
use crate::sys::{self, Mapping, socket::Incoming};
use crate::transfer::{Attachment, PortParts, SegmentRef};

/// How long a blocking call spins before it sleeps, unless configured.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// Which side of the segment a port owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Writes ring 0, reads ring 1.
    A,
    /// Writes ring 1, reads ring 0.
    B,
}

impl Side {
    fn rings(self) -> (usize, usize) {
        match self {
            Side::A => (0, 1),
            Side::B => (1, 0),
        }
    }
}

/// How long an operation may wait.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Not at all (`try_*`).
    No,
    /// Until this instant.
    Until(Instant),
    /// For ever.
    Forever,
}

impl Wait {
    fn after(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(t) => Wait::Until(t),
            None => Wait::Forever,
        }
    }

    /// Time left; `None` means no limit.
    fn remaining(self) -> Option<Duration> {
        match self {
            Wait::No => Some(Duration::ZERO),
            Wait::Until(t) => Some(t.saturating_duration_since(Instant::now())),
            Wait::Forever => None,
        }
    }

    fn expired(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

/// One end of a channel: post messages to the peer port, receive the
/// messages it posts.
///
/// A port is [`Send`] (it can move to another thread) but not [`Sync`]: one
/// thread uses it at a time. Every method takes `&self`, so a received
/// [`Message`] (which borrows the port) can be held while posting.
///
/// Dropping the port closes it, like [`MessagePort::close`].
///
/// # Example
/// ```
/// use shmport::MessageChannel;
///
/// let (a, b) = MessageChannel::new()?.into_ports();
/// a.post(&(7u32, "seven".to_string()))?;
/// let msg = b.recv()?;
/// let value = msg.get::<(u32, String)>()?;
/// assert_eq!(value.0, 7);
/// assert_eq!(value.1, "seven");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MessagePort {
    seg: Arc<Segment>,
    sock: OwnedFd,
    tx: RefCell<Producer<SegmentRing>>,
    rx: RefCell<Consumer<SegmentRing>>,
    side: Side,
    /// Attachments received on the socket, waiting for the records that
    /// refer to them (in order).
    inbox: RefCell<VecDeque<Attachment>>,
    /// The port was taken apart to travel: dropping it must not close it.
    transferred: Cell<bool>,
    /// The socket reported hang-up: the peer port is gone.
    hung_up: Cell<bool>,
    /// The peer broke the protocol; the port no longer reads or writes.
    broken: Cell<Option<Corrupt>>,
    spin: Cell<Duration>,
    /// Scratch space for rkyv serializers (kept here, not in a thread local:
    /// no lookup per post).
    arena: RefCell<Arena>,
}

// A port moves between threads (it is not shared between them).
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<MessagePort>();
};

impl MessagePort {
    pub(crate) fn from_parts(
        seg: Arc<Segment>,
        side: Side,
        sock: OwnedFd,
        spin: Duration,
    ) -> Result<MessagePort, Corrupt> {
        let (tx, rx) = side.rings();
        let registered = sys::membarrier::registered();
        let barriers = Barriers {
            registered,
            heavy: if registered {
                Some(sys::membarrier::heavy)
            } else {
                None
            },
        };
        let tx = Producer::new(SegmentRing::new(seg.clone(), tx), barriers)?;
        let rx = Consumer::new(SegmentRing::new(seg.clone(), rx), barriers)?;
        Ok(MessagePort {
            seg,
            sock,
            tx: RefCell::new(tx),
            rx: RefCell::new(rx),
            side,
            inbox: RefCell::new(VecDeque::new()),
            transferred: Cell::new(false),
            hung_up: Cell::new(false),
            broken: Cell::new(None),
            spin: Cell::new(spin),
            arena: RefCell::new(Arena::new()),
        })
    }

    /// A rebuilt port gets back the attachments it had already received.
    pub(crate) fn with_inbox(self, inbox: VecDeque<Attachment>) -> Self {
        *self.inbox.borrow_mut() = inbox;
        self
    }

    /// Take the port apart to send it: publish both positions, keep the
    /// socket (`sock`, a duplicate: dropping `self` closes the original) and
    /// the inbox. The peer notices nothing.
    fn into_parts(self, sock: OwnedFd) -> PortParts {
        self.tx.borrow().publish_tail();
        self.flush_releases();
        self.transferred.set(true);
        PortParts {
            seg: SegmentRef::Mapped(self.seg.clone()),
            sock,
            side: self.side,
            spin: self.spin.get(),
            inbox: std::mem::take(&mut *self.inbox.borrow_mut()),
        }
    }

    /// [`into_parts`](Self::into_parts) with its own socket duplicate.
    pub(crate) fn into_parts_for_send(self) -> io::Result<PortParts> {
        let sock = self.sock.try_clone()?;
        Ok(self.into_parts(sock))
    }

    /// Is `other` this port's entangled peer?
    fn is_peer(&self, other: &MessagePort) -> bool {
        other.side != self.side
            && (Arc::ptr_eq(&other.seg, &self.seg)
                || matches!((other.seg.id(), self.seg.id()), (Some(a), Some(b)) if a == b))
    }

    /// How long blocking calls spin (checking the ring, no system call)
    /// before they sleep on the port's socket. Zero sleeps at once; a long
    /// spin gives the lowest latency and burns a core while waiting.
    pub fn set_spin(&self, spin: Duration) {
        self.spin.set(spin);
    }

    /// The current spin time (see [`MessagePort::set_spin`]).
    pub fn spin(&self) -> Duration {
        self.spin.get()
    }

    /// Largest payload that travels inside the ring; larger messages go out
    /// of line, each in its own sealed memfd.
    #[inline]
    pub fn max_inline_payload(&self) -> usize {
        self.tx.borrow().max_payload()
    }

    // ---------------------------------------------------------------- post

    /// Post `value` as a typed message, waiting for room if the ring is
    /// full. The value is serialized straight into shared memory.
    ///
    /// Fails with [`PostError::Closed`] when the peer is gone (the value was
    /// only borrowed: the caller still has it).
    pub fn post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.post_typed(value, Wait::Forever)
    }

    /// Post `value` if there is room now; [`PostError::Full`] otherwise.
    pub fn try_post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.post_typed(value, Wait::No)
    }

    /// Post `value`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`]).
    pub fn post_timeout<T: Postable>(&self, value: &T, timeout: Duration) -> Result<(), PostError> {
        self.post_typed(value, Wait::after(timeout))
    }

    /// Post opaque bytes, waiting for room if the ring is full.
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::Forever)
    }

    /// Post opaque bytes if there is room now; [`PostError::Full`] otherwise.
    pub fn try_post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::No)
    }

    /// Post opaque bytes, waiting at most `timeout` for room.
    pub fn post_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::after(timeout))
    }

    #[inline]
    /// Post `value` with `ports` attached (like `postMessage(message,
    /// [ports])`): the receiver takes them from the message, in the same
    /// order, as working ports ([`Message::take_ports`]). Messages already
    /// queued on a transferred port, and ports inside them, move with it.
    ///
    /// Atomic: on any error nothing is sent and every port comes back in
    /// the error. This port's own peer cannot be sent over it
    /// ([`PostError::PeerInTransfer`]).
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
        let meta = typed_meta::<T>();
        self.transfer(meta, 0, Wait::Forever, ports, |w| self.serialize(value, w))
    }

    /// [`post_with_ports`](MessagePort::post_with_ports) for raw bytes.
    pub fn post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer(RAW_META, bytes.len(), Wait::Forever, ports, |w| {
            w.put(bytes)
        })
    }

    /// [`post_with_ports`](MessagePort::post_with_ports) without waiting for
    /// room ([`PostError::Full`]).
    pub fn try_post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        let meta = typed_meta::<T>();
        self.transfer(meta, 0, Wait::No, ports, |w| self.serialize(value, w))
    }

    fn transfer(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        ports: Vec<MessagePort>,
        fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
    ) -> Result<(), TransferError> {
        let refuse = |error, ports| Err(TransferError { error, ports });
        if ports.iter().any(|p| self.is_peer(p)) {
            return refuse(PostError::PeerInTransfer, ports);
        }
        if ports.len() > MAX_PORTS {
            return refuse(PostError::TooManyPorts, ports);
        }
        meta.nports = ports.len() as u16;
        let mut parts = Vec::with_capacity(ports.len());
        let mut rest = ports.into_iter();
        for p in rest.by_ref() {
            match p.sock.try_clone() {
                Ok(sock) => parts.push(p.into_parts(sock)),
                Err(e) => {
                    let mut back = reassemble(parts);
                    back.push(p);
                    back.extend(rest);
                    return refuse(PostError::Io(e), back);
                }
            }
        }
        self.send_record(meta, size_hint, wait, fill, parts)
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

    fn post_typed<T: Postable>(&self, value: &T, wait: Wait) -> Result<(), PostError> {
        self.send_record(
            typed_meta::<T>(),
            0,
            wait,
            |w| self.serialize(value, w),
            Vec::new(),
        )
        .map_err(|(e, _)| e)
    }

    fn post_raw(&self, bytes: &[u8], wait: Wait) -> Result<(), PostError> {
        self.send_record(RAW_META, bytes.len(), wait, |w| w.put(bytes), Vec::new())
            .map_err(|(e, _)| e)
    }

    /// Write one record: reserve, fill in place, send the attachment (if
    /// ports travel), commit, wake the peer if it sleeps. `size_hint` is a
    /// known lower bound on the payload size. On failure nothing was
    /// committed and the ports' parts come back.
    #[inline]
    fn send_record(
        &self,
        meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        if let Err(e) = self.check_postable() {
            return Err((e, ports));
        }
        let max = self.max_inline_payload();
        let mut need = size_hint;
        while need <= max {
            let slot = match self.reserve(need, wait) {
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
                        let att = Attachment { ool: None, ports };
                        if let Err(e) = self.send_attachment(&att, wait) {
                            return Err((e, att.ports));
                        }
                    }
                    return self.commit(slot, len, meta).map_err(|e| (e, Vec::new()));
                }
                Err(e) => match w.wanted() {
                    // It did not fit: ask for at least what it wanted.
                    Some(wanted) => need = wanted.max(need + 1),
                    None => return Err((PostError::Serialize(e), ports)),
                },
            }
        }
        self.send_out_of_line(meta, need, wait, fill, ports)
    }

    /// A message too large for the ring: serialize it into its own memfd,
    /// seal it, send it (with any ports) as the record's attachment, then
    /// commit a small record pointing to it.
    fn send_out_of_line(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        let slot = match self.reserve(OOL_DESCRIPTOR, wait) {
            Ok(s) => s,
            Err(e) => return Err((e, ports)),
        };
        let mut w = match RecordWriter::memfd(size_hint) {
            Ok(w) => w,
            Err(e) => return Err((PostError::Io(e), ports)),
        };
        if let Err(e) = fill(&mut w) {
            return Err((PostError::Serialize(e), ports));
        }
        let len = w.len() as u64;
        let fd = match w.finish_memfd() {
            Ok(fd) => fd,
            Err(e) => return Err((PostError::Io(e), ports)),
        };
        let att = Attachment {
            ool: Some(fd),
            ports,
        };
        if let Err(e) = self.send_attachment(&att, wait) {
            return Err((e, att.ports));
        }
        // SAFETY: the slot holds at least OOL_DESCRIPTOR bytes, aligned to
        // 32, written only by this producer until commit.
        unsafe { slot.payload.cast::<u64>().as_ptr().write(len) };
        meta.out_of_line = true;
        self.commit(slot, OOL_DESCRIPTOR, meta)
            .map_err(|e| (e, Vec::new()))
    }

    fn send_attachment(&self, att: &Attachment, wait: Wait) -> Result<(), PostError> {
        let mut body = Vec::new();
        let mut fds = Vec::new();
        att.encode(&mut body, &mut fds);
        loop {
            match sys::socket::send_attachment(&self.sock, &body, &fds, false) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The peer has not taken earlier attachments in yet.
                    if matches!(wait, Wait::No) {
                        return Err(PostError::Full);
                    }
                    if wait.expired() {
                        return Err(PostError::Timeout);
                    }
                    let ready = sys::socket::wait(&self.sock, true, wait.remaining())
                        .map_err(PostError::Io)?;
                    if ready.readable || ready.hung_up {
                        self.drain_socket(false).map_err(PostError::Io)?;
                        self.check_postable()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.hung_up.set(true);
                    return Err(PostError::Closed(self.peer_gone_reason()));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    return Err(PostError::TooManyPorts);
                }
                Err(e) => return Err(PostError::Io(e)),
            }
        }
    }

    #[inline]
    fn commit(&self, slot: Slot, len: usize, meta: RecordMeta) -> Result<(), PostError> {
        let wake = self.tx.borrow_mut().commit(slot, len, meta);
        if wake {
            self.wake_peer().map_err(PostError::Closed)?;
        }
        Ok(())
    }

    /// Send a wake token; a hung-up peer is reported as its close reason.
    fn wake_peer(&self) -> Result<(), CloseReason> {
        match sys::socket::send_wake(&self.sock) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.hung_up.set(true);
                Err(self.peer_gone_reason())
            }
        }
    }

    /// Can a message still reach the peer?
    #[inline]
    fn check_postable(&self) -> Result<(), PostError> {
        if self.broken.get().is_some() {
            return Err(PostError::Closed(CloseReason::ProtocolError));
        }
        if self.tx.borrow().consumer_closed() {
            return Err(PostError::Closed(CloseReason::Closed));
        }
        if self.hung_up.get() {
            return Err(PostError::Closed(self.peer_gone_reason()));
        }
        Ok(())
    }

    fn peer_gone_reason(&self) -> CloseReason {
        if self.broken.get().is_some() {
            CloseReason::ProtocolError
        } else if self.tx.borrow().consumer_closed() || self.rx.borrow().producer_closed() {
            CloseReason::Closed
        } else {
            CloseReason::PeerDied
        }
    }

    fn corrupt(&self, c: Corrupt) -> CloseReason {
        self.broken.set(Some(c));
        CloseReason::ProtocolError
    }

    /// A slot with room for at least `need` payload bytes, waiting as `wait`
    /// allows: spin, then sleep on the socket until the consumer frees room.
    #[inline]
    fn reserve(&self, need: usize, wait: Wait) -> Result<Slot, PostError> {
        let mut spin_until: Option<Instant> = None;
        loop {
            let r = self.tx.borrow_mut().reserve(need);
            match r {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => {}
                Err(c) => return Err(PostError::Closed(self.corrupt(c))),
            }
            self.check_postable()?;
            if matches!(wait, Wait::No) {
                return Err(PostError::Full);
            }
            if wait.expired() {
                return Err(PostError::Timeout);
            }
            let spin_end = *spin_until.get_or_insert_with(|| Instant::now() + self.spin.get());
            if Instant::now() < spin_end {
                std::hint::spin_loop();
                continue;
            }
            let sleep = self
                .tx
                .borrow_mut()
                .prepare_wait(need)
                .map_err(|c| PostError::Closed(self.corrupt(c)))?;
            if sleep {
                let r = self.sleep(wait);
                self.tx.borrow().end_wait();
                r.map_err(PostError::Io)?;
            }
        }
    }

    /// Sleep on the socket until a token, a hang-up, or the deadline; then
    /// take in whatever the socket holds.
    fn sleep(&self, wait: Wait) -> io::Result<()> {
        match wait.remaining() {
            None => {
                // One blocking receive: a token (or descriptors, or the
                // hang-up) is what we waited for. Anything else queued is
                // taken in later, when it is needed.
                let got = sys::socket::recv(&self.sock, true)?;
                self.note(got);
                Ok(())
            }
            Some(left) => {
                sys::socket::wait(&self.sock, false, Some(left))?;
                self.drain_socket(false)
            }
        }
    }

    /// Take in one thing the socket delivered. Returns `true` for an
    /// attachment.
    fn note(&self, got: Incoming) -> bool {
        match got {
            Incoming::HungUp => self.hung_up.set(true),
            Incoming::Garbage => self
                .broken
                .set(Some(Corrupt("garbage on the port's socket"))),
            Incoming::Attachment(body, fds) => match Attachment::decode(&body, fds) {
                Ok(a) => {
                    self.inbox.borrow_mut().push_back(a);
                    return true;
                }
                Err(c) => self.broken.set(Some(c)),
            },
            Incoming::Empty | Incoming::Wake => {}
        }
        false
    }

    /// Take in everything queued on the socket without blocking (or until
    /// one attachment arrived, when `until_attachment`).
    fn drain_socket(&self, until_attachment: bool) -> io::Result<()> {
        while !self.hung_up.get() && self.broken.get().is_none() {
            let got = sys::socket::recv(&self.sock, false)?;
            let empty = matches!(got, Incoming::Empty);
            if self.note(got) && until_attachment || empty {
                break;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- recv

    /// Receive the next message, waiting for one. After the last message the
    /// peer posted, returns [`RecvError::Closed`] with the reason: this is
    /// the close event.
    pub fn recv(&self) -> Result<Message<'_>, RecvError> {
        self.recv_wait(Wait::Forever)
    }

    /// Receive a message if one is waiting; [`RecvError::Empty`] otherwise.
    /// When the ring is empty this makes one non-blocking system call to
    /// learn whether the peer is gone.
    pub fn try_recv(&self) -> Result<Message<'_>, RecvError> {
        self.recv_wait(Wait::No)
    }

    /// Receive a message, waiting at most `timeout` ([`RecvError::Timeout`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message<'_>, RecvError> {
        self.recv_wait(Wait::after(timeout))
    }

    #[inline]
    fn recv_wait(&self, wait: Wait) -> Result<Message<'_>, RecvError> {
        let mut spin_until: Option<Instant> = None;
        loop {
            if let Some(m) = self.take()? {
                return Ok(m);
            }
            self.flush_releases();
            if let Some(reason) = self.close_reason() {
                return Err(RecvError::Closed(reason));
            }
            match wait {
                Wait::No if !self.hung_up.get() => {
                    // One look at the socket: has the peer gone away?
                    self.drain_socket(false).map_err(RecvError::Io)?;
                    if !self.hung_up.get() && self.broken.get().is_none() {
                        return Err(RecvError::Empty);
                    }
                    continue;
                }
                Wait::No => return Err(RecvError::Empty),
                _ if wait.expired() => return Err(RecvError::Timeout),
                _ => {}
            }
            let spin_end = *spin_until.get_or_insert_with(|| Instant::now() + self.spin.get());
            if self.spin_for_record(spin_end) {
                continue;
            }
            let rx = self.rx.borrow();
            if rx.prepare_sleep() {
                if rx.producer_closed() {
                    rx.end_sleep();
                    continue;
                }
                drop(rx);
                let r = self.sleep(wait);
                self.rx.borrow().end_sleep();
                r.map_err(RecvError::Io)?;
            }
        }
    }

    /// Spin until a record is ready, the producer closed, or `until`.
    fn spin_for_record(&self, until: Instant) -> bool {
        let rx = self.rx.borrow();
        let mut i = 0u32;
        loop {
            rx.prefetch_next();
            if rx.ready() || rx.producer_closed() {
                return true;
            }
            // Reading the clock costs ~20 ns: look every 64 turns, and at
            // once on the first (a zero spin does not spin).
            if i % 64 == 0 && Instant::now() >= until {
                return false;
            }
            std::hint::spin_loop();
            i = i.wrapping_add(1);
        }
    }

    // ------------------------------------------------------- port sets

    /// Would `try_recv` return a message or the close event now?
    pub(crate) fn has_event(&self) -> bool {
        if self.broken.get().is_some() || self.hung_up.get() {
            return true;
        }
        let rx = self.rx.borrow();
        rx.has_message() || rx.producer_closed()
    }

    /// Announce a sleep (without the barrier: the set issues one for all).
    pub(crate) fn arm(&self) {
        self.flush_releases();
        self.rx.borrow().announce_sleep();
    }

    /// The barrier between arming and re-checking.
    pub(crate) fn sleep_barrier(&self) {
        self.rx.borrow().sleep_barrier();
    }

    /// Withdraw the announcement.
    pub(crate) fn disarm(&self) {
        self.rx.borrow().end_sleep();
    }

    /// Take in what the socket holds (tokens, attachments, hang-up).
    pub(crate) fn take_in(&self) -> io::Result<()> {
        self.drain_socket(false)
    }

    /// The close reason, if the ring is empty and the peer is gone.
    #[inline]
    fn close_reason(&self) -> Option<CloseReason> {
        if self.broken.get().is_some() {
            return Some(CloseReason::ProtocolError);
        }
        let rx = self.rx.borrow();
        // The closed flag (Acquire) or the hang-up comes after the peer's
        // last commit: re-check the ring after seeing either.
        let gone = rx.producer_closed() || self.hung_up.get();
        if gone && !rx.ready() {
            drop(rx);
            return Some(self.peer_gone_reason());
        }
        None
    }

    /// Publish released space if any is unpublished, waking a producer that
    /// waits for it.
    #[inline]
    fn flush_releases(&self) {
        let mut rx = self.rx.borrow_mut();
        if rx.unpublished() && rx.publish_head() {
            drop(rx);
            let _ = self.wake_peer();
        }
    }

    /// Called by a dropped [`Message`].
    #[inline]
    pub(crate) fn release(&self, pos: u64, end: u64) {
        let mut rx = self.rx.borrow_mut();
        if rx.release(pos, end) && rx.publish_head() {
            drop(rx);
            let _ = self.wake_peer();
        }
    }

    /// Take the next record and make it a message.
    #[inline]
    fn take(&self) -> Result<Option<Message<'_>>, RecvError> {
        if self.broken.get().is_some() {
            return Err(RecvError::Closed(CloseReason::ProtocolError));
        }
        let r = self.rx.borrow_mut().take();
        let rec = match r {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(None),
            Err(c) => return Err(RecvError::Closed(self.corrupt(c))),
        };
        if !rec.meta.out_of_line && rec.meta.nports == 0 {
            let body = Body {
                ptr: rec.payload,
                len: rec.len,
                map: None,
            };
            return Ok(Some(Message::new(self, &rec, body, Vec::new())));
        }
        match self.with_attachment(&rec) {
            Ok((body, ports)) => Ok(Some(Message::new(self, &rec, body, ports))),
            Err(e) => {
                self.release(rec.pos, rec.end);
                Err(e)
            }
        }
    }

    /// The record needs its attachment: take it from the inbox (or the
    /// socket), check it matches the record, map an out-of-line payload.
    fn with_attachment(&self, rec: &Record) -> Result<(Body, Vec<PortParts>), RecvError> {
        if self.inbox.borrow().is_empty() {
            self.drain_socket(true).map_err(RecvError::Io)?;
        }
        let Some(att) = self.inbox.borrow_mut().pop_front() else {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("record without its attachment")),
            ));
        };
        if att.ports.len() != rec.meta.nports as usize || att.ool.is_some() != rec.meta.out_of_line
        {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("attachment does not match its record")),
            ));
        }
        let body = match att.ool {
            None => Body {
                ptr: rec.payload,
                len: rec.len,
                map: None,
            },
            Some(fd) => self.map_out_of_line(rec, fd)?,
        };
        Ok((body, att.ports))
    }

    fn map_out_of_line(&self, rec: &Record, fd: OwnedFd) -> Result<Body, RecvError> {
        if rec.len != OOL_DESCRIPTOR {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("out-of-line descriptor has the wrong size")),
            ));
        }
        // SAFETY: the record's payload holds OOL_DESCRIPTOR (8) bytes inside
        // the ring, 32-byte aligned; read once, as an atomic.
        let len = unsafe { rec.payload.cast::<core::sync::atomic::AtomicU64>().as_ref() }
            .load(core::sync::atomic::Ordering::Relaxed);
        let size = sys::memfd::checked_size(&fd, sys::memfd::SIZE_SEALS).map_err(|_| {
            RecvError::Closed(self.corrupt(Corrupt("out-of-line memfd not sealed")))
        })?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > size || len == 0 {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("out-of-line length outside its memfd")),
            ));
        }
        let map = Mapping::new(&fd, len, false, true).map_err(RecvError::Io)?;
        Ok(Body {
            ptr: map.ptr(),
            len,
            map: Some(map),
        })
    }

    // ---------------------------------------------------------------- close

    /// Close the port. The peer receives every message posted before, then
    /// the close event with [`CloseReason::Closed`]. Dropping the port does
    /// the same.
    pub fn close(self) {
        drop(self)
    }
}

impl Drop for MessagePort {
    fn drop(&mut self) {
        if self.transferred.get() {
            // Its parts travel on: this is not a close.
            return;
        }
        // Publish what this side consumed and produced, then the closed
        // flags; the socket closes when the fields drop, and the peer's
        // hang-up wakes it if it sleeps.
        self.rx.get_mut().close();
        self.tx.get_mut().close();
    }
}

/// Most ports one message carries (each takes two of the socket message's
/// 253 descriptors, and their inboxes may take more).
pub const MAX_PORTS: usize = 100;

const RAW_META: RecordMeta = RecordMeta {
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
/// segments are still mapped here, so this cannot fail short of memory.
fn reassemble(parts: Vec<PortParts>) -> Vec<MessagePort> {
    parts
        .into_iter()
        .filter_map(|p| p.assemble().ok())
        .collect()
}

impl AsFd for MessagePort {
    /// The port's socket: readable when the peer wakes this port (after this
    /// port announced it sleeps) or hung up when the peer is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl std::fmt::Debug for MessagePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePort")
            .field("capacity", &self.seg.capacity())
            .field("hung_up", &self.hung_up.get())
            .field("broken", &self.broken.get())
            .finish_non_exhaustive()
    }
}
