//! Doorbells: how a sleeper on a link is woken. A doorbell is a socket
//! pair; the sleeper keeps one end and polls it, the peer process gets the
//! other once (announced on the link's socket) and writes a token to it.
//! A sleep word in shared memory names the doorbell (`number + 1`).
//!
//! One doorbell per thread that sleeps on the link (or per port that a
//! foreign event loop waits on): a process with thousands of channels on a
//! link holds a doorbell per sleeping thread, not per channel. The peer
//! holds the other ends; when it dies the kernel closes them, and every
//! doorbell polls hang-up: death wakes every sleeper of the link.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::ThreadId;

use crate::sys::{self, socket::Incoming};

/// This side's end of a doorbell.
#[derive(Debug)]
pub(crate) struct Bell {
    /// Its number on the link.
    pub(crate) index: u32,
    sock: OwnedFd,
}

impl Bell {
    /// The sleep word's value that names this doorbell.
    pub(crate) fn word(&self) -> u32 {
        self.index + 1
    }

    /// Take in the tokens written so far. `true` if the peer's end is gone.
    pub(crate) fn clear(&self) -> bool {
        loop {
            match sys::socket::recv(&self.sock, false) {
                Ok(Incoming::Wake) => continue,
                Ok(Incoming::Empty) => return false,
                Ok(Incoming::HungUp | Incoming::Reset) => return true,
                // Anything else on a doorbell is the peer's noise: dropped.
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl AsFd for Bell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The doorbells this side made on one link.
#[derive(Default)]
pub(crate) struct Bells {
    /// Per thread that slept on the link.
    by_thread: HashMap<ThreadId, Arc<Bell>>,
    /// Numbers given back (their thread ended, their port closed).
    free: Vec<u32>,
    next: u32,
}

/// Most doorbells one side may announce on a link.
pub(crate) const MAX_BELLS: u32 = 1 << 16;

impl Bells {
    /// The calling thread's doorbell, if it has one.
    pub(crate) fn of_thread(&self) -> Option<Arc<Bell>> {
        self.by_thread.get(&std::thread::current().id()).cloned()
    }

    /// A new doorbell: this side's end, and the peer's to announce. Its
    /// number is the lowest given back, else the next.
    pub(crate) fn make(&mut self) -> io::Result<(Bell, OwnedFd)> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.next < MAX_BELLS => {
                self.next += 1;
                self.next - 1
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "every doorbell number of the link is in use",
                ));
            }
        };
        match sys::socket::pair() {
            Ok((mine, theirs)) => Ok((Bell { index, sock: mine }, theirs)),
            Err(e) => {
                self.free.push(index);
                Err(e)
            }
        }
    }

    /// The calling thread's new doorbell is `bell`.
    pub(crate) fn keep_for_thread(&mut self, bell: Arc<Bell>) {
        self.by_thread.insert(std::thread::current().id(), bell);
    }

    /// Thread `thread` ended: its doorbell's number is free again.
    pub(crate) fn thread_ended(&mut self, thread: ThreadId) {
        if let Some(bell) = self.by_thread.remove(&thread) {
            self.free.push(bell.index);
        }
    }

    /// A port's own doorbell closed: its number is free again.
    pub(crate) fn give_back(&mut self, index: u32) {
        self.free.push(index);
    }
}

/// The peer's doorbells: what to write when a sleep word names one.
#[derive(Default)]
pub(crate) struct PeerBells {
    ends: HashMap<u32, OwnedFd>,
}

impl PeerBells {
    /// Doorbell `index` of the peer's is `fd` (a later one replaces an
    /// earlier under the same number: its sleeper is gone).
    pub(crate) fn add(&mut self, index: u32, fd: OwnedFd) -> Result<(), &'static str> {
        if index >= MAX_BELLS {
            return Err("a doorbell number out of range");
        }
        if !sys::socket::is_seqpacket(&fd) {
            return Err("a doorbell that is not a socket");
        }
        self.ends.insert(index, fd);
        Ok(())
    }

    /// Ring the doorbell the sleep word `word` names. `Some(false)`: no such
    /// doorbell (yet); `Some(true)` rung; `None`: its sleeper is gone (the
    /// number may be announced again).
    pub(crate) fn ring(&mut self, word: u32) -> Option<bool> {
        let Some(fd) = word.checked_sub(1).and_then(|i| self.ends.get(&i)) else {
            return Some(false);
        };
        match sys::socket::send_wake(fd) {
            Ok(()) => Some(true),
            Err(_) => {
                self.ends.remove(&(word - 1));
                None
            }
        }
    }
}
