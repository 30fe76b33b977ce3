//! Waiting on many ports at once.

use std::borrow::Borrow;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::error::{CloseReason, RecvError};
use crate::port::MessagePort;
use crate::port::message::Message;
use crate::sys::poller::Poller;

/// A set of ports to wait on together, fairly (round robin: no busy port
/// starves the others).
///
/// Two ways to use it:
/// - [`PortSet::recv`] (and [`try_recv`](PortSet::try_recv),
///   [`recv_timeout`](PortSet::recv_timeout)) receives from the next ready
///   port and says which ([`SetEvent`]). A port's close event removes it
///   from the set: its key is free (a later [`add`](PortSet::add) may get
///   it) and the port comes back in [`SetEvent::Closed`], so a receive loop
///   keeps no list of ports to remove.
/// - [`PortSet::wait`] only returns the key of a port that has a message or
///   its close event; receive from [`get`](PortSet::get)`(key)` yourself. A
///   port whose peer is gone keeps reporting its close event until you
///   [`remove`](PortSet::remove) it.
///
/// Built on epoll over the ports' sockets, with the same sleep announcement
/// as a single port: a peer posting to a port of the set makes no system
/// call unless the set's owner is actually asleep.
///
/// The set owns its ports (`PortSet<MessagePort>`, the default), or holds
/// them any other way that lends a `&MessagePort`: `PortSet<&MessagePort>`,
/// `PortSet<Rc<MessagePort>>` (made with [`PortSet::empty`]), for a
/// program that keeps its ports elsewhere and waits on them here.
///
/// For a foreign event loop, the set has one descriptor ([`AsFd`]): call
/// [`prepare_poll`](PortSet::prepare_poll), wait for the descriptor to turn
/// readable, then [`try_recv`](PortSet::try_recv) until `None`.
///
/// # Example
/// ```
/// use shmport::{CloseReason, MessageChannel, PortSet, SetEvent};
///
/// let mut set = PortSet::new()?;
/// let (a, b) = MessageChannel::new()?.into_ports();
/// let (c, d) = MessageChannel::new()?.into_ports();
/// let kb = set.add(b)?;
/// let kd = set.add(d)?;
/// c.post(&2u32)?;
/// a.post(&1u32)?;
/// drop((a, c));
/// let mut seen = Vec::new();
/// while let Some(event) = set.recv()? {
///     match event {
///         SetEvent::Message { key, message } => {
///             seen.push((key, message.get::<u32>()?.to_native()));
///         }
///         // The set has let the port go; dropping it closes our end.
///         SetEvent::Closed { key, reason, port } => {
///             assert_eq!(reason, CloseReason::Closed);
///             seen.push((key, 0));
///             drop(port);
///         }
///         SetEvent::Error { error, .. } => return Err(error.into()),
///     }
/// }
/// // Both ports closed: the set is empty, `recv` returned `None`.
/// assert!(set.is_empty());
/// seen.sort();
/// assert_eq!(seen, vec![(kb, 0), (kb, 1), (kd, 0), (kd, 2)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With [`wait`](PortSet::wait):
/// ```
/// use shmport::{MessageChannel, PortSet};
///
/// let mut set = PortSet::new()?;
/// let (a, b) = MessageChannel::new()?.into_ports();
/// let kb = set.add(b)?;
/// a.post(&1u32)?;
/// let key = set.wait()?.expect("the set is not empty");
/// assert_eq!(key, kb);
/// let msg = set.get(key).unwrap().try_recv()?;
/// assert_eq!(msg.get::<u32>()?.to_native(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PortSet<P = MessagePort> {
    poller: Poller,
    ports: Vec<Option<P>>,
    free: Vec<usize>,
    len: usize,
    /// Where the next scan starts (round robin).
    cursor: usize,
    keys: Vec<u64>,
}

impl PortSet {
    /// An empty set of owned ports.
    pub fn new() -> io::Result<PortSet> {
        PortSet::empty()
    }
}

impl<P: Borrow<MessagePort>> PortSet<P> {
    /// An empty set of ports held as `P` (`&MessagePort`,
    /// `Rc<MessagePort>`, ...); [`PortSet::new`] is this for owned ports.
    pub fn empty() -> io::Result<PortSet<P>> {
        Ok(PortSet {
            poller: Poller::new()?,
            ports: Vec::new(),
            free: Vec::new(),
            len: 0,
            cursor: 0,
            keys: Vec::new(),
        })
    }

    /// Add a port; returns its key in this set. If the kernel will not
    /// watch the port's socket (out of memory, or the user's epoll watch
    /// limit), the port comes back in the error, untouched.
    // The error carries the port by value (a port is ~200 bytes): adding
    // is not on a hot path, and a boxed port would be awkward to use.
    #[allow(clippy::result_large_err)]
    pub fn add(&mut self, port: P) -> Result<usize, AddError<P>> {
        // A freed key, taken off the list only once the port is in.
        let key = self.free.last().copied().unwrap_or(self.ports.len());
        if let Err(error) = self.poller.add(port.borrow(), key as u64) {
            return Err(AddError { error, port });
        }
        if key == self.ports.len() {
            self.ports.push(Some(port));
        } else {
            self.free.pop();
            self.ports[key] = Some(port);
        }
        self.len += 1;
        Ok(key)
    }

    /// Take a port out of the set; its key is free again.
    pub fn remove(&mut self, key: usize) -> Option<P> {
        let port = self.ports.get_mut(key)?.take()?;
        // The descriptor is still open, so this cannot fail short of a bug.
        let _ = self.poller.delete(port.borrow());
        self.free.push(key);
        self.len -= 1;
        Some(port)
    }

    /// The port with this key.
    pub fn get(&self, key: usize) -> Option<&MessagePort> {
        Some(self.ports.get(key)?.as_ref()?.borrow())
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the set empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys and ports in the set.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &MessagePort)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(k, p)| Some((k, p.as_ref()?.borrow())))
    }

    /// Wait until some port has a message or its close event; returns its
    /// key (`None` only for an empty set).
    pub fn wait(&mut self) -> io::Result<Option<usize>> {
        self.wait_until(None)
    }

    /// [`PortSet::wait`], at most `timeout` (`Ok(None)` when it passes).
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<usize>> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// A port with an event now, if any (no waiting).
    pub fn poll(&mut self) -> Option<usize> {
        self.scan()
    }

    /// Receive from the next port (round robin) that has a message or its
    /// close event, waiting for one. `None` only when the set is empty.
    ///
    /// At a port's close event the set removes the port and hands it back
    /// ([`SetEvent::Closed`]); its key is free from then on. A message
    /// that could not be received ([`SetEvent::Error`]) leaves the port in
    /// the set. `Err` only when waiting itself failed (epoll).
    pub fn recv(&mut self) -> io::Result<Option<SetEvent<'_, P>>> {
        self.recv_until(None)
    }

    /// [`recv`](Self::recv) if some port has a message or its close event
    /// now; `None` otherwise.
    pub fn try_recv(&mut self) -> io::Result<Option<SetEvent<'_, P>>> {
        self.recv_until(Some(Instant::now()))
    }

    /// [`recv`](Self::recv), waiting at most `timeout` (`None` when it
    /// passes, or for an empty set).
    pub fn recv_timeout(&mut self, timeout: Duration) -> io::Result<Option<SetEvent<'_, P>>> {
        self.recv_until(Instant::now().checked_add(timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<SetEvent<'_, P>>> {
        loop {
            let Some(key) = self.wait_until(deadline)? else {
                return Ok(None);
            };
            let Some(port) = self.ports.get(key).and_then(Option::as_ref) else {
                continue;
            };
            let port: *const MessagePort = port.borrow();
            // SAFETY: `port` points into `self.ports`, which nothing changes
            // while the reference is used: a message borrowing it is
            // returned at once, with the lifetime of `&mut self`, so the
            // caller cannot touch the set before dropping it. On every
            // other path the receive's result holds no reference (a
            // `RecvError` borrows nothing) and `port` is not used again
            // before the set changes. (Only a borrow checker that cannot
            // see paths apart, polonius' "problem case 3", needs this.)
            let port: &MessagePort = unsafe { &*port };
            match port.try_recv() {
                Ok(message) => return Ok(Some(SetEvent::Message { key, message })),
                // A wake-up with nothing behind it (yet): wait again.
                Err(RecvError::Empty | RecvError::Timeout) => {}
                Err(RecvError::Closed(reason)) => {
                    return Ok(self
                        .remove(key)
                        .map(|port| SetEvent::Closed { key, reason, port }));
                }
                Err(error) => return Ok(Some(SetEvent::Error { key, error })),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    fn scan(&mut self) -> Option<usize> {
        let n = self.ports.len();
        for i in 0..n {
            let k = (self.cursor + i) % n;
            if let Some(p) = &self.ports[k] {
                if p.borrow().has_event() {
                    self.cursor = k + 1;
                    return Some(k);
                }
            }
        }
        None
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<usize>> {
        loop {
            if self.is_empty() {
                return Ok(None);
            }
            if let Some(k) = self.scan() {
                return Ok(Some(k));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            if let Some(k) = self.arm_all() {
                return Ok(Some(k));
            }
            self.collect(left)?;
        }
    }

    /// Announce a sleep on every port, one barrier for all, re-check: a
    /// message committed before our announcement is seen here, one
    /// committed after it sends a token (see ring::Consumer). `Some(key)`:
    /// a port has an event after all (every port is disarmed again).
    pub(crate) fn arm_all(&mut self) -> Option<usize> {
        for p in self.ports.iter().flatten() {
            p.borrow().arm();
        }
        if let Some(p) = self.ports.iter().flatten().next() {
            p.borrow().sleep_barrier();
        }
        let found = self.scan();
        if found.is_some() {
            self.disarm_all();
        }
        found
    }

    pub(crate) fn disarm_all(&self) {
        for p in self.ports.iter().flatten() {
            p.borrow().disarm();
        }
    }

    /// After [`arm_all`](Self::arm_all): wait for the poller (at most
    /// `timeout`), disarm, and take in what the ready ports' sockets hold.
    /// Returns how many ports the poller reported.
    pub(crate) fn collect(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.keys.clear();
        let r = self.poller.wait(timeout, &mut self.keys);
        self.disarm_all();
        r?;
        for i in 0..self.keys.len() {
            if let Some(Some(p)) = self.ports.get(self.keys[i] as usize) {
                p.borrow().take_in()?;
            }
        }
        Ok(self.keys.len())
    }

    /// Before a foreign event loop waits on the set's descriptor
    /// ([`AsFd`]): take in what the ports' sockets hold, then announce a
    /// sleep on every port, so that a peer's next message, close or death
    /// turns the descriptor readable. `Ok(false)` when a port already has
    /// a message or its close event (or the set is empty): receive instead
    /// of waiting. Either way, [`try_recv`](Self::try_recv) until `None`,
    /// then prepare again before the next wait.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use rustix::event::{PollFd, PollFlags, poll};
    /// use shmport::{MessageChannel, PortSet, SetEvent};
    ///
    /// let mut set = PortSet::new()?;
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let kb = set.add(b)?;
    /// assert!(set.prepare_poll()?);
    /// a.post_bytes(b"wake up")?;
    /// poll(&mut [PollFd::new(&set, PollFlags::IN)], None)?;
    /// match set.try_recv()? {
    ///     Some(SetEvent::Message { key, message }) => {
    ///         assert_eq!((key, message.bytes()), (kb, &b"wake up"[..]));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare_poll(&mut self) -> io::Result<bool> {
        self.collect(Some(Duration::ZERO))?;
        if self.is_empty() || self.scan().is_some() {
            return Ok(false);
        }
        Ok(self.arm_all().is_none())
    }

    #[cfg(feature = "tokio")]
    /// A port with an event now, scanning round robin (crate-internal name
    /// for [`poll`](Self::poll)).
    pub(crate) fn ready_now(&mut self) -> Option<usize> {
        self.scan()
    }
}

/// The set's epoll descriptor, for a foreign event loop (see
/// [`PortSet::prepare_poll`]). It stays owned by the set: do not read it.
impl<P> AsFd for PortSet<P> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}

/// What [`PortSet::recv`] received, and from which port.
///
/// The event borrows the set (as a message borrows its port) until it is
/// dropped, whatever its kind: inside a `match` on it the set cannot be
/// used yet. Nothing needs it there: the set has already removed a closed
/// port.
#[derive(Debug)]
pub enum SetEvent<'s, P = MessagePort> {
    /// A message from the port at `key` (it borrows the set: drop it to
    /// give the ring space back and use the set again).
    Message {
        /// The port's key in the set.
        key: usize,
        /// The message.
        message: Message<'s>,
    },
    /// The close event of the port that had `key`: every message its peer
    /// posted was received, then the peer went, for `reason`. The set has
    /// removed the port, so `key` is free (a later [`PortSet::add`] may get
    /// it); the port comes back here. Dropping it closes this end; it can
    /// still post if only the peer's sending half was dropped.
    Closed {
        /// The key the port had.
        key: usize,
        /// Why the peer went.
        reason: CloseReason,
        /// The port, out of the set.
        port: P,
    },
    /// A message from the port at `key` could not be received (for example
    /// [`RecvError::Io`] when its descriptors could not be installed, or
    /// [`RecvError::Refused`]); the port stays in the set and goes on.
    Error {
        /// The port's key in the set.
        key: usize,
        /// What went wrong with that message.
        error: RecvError,
    },
}

/// A port could not join a [`PortSet`](crate::PortSet) (the kernel refused
/// to watch its socket): the port is handed back, working, in `port`.
#[derive(Debug)]
pub struct AddError<P = MessagePort> {
    /// Why.
    pub error: io::Error,
    /// The port that was to join.
    pub port: P,
}

impl<P> fmt::Display for AddError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the port could not join the set: {} (port handed back)",
            self.error
        )
    }
}

impl<P: fmt::Debug> std::error::Error for AddError<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// For callers that want only the error: the port is closed.
impl<P> From<AddError<P>> for io::Error {
    fn from(e: AddError<P>) -> io::Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageChannel;

    /// A poller the kernel will not add to: every `add` fails.
    fn refusing_poller() -> Poller {
        let (read, _write) = rustix::pipe::pipe().unwrap();
        Poller::over(read)
    }

    #[test]
    fn a_refused_port_comes_back_working_and_its_key_stays_free() {
        let mut set = PortSet::new().unwrap();
        let (a, b) = MessageChannel::new().unwrap().into_ports();
        let (_c, d) = MessageChannel::new().unwrap().into_ports();
        assert_eq!(set.add(d).unwrap(), 0);
        let d = set.remove(0).unwrap();

        let good = std::mem::replace(&mut set.poller, refusing_poller());
        let err = set.add(b).unwrap_err();
        assert!(err.to_string().contains("port handed back"), "{err}");
        assert_eq!(set.len(), 0);
        assert!(set.get(0).is_none());

        // The port still works.
        let b = err.port;
        a.post_bytes(b"still here").unwrap();
        assert_eq!(b.recv().unwrap().bytes(), b"still here");

        // The freed key was not lost: the next port gets it.
        set.poller = good;
        assert_eq!(set.add(d).unwrap(), 0);
        assert_eq!(set.add(b).unwrap(), 1);
        assert_eq!(set.len(), 2);
    }
}
