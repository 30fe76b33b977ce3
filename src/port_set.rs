//! Waiting on many ports at once.

use std::io;
use std::time::{Duration, Instant};

use crate::error::AddError;
use crate::port::MessagePort;
use crate::sys::poller::Poller;

/// A set of ports to wait on together: [`PortSet::wait`] returns a port
/// that has a message or its close event, fairly (round robin: no busy port
/// starves the others).
///
/// Built on epoll over the ports' sockets, with the same sleep announcement
/// as a single port: a peer posting to a port of the set makes no system
/// call unless the set's owner is actually asleep.
///
/// A port whose peer is gone keeps reporting its close event; remove it
/// once its `try_recv` returned [`RecvError::Closed`](crate::RecvError::Closed).
///
/// # Example
/// ```
/// use shmport::{MessageChannel, PortSet, RecvError};
///
/// let mut set = PortSet::new()?;
/// let (a, b) = MessageChannel::new()?.into_ports();
/// let (c, d) = MessageChannel::new()?.into_ports();
/// let kb = set.add(b)?;
/// let kd = set.add(d)?;
/// c.post(&2u32)?;
/// a.post(&1u32)?;
/// let mut seen = Vec::new();
/// for _ in 0..2 {
///     let key = set.wait()?.expect("the set is not empty");
///     let msg = set.get(key).unwrap().try_recv()?;
///     seen.push((key, msg.get::<u32>()?.to_native()));
/// }
/// seen.sort();
/// assert_eq!(seen, vec![(kb, 1), (kd, 2)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PortSet {
    poller: Poller,
    ports: Vec<Option<MessagePort>>,
    free: Vec<usize>,
    len: usize,
    /// Where the next scan starts (round robin).
    cursor: usize,
    keys: Vec<u64>,
}

impl PortSet {
    /// An empty set.
    pub fn new() -> io::Result<PortSet> {
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
    pub fn add(&mut self, port: MessagePort) -> Result<usize, AddError> {
        // A freed key, taken off the list only once the port is in.
        let key = self.free.last().copied().unwrap_or(self.ports.len());
        if let Err(error) = self.poller.add(&port, key as u64) {
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

    /// Take a port out of the set.
    pub fn remove(&mut self, key: usize) -> Option<MessagePort> {
        let port = self.ports.get_mut(key)?.take()?;
        // The descriptor is still open, so this cannot fail short of a bug.
        let _ = self.poller.delete(&port);
        self.free.push(key);
        self.len -= 1;
        Some(port)
    }

    /// The port with this key.
    pub fn get(&self, key: usize) -> Option<&MessagePort> {
        self.ports.get(key)?.as_ref()
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
            .filter_map(|(k, p)| Some((k, p.as_ref()?)))
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

    fn scan(&mut self) -> Option<usize> {
        let n = self.ports.len();
        for i in 0..n {
            let k = (self.cursor + i) % n;
            if let Some(p) = &self.ports[k] {
                if p.has_event() {
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
            p.arm();
        }
        if let Some(p) = self.ports.iter().flatten().next() {
            p.sleep_barrier();
        }
        let found = self.scan();
        if found.is_some() {
            self.disarm_all();
        }
        found
    }

    pub(crate) fn disarm_all(&self) {
        for p in self.ports.iter().flatten() {
            p.disarm();
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
                p.take_in()?;
            }
        }
        Ok(self.keys.len())
    }

    #[cfg(feature = "tokio")]
    /// The epoll descriptor, for a reactor.
    pub(crate) fn poller_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.poller.as_fd()
    }

    #[cfg(feature = "tokio")]
    /// A port with an event now, scanning round robin (crate-internal name
    /// for [`poll`](Self::poll)).
    pub(crate) fn ready_now(&mut self) -> Option<usize> {
        self.scan()
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
