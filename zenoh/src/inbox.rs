//! What zenoh hands an endpoint (frames, its peer's liveliness), queued for
//! the endpoint's thread, with an eventfd that wakes it.
//!
//! zenoh runs the callbacks that push here on its own threads, which must
//! not block: pushing only takes a short lock, and writes the eventfd only
//! while the endpoint's thread sleeps (a frame that finds it awake costs
//! no system call). The
//! queue is bounded by the endpoint's window for a peer that follows the
//! protocol; one that does not is refused as soon as the thread reads it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rustix::event::{EventfdFlags, eventfd};
use zenoh::bytes::ZBytes;

/// One thing that happened to an endpoint.
#[derive(Debug)]
pub enum Event {
    /// A frame published on the endpoint's key.
    Frame(ZBytes),
    /// The peer's liveliness token is present.
    PeerAlive,
    /// The peer's liveliness token went away: undeclared, or its session
    /// lost (process killed, host silent past the lease).
    PeerGone,
}

/// The queue and its wake-up.
#[derive(Debug)]
pub struct Inbox {
    queue: Mutex<VecDeque<Event>>,
    /// Set after each push: lets a spinning endpoint look without a lock
    /// or a system call.
    pending: AtomicBool,
    /// Set while the endpoint's thread sleeps on the eventfd (from just
    /// before it looks at `pending` a last time): only then does a push
    /// write it.
    sleeping: AtomicBool,
    wake: OwnedFd,
}

impl Inbox {
    /// An empty inbox (one eventfd).
    pub fn new() -> io::Result<Inbox> {
        Ok(Inbox {
            queue: Mutex::new(VecDeque::new()),
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // A panic while holding the lock leaves a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `event` and wake the endpoint's thread if it sleeps.
    pub fn push(&self, event: Event) {
        self.queue().push_back(event);
        // SeqCst, with the load after it: the two halves of a Dekker pair
        // with `prepare_sleep`'s store of `sleeping` and load of `pending`.
        // Either this load sees the thread asleep (and wakes it), or its
        // load sees this push (and it does not sleep). The store also
        // releases the push to `take`'s Acquire swap.
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            // An eventfd's counter only fails to grow at u64::MAX - 1: then
            // it is readable anyway.
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }

    /// Everything queued so far, oldest first. Cheap when nothing was
    /// pushed since the last call.
    pub fn take(&self) -> VecDeque<Event> {
        // A push after this swap sets the flag again: nothing is missed, at
        // worst one empty look.
        if !self.pending.swap(false, Ordering::Acquire) {
            return VecDeque::new();
        }
        std::mem::take(&mut *self.queue())
    }

    /// The endpoint's thread is about to sleep on the eventfd: from now on
    /// pushes write it. `false` if something is already pending (then do
    /// not sleep); either way, call [`end_sleep`](Self::end_sleep) after.
    pub fn prepare_sleep(&self) -> bool {
        // SeqCst: see `push`.
        self.sleeping.store(true, Ordering::SeqCst);
        !self.pending.load(Ordering::SeqCst)
    }

    /// The thread is awake again: pushes stop writing the eventfd, and what
    /// they wrote is cleared.
    pub fn end_sleep(&self) {
        // Relaxed: a push that still sees `true` only writes the eventfd
        // once more, which the next sleep's poll finds (one empty look).
        self.sleeping.store(false, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        // Nonblocking: EAGAIN when nothing was written since the last read.
        let _ = rustix::io::read(&self.wake, &mut buf);
    }
}

impl AsFd for Inbox {
    /// Readable once an event was pushed while the thread slept.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}
