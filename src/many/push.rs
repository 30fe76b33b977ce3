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
//!
//! The owner closes a started port (Electron's `port.close()`, the web's
//! `close()` from inside `onmessage`) with a [`Closer`]: from
//! [`PushPort::closer`] before the start (move it into a listener to close
//! from inside it) or [`Dispatcher::closer`] after; [`Dispatcher::close`]
//! closes and joins. As on the web, no message listener call starts once the
//! close is seen (messages received but not delivered yet are dropped
//! with the port), the close listener does not run (the close event is the
//! peer's), and the peer reads everything posted before, then its close
//! event with [`CloseReason::Closed`]. A dispatcher asleep waiting for a
//! message wakes for the close at once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};

use crate::error::{CloseReason, RecvError};
use crate::port::MessagePort;
use crate::port::message::Message;
use crate::sys;
use crate::sys::kick::Kick;

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
///
/// Closing from inside the message listener, as the web's `port.close()`
/// in `onmessage`:
/// ```
/// use shmport::{CloseReason, MessageChannel, RecvError, push::{Ended, PushPort}};
///
/// let (a, b) = MessageChannel::new()?.into_ports();
/// a.post_bytes(b"work")?;
/// a.post_bytes(b"stop")?;
/// a.post_bytes(b"never delivered")?;
/// let mut push = PushPort::new(b);
/// let closer = push.closer();
/// push.on_message(move |msg, _port| {
///     if msg.bytes() == b"stop" {
///         closer.close();
///     }
/// });
/// let dispatcher = push.start()?;
/// assert_eq!(dispatcher.join().unwrap(), Ended::ClosedHere);
/// // The peer's close event.
/// assert!(matches!(a.recv(), Err(RecvError::Closed(CloseReason::Closed))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PushPort {
    held: Held,
    on_message: Option<OnMessage>,
    on_close: Option<OnClose>,
    on_error: Option<OnError>,
    signal: Arc<CloseSignal>,
    ended: Option<Ended>,
}

/// How a [`PushPort`]'s delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ended {
    /// The close event: the peer went, for this reason, after every message
    /// it posted was delivered; the close listener ran.
    PeerGone(CloseReason),
    /// The port's owner closed it ([`Closer::close`]): no message listener
    /// call started after the close was seen, the close listener did not
    /// run, and the peer sees [`CloseReason::Closed`] after everything this
    /// side posted.
    ClosedHere,
}

/// What a [`PushPort`] holds: its port, or once a [`Closer`] closed it, the
/// kick that [`AsFd`] then gives.
// One per PushPort, open nearly all its life: boxing the port would cost a
// pointer chase on every delivery for nothing.
#[allow(clippy::large_enum_variant)]
enum Held {
    Open(MessagePort),
    Closed(Arc<Kick>),
}

/// A close asked for by a [`Closer`], and the eventfd that wakes a
/// dispatcher asleep in its wait.
#[derive(Debug, Default)]
struct CloseSignal {
    /// Asked for. A mutex, not a flag: the dispatcher checks it and creates
    /// the kick under the lock, so a close either is seen before the sleep
    /// or finds the kick to wake it.
    asked: Mutex<bool>,
    kick: OnceLock<Arc<Kick>>,
}

impl CloseSignal {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // A panic while holding the lock leaves a plain bool.
        self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn asked(&self) -> bool {
        *self.lock()
    }

    /// The kick, created if it is not there yet (`None` if the eventfd
    /// cannot be created: out of descriptors).
    fn kick(&self) -> Option<&Arc<Kick>> {
        if self.kick.get().is_none() {
            if let Ok(k) = Kick::new() {
                let _ = self.kick.set(Arc::new(k));
            }
        }
        self.kick.get()
    }
}

/// Closes a started (or running) [`PushPort`] from anywhere: inside a
/// listener, or another thread. Cheap to clone; `Send` and `Sync`.
#[derive(Debug, Clone)]
pub struct Closer {
    signal: Arc<CloseSignal>,
}

impl Closer {
    /// Close the port. Delivery stops before the next message listener call
    /// (one running on another thread finishes); the dispatcher wakes at
    /// once if it sleeps, ends with [`Ended::ClosedHere`], and the port
    /// closes: its peer reads what this side posted before, then
    /// [`CloseReason::Closed`]. Messages received and not delivered yet are
    /// dropped (ports inside them close). Closing twice, or after the peer's
    /// close event, does nothing.
    ///
    /// With [`PushPort::dispatch_ready`] the close takes effect at the next
    /// call (the application's loop is not woken).
    pub fn close(&self) {
        let mut asked = self.signal.lock();
        *asked = true;
        if let Some(k) = self.signal.kick.get() {
            k.kick();
        }
    }
}

impl PushPort {
    /// Wrap `port`; nothing is delivered until it is started.
    pub fn new(port: MessagePort) -> PushPort {
        let signal = CloseSignal::default();
        // Made now if it can be; otherwise when the dispatcher first
        // sleeps.
        let _ = signal.kick();
        PushPort {
            held: Held::Open(port),
            on_message: None,
            on_close: None,
            on_error: None,
            signal: Arc::new(signal),
            ended: None,
        }
    }

    /// A handle that closes this port, before or after the start: move it
    /// into a listener to close from inside it, or keep it on another
    /// thread. See [`Closer::close`].
    pub fn closer(&self) -> Closer {
        Closer {
            signal: self.signal.clone(),
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

    /// The port, for posting outside the listeners before the start or
    /// between [`dispatch_ready`](Self::dispatch_ready) calls; `None` once a
    /// [`Closer`] closed it.
    pub fn port(&self) -> Option<&MessagePort> {
        match &self.held {
            Held::Open(port) => Some(port),
            Held::Closed(_) => None,
        }
    }

    /// Start delivering on a dispatcher thread of the library's. If the
    /// thread cannot be started, the push port comes back in the error,
    /// open and with its listeners: run it another way, or drop it.
    pub fn start(self) -> Result<Dispatcher, StartError> {
        let signal = self.signal.clone();
        // The thread takes the push port out of this slot; if the thread
        // never starts, it is still there to hand back.
        let slot = Arc::new(Mutex::new(Some(self)));
        let theirs = slot.clone();
        let spawned = thread::Builder::new()
            .name("shmport-dispatch".into())
            .spawn(move || {
                let taken = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(theirs);
                let Some(mut me) = taken else {
                    return Ended::ClosedHere;
                };
                match catch_unwind(AssertUnwindSafe(|| me.deliver(true))) {
                    // Waiting, it returns only at the end.
                    Ok(ended) => ended.unwrap_or(Ended::ClosedHere),
                    Err(panic) => {
                        // Close the port first (dropping `me`), then let
                        // `join` report the panic.
                        drop(me);
                        std::panic::resume_unwind(panic)
                    }
                }
            });
        match spawned {
            Ok(thread) => Ok(Dispatcher {
                thread,
                closer: Closer { signal },
            }),
            Err(error) => {
                let back = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                match back {
                    Some(push) => Err(StartError {
                        error,
                        push: Box::new(push),
                    }),
                    // Only a started thread takes it out.
                    None => unreachable!("a thread that failed to start took the port"),
                }
            }
        }
    }

    /// Deliver on the calling thread until the close event, or until a
    /// [`Closer`] closes the port.
    pub fn run(mut self) -> Ended {
        // Waiting, it returns only at the end.
        self.deliver(true).unwrap_or(Ended::ClosedHere)
    }

    /// Before the application's loop waits on the port's descriptor:
    /// `false` means something is already there (dispatch instead of
    /// waiting). See [`MessagePort::prepare_poll`].
    pub fn prepare_poll(&self) -> bool {
        match &self.held {
            Held::Open(port) => self.ended.is_none() && !self.signal.asked() && port.prepare_poll(),
            Held::Closed(_) => false,
        }
    }

    /// Deliver what is queued now, on the calling thread; never waits.
    /// Returns how delivery ended once it has (later calls return it again
    /// and deliver nothing): after the close listener ran, or once a
    /// [`Closer`] closed the port.
    pub fn dispatch_ready(&mut self) -> Option<Ended> {
        self.deliver(false)
    }

    /// Deliver until the end, or (without `wait`) until nothing is queued.
    fn deliver(&mut self, wait: bool) -> Option<Ended> {
        loop {
            if self.ended.is_some() {
                return self.ended;
            }
            if self.signal.asked() {
                self.close_here();
                continue;
            }
            let PushPort {
                held: Held::Open(port),
                on_message,
                ..
            } = self
            else {
                // No port without an end: closed here.
                return Some(Ended::ClosedHere);
            };
            // Decided here, acted on below: the received message borrows
            // the port until this statement ends.
            let next = match port.try_recv() {
                Ok(msg) => {
                    if let Some(f) = on_message {
                        f(msg, port);
                    }
                    continue;
                }
                Err(RecvError::Closed(reason)) => Err(reason),
                Err(RecvError::Empty | RecvError::Timeout) => Ok(None),
                Err(e) => Ok(Some(e)),
            };
            match next {
                Err(reason) => {
                    self.ended = Some(Ended::PeerGone(reason));
                    if let Some(f) = self.on_close.take() {
                        f(reason);
                    }
                }
                Ok(None) if !wait => return None,
                Ok(None) => {
                    if let Err(e) = self.sleep() {
                        self.report(RecvError::Io(e));
                    }
                }
                Ok(Some(e)) => self.report(e),
            }
        }
    }

    fn report(&mut self, e: RecvError) {
        if let Some(f) = &mut self.on_error {
            f(e);
        }
    }

    /// Nothing queued: spin for the port's spin time, as a blocking
    /// receive does, then sleep until the peer wakes the port or a
    /// [`Closer`] kicks the signal.
    fn sleep(&self) -> io::Result<()> {
        let Held::Open(port) = &self.held else {
            return Ok(());
        };
        if port.spin_for_event()? {
            return Ok(());
        }
        let kick = {
            let asked = self.signal.lock();
            if *asked {
                return Ok(());
            }
            // Under the lock: a close from now on finds the kick.
            self.signal.kick()
        };
        if !port.prepare_poll() {
            return Ok(());
        }
        let r = sys::socket::wait_or(port, kick.map(|k| k.as_fd()), false, None);
        port.disarm();
        r.map(drop)
    }

    /// Stop delivering and close the port; its peer sees
    /// [`CloseReason::Closed`] after what this side posted.
    fn close_here(&mut self) {
        self.ended = Some(Ended::ClosedHere);
        self.on_message = None;
        self.on_close = None;
        self.on_error = None;
        // Closed now, unless no kick can be made (out of descriptors): then
        // the port stays, its descriptor the one `as_fd` gives, until the
        // PushPort drops.
        if let Some(kick) = self.signal.kick() {
            self.held = Held::Closed(kick.clone());
        }
    }
}

/// [`PushPort::start`] could not start its thread: the push port comes
/// back, open, with its listeners.
#[derive(Debug)]
pub struct StartError {
    /// Why.
    pub error: io::Error,
    /// The push port, as it was.
    pub push: Box<PushPort>,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start the dispatcher thread: {}", self.error)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<StartError> for io::Error {
    /// The cause; the push port (and its port) is closed.
    fn from(e: StartError) -> io::Error {
        e.error
    }
}

impl AsFd for PushPort {
    /// The port's socket: readable when the peer wakes the port (after
    /// [`PushPort::prepare_poll`]) or goes away. Once a [`Closer`] closed
    /// the port: an eventfd that stays readable (a loop that still polls it
    /// calls [`dispatch_ready`](PushPort::dispatch_ready), which returns
    /// [`Ended::ClosedHere`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.held {
            Held::Open(port) => port.as_fd(),
            Held::Closed(kick) => kick.as_fd(),
        }
    }
}

impl std::fmt::Debug for PushPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushPort")
            .field("port", &self.port())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// The library's dispatcher thread for one started [`PushPort`].
#[derive(Debug)]
pub struct Dispatcher {
    thread: JoinHandle<Ended>,
    closer: Closer,
}

impl Dispatcher {
    /// Wait for the dispatcher to end (after the close listener, or after a
    /// [`Closer`] closed the port); how it ended, or the panic of a
    /// listener.
    pub fn join(self) -> thread::Result<Ended> {
        self.thread.join()
    }

    /// Close the port ([`Closer::close`]) and wait for the dispatcher to
    /// end: [`Ended::ClosedHere`], or [`Ended::PeerGone`] if the peer's
    /// close event came first, or the panic of a listener.
    ///
    /// ```
    /// use shmport::{CloseReason, MessageChannel, RecvError, push::{Ended, PushPort}};
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let mut push = PushPort::new(b);
    /// push.on_message(|_, _| {});
    /// let dispatcher = push.start()?;
    /// // The dispatcher sleeps waiting for a message: the close wakes it.
    /// assert_eq!(dispatcher.close().unwrap(), Ended::ClosedHere);
    /// assert!(matches!(a.recv(), Err(RecvError::Closed(CloseReason::Closed))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) -> thread::Result<Ended> {
        self.closer.close();
        self.join()
    }

    /// A [`Closer`] for the port this dispatcher delivers.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Has the dispatcher ended?
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}
