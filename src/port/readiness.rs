//! Readiness: announce a sleep, issue the barrier, re-check. The one
//! protocol that port sets, async ports, push dispatchers and the C
//! library's `prepare_poll` share.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::{Half, MessagePort, PortReceiver};
use crate::error::PostError;
use crate::shm::layout::{OOL_DESCRIPTOR, POOL_REF};

impl MessagePort {
    /// Announce a sleep (without the barrier: the set issues one for all).
    pub(crate) fn arm(&self) {
        self.rx().arm();
    }

    /// The barrier between arming and re-checking.
    pub(crate) fn sleep_barrier(&self) {
        self.rx().rx.borrow().sleep_barrier();
    }

    /// Withdraw the announcement.
    pub(crate) fn disarm(&self) {
        self.rx().rx.borrow().end_sleep();
    }

    /// Would `try_recv` return a message or the close event now?
    pub(crate) fn has_event(&self) -> bool {
        self.rx().has_event()
    }

    /// Take in what the socket holds (tokens, attachments, hang-up).
    pub(crate) fn take_in(&self) -> io::Result<()> {
        self.rx().shared.drain_socket(Half::Receiver, false)
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
        // The descriptor polled is the port's own socket.
        self.own_socket();
        self.rx().prepare_poll()
    }

    /// Spin for up to the port's spin time ([`set_spin`](Self::set_spin))
    /// until a message or the close event is there; returns whether one
    /// is (then [`try_recv`](Self::try_recv) takes it). No system call
    /// while spinning, except a look at the socket every 100 µs for a
    /// peer killed meanwhile. Fails only when reading the socket fails.
    ///
    /// For an event loop that has just received: look for the next
    /// message the way a blocking receive does before it sleeps, then
    /// [`prepare_poll`](Self::prepare_poll) and wait on the descriptor
    /// only if nothing came. A spin time of zero looks once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// b.set_spin(Duration::ZERO);
    /// assert!(!b.spin_for_event()?);
    /// a.post_bytes(b"here")?;
    /// assert!(b.spin_for_event()?);
    /// assert_eq!(b.try_recv()?.bytes(), b"here");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spin_for_event(&self) -> io::Result<bool> {
        self.rx().spin_for_event()
    }

    /// Before waiting on the port's descriptor for room to post a message
    /// of `len` bytes, after a post found the ring full
    /// ([`PostError::Full`]): announce that this side waits for room, so
    /// that the peer's next release (or its close) writes a wake-up to the
    /// socket and the descriptor polls readable (`POLLIN`). Returns `false`
    /// when there is nothing to wait for: the room is already there, or
    /// the post would fail at once (the peer closed or is gone, the port is
    /// broken, a [`Reservation`](crate::Reservation) is held): post instead.
    ///
    /// After the wake-up (or any end of the poll), call
    /// [`end_post_poll`](Self::end_post_poll): it withdraws the
    /// announcement and takes in the wake-up, so the descriptor stops
    /// polling readable; then post with `try_post_bytes` (or `try_post`).
    /// A wake-up says that the consumer released room, not that the room
    /// suffices: `Full` again means prepare again.
    ///
    /// A message larger than [`max_inline_payload`](Self::max_inline_payload)
    /// goes into a block of the port's pool: this waits for a block to come
    /// back when none is free and the pool is at its cap, else for the ring
    /// room of the small record that names it. Beyond the largest block
    /// (64 MiB) it travels out of line, in a memfd of its own: its room is
    /// one record slot in the ring, and room in the socket for the memory's
    /// descriptor. The socket (which also carries a pool buffer's
    /// descriptor the first time the buffer is used) has room unless the
    /// peer has not taken in earlier attachments; when `Full` comes back
    /// although this said there was room, it is the socket that lacks it:
    /// wait for the descriptor to poll writable (`POLLOUT`).
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use rustix::event::{PollFd, PollFlags, poll};
    /// use shmport::{ChannelBuilder, PostError};
    ///
    /// let (a, b) = ChannelBuilder::new().capacity(4096).build()?.into_ports();
    /// while !matches!(a.try_post_bytes(&[7; 512]), Err(PostError::Full)) {}
    /// assert!(a.prepare_post_poll(512));
    /// drop(b.try_recv()?); // the peer reads: room, and a wake-up
    /// let mut fds = [PollFd::new(&a, PollFlags::IN)];
    /// poll(&mut fds, None)?;
    /// a.end_post_poll()?;
    /// a.try_post_bytes(&[7; 512])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare_post_poll(&self, len: usize) -> bool {
        if self.tx().check_not_reserved().is_err() {
            return false;
        }
        // A corrupt ring is reported by the post that follows.
        matches!(self.prepare_room_wait(len), Ok(true))
    }

    /// Withdraw what [`prepare_post_poll`](Self::prepare_post_poll)
    /// announced, and take in what the socket holds (the wake-up, and any
    /// attachments or hang-up behind it), so that the descriptor stops
    /// polling readable. Call it whenever a poll that followed
    /// `prepare_post_poll` ends, woken or not. Fails only when reading the
    /// socket fails ([`std::io::Error`]); the announcement is withdrawn
    /// either way.
    pub fn end_post_poll(&self) -> io::Result<()> {
        self.end_room_wait();
        self.take_in()
    }

    /// Announce that the producer waits for room for a message of `len`
    /// bytes (for the async post: what the last [`PostError::Full`]
    /// lacked): ring room for a message that fits the ring, else a pool
    /// block (when none is free and the pool is at its cap) or the ring
    /// room of the small record that names it. `Ok(false)` (nothing
    /// announced) if that room is already there or the post would fail at
    /// once (then with its error, if it is the close).
    pub(crate) fn prepare_room_wait(&self, len: usize) -> Result<bool, PostError> {
        // Our peer may itself be waiting for room we released.
        self.rx().flush_releases();
        self.tx().check_postable()?;
        let sh = &self.tx().shared;
        let mut need = len;
        if len > self.max_inline_payload().min(self.inline_limit()) {
            need = OOL_DESCRIPTOR;
            let mut pool = self.tx().pool.borrow_mut();
            if let Some(log2) = pool.class_for(len) {
                need = POOL_REF;
                let room = pool
                    .has_room(log2)
                    .map_err(|c| PostError::Closed(sh.corrupt(c)))?;
                if !room {
                    if !pool.prepare_wait() {
                        return Ok(false);
                    }
                    // A close before the announcement is seen here; one
                    // after it sends the wake-up.
                    if let Err(e) = self.tx().check_postable() {
                        pool.end_wait();
                        return Err(e);
                    }
                    return Ok(true);
                }
            }
        }
        self.tx()
            .tx
            .borrow_mut()
            .prepare_wait(need)
            .map_err(|c| PostError::Closed(sh.corrupt(c)))
    }

    /// Payload room the last post that found the ring full needed.
    #[cfg(feature = "tokio")]
    pub(crate) fn wanted_room(&self) -> usize {
        self.tx().wanted_room.get()
    }

    /// Withdraw the producer's wait announcements (for ring room and for a
    /// pool block).
    pub(crate) fn end_room_wait(&self) {
        self.tx().tx.borrow().end_wait();
        self.tx().pool.borrow().end_wait();
    }
}

impl PortReceiver {
    /// [`MessagePort::prepare_poll`], from the receiving half: announce a
    /// wait on the port's descriptor; `false` when a message or the close
    /// is already there. It also clears [`wake_fd`](Self::wake_fd): what
    /// set it is seen by the re-check here, and a later wake-up sets it
    /// again.
    pub fn prepare_poll(&self) -> bool {
        if let Some(kicks) = self.shared.kicks.get() {
            kicks[Half::Receiver as usize].clear();
        }
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

    /// The second descriptor a foreign event loop waits on for this half,
    /// beside the port's own ([`AsFd`](std::os::fd::AsFd)). Once a port is
    /// split, its sending half reads the port's descriptor too: a post
    /// waiting for room sleeps on it and takes in whatever arrives, the
    /// wake-up meant for this half included, then sets this eventfd (the
    /// half's own blocking receives wait on it). A loop that waits for
    /// this half's messages while the sending half may post on another
    /// thread waits on both descriptors for `POLLIN`, with
    /// [`prepare_poll`](Self::prepare_poll) before each wait (which
    /// clears this one); then no wake-up is lost. It is readable at times
    /// with nothing for this half (the sending half took in something of
    /// its own): prepare again and wait again.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use rustix::event::{PollFd, PollFlags, poll};
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let (_tx, rx) = b.split()?;
    /// assert!(rx.prepare_poll());
    /// a.post_bytes(b"wake up")?;
    /// let wake = rx.wake_fd();
    /// let mut fds = [PollFd::new(&rx, PollFlags::IN), PollFd::new(&wake, PollFlags::IN)];
    /// poll(&mut fds, None)?;
    /// assert_eq!(rx.try_recv()?.bytes(), b"wake up");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        match self.shared.kicks.get() {
            Some(kicks) => kicks[Half::Receiver as usize].as_fd(),
            // Only the half inside a whole port has no kicks (`split`
            // makes them): nothing else reads its socket.
            None => self.shared.sock(),
        }
    }

    /// Would [`try_recv`](Self::try_recv) return a message or the close
    /// event now? Memory loads only, no system call (for spinning over
    /// several halves): a peer that died without closing is seen once its
    /// hang-up was read from the socket (by a receive, or a poll after
    /// [`prepare_poll`](Self::prepare_poll)).
    pub fn has_event(&self) -> bool {
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
