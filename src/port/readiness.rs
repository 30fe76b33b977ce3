//! Readiness: announce a sleep, issue the barrier, re-check. The one
//! protocol that port sets, async ports, push dispatchers and the C
//! library's `prepare_poll` share.

use std::io;

use super::{Half, MessagePort, PortReceiver};
#[cfg(feature = "tokio")]
use crate::error::PostError;

impl MessagePort {
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
}

impl PortReceiver {
    /// [`MessagePort::prepare_poll`], from the receiving half: announce a
    /// wait on the port's descriptor; `false` when a message or the close
    /// is already there.
    pub fn prepare_poll(&self) -> bool {
        if self.has_event() {
            return false;
        }
        self.arm();
        self.rx.borrow().sleep_barrier();
        if self.has_event() {
            self.rx.borrow().end_sleep();
            return false;
        }
        true
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
    pub(super) fn arm(&self) {
        self.flush_releases();
        self.rx.borrow().announce_sleep();
    }
}
