//! A port: one end of a channel.
//!
//! A port is two halves over one shared core: the sending half owns the
//! producer of the ring the port writes, the receiving half the consumer of
//! the ring it reads, and the [`Shared`] core holds what both use (the
//! segment, the socket, the inbox of received attachments, the close
//! state). A [`MessagePort`] holds both halves and is used by one thread at
//! a time; [`MessagePort::split`] gives them to two threads.
//!
//! Here: the types, construction, the socket and close handling; posting in
//! [`send`], receiving in [`recv`], zero-copy reservations in [`reserve`].

pub(crate) mod message;
pub(crate) mod recv;
mod reserve;
mod send;
#[cfg(test)]
mod tests;

pub use reserve::Reservation;

use core::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rkyv::ser::allocator::Arena;

use crate::error::{CloseReason, PostError, SplitError};
use crate::fault;
use crate::shm::ring::{Barriers, Consumer, Corrupt, Producer, REWIND_MIN, RingMemory};
use crate::shm::segment::{Segment, SegmentRing};
use crate::sys::{self, kick::Kick, socket::Incoming};
use crate::wire::attachment::{Attachment, Partial, PortParts, SegmentRef};

/// How long a blocking call spins before it sleeps, unless configured.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// The largest out-of-line message a port accepts unless configured
/// ([`MessagePort::set_max_message_size`]): 1 GiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Most ports one message carries (each takes two descriptors, and the
/// messages queued on it may carry more: all travel in one attachment, in
/// as many socket messages as it takes).
pub const MAX_PORTS: usize = 100;

/// How much a port trusts what its peer writes to shared memory.
///
/// In both modes every position, length and count read from the ring is
/// checked, and a typed message is validated before it is read. They differ
/// in what a peer that keeps writing to a record *after* publishing it can
/// do, which the protocol forbids and only a hostile process would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// Zero copy: a message is read where the peer wrote it, validated in
    /// place. Right for peers that follow the protocol (your own processes,
    /// buggy or not: what they wrote before publishing is checked). A
    /// hostile peer could rewrite a record between its validation and its
    /// use; for a typed message that defeats the validation (its relative
    /// pointers could be changed to point out of bounds). Use
    /// [`Trust::Untrusted`] for such peers.
    #[default]
    Validated,
    /// For peers that may be hostile: each record in the ring is copied
    /// into private memory when it is taken (and its ring space released at
    /// once), so validation holds; out-of-line payloads are accepted only in
    /// memfds sealed against writing, refused otherwise
    /// ([`RecvError::Refused`](crate::RecvError::Refused)). One copy per
    /// inline message.
    Untrusted,
}

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

/// Which half of a port is acting (to wake the other when it takes in
/// something from the shared socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Sender = 0,
    Receiver = 1,
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

// ------------------------------------------------------------------ core

/// What both halves of a port use. The socket closes when the last half
/// drops, after both published their closed flags.
pub(crate) struct Shared {
    seg: Arc<Segment>,
    sock: OwnedFd,
    side: Side,
    /// Attachments received on the socket, waiting for the records that
    /// refer to them (in order). Either half may take them in; only the
    /// receiving half takes them out.
    inbox: Mutex<VecDeque<Attachment>>,
    /// Held from a receive on the socket until what it returned is in the
    /// inbox (or noted). Once split, both halves read the socket: without
    /// it, an attachment one half has taken off the socket and not yet
    /// queued is in neither place for the other half, which then finds its
    /// record's attachment missing, or pairs the record with the next one
    /// (ARCHITECTURE.md, failure model, "Split halves"). It holds the parts
    /// of an attachment that comes in several socket messages, gathered
    /// until the last (`crate::wire::attachment`): the inbox gets whole ones only.
    /// Lock order: `taking_in`, then `inbox`.
    taking_in: Mutex<Partial>,
    /// The socket reported hang-up (or reset): the peer port is gone.
    hung_up: AtomicBool,
    /// A receive returned end-of-file: nothing more is queued on the socket.
    eof: AtomicBool,
    /// The peer broke the protocol; the port no longer reads or writes.
    broken: OnceLock<Corrupt>,
    spin_ns: AtomicU64,
    /// The port was taken apart to travel: dropping its halves must not
    /// close it.
    transferred: AtomicBool,
    /// Once split: one kick per half ([`Half`] order). A half that takes in
    /// something from the socket kicks the other, which may be waiting for
    /// exactly that.
    kicks: OnceLock<[Kick; 2]>,
}

// The flags below are plain state bits. The Release stores / Acquire loads
// order them with what the setter did before (the inbox push, the socket
// read), for the other half on another thread.
impl Shared {
    fn broken(&self) -> bool {
        self.broken.get().is_some()
    }

    fn hung_up(&self) -> bool {
        self.hung_up.load(Ordering::Acquire)
    }

    fn eof(&self) -> bool {
        self.eof.load(Ordering::Acquire)
    }

    /// The close reason once the peer is gone: a protocol error if it broke
    /// the protocol, `Closed` if it set the closed flag this half reads
    /// (`closed`), else it died.
    fn gone_reason(&self, closed: bool) -> CloseReason {
        if self.broken() {
            CloseReason::ProtocolError
        } else if closed {
            CloseReason::Closed
        } else {
            CloseReason::PeerDied
        }
    }

    fn corrupt(&self, c: Corrupt) -> CloseReason {
        let _ = self.broken.set(c);
        CloseReason::ProtocolError
    }

    fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    fn inbox(&self) -> MutexGuard<'_, VecDeque<Attachment>> {
        // A panic while holding the lock leaves a consistent queue.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parts of an attachment taken in so far (holding `taking_in`).
    fn partial(&self) -> MutexGuard<'_, Partial> {
        self.taking_in.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send a wake token; a hung-up peer is reported as `Err`.
    fn wake_peer(&self) -> Result<(), ()> {
        match sys::socket::send_wake(&self.sock) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.hung_up.store(true, Ordering::Release);
                Err(())
            }
        }
    }

    /// Sleep on the socket until a token, a hang-up, the deadline, or (once
    /// split) a kick from the other half; then take in what the socket
    /// holds. `writable`: also return when the socket can take a message.
    fn sleep(&self, me: Half, wait: Wait, writable: bool) -> io::Result<()> {
        match self.kicks.get() {
            None if wait.remaining().is_none() && !writable => {
                // One blocking receive: a token (or descriptors, or the
                // hang-up) is what we waited for. Anything else queued is
                // taken in later, when it is needed.
                // Unsplit: nobody else takes the lock.
                let mut partial = self.partial();
                let got = sys::socket::recv(&self.sock, true)?;
                self.note(got, &mut partial);
                Ok(())
            }
            None => {
                sys::socket::wait(&self.sock, writable, wait.remaining())?;
                self.drain_socket(me, false)
            }
            Some(kicks) => {
                let mine = &kicks[me as usize];
                sys::socket::wait_or(&self.sock, Some(mine.as_fd()), writable, wait.remaining())?;
                mine.clear();
                self.drain_socket(me, false)
            }
        }
    }

    /// Take in one thing the socket delivered; `partial` is what
    /// `taking_in` holds. Returns `true` when a whole attachment was queued.
    fn note(&self, got: Incoming, partial: &mut Partial) -> bool {
        match got {
            Incoming::HungUp => {
                self.hung_up.store(true, Ordering::Release);
                self.eof.store(true, Ordering::Release);
            }
            // The peer is gone, but what it sent before may still be queued
            // (records' attachments): not the end of the socket yet.
            Incoming::Reset => self.hung_up.store(true, Ordering::Release),
            Incoming::Garbage => {
                let _ = self.broken.set(Corrupt("garbage on the port's socket"));
            }
            Incoming::Attachment(body, fds) => {
                return self.queue(partial.take(&body, Some(fds), true));
            }
            Incoming::Part(body, fds) => return self.queue(partial.take(&body, Some(fds), false)),
            Incoming::Lost => return self.queue(partial.take(&[], None, true)),
            Incoming::LostPart => return self.queue(partial.take(&[], None, false)),
            Incoming::Empty | Incoming::Wake => {}
        }
        false
    }

    /// Queue a whole attachment ([`Partial::take`]); `true` if there was one.
    fn queue(&self, got: Result<Option<Attachment>, Corrupt>) -> bool {
        match got {
            Ok(Some(a)) => {
                self.inbox().push_back(a);
                true
            }
            Ok(None) => false,
            Err(c) => {
                let _ = self.broken.set(c);
                false
            }
        }
    }

    /// Take in everything queued on the socket without blocking (or until
    /// one attachment arrived, when `until_attachment`). Once split, kick
    /// the other half if anything came: it may be what it waits for.
    fn drain_socket(&self, me: Half, until_attachment: bool) -> io::Result<()> {
        let mut took = false;
        // Each receive and its queuing are one step for the other half. A
        // panic while holding the lock leaves nothing half done.
        let mut taking_in = self.taking_in.lock().unwrap_or_else(|e| e.into_inner());
        let r = loop {
            if self.eof() || self.broken() {
                break Ok(());
            }
            // The other half may have queued the attachment we look for
            // while we waited for the lock.
            if until_attachment && !self.inbox().is_empty() {
                break Ok(());
            }
            let got = match sys::socket::recv(&self.sock, false) {
                Ok(g) => g,
                Err(e) => break Err(e),
            };
            if matches!(got, Incoming::Attachment(..)) {
                fault::reach(fault::Point::TakenIn);
            }
            let empty = matches!(got, Incoming::Empty);
            took |= !empty;
            if self.note(got, &mut taking_in) && until_attachment || empty {
                break Ok(());
            }
        };
        drop(taking_in);
        if took {
            if let Some(kicks) = self.kicks.get() {
                let other = match me {
                    Half::Sender => Half::Receiver,
                    Half::Receiver => Half::Sender,
                };
                kicks[other as usize].kick();
            }
        }
        r
    }
}

// ----------------------------------------------------------------- halves

/// The sending half of a port ([`MessagePort::split`]): posts to the peer.
/// It can live on another thread than its [`PortReceiver`]. Dropping it
/// closes the direction it sends in: the peer reads what was posted, then
/// its close event; the other direction goes on.
pub struct PortSender {
    shared: Arc<Shared>,
    tx: RefCell<Producer<SegmentRing>>,
    /// A [`Reservation`] is live: other posts must wait for it.
    reserving: Cell<bool>,
    /// Payload room the last post that found the ring full needed.
    wanted_room: Cell<usize>,
    /// Scratch space for rkyv serializers (kept here, not in a thread local:
    /// no lookup per post).
    arena: RefCell<Arena>,
}

/// The receiving half of a port ([`MessagePort::split`]): receives what
/// the peer posts. Dropping it tells the peer's posts that nobody reads.
pub struct PortReceiver {
    shared: Arc<Shared>,
    rx: RefCell<Consumer<SegmentRing>>,
    trust: Cell<Trust>,
    /// The largest out-of-line payload this half maps.
    max_message: Cell<usize>,
}

/// One end of a channel: post messages to the peer port, receive the
/// messages it posts.
///
/// A port is [`Send`] (it can move to another thread) but not [`Sync`]: one
/// thread uses it at a time. Every method takes `&self`, so a received
/// [`Message`](crate::Message) (which borrows the port) can be held while posting.
/// To send on one thread and receive on another, [`split`](Self::split) it.
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
    // Dropped in this order: the sending half publishes its closed flag,
    // then the receiving half; the socket closes with the last `Shared`.
    tx: PortSender,
    rx: PortReceiver,
}

// Ports and halves move between threads (they are not shared between them).
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<MessagePort>();
    is_send::<PortSender>();
    is_send::<PortReceiver>();
};

/// The barriers this process uses. As a sleeper: the heavy barrier
/// whenever the kernel lets this process issue it, registered or not. As a
/// publisher: only a compiler fence when this process is registered (so
/// the sleeper's heavy barrier reaches it) and the sleeper advertises the
/// heavy barrier.
///
/// Sleeping with the heavy barrier even when unregistered closes the
/// window of a port move: a publisher may read the advertised barrier
/// kind just before the port's new holder writes its own, so the kind it
/// acts on can be the old holder's. Since every sleeper that can issue the
/// heavy barrier does, a stale "heavy" is still true (ARCHITECTURE.md,
/// failure model, "Barrier kinds across a move").
fn process_barriers() -> Barriers {
    let registered = sys::membarrier::registered();
    Barriers {
        registered,
        heavy: if registered || sys::membarrier::available() {
            Some(sys::membarrier::heavy)
        } else {
            None
        },
    }
}

/// A port's two rings in `seg`, resuming at the published positions.
fn open_rings(
    seg: &Arc<Segment>,
    side: Side,
) -> Result<(Producer<SegmentRing>, Consumer<SegmentRing>), Corrupt> {
    let barriers = process_barriers();
    let (tx, rx) = side.rings();
    let tx = Producer::new(SegmentRing::new(seg.clone(), tx), barriers)?;
    let rx = Consumer::new(SegmentRing::new(seg.clone(), rx), barriers)?;
    Ok((tx, rx))
}

/// The smallest payload a ring of `cap` bytes rewinds for
/// ([`Producer::rewind_from`]): [`REWIND_MIN`] when a channel's two rings
/// take more than half of the last-level cache, never otherwise. While a
/// channel's rings stay in the cache, moving on through them is faster:
/// the bytes a record overwrites have left the peer core's own cache by
/// then, where rewritten bytes just read by the peer must be taken back
/// from it line by line. Measured on this project's VM (32 MiB L3):
/// rewinding made 64 KiB and 1 MiB round trips in 1 and 4 MiB rings about
/// 2x slower, and 4 MiB round trips in a 16 MiB ring about 2x faster
/// (ARCHITECTURE.md).
fn rewind_min(cap: usize) -> usize {
    if cap.saturating_mul(4) > sys::cache::last_level_bytes() {
        REWIND_MIN
    } else {
        usize::MAX
    }
}

impl MessagePort {
    pub(crate) fn from_parts(
        seg: Arc<Segment>,
        side: Side,
        sock: OwnedFd,
        spin: Duration,
    ) -> Result<MessagePort, Corrupt> {
        let (tx, rx) = open_rings(&seg, side)?;
        Ok(Self::from_rings(seg, side, sock, spin, tx, rx, None))
    }

    /// Rebuild a port of this process that was taken apart for a transfer
    /// that failed. If its peer corrupted the ring positions meanwhile, the
    /// port comes back broken (its receives and posts report
    /// [`CloseReason::ProtocolError`]) rather than not at all.
    pub(crate) fn rebuild(seg: Arc<Segment>, side: Side, sock: OwnedFd, spin: Duration) -> Self {
        match open_rings(&seg, side) {
            Ok((tx, rx)) => Self::from_rings(seg, side, sock, spin, tx, rx, None),
            Err(c) => {
                let (tx, rx) = side.rings();
                let barriers = process_barriers();
                let tx = Producer::broken(SegmentRing::new(seg.clone(), tx), barriers);
                let rx = Consumer::broken(SegmentRing::new(seg.clone(), rx), barriers);
                Self::from_rings(seg, side, sock, spin, tx, rx, Some(c))
            }
        }
    }

    fn from_rings(
        seg: Arc<Segment>,
        side: Side,
        sock: OwnedFd,
        spin: Duration,
        tx: Producer<SegmentRing>,
        rx: Consumer<SegmentRing>,
        broken: Option<Corrupt>,
    ) -> MessagePort {
        let mut tx = tx;
        tx.rewind_from(rewind_min(tx.memory().capacity()));
        let shared = Arc::new(Shared {
            seg,
            sock,
            side,
            inbox: Mutex::new(VecDeque::new()),
            taking_in: Mutex::new(Partial::default()),
            hung_up: AtomicBool::new(false),
            eof: AtomicBool::new(false),
            broken: broken.map(OnceLock::from).unwrap_or_default(),
            spin_ns: AtomicU64::new(spin.as_nanos().min(u64::MAX as u128) as u64),
            transferred: AtomicBool::new(false),
            kicks: OnceLock::new(),
        });
        MessagePort {
            tx: PortSender {
                shared: shared.clone(),
                tx: RefCell::new(tx),
                reserving: Cell::new(false),
                wanted_room: Cell::new(0),
                arena: RefCell::new(Arena::new()),
            },
            rx: PortReceiver {
                shared,
                rx: RefCell::new(rx),
                trust: Cell::new(Trust::default()),
                max_message: Cell::new(DEFAULT_MAX_MESSAGE_SIZE),
            },
        }
    }

    /// A rebuilt port gets back the attachments it had already received,
    /// and the parts of one still arriving.
    pub(crate) fn with_inbox(self, inbox: VecDeque<Attachment>, partial: Partial) -> Self {
        *self.rx.shared.inbox() = inbox;
        *self.rx.shared.partial() = partial;
        self
    }

    /// Take the port apart to send it: publish both positions, hand over
    /// the socket and the inbox. The peer notices nothing.
    pub(crate) fn into_parts(self) -> PortParts {
        self.tx.tx.borrow().publish_tail();
        self.rx.flush_releases();
        let shared = self.tx.shared.clone();
        shared.transferred.store(true, Ordering::Relaxed);
        // The halves' drops see `transferred` and close nothing.
        drop(self);
        let spin = shared.spin();
        match Arc::try_unwrap(shared) {
            Ok(s) => PortParts {
                seg: SegmentRef::Mapped(s.seg),
                sock: s.sock,
                side: s.side,
                spin,
                inbox: s.inbox.into_inner().unwrap_or_else(|e| e.into_inner()),
                partial: s.taking_in.into_inner().unwrap_or_else(|e| e.into_inner()),
            },
            // Nothing else holds the core of a whole port (messages and
            // reservations borrow the port, which is consumed here).
            Err(_) => unreachable!("a port's core outlived its halves"),
        }
    }

    /// Is this port the entangled peer of the port whose core is `other`?
    fn is_peer_of(&self, other: &Shared) -> bool {
        let me = &self.tx.shared;
        other.side != me.side && me.seg.same(&other.seg)
    }

    /// What this port's inbox holds, for a transfer of it over the port
    /// whose core is `sender`: nesting depth, and whether `sender`'s peer
    /// is in it.
    fn scan_inbox(&self, sender: &Shared) -> crate::wire::attachment::Scan {
        crate::wire::attachment::scan(&self.rx.shared.inbox(), &sender.seg, sender.side)
    }

    /// How long blocking calls spin (checking the ring, no system call)
    /// before they sleep on the port's socket. Zero sleeps at once; a long
    /// spin gives the lowest latency and burns a core while waiting.
    pub fn set_spin(&self, spin: Duration) {
        let ns = spin.as_nanos().min(u64::MAX as u128) as u64;
        self.tx.shared.spin_ns.store(ns, Ordering::Relaxed);
    }

    /// The current spin time (see [`MessagePort::set_spin`]).
    pub fn spin(&self) -> Duration {
        self.tx.shared.spin()
    }

    /// Largest payload that travels inside the ring; larger messages go out
    /// of line, each in its own sealed memfd.
    #[inline]
    pub fn max_inline_payload(&self) -> usize {
        self.tx.max_inline_payload()
    }

    /// Bytes in each direction's ring: the size the channel was made with,
    /// after [`ChannelBuilder::capacity`](crate::ChannelBuilder::capacity)'s
    /// rounding (the same at both ends, wherever the port travels).
    pub fn capacity(&self) -> usize {
        self.tx.shared.seg.capacity()
    }

    /// How this port treats what its peer writes (see [`Trust`]). A port
    /// that arrives in a message starts [`Trust::Validated`].
    pub fn set_trust(&self, trust: Trust) {
        self.rx.set_trust(trust);
    }

    /// The port's trust mode.
    pub fn trust(&self) -> Trust {
        self.rx.trust()
    }

    /// The largest message this port accepts, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]). A larger out-of-line message is
    /// refused before it is mapped: that receive returns
    /// [`RecvError::Refused`](crate::RecvError::Refused), the message is
    /// dropped, and the port goes on. It bounds what a peer can make this
    /// process map (and so allocate, as the message is read) with one
    /// message. Messages inside the ring are bounded by its size anyway.
    /// A port that arrives in a message starts with the default.
    ///
    /// ```
    /// use shmport::{MessageChannel, RecvError};
    ///
    /// let (a, b) = MessageChannel::builder().capacity(4096).build()?.into_ports();
    /// b.set_max_message_size(64 * 1024);
    /// a.post_bytes(&vec![1; 100 * 1024])?; // out of line: larger than the ring
    /// a.post_bytes(b"small")?;
    /// assert!(matches!(b.recv(), Err(RecvError::Refused(_))));
    /// assert_eq!(b.recv()?.bytes(), b"small");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_message_size(&self, bytes: usize) {
        self.rx.set_max_message_size(bytes);
    }

    /// The largest message this port accepts (see
    /// [`set_max_message_size`](Self::set_max_message_size)).
    pub fn max_message_size(&self) -> usize {
        self.rx.max_message_size()
    }

    /// Split into a sending and a receiving half, to use on two threads.
    /// [`PortSender::rejoin`] makes the port again. Dropping one half
    /// closes its direction only.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let (tx, rx) = b.split()?;
    /// let echo = std::thread::spawn(move || {
    ///     let m = rx.recv().unwrap();
    ///     assert_eq!(m.bytes(), b"ping");
    ///     drop(m);
    ///     rx
    /// });
    /// a.post_bytes(b"ping")?;
    /// tx.post_bytes(b"pong")?;
    /// assert_eq!(a.recv()?.bytes(), b"pong");
    /// let b = tx.rejoin(echo.join().unwrap()).unwrap();
    /// # drop(b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Splitting needs two eventfds (the first time only: a rejoined port
    /// keeps them). If they cannot be made (out of descriptors), the port
    /// comes back whole in the error, untouched: its peer notices nothing.
    // The port comes back by value: a rare path, not worth a box.
    #[allow(clippy::result_large_err)]
    pub fn split(self) -> Result<(PortSender, PortReceiver), SplitError> {
        if self.tx.shared.kicks.get().is_none() {
            let kicks = match Kick::new().and_then(|k| Ok([k, Kick::new()?])) {
                Ok(kicks) => kicks,
                Err(error) => return Err(SplitError { error, port: self }),
            };
            let _ = self.tx.shared.kicks.set(kicks);
        }
        let MessagePort { tx, rx } = self;
        Ok((tx, rx))
    }

    /// Announce a sleep (without the barrier: the set issues one for all).
    pub(crate) fn arm(&self) {
        self.rx.arm();
    }

    /// The barrier between arming and re-checking.
    pub(crate) fn sleep_barrier(&self) {
        self.rx.rx.borrow().sleep_barrier();
    }

    /// Withdraw the announcement.
    pub(crate) fn disarm(&self) {
        self.rx.rx.borrow().end_sleep();
    }

    /// Would `try_recv` return a message or the close event now?
    pub(crate) fn has_event(&self) -> bool {
        self.rx.has_event()
    }

    /// Take in what the socket holds (tokens, attachments, hang-up).
    pub(crate) fn take_in(&self) -> io::Result<()> {
        self.rx.shared.drain_socket(Half::Receiver, false)
    }

    /// Before waiting on the port's descriptor in a foreign event loop
    /// (`poll`, `epoll`, …): announce that this side sleeps, so that the
    /// peer's next message writes a wake-up to the socket. Returns `false`
    /// when a message or the close is already there: receive instead of
    /// waiting. After the wake-up, [`try_recv`](Self::try_recv) reads what
    /// arrived (it also takes in the wake-up itself).
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

    /// Spin (up to the port's spin time) until [`has_event`](Self::has_event);
    /// returns whether it did. Looks at the socket every `LOOK_EVERY`.
    pub(crate) fn spin_for_event(&self) -> io::Result<bool> {
        self.rx.spin_for_event()
    }

    #[cfg(feature = "tokio")]
    /// Announce that the producer waits for the room the last
    /// [`PostError::Full`] lacked; `false` (nothing announced) if that room
    /// is already there.
    pub(crate) fn prepare_room_wait(&self) -> Result<bool, PostError> {
        self.rx.flush_releases();
        let sh = &self.tx.shared;
        self.tx
            .tx
            .borrow_mut()
            .prepare_wait(self.tx.wanted_room.get())
            .map_err(|c| PostError::Closed(sh.corrupt(c)))
    }

    #[cfg(feature = "tokio")]
    /// Withdraw the producer's wait announcement.
    pub(crate) fn end_room_wait(&self) {
        self.tx.tx.borrow().end_wait();
    }

    /// Close the port. The peer receives every message posted before, then
    /// the close event with [`CloseReason::Closed`]. Dropping the port does
    /// the same.
    pub fn close(self) {
        drop(self)
    }
}

impl PortSender {
    /// Join the halves again; `Err` gives both back if they are not halves
    /// of the same port.
    // The halves come back by value: a rare path, not worth a box.
    #[allow(clippy::result_large_err)]
    pub fn rejoin(self, rx: PortReceiver) -> Result<MessagePort, (PortSender, PortReceiver)> {
        if Arc::ptr_eq(&self.shared, &rx.shared) {
            Ok(MessagePort { tx: self, rx })
        } else {
            Err((self, rx))
        }
    }

    /// Largest payload that travels inside the ring.
    #[inline]
    pub fn max_inline_payload(&self) -> usize {
        self.tx.borrow().max_payload()
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
        let sh = &self.shared;
        if sh.broken() {
            return Err(PostError::Closed(CloseReason::ProtocolError));
        }
        if self.tx.borrow().consumer_closed() {
            return Err(PostError::Closed(CloseReason::Closed));
        }
        if sh.hung_up() {
            return Err(PostError::Closed(self.peer_gone_reason()));
        }
        Ok(())
    }

    /// Why posts fail once the peer is gone: it stopped reading (closed
    /// its receiving side), broke the protocol, or died.
    fn peer_gone_reason(&self) -> CloseReason {
        self.shared.gone_reason(self.tx.borrow().consumer_closed())
    }

    fn corrupt(&self, c: Corrupt) -> CloseReason {
        self.shared.corrupt(c)
    }

    /// Send a wake token; a hung-up peer is reported as its close reason.
    fn wake_peer(&self) -> Result<(), CloseReason> {
        self.shared
            .wake_peer()
            .map_err(|()| self.peer_gone_reason())
    }

    fn drain_socket(&self) -> io::Result<()> {
        self.shared.drain_socket(Half::Sender, false)
    }
}

impl PortReceiver {
    /// How this half treats what the peer writes (see [`Trust`]).
    pub fn set_trust(&self, trust: Trust) {
        self.trust.set(trust);
    }

    /// The trust mode.
    pub fn trust(&self) -> Trust {
        self.trust.get()
    }

    /// The largest message this half accepts (see
    /// [`MessagePort::set_max_message_size`]).
    pub fn set_max_message_size(&self, bytes: usize) {
        self.max_message.set(bytes);
    }

    /// The largest message this half accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message.get()
    }

    /// Would `try_recv` return a message or the close event now?
    pub(crate) fn has_event(&self) -> bool {
        let sh = &self.shared;
        if sh.broken() || sh.hung_up() {
            return true;
        }
        let rx = self.rx.borrow();
        rx.has_message() || rx.producer_closed()
    }

    /// Announce a sleep (without the barrier).
    fn arm(&self) {
        self.flush_releases();
        self.rx.borrow().announce_sleep();
    }

    /// Why the close event came: the peer closed its sending side, broke
    /// the protocol, or died.
    fn peer_gone_reason(&self) -> CloseReason {
        self.shared.gone_reason(self.rx.borrow().producer_closed())
    }

    fn corrupt(&self, c: Corrupt) -> CloseReason {
        self.shared.corrupt(c)
    }

    fn drain_socket(&self, until_attachment: bool) -> io::Result<()> {
        self.shared.drain_socket(Half::Receiver, until_attachment)
    }
}

impl Drop for PortSender {
    fn drop(&mut self) {
        if self.shared.transferred.load(Ordering::Relaxed) {
            // Its parts travel on: this is not a close.
            return;
        }
        // Publish what this side produced, then the producer's closed flag;
        // wake the peer if it sleeps. The socket stays open while the other
        // half lives: only this wake-up tells a sleeping peer.
        if self.tx.get_mut().close() {
            let _ = self.shared.wake_peer();
        }
    }
}

impl Drop for PortReceiver {
    fn drop(&mut self) {
        if self.shared.transferred.load(Ordering::Relaxed) {
            return;
        }
        // Publish what this side consumed, then the consumer's closed flag;
        // wake the peer if it waits for room (see `PortSender`'s drop).
        if self.rx.get_mut().close() {
            let _ = self.shared.wake_peer();
        }
        // Ports in messages never read: close them properly (their peers
        // see Closed, not PeerDied).
        let _ = self.drain_socket(false);
        let orphans: Vec<Attachment> = self.shared.inbox().drain(..).collect();
        for att in orphans {
            for p in att.ports {
                crate::wire::attachment::discard(p);
            }
        }
        // The socket closes (the peer's hang-up) when the last half drops.
    }
}

impl AsFd for MessagePort {
    /// The port's socket: readable when the peer wakes this port (after this
    /// port announced it sleeps) or hung up when the peer is gone.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tx.shared.sock.as_fd()
    }
}

impl AsFd for PortReceiver {
    /// The port's socket (see [`MessagePort`]'s `AsFd`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock.as_fd()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePort")
            .field("capacity", &self.seg.capacity())
            .field("hung_up", &self.hung_up())
            .field("broken", &self.broken.get())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MessagePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tx.shared.fmt(f)
    }
}

impl std::fmt::Debug for PortSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PortSender").field(&self.shared).finish()
    }
}

impl std::fmt::Debug for PortReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PortReceiver").field(&self.shared).finish()
    }
}
