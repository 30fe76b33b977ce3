//! Push receiving, in the model of Electron's `MessagePortMain`: register a
//! message listener and a close listener, then start the port.
//!
//! Registering a listener does not start the port (as in Electron): until
//! it is started, messages wait in the ring. Once started, each message is
//! handed to the message listener in order; after the last one the close
//! listener runs once, with the close reason.
//!
//! Where listeners run is the caller's choice:
//! - [`PushPort::start`]: on a dispatcher thread the library starts for
//!   this port; it ends after the close listener. If a listener panics, the
//!   dispatcher stops, the port closes (its peer sees
//!   [`CloseReason::Closed`]), the close listener does not run, and
//!   [`Dispatcher::join`] returns the panic.
//! - [`PushPort::run`]: on the calling thread, until the close.
//! - [`PushPort::dispatch_ready`]: on the calling thread, only what is
//!   queued now, for an event loop the application drives: call
//!   [`PushPort::prepare_poll`], wait for the port's descriptor ([`AsFd`])
//!   to be readable, then dispatch.
//!
//! On the calling thread a panicking listener unwinds through the call, as
//! any function would.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::error::{CloseReason, RecvError};
use crate::message::Message;
use crate::port::MessagePort;

type OnMessage = Box<dyn FnMut(Message<'_>, &MessagePort) + Send>;
type OnClose = Box<dyn FnOnce(CloseReason) + Send>;
type OnError = Box<dyn FnMut(RecvError) + Send>;

/// A port with listeners, not started yet. See the [module](self) docs.
///
/// ```
/// use std::sync::mpsc;
/// use shmport::{MessageChannel, push::PushPort};
///
/// let (a, b) = MessageChannel::new()?.into_ports();
/// a.post_bytes(b"one")?;
/// a.post_bytes(b"two")?;
/// let (tx, rx) = mpsc::channel();
/// let close_tx = tx.clone();
/// let mut push = PushPort::new(b);
/// push.on_message(move |msg, _port| tx.send(msg.bytes().to_vec()).unwrap())
///     .on_close(move |reason| close_tx.send(format!("{reason}").into_bytes()).unwrap());
/// let dispatcher = push.start()?;
/// drop(a);
/// assert_eq!(rx.recv()?, b"one");
/// assert_eq!(rx.recv()?, b"two");
/// assert_eq!(rx.recv()?, b"closed by the peer");
/// dispatcher.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PushPort {
    port: MessagePort,
    on_message: Option<OnMessage>,
    on_close: Option<OnClose>,
    on_error: Option<OnError>,
    closed: Option<CloseReason>,
}

impl PushPort {
    /// Wrap `port`; nothing is delivered until it is started.
    pub fn new(port: MessagePort) -> PushPort {
        PushPort {
            port,
            on_message: None,
            on_close: None,
            on_error: None,
            closed: None,
        }
    }

    /// The message listener (replaces any earlier one). It gets each
    /// message and the port, to reply on.
    pub fn on_message(
        &mut self,
        listener: impl FnMut(Message<'_>, &MessagePort) + Send + 'static,
    ) -> &mut Self {
        self.on_message = Some(Box::new(listener));
        self
    }

    /// The close listener: runs once, after the last message.
    pub fn on_close(&mut self, listener: impl FnOnce(CloseReason) + Send + 'static) -> &mut Self {
        self.on_close = Some(Box::new(listener));
        self
    }

    /// The error listener, for a message that could not be received (for
    /// example [`RecvError::Io`] when its descriptors could not be
    /// installed). Without one, such messages are skipped; the port goes
    /// on either way.
    pub fn on_error(&mut self, listener: impl FnMut(RecvError) + Send + 'static) -> &mut Self {
        self.on_error = Some(Box::new(listener));
        self
    }

    /// The port, for posting outside the listeners before the start.
    pub fn port(&self) -> &MessagePort {
        &self.port
    }

    /// Start delivering on a dispatcher thread of the library's.
    pub fn start(self) -> io::Result<Dispatcher> {
        let thread = thread::Builder::new()
            .name("shmport-dispatch".into())
            .spawn(move || {
                let mut me = self;
                match catch_unwind(AssertUnwindSafe(|| me.dispatch(None))) {
                    Ok(Some(reason)) => reason,
                    Ok(None) => unreachable!("dispatching without a deadline ends at the close"),
                    Err(panic) => {
                        // Close the port first (dropping `me`), then let
                        // `join` report the panic.
                        drop(me);
                        std::panic::resume_unwind(panic)
                    }
                }
            })?;
        Ok(Dispatcher { thread })
    }

    /// Deliver on the calling thread until the close; returns its reason
    /// (after the close listener ran).
    pub fn run(mut self) -> CloseReason {
        self.dispatch(None)
            .expect("dispatching without a deadline ends at the close")
    }

    /// Before the application's loop waits on the port's descriptor:
    /// `false` means something is already there (dispatch instead of
    /// waiting). See [`MessagePort::prepare_poll`].
    pub fn prepare_poll(&self) -> bool {
        self.closed.is_none() && self.port.prepare_poll()
    }

    /// Deliver what is queued now, on the calling thread; never waits.
    /// Returns the close reason once the close listener has run (later calls
    /// return it again and deliver nothing).
    pub fn dispatch_ready(&mut self) -> Option<CloseReason> {
        self.dispatch(Some(Duration::ZERO))
    }

    /// Deliver until the close, or (with `wait`) until no message arrives
    /// within `wait`.
    fn dispatch(&mut self, wait: Option<Duration>) -> Option<CloseReason> {
        if self.closed.is_some() {
            return self.closed;
        }
        loop {
            let got = match wait {
                None => self.port.recv(),
                Some(d) if d.is_zero() => self.port.try_recv(),
                Some(d) => self.port.recv_timeout(d),
            };
            match got {
                Ok(msg) => {
                    if let Some(f) = &mut self.on_message {
                        f(msg, &self.port);
                    }
                }
                Err(RecvError::Closed(reason)) => {
                    self.closed = Some(reason);
                    if let Some(f) = self.on_close.take() {
                        f(reason);
                    }
                    return Some(reason);
                }
                Err(RecvError::Empty | RecvError::Timeout) => return None,
                Err(e) => {
                    if let Some(f) = &mut self.on_error {
                        f(e);
                    }
                }
            }
        }
    }
}

impl AsFd for PushPort {
    /// The port's socket: readable when the peer wakes the port (after
    /// [`PushPort::prepare_poll`]) or goes away.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.port.as_fd()
    }
}

impl std::fmt::Debug for PushPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushPort")
            .field("port", &self.port)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The library's dispatcher thread for one started [`PushPort`].
#[derive(Debug)]
pub struct Dispatcher {
    thread: JoinHandle<CloseReason>,
}

impl Dispatcher {
    /// Wait for the dispatcher to end (after the close listener); the
    /// close reason, or the panic of a listener.
    pub fn join(self) -> thread::Result<CloseReason> {
        self.thread.join()
    }

    /// Has the dispatcher ended?
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}
