//! A port: one end of a channel.
//!
//! A port is two halves over one shared core: the sending half owns the
//! producer of the ring the port writes, the receiving half the consumer of
//! the ring it reads, and the [`Shared`] core holds what both use (the
//! segment, the socket, the inbox of received attachments, the close
//! state). A [`MessagePort`] holds both halves and is used by one thread at
//! a time; [`MessagePort::split`] gives them to two threads.
//!
//! Here: the port's type and settings. The shared core in [`shared`], the
//! halves in [`halves`], taking apart and rebuilding in [`parts`], posting
//! in [`send`], receiving in [`recv`], zero-copy reservations in
//! [`reserve`], messages in [`message`], readiness for waiters in
//! [`readiness`].

mod attach;
mod bind;
mod follow;
mod fresh;
mod halves;
pub(crate) mod kit;
mod large;
pub(crate) mod message;
pub(crate) mod parts;
mod promote;
mod readiness;
pub(crate) mod recv;
mod relay;
mod reserve;
mod send;
mod shared;
#[cfg(test)]
mod tests;

pub(crate) use fresh::{Fresh, Settings};
pub use halves::{PortReceiver, PortSender, SplitError};
pub use parts::TransferError;
pub use reserve::Reservation;
pub(crate) use shared::Shared;

use core::cell::OnceCell;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
    /// Set when the port is made, or (a port of a channel made in this
    /// process) when it is first used: see [`fresh`].
    halves: OnceCell<Halves>,
    /// The channel this port was made with, while it may still travel as a
    /// kit; which of its two ports this is.
    fresh: Option<(Arc<fresh::Fresh>, usize)>,
}

/// A port's two halves.
pub(crate) struct Halves {
    // Dropped in this order: the sending half publishes its closed flag,
    // then the receiving half; the socket closes with the last `Shared`.
    pub(super) tx: PortSender,
    pub(super) rx: PortReceiver,
}

impl MessagePort {
    pub(super) fn from_halves(tx: PortSender, rx: PortReceiver) -> MessagePort {
        MessagePort {
            halves: OnceCell::from(Halves { tx, rx }),
            fresh: None,
        }
    }

    /// A port of a channel made here that has not been used yet.
    pub(super) fn unused(fresh: Arc<fresh::Fresh>, index: usize) -> MessagePort {
        MessagePort {
            halves: OnceCell::new(),
            fresh: Some((fresh, index)),
        }
    }

    #[inline]
    fn halves(&self) -> &Halves {
        match self.halves.get() {
            Some(h) => h,
            None => self.first_use(),
        }
    }

    /// A port of a channel made here, used for the first time: its halves
    /// are built now, over the channel's own segment or the kit one of
    /// its ports took when it travelled ([`fresh`]).
    #[cold]
    fn first_use(&self) -> &Halves {
        self.halves.get_or_init(|| match &self.fresh {
            Some((fresh, index)) => fresh.claim(*index),
            // Every other port is made with its halves.
            None => unreachable!("a port without halves"),
        })
    }

    #[inline]
    pub(super) fn tx(&self) -> &PortSender {
        &self.halves().tx
    }

    #[inline]
    pub(super) fn rx(&self) -> &PortReceiver {
        &self.halves().rx
    }

    /// The halves, built if need be.
    pub(super) fn into_halves(mut self) -> Halves {
        self.halves();
        match std::mem::take(&mut self.halves).into_inner() {
            Some(h) => h,
            None => unreachable!("halves built just above"),
        }
    }

    /// How long blocking calls spin (checking the ring, no system call)
    /// before they sleep on the port's socket. Zero sleeps at once; a long
    /// spin gives the lowest latency and burns a core while waiting.
    pub fn set_spin(&self, spin: Duration) {
        let ns = spin.as_nanos().min(u64::MAX as u128) as u64;
        self.tx().shared.spin_ns.store(ns, Ordering::Relaxed);
    }

    /// The current spin time (see [`MessagePort::set_spin`]).
    pub fn spin(&self) -> Duration {
        self.tx().shared.spin()
    }

    /// Largest payload that travels inside the ring; larger messages go
    /// into a block of the port's pool (up to 64 MiB), larger still out of
    /// line, each in its own sealed memfd.
    #[inline]
    pub fn max_inline_payload(&self) -> usize {
        self.tx().max_inline_payload()
    }

    /// Posts larger than `bytes` travel outside the ring (in the pool, or
    /// out of line) even when the ring could hold them (see
    /// [`PortSender::set_inline_limit`]).
    pub fn set_inline_limit(&self, bytes: usize) {
        self.tx().set_inline_limit(bytes);
    }

    /// The limit set by [`set_inline_limit`](Self::set_inline_limit).
    pub fn inline_limit(&self) -> usize {
        self.tx().inline_limit()
    }

    /// Cap the memory of this port's large-message pool (see
    /// [`PortSender::set_pool_limit`]). Kept only in this process: a port
    /// that travels starts a pool of its own, with the default cap.
    pub fn set_pool_limit(&self, bytes: Option<usize>) {
        self.tx().set_pool_limit(bytes);
    }

    /// Bytes of pool memory this port holds now (its buffers for messages
    /// too large for the ring).
    pub fn pool_bytes(&self) -> usize {
        self.tx().pool_bytes()
    }

    /// The largest message [`reserve_bytes`](Self::reserve_bytes) takes
    /// (see [`PortSender::max_reservation`]).
    pub fn max_reservation(&self) -> usize {
        self.tx().max_reservation()
    }

    /// Bytes in each direction's ring: the size the channel was made with,
    /// after [`ChannelBuilder::capacity`](crate::ChannelBuilder::capacity)'s
    /// rounding (the same at both ends, wherever the port travels).
    pub fn capacity(&self) -> usize {
        self.tx().shared.seg().capacity()
    }

    /// How this port treats what its peer writes (see [`Trust`]). A port
    /// that arrives in a message starts [`Trust::Validated`].
    pub fn set_trust(&self, trust: Trust) {
        self.rx().set_trust(trust);
    }

    /// The port's trust mode.
    pub fn trust(&self) -> Trust {
        self.rx().trust()
    }

    /// The largest message this port accepts, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]). A larger message from outside the
    /// ring (in the peer's pool, or out of line) is refused before it is
    /// read (an out-of-line one before it is mapped): that receive returns
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
    /// a.post_bytes(&vec![1; 100 * 1024])?; // in the pool: larger than the ring
    /// a.post_bytes(b"small")?;
    /// assert!(matches!(b.recv(), Err(RecvError::Refused(_))));
    /// assert_eq!(b.recv()?.bytes(), b"small");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_message_size(&self, bytes: usize) {
        self.rx().set_max_message_size(bytes);
    }

    /// The largest message this port accepts (see
    /// [`set_max_message_size`](Self::set_max_message_size)).
    pub fn max_message_size(&self) -> usize {
        self.rx().max_message_size()
    }

    /// Close the port. The peer receives every message posted before, then
    /// the close event with [`CloseReason::Closed`](crate::CloseReason::Closed). Dropping the port does
    /// the same.
    pub fn close(self) {
        drop(self)
    }
}

impl Drop for MessagePort {
    /// A port of a channel made here, dropped before it was used: closed
    /// as if it had been built (its peer sees `Closed`).
    fn drop(&mut self) {
        if self.halves.get().is_none()
            && let Some((fresh, index)) = &self.fresh
        {
            fresh.release(*index);
        }
    }
}

impl AsFd for MessagePort {
    /// The port's socket: readable when the peer wakes this port (after this
    /// port announced it sleeps) or hung up when the peer is gone.
    ///
    /// A port of a channel made for a link (a channel per request) has no
    /// socket of its own until asked for it here: it then moves to a
    /// segment and socket pair of its own (its peer follows), once.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.own_socket();
        self.tx().shared.sock()
    }
}

impl std::fmt::Debug for MessagePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tx().shared.fmt(f)
    }
}
