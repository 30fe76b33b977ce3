//! Async ports for tokio (feature `tokio`).
//!
//! An [`AsyncPort`] waits on the port's socket through the runtime's
//! reactor: no thread per port. The spin-then-park policy still applies: a
//! receive first spins on the ring for the port's spin time (no system
//! call, no reactor), and only then announces that it sleeps and awaits the
//! socket. A message that arrives while spinning never goes through the
//! reactor. (The spin runs on the executor's thread: set it to zero with
//! [`MessagePort::set_spin`] for ports that are mostly idle.)
//!
//! Cancel safety: [`AsyncPort::recv`] takes a message out of the ring only
//! when it returns it, so a `recv` future dropped at any `.await` loses
//! nothing; the same holds for [`AsyncPort::post`], which commits only when
//! it returns `Ok`.
//!
//! Futures of an `AsyncPort` are `Send` (they hold `&mut AsyncPort`). A
//! [`Message`] borrows the port and is not `Send`: read it and drop it
//! before the next `.await` in a spawned task, or use
//! [`AsyncPort::into_stream`], whose items are owned copies.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmport::{MessageChannel, aio::AsyncPort};
//!
//! let (a, b) = MessageChannel::new()?.into_ports();
//! let (mut a, mut b) = (AsyncPort::new(a)?, AsyncPort::new(b)?);
//! a.post(&"hello".to_string()).await?;
//! let msg = b.recv().await?;
//! assert_eq!(msg.get::<String>()?.as_str(), "hello");
//! # Ok(())
//! # }
//! ```

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use tokio::io::unix::AsyncFd;

use crate::CloseReason;
use crate::error::{PostError, RecvError};
use crate::many::port_set::PortSet;
use crate::port::MessagePort;
use crate::port::TransferError;
use crate::port::message::{Message, OwnedMessage};
use crate::wire::writer::Postable;

/// A descriptor number registered with the reactor. It does not own the
/// descriptor: the port (or port set) beside it does, and outlives it.
struct Registered(RawFd);

impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Register `fd` with the current runtime's reactor.
///
/// # Safety
/// `fd` must stay open, referring to the same file, for as long as the
/// returned `AsyncFd` lives (tokio's `register_with_interest` contract).
unsafe fn register(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<AsyncFd<Registered>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "shmport::aio needs a tokio runtime (create the async port inside one)",
        ));
    }
    let interest = tokio::io::Interest::READABLE;
    // SAFETY: passed on to our caller.
    unsafe { AsyncFd::register_with_interest(Registered(fd.as_raw_fd()), interest) }
        .map_err(|e| e.into_parts().1)
}

/// A [`MessagePort`] whose waits are awaited on a tokio reactor.
pub struct AsyncPort {
    // Declared first: deregistered from the reactor before the port closes
    // the descriptor.
    fd: AsyncFd<Registered>,
    port: MessagePort,
}

impl AsyncPort {
    /// Register `port` with the current tokio runtime's reactor. Fails
    /// outside a runtime.
    pub fn new(port: MessagePort) -> io::Result<AsyncPort> {
        // SAFETY: `port` owns the socket and is stored beside `fd`, declared
        // after it (so dropped after it); `into_inner` drops `fd` first; no
        // method closes the socket through `&MessagePort`.
        let fd = unsafe { register(port.as_fd())? };
        Ok(AsyncPort { fd, port })
    }

    /// The port, for its non-waiting calls (`try_post`, `try_recv`, …).
    pub fn port(&self) -> &MessagePort {
        &self.port
    }

    /// Deregister and give the port back.
    pub fn into_inner(self) -> MessagePort {
        let AsyncPort { fd, port } = self;
        drop(fd);
        port
    }

    /// Receive the next message; after the last one, the close event
    /// ([`RecvError::Closed`]). Spins for the port's spin time first.
    pub async fn recv(&mut self) -> Result<Message<'_>, RecvError> {
        if !self.port.spin_for_event().map_err(RecvError::Io)? {
            let this = &mut *self;
            poll_fn(move |cx| this.poll_event(cx))
                .await
                .map_err(RecvError::Io)?;
        }
        // The port has an event (a message, or the close): `try_recv` takes
        // it; nothing else consumes from this port meanwhile.
        self.port.try_recv()
    }

    /// Ready when the port has a message or its close event. Announces
    /// the sleep to the peer (so that its next commit sends a token) before
    /// it lets the reactor wait.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.port.has_event() {
                return Poll::Ready(Ok(()));
            }
            self.port.arm();
            self.port.sleep_barrier();
            if self.port.has_event() {
                self.port.disarm();
                return Poll::Ready(Ok(()));
            }
            // Pending leaves the announcement up: the peer's next commit
            // sends the token that wakes this task. (If the future is
            // dropped instead, the stale announcement costs the peer one
            // wake token at most.)
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            self.port.disarm();
            // Read the socket dry (tokens, attachments, the hang-up), so
            // clearing the readiness loses no edge.
            self.port.take_in()?;
            guard.clear_ready();
        }
    }

    /// Post a typed value, awaiting room if the ring is full. Spins for the
    /// port's spin time before it awaits.
    pub async fn post<T: Postable>(&mut self, value: &T) -> Result<(), PostError> {
        self.post_with(|p| p.try_post(value)).await
    }

    /// Post raw bytes, awaiting room if the ring is full.
    pub async fn post_bytes(&mut self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_with(|p| p.try_post_bytes(bytes)).await
    }

    /// Post raw bytes with ports attached, awaiting room. On failure every
    /// port comes back in the error.
    pub async fn post_bytes_with_ports(
        &mut self,
        bytes: &[u8],
        mut ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        loop {
            let e = match self.port.try_post_bytes_with_ports(bytes, ports) {
                Err(e) if matches!(e.error, PostError::Full) => e,
                r => return r,
            };
            ports = e.ports;
            let this = &mut *self;
            if let Err(error) = poll_fn(move |cx| this.poll_room(cx)).await {
                return Err(TransferError { error, ports });
            }
        }
    }

    async fn post_with(
        &mut self,
        mut attempt: impl FnMut(&MessagePort) -> Result<(), PostError>,
    ) -> Result<(), PostError> {
        let spin_until = Instant::now() + self.port.spin();
        loop {
            match attempt(&self.port) {
                Err(PostError::Full) => {}
                r => return r,
            }
            if Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            let this = &mut *self;
            poll_fn(move |cx| this.poll_room(cx)).await?;
        }
    }

    /// Ready when the room the last full post needed may be there (or the
    /// peer is gone: the next attempt says so).
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PostError>> {
        if !self.port.prepare_room_wait(self.port.wanted_room())? {
            return Poll::Ready(Ok(()));
        }
        let mut guard = match self.fd.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.map_err(PostError::Io)?,
        };
        self.port.end_room_wait();
        self.port.take_in().map_err(PostError::Io)?;
        guard.clear_ready();
        Poll::Ready(Ok(()))
    }

    /// The port as a [`Stream`](futures_core::Stream) of owned messages
    /// ([`OwnedMessage`]: the payload copied out of the ring, ports taken),
    /// ending after the close event; [`MessageStream::close_reason`] then
    /// says why. An error other than the close is yielded as an item.
    pub fn into_stream(self) -> MessageStream {
        MessageStream {
            port: self,
            closed: None,
        }
    }
}

impl AsFd for AsyncPort {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.port.as_fd()
    }
}

impl std::fmt::Debug for AsyncPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncPort")
            .field("port", &self.port)
            .finish()
    }
}

/// The messages of an [`AsyncPort`] as a stream ([`AsyncPort::into_stream`]).
pub struct MessageStream {
    port: AsyncPort,
    closed: Option<CloseReason>,
}

impl MessageStream {
    /// Why the stream ended (`None` while it has not).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// The async port back.
    pub fn into_inner(self) -> AsyncPort {
        self.port
    }
}

impl futures_core::Stream for MessageStream {
    type Item = Result<OwnedMessage, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.closed.is_some() {
                return Poll::Ready(None);
            }
            if let Err(e) = ready!(this.port.poll_event(cx)) {
                return Poll::Ready(Some(Err(RecvError::Io(e))));
            }
            match this.port.port.try_recv() {
                Ok(m) => return Poll::Ready(Some(Ok(m.to_owned_message()))),
                Err(RecvError::Empty) => continue,
                Err(RecvError::Closed(reason)) => this.closed = Some(reason),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl futures_core::stream::FusedStream for MessageStream {
    fn is_terminated(&self) -> bool {
        self.closed.is_some()
    }
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// A [`PortSet`] awaited on a tokio reactor: one registration (its epoll
/// descriptor) for all its ports.
pub struct AsyncPortSet {
    fd: AsyncFd<Registered>,
    set: PortSet,
}

impl AsyncPortSet {
    /// Register `set` with the current tokio runtime's reactor.
    pub fn new(set: PortSet) -> io::Result<AsyncPortSet> {
        // SAFETY: `set` owns the epoll descriptor for its whole life and is
        // stored beside `fd`, dropped after it (`into_inner` drops `fd`
        // first).
        let fd = unsafe { register(std::os::fd::AsFd::as_fd(&set))? };
        Ok(AsyncPortSet { fd, set })
    }

    /// The set, to add, remove and use ports.
    pub fn set(&mut self) -> &mut PortSet {
        &mut self.set
    }

    /// The port at `key`.
    pub fn get(&self, key: usize) -> Option<&MessagePort> {
        self.set.get(key)
    }

    /// Await the next port with a message or a close event; its key
    /// (`None` only for an empty set). Round robin, like [`PortSet::wait`].
    pub async fn wait(&mut self) -> io::Result<Option<usize>> {
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        loop {
            if self.set.is_empty() {
                return Poll::Ready(Ok(None));
            }
            if let Some(k) = self.set.ready_now() {
                return Poll::Ready(Ok(Some(k)));
            }
            if let Some(k) = self.set.arm_all() {
                return Poll::Ready(Ok(Some(k)));
            }
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            // Take what the epoll instance holds now; only an empty answer
            // means the readiness was used up.
            if self.set.collect(Some(std::time::Duration::ZERO))? == 0 {
                guard.clear_ready();
            }
        }
    }

    /// Deregister and give the set back.
    pub fn into_inner(self) -> PortSet {
        let AsyncPortSet { fd, set } = self;
        drop(fd);
        set
    }
}

impl std::fmt::Debug for AsyncPortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncPortSet")
            .field("ports", &self.set.len())
            .finish()
    }
}
