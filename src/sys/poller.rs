//! epoll, for waiting on many ports' sockets at once.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::{Timespec, epoll};
use rustix::io::Errno;

/// An epoll instance (close-on-exec).
pub struct Poller {
    fd: OwnedFd,
    events: Vec<epoll::Event>,
}

// SAFETY: the only non-Send part is the event buffer, whose `EventData`
// may hold a pointer; this poller only ever stores plain `u64` keys in it,
// and the buffer is touched only through `&mut self`.
unsafe impl Send for Poller {}

impl AsFd for Poller {
    /// The epoll descriptor: readable when some watched descriptor is.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Poller {
    /// A new, empty poller.
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            fd: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            events: Vec::new(),
        })
    }

    /// A poller over any descriptor, for tests of what happens when the
    /// kernel refuses to watch (a descriptor that is not an epoll
    /// instance fails every `epoll_ctl`).
    #[cfg(test)]
    pub(crate) fn over(fd: OwnedFd) -> Poller {
        Poller {
            fd,
            events: Vec::new(),
        }
    }

    /// Watch `fd` for input (and hang-up), reported with `key`.
    pub fn add(&mut self, fd: impl AsFd, key: u64) -> io::Result<()> {
        epoll::add(
            &self.fd,
            fd,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )?;
        self.events.push(epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        });
        Ok(())
    }

    /// Stop watching `fd`.
    pub fn delete(&mut self, fd: impl AsFd) -> io::Result<()> {
        epoll::delete(&self.fd, fd)?;
        self.events.pop();
        Ok(())
    }

    /// Wait for readiness (at most `timeout`; `None`: no limit) and append
    /// the keys of the ready descriptors to `keys`.
    pub fn wait(&mut self, timeout: Option<Duration>, keys: &mut Vec<u64>) -> io::Result<()> {
        if self.events.is_empty() {
            self.events.push(epoll::Event {
                flags: epoll::EventFlags::empty(),
                data: epoll::EventData::new_u64(0),
            });
        }
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        let n = loop {
            match epoll::wait(&self.fd, &mut self.events, ts.as_ref()) {
                Ok(n) => break n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        keys.extend(self.events[..n].iter().map(|e| e.data.u64()));
        Ok(())
    }
}
