//! What zenoh hands an endpoint (frames, its peer's liveliness), queued for
//! the endpoint's thread, with an eventfd that wakes it.
//!
//! zenoh runs the callbacks that push here on its own threads, which must
//! not block: pushing only takes a short lock and writes the eventfd. The
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
    wake: OwnedFd,
}

impl Inbox {
    /// An empty inbox (one eventfd).
    pub fn new() -> io::Result<Inbox> {
        Ok(Inbox {
            queue: Mutex::new(VecDeque::new()),
            pending: AtomicBool::new(false),
            wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // A panic while holding the lock leaves a consistent queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `event` and wake the endpoint's thread.
    pub fn push(&self, event: Event) {
        self.queue().push_back(event);
        // Release: pairs with the Acquire swap in `take` (the push is then
        // visible to it).
        self.pending.store(true, Ordering::Release);
        // An eventfd's counter only fails to grow at u64::MAX - 1: then it is
        // readable anyway.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Everything queued so far, oldest first; clears the wake-up. Cheap
    /// when nothing was pushed since the last call.
    pub fn take(&self) -> VecDeque<Event> {
        // A push after this swap sets the flag again and writes the
        // eventfd after it: nothing is missed, at worst one empty look.
        if !self.pending.swap(false, Ordering::Acquire) {
            return VecDeque::new();
        }
        let mut buf = [0u8; 8];
        // Nonblocking: EAGAIN when nothing was written since the last read.
        let _ = rustix::io::read(&self.wake, &mut buf);
        std::mem::take(&mut *self.queue())
    }
}

impl AsFd for Inbox {
    /// Readable while events wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}
