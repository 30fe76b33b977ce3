//! What event loops and port sets wait on: one descriptor per port
//! (`port.fileno()`), and the spin that comes before it.
//!
//! A port is split in halves, and both read the port's socket: a post
//! waiting for room (on another thread) sleeps on it and may take in the
//! wake-up meant for the receiving side; it then sets the receiving half's
//! eventfd (`PortReceiver::wake_fd`). A loop must therefore wait on both,
//! and also learn of a `close()` made here (which nothing on the socket
//! reports to this side). `fileno()` is an epoll descriptor over the three
//! — the socket, the half's eventfd, and an eventfd of the Python port that
//! `close()` (and a transfer) sets — so that a loop, a `selectors` user or
//! asyncio, waits on one descriptor and no wake-up is lost. It is made at
//! the first `fileno()` (ports never waited on in a loop pay nothing) and
//! lives as long as the Python port object, so the number a loop holds
//! never names another file while the port can still be awaited.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, epoll, eventfd};
use rustix::io::Errno;
use shmport::PortReceiver;

pub(crate) struct LoopFd {
    /// The epoll descriptor `fileno()` gives.
    pub(crate) ep: OwnedFd,
    /// Set (for good) when the port is closed or posted away here.
    gone: OwnedFd,
}

impl LoopFd {
    pub(crate) fn new(rx: &PortReceiver) -> io::Result<LoopFd> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let gone = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let l = LoopFd { ep, gone };
        l.add(l.gone.as_fd())?;
        l.watch(rx)?;
        Ok(l)
    }

    /// Watch a receiving half's socket and eventfd (again after a failed
    /// transfer, which may have rebuilt them).
    pub(crate) fn watch(&self, rx: &PortReceiver) -> io::Result<()> {
        self.add(rx.as_fd())?;
        self.add(rx.wake_fd())
    }

    fn add(&self, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        match epoll::add(
            &self.ep,
            fd,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN,
        ) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The port was closed or posted away: wake whoever waits on it.
    pub(crate) fn wake(&self) {
        // EAGAIN only when the counter is at its maximum: set anyway.
        let _ = rustix::io::write(&self.gone, &1u64.to_ne_bytes());
    }
}

/// Spin until `ready` holds for one of `items` (its index), or `spin` has
/// passed (`None`).
pub(crate) fn spin_until<T>(
    items: &[T],
    spin: Duration,
    ready: impl Fn(&T) -> bool,
) -> Option<usize> {
    let until = Instant::now().checked_add(spin);
    let mut turn = 0u32;
    loop {
        if let Some(i) = items.iter().position(&ready) {
            return Some(i);
        }
        // The clock costs ~20 ns: read it every 16 turns, and on the first.
        if turn % 16 == 0 && until.is_none_or(|t| Instant::now() >= t) {
            return None;
        }
        turn = turn.wrapping_add(1);
        std::hint::spin_loop();
    }
}
