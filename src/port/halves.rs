//! The two halves of a port: the sending half owns the producer of the
//! ring the port writes, the receiving half the consumer of the ring it
//! reads. Splitting a port, rejoining it, and what dropping a half closes.

use core::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use rkyv::ser::allocator::Arena;

use super::{Half, MessagePort, Shared, Trust};
use crate::error::{CloseReason, PostError};
use crate::shm::layout::CLOSED_MOVED;
use crate::shm::pool::reader::PoolReader;
use crate::shm::pool::writer::PoolWriter;
use crate::shm::ring::{Consumer, Corrupt, Producer};
use crate::shm::segment::SegmentRing;
use crate::sys::kick::Kick;
use crate::wire::attachment::Attachment;

/// The sending half of a port ([`MessagePort::split`]): posts to the peer.
/// It can live on another thread than its [`PortReceiver`]. Dropping it
/// closes the direction it sends in: the peer reads what was posted, then
/// its close event; the other direction goes on.
pub struct PortSender {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: RefCell<Producer<SegmentRing>>,
    /// A [`Reservation`] is live: other posts must wait for it.
    pub(super) reserving: Cell<bool>,
    /// This half holds the posting claim of its channel's segment (a post
    /// whose descriptors or kit references must reach the peer where it is
    /// now: `KitWords::claim_posting`) until its record commits.
    pub(super) posting: Cell<bool>,
    /// Payload room the last post that found the ring full needed.
    pub(super) wanted_room: Cell<usize>,
    /// Posts larger than this go out of line even when the ring could
    /// hold them ([`PortSender::set_inline_limit`]).
    pub(super) inline_limit: Cell<usize>,
    /// The size of the last typed message that went outside the ring (0:
    /// the last one fit): where the next typed value of unknown size is
    /// serialized first.
    pub(super) large_hint: Cell<usize>,
    /// Scratch space for rkyv serializers (kept here, not in a thread local:
    /// no lookup per post), made at the first typed post (2 KiB: thousands
    /// of ports that never post a typed value do without).
    pub(super) arena: RefCell<Option<Arena>>,
    /// The blocks this side lends for messages too large for the ring.
    pub(super) pool: RefCell<PoolWriter>,
}

/// The receiving half of a port ([`MessagePort::split`]): receives what
/// the peer posts. Dropping it tells the peer's posts that nobody reads.
pub struct PortReceiver {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: RefCell<Consumer<SegmentRing>>,
    pub(super) trust: Cell<Trust>,
    /// The largest out-of-line payload this half maps.
    pub(super) max_message: Cell<usize>,
    /// The buffers of the peer's pool, and the way its blocks go back;
    /// shared with the blocks handed out as [`SharedBytes`](crate::SharedBytes),
    /// which give theirs back from any thread.
    pub(super) pool: Arc<Mutex<PoolReader>>,
}

// Ports and halves move between threads (they are not shared between them).
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<MessagePort>();
    is_send::<PortSender>();
    is_send::<PortReceiver>();
};

impl MessagePort {
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
        // Halves wake each other through the port's socket: a port on a
        // link gets one of its own first.
        if let Err(error) = self.leave_link_or_gone() {
            return Err(SplitError { error, port: self });
        }
        if self.tx().shared.kicks.get().is_none() {
            let kicks = match Kick::new().and_then(|k| Ok([k, Kick::new()?])) {
                Ok(kicks) => kicks,
                Err(error) => return Err(SplitError { error, port: self }),
            };
            let _ = self.tx().shared.kicks.set(kicks);
        }
        let h = self.into_halves();
        Ok((h.tx, h.rx))
    }
}

impl PortSender {
    /// Join the halves again; `Err` gives both back if they are not halves
    /// of the same port.
    // The halves come back by value: a rare path, not worth a box.
    #[allow(clippy::result_large_err)]
    pub fn rejoin(self, rx: PortReceiver) -> Result<MessagePort, (PortSender, PortReceiver)> {
        if Arc::ptr_eq(&self.shared, &rx.shared) {
            Ok(MessagePort::from_halves(self, rx))
        } else {
            Err((self, rx))
        }
    }

    /// Largest payload that travels inside the ring.
    #[inline]
    pub fn max_inline_payload(&self) -> usize {
        self.tx.borrow().max_payload()
    }

    /// Posts whose payload is larger than `bytes` travel out of line (in
    /// their own memfd, the ring holding a small descriptor) even when they
    /// would fit in the ring. A receiver that holds several large messages
    /// at once then pins little ring space: with every post inline, one
    /// held message of nearly half the ring leaves no room for the next of
    /// that size, and a receiver that waits for it while holding the first
    /// waits for ever. Default: no limit (only the ring's,
    /// [`max_inline_payload`](Self::max_inline_payload)). Reservations are
    /// always inline and ignore it.
    pub fn set_inline_limit(&self, bytes: usize) {
        self.inline_limit.set(bytes);
    }

    /// The limit set by [`set_inline_limit`](Self::set_inline_limit).
    pub fn inline_limit(&self) -> usize {
        self.inline_limit.get()
    }

    /// Cap the memory of this side's large-message pool at `bytes`
    /// (`None`: the default, the larger of 64 MiB and four blocks of the
    /// largest size class in use). At the cap, a post that needs a block
    /// waits for the receiver to give one back (`try_` posts fail with
    /// [`PostError::Full`]), as a full ring makes it wait; buffers already
    /// made stay. A message larger than the cap allows (or than the largest
    /// block, 64 MiB) travels in a memfd of its own.
    pub fn set_pool_limit(&self, bytes: Option<usize>) {
        self.pool.borrow_mut().set_limit(bytes);
    }

    /// The cap set by [`set_pool_limit`](Self::set_pool_limit) (`None`:
    /// the default).
    pub fn pool_limit(&self) -> Option<usize> {
        self.pool.borrow().limit()
    }

    /// Bytes of pool memory this side holds now.
    pub fn pool_bytes(&self) -> usize {
        self.pool.borrow().bytes()
    }

    /// The largest reservation ([`reserve_bytes`](Self::reserve_bytes)):
    /// the largest pool block the cap allows (64 MiB by default), or half
    /// the ring if that is more.
    pub fn max_reservation(&self) -> usize {
        self.max_inline_payload()
            .max(self.pool.borrow().largest_block())
    }

    /// Refuse a post while a [`Reservation`] holds the ring's next slot.
    #[inline]
    pub(super) fn check_not_reserved(&self) -> Result<(), PostError> {
        if self.reserving.get() {
            return Err(PostError::Reserved);
        }
        Ok(())
    }

    /// Can a message still reach the peer?
    #[inline]
    pub(super) fn check_postable(&self) -> Result<(), PostError> {
        let sh = &self.shared;
        if sh.broken() {
            return Err(PostError::Closed(CloseReason::ProtocolError));
        }
        let closed = self.tx.borrow().consumer_close_code();
        if closed != 0 {
            return Err(PostError::Closed(sh.gone_reason(closed)));
        }
        if sh.hung_up() {
            return Err(PostError::Closed(self.peer_gone_reason()));
        }
        Ok(())
    }

    /// Why posts fail once the peer is gone: it stopped reading (closed
    /// its receiving side), broke the protocol, or died.
    pub(super) fn peer_gone_reason(&self) -> CloseReason {
        self.shared
            .gone_reason(self.tx.borrow().consumer_close_code())
    }

    pub(super) fn corrupt(&self, c: Corrupt) -> CloseReason {
        self.shared.corrupt(c)
    }

    /// Send a wake token; a hung-up peer is reported as its close reason.
    pub(super) fn wake_peer(&self) -> Result<(), CloseReason> {
        let word = self.tx.borrow().woke();
        self.shared
            .wake_peer(word)
            .map_err(|()| self.peer_gone_reason())
    }

    pub(super) fn drain_socket(&self) -> io::Result<()> {
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

    /// Stop receiving now, keeping the messages already received: as when
    /// this half is dropped, the peer's posts fail with
    /// [`PostError::Closed`] from here on (a post waiting for room wakes up
    /// to it), but the half, and the ring its messages point into, stay
    /// until it is dropped. For holders of messages that outlive the port's
    /// use (the Python binding closes a port whose messages are still
    /// viewed). Receiving afterwards still returns what the peer posted
    /// before it saw the close.
    pub fn close_receiving(&self) {
        if self.close_consumer() {
            let _ = self.shared.wake_peer(self.wake_word());
        }
        // SeqCst: the Dekker pair with a mover's close of the ring with
        // CLOSED_MOVED (`promote::move_off`): either it sees our flag, or
        // we see its move here, follow it, and close there too.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.rx.borrow().producer_close_code() == CLOSED_MOVED
            && self.follow_to_close().is_ok()
            && self.close_consumer()
        {
            let _ = self.shared.wake_peer(self.wake_word());
        }
    }

    /// Publish the consumer's last head, then its closed flag; `true` if
    /// the peer waits (for ring room or for a pool block) and must be woken
    /// to see the close.
    /// The word of the producer's last wait this half woke (1 if it was a
    /// wait for a pool block: pools are on sockets only).
    pub(super) fn wake_word(&self) -> u32 {
        self.rx.borrow().woke().max(1)
    }

    fn close_consumer(&self) -> bool {
        let mut wake = self.rx.borrow_mut().close();
        let mut pool = self.pool_reader();
        // Blocks of messages already dropped go back first.
        wake |= pool.flush().unwrap_or(false);
        wake | pool.wake_due_at_close()
    }

    /// The pool reader (a panic elsewhere while it was locked leaves it
    /// as consistent as any use of it: no invariant spans a call).
    pub(super) fn pool_reader(&self) -> MutexGuard<'_, PoolReader> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the close event came: the peer closed its sending side, broke
    /// the protocol, or died.
    pub(super) fn peer_gone_reason(&self) -> CloseReason {
        self.shared
            .gone_reason(self.rx.borrow().producer_close_code())
    }

    pub(super) fn corrupt(&self, c: Corrupt) -> CloseReason {
        self.shared.corrupt(c)
    }

    pub(super) fn drain_socket(&self, until_attachment: bool) -> io::Result<()> {
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
            let _ = self.shared.wake_peer(self.tx.get_mut().woke());
        }
        // The peer was moving the channel off its link: it may not have
        // seen the close (`promote::move_off`). Follow the move, and close
        // there too.
        if self.tx.get_mut().consumer_moved()
            && self.follow_to_close().is_ok()
            && self.tx.get_mut().close()
        {
            let _ = self.shared.wake_peer(self.tx.get_mut().woke());
        }
    }
}

impl Drop for PortReceiver {
    fn drop(&mut self) {
        if self.shared.transferred.load(Ordering::Relaxed) {
            return;
        }
        // Publish what this side consumed, then the consumer's closed flag;
        // wake the peer if it waits for room or a block (see `PortSender`'s
        // drop).
        if self.close_consumer() {
            let _ = self.shared.wake_peer(self.wake_word());
        }
        // SeqCst: the Dekker pair with a mover's close of the ring with
        // CLOSED_MOVED (`promote::move_off`): either it sees our flag, or
        // we see its move here, follow it, and close there too.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.rx.get_mut().producer_close_code() == CLOSED_MOVED
            && self.follow_to_close().is_ok()
            && self.close_consumer()
        {
            let _ = self.shared.wake_peer(self.wake_word());
        }
        // Ports in messages never read: close them properly (their peers
        // see Closed, not PeerDied).
        let _ = self.drain_socket(false);
        let orphans: Vec<Attachment> = self.shared.inbox().drain(..).collect();
        for att in orphans {
            for p in att.ports {
                super::parts::discard(p);
            }
        }
        self.close_unread_kits();
        // The socket closes (the peer's hang-up) when the last half drops.
    }
}

impl AsFd for PortReceiver {
    /// The port's socket (see [`MessagePort`]'s `AsFd`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock()
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

/// [`MessagePort::split`](crate::MessagePort::split) failed: the port
/// comes back whole, still connected.
#[derive(Debug)]
pub struct SplitError {
    /// Why (the eventfds the halves wake each other with could not be
    /// made, typically out of descriptors).
    pub error: io::Error,
    /// The port, as it was.
    pub port: crate::MessagePort,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot split the port: {}", self.error)
    }
}

impl std::error::Error for SplitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SplitError> for io::Error {
    /// The cause; the port is closed.
    fn from(e: SplitError) -> io::Error {
        e.error
    }
}
