//! A port: one end of a channel.
//!
//! The type, its construction, the socket and close handling live here;
//! posting in [`send`], receiving in [`recv`].

pub(crate) mod recv;
mod reserve;
mod send;

pub use reserve::Reservation;

use core::cell::{Cell, RefCell};
use core::mem::ManuallyDrop;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;

use crate::error::{CloseReason, PostError};
use crate::ring::{Barriers, Consumer, Corrupt, Producer};
use crate::segment::{Segment, SegmentRing};
use crate::sys::{self, socket::Incoming};
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
/// [`Message`](crate::Message) (which borrows the port) can be held while posting.
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
    /// Closed by `Drop`, unless taken by `into_parts` (which sets
    /// `transferred`).
    sock: ManuallyDrop<OwnedFd>,
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
    /// A receive returned end-of-file: nothing more is queued on the socket.
    eof: Cell<bool>,
    /// The peer broke the protocol; the port no longer reads or writes.
    broken: Cell<Option<Corrupt>>,
    spin: Cell<Duration>,
    /// A [`Reservation`] is live: other posts must wait for it.
    reserving: Cell<bool>,
    /// Payload room the last post that found the ring full needed.
    wanted_room: Cell<usize>,
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
            sock: ManuallyDrop::new(sock),
            tx: RefCell::new(tx),
            rx: RefCell::new(rx),
            side,
            inbox: RefCell::new(VecDeque::new()),
            transferred: Cell::new(false),
            hung_up: Cell::new(false),
            eof: Cell::new(false),
            broken: Cell::new(None),
            spin: Cell::new(spin),
            reserving: Cell::new(false),
            wanted_room: Cell::new(0),
            arena: RefCell::new(Arena::new()),
        })
    }

    /// A rebuilt port gets back the attachments it had already received.
    pub(crate) fn with_inbox(self, inbox: VecDeque<Attachment>) -> Self {
        *self.inbox.borrow_mut() = inbox;
        self
    }

    /// Take the port apart to send it: publish both positions, hand over
    /// the socket and the inbox. The peer notices nothing.
    pub(crate) fn into_parts(mut self) -> PortParts {
        self.tx.borrow().publish_tail();
        self.flush_releases();
        self.transferred.set(true);
        // SAFETY: `transferred` is set, so `Drop` leaves `sock` alone; `self`
        // is consumed here, so it is taken exactly once.
        let sock = unsafe { ManuallyDrop::take(&mut self.sock) };
        PortParts {
            seg: SegmentRef::Mapped(self.seg.clone()),
            sock,
            side: self.side,
            spin: self.spin.get(),
            inbox: std::mem::take(&mut *self.inbox.borrow_mut()),
        }
    }

    /// Is `other` this port's entangled peer?
    fn is_peer(&self, other: &MessagePort) -> bool {
        other.side != self.side && self.seg.same(&other.seg)
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

    /// Send a wake token; a hung-up peer is reported as its close reason.
    fn wake_peer(&self) -> Result<(), CloseReason> {
        match sys::socket::send_wake(&*self.sock) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.hung_up.set(true);
                Err(self.peer_gone_reason())
            }
        }
    }

    /// Refuse a post while a [`Reservation`] holds the ring's next slot.
    #[inline]
    fn check_not_reserved(&self) -> Result<(), PostError> {
        if self.reserving.get() {
            return Err(PostError::Reserved);
        }
        Ok(())
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

    /// Sleep on the socket until a token, a hang-up, or the deadline; then
    /// take in whatever the socket holds.
    fn sleep(&self, wait: Wait) -> io::Result<()> {
        match wait.remaining() {
            None => {
                // One blocking receive: a token (or descriptors, or the
                // hang-up) is what we waited for. Anything else queued is
                // taken in later, when it is needed.
                let got = sys::socket::recv(&*self.sock, true)?;
                self.note(got);
                Ok(())
            }
            Some(left) => {
                sys::socket::wait(&*self.sock, false, Some(left))?;
                self.drain_socket(false)
            }
        }
    }

    /// Take in one thing the socket delivered. Returns `true` for an
    /// attachment.
    fn note(&self, got: Incoming) -> bool {
        match got {
            Incoming::HungUp => {
                self.hung_up.set(true);
                self.eof.set(true);
            }
            // The peer is gone, but what it sent before may still be queued
            // (records' attachments): not the end of the socket yet.
            Incoming::Reset => self.hung_up.set(true),
            Incoming::Garbage => self
                .broken
                .set(Some(Corrupt("garbage on the port's socket"))),
            Incoming::Lost => {
                self.inbox.borrow_mut().push_back(Attachment::lost());
                return true;
            }
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
        while !self.eof.get() && self.broken.get().is_none() {
            let got = sys::socket::recv(&*self.sock, false)?;
            let empty = matches!(got, Incoming::Empty);
            if self.note(got) && until_attachment || empty {
                break;
            }
        }
        Ok(())
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

    // ---------------------------------------------- waiting elsewhere (async)

    /// Before waiting on the port's descriptor in a foreign event loop
    /// (`poll`, `epoll`, …): announce that this side sleeps, so that the
    /// peer's next message (or room freed for a waiting post) writes a
    /// wake-up to the socket. Returns `false` when a message or the close
    /// is already there: receive instead of waiting. After the wake-up,
    /// [`try_recv`](Self::try_recv) reads what arrived (it also takes in the
    /// wake-up itself).
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use rustix::event::{PollFd, PollFlags, poll};
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// assert!(b.prepare_poll());
    /// a.post_bytes(b"wake up")?;
    /// let mut fds = [PollFd::new(&b, PollFlags::IN)];
    /// poll(&mut fds, None)?;
    /// assert_eq!(b.try_recv()?.bytes(), b"wake up");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare_poll(&self) -> bool {
        if self.has_event() {
            return false;
        }
        self.arm();
        self.sleep_barrier();
        if self.has_event() {
            self.disarm();
            return false;
        }
        true
    }

    #[cfg(feature = "tokio")]
    /// Spin (up to the port's spin time) until [`has_event`](Self::has_event);
    /// returns whether it did. Looks at the socket every `LOOK_EVERY`.
    pub(crate) fn spin_for_event(&self) -> io::Result<bool> {
        let until = Instant::now() + self.spin.get();
        loop {
            if self.has_event() {
                return Ok(true);
            }
            match self.spin_for_record(until) {
                recv::Spun::Ready => {}
                recv::Spun::Look => self.take_in()?,
                recv::Spun::TimeUp => return Ok(self.has_event()),
            }
        }
    }

    #[cfg(feature = "tokio")]
    /// Announce that the producer waits for the room the last
    /// [`PostError::Full`] lacked; `false` (nothing announced) if that room
    /// is already there.
    pub(crate) fn prepare_room_wait(&self) -> Result<bool, PostError> {
        self.flush_releases();
        self.tx
            .borrow_mut()
            .prepare_wait(self.wanted_room.get())
            .map_err(|c| PostError::Closed(self.corrupt(c)))
    }

    #[cfg(feature = "tokio")]
    /// Withdraw the producer's wait announcement.
    pub(crate) fn end_room_wait(&self) {
        self.tx.borrow().end_wait();
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
        // Ports in messages never read: close them properly (their peers
        // see Closed, not PeerDied).
        let _ = self.drain_socket(false);
        for att in self.inbox.get_mut().drain(..) {
            for p in att.ports {
                crate::transfer::discard(p);
            }
        }
        // The closed flags are published: now the hang-up.
        // SAFETY: not transferred (checked above), so `into_parts` never
        // took the socket; this is the only drop of it.
        unsafe { ManuallyDrop::drop(&mut self.sock) };
    }
}

/// Most ports one message carries (each takes two of the socket message's
/// 253 descriptors, and their inboxes may take more).
pub const MAX_PORTS: usize = 100;

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
