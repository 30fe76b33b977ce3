//! An eventfd that one half of a split port writes to wake the other
//! (which waits on it beside the port's socket).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;

/// A non-blocking, close-on-exec eventfd.
#[derive(Debug)]
pub struct Kick {
    fd: OwnedFd,
}

impl Kick {
    /// A new, unset kick.
    pub fn new() -> io::Result<Kick> {
        Ok(Kick {
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
        })
    }

    /// Set it (a waiter on it wakes).
    pub fn kick(&self) {
        // EAGAIN only when the counter is at its maximum: it is set anyway.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Unset it.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Err(Errno::INTR) => continue,
                _ => return,
            }
        }
    }
}

impl AsFd for Kick {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
