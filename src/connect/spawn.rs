//! A second process: spawn a child with a port already connected, and adopt
//! that port in the child.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::connect::channel::ChannelBuilder;
use crate::port::{DEFAULT_SPIN, MessagePort};
use crate::shm::segment::OpenError;
use crate::shm::segment::{Segment, Side};
use crate::sys;

/// The environment variable that tells a spawned child where its port is:
/// `"<socket fd>,<segment fd>[,<spin in nanoseconds>]"`.
pub const PORT_ENV: &str = "SHMPORT_PORT";

/// Spawn `cmd` with a new channel's other port passed to it; returns the
/// child and this process's port. The child calls
/// [`MessagePort::from_parent`] to adopt its end.
///
/// The child inherits exactly its standard streams and the port's two
/// descriptors: every other descriptor is closed on `exec`, whoever opened
/// it. The command is consumed, so its setup cannot leak into a second spawn.
///
/// # Example
/// ```no_run
/// use std::process::Command;
///
/// let (mut child, port) = shmport::spawn(Command::new("./worker"))?;
/// port.post(&"hello".to_string())?;
/// let reply = port.recv()?;
/// println!("worker said {:?}", reply.bytes());
/// child.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn(cmd: Command) -> std::io::Result<(Child, MessagePort)> {
    ChannelBuilder::new().spawn(cmd)
}

impl ChannelBuilder {
    /// [`spawn`] with these channel settings.
    pub fn spawn(&self, mut cmd: Command) -> std::io::Result<(Child, MessagePort)> {
        let seg = Segment::create(self.ring_capacity()?)?;
        let (mine, theirs) = sys::socket::pair()?;
        let port = MessagePort::from_parts(seg.clone(), Side::A, mine, self.spin_time())
            .map_err(std::io::Error::other)?;
        self.configure(&port);
        let keep: [RawFd; 2] = [
            theirs.as_raw_fd(),
            std::os::fd::AsFd::as_fd(&*seg).as_raw_fd(),
        ];
        cmd.env(
            PORT_ENV,
            format!("{},{},{}", keep[0], keep[1], self.spin_time().as_nanos()),
        );
        // Computed here: after the fork only async-signal-safe calls.
        let keep_only = sys::child::KeepOnly::new(keep);
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe system calls (close_range, fcntl, getrlimit),
        // allocating nothing; the numbers it names stay open in the parent
        // until the spawn returns (`theirs` and `seg` live past it).
        unsafe {
            cmd.pre_exec(move || keep_only.apply());
        }
        let child = cmd.spawn()?;
        drop(cmd);
        // Our copy of the child's socket end must go: while it is open here,
        // the child's death would not hang up our port.
        drop(theirs);
        Ok((child, port))
    }
}

static ADOPTED: AtomicBool = AtomicBool::new(false);

impl MessagePort {
    /// In a child started by [`spawn`]: adopt the port the parent passed.
    ///
    /// Fails with [`OpenError::NoPort`] in a process that was not given
    /// one, [`OpenError::AlreadyAdopted`] on a second call, and with a
    /// clear error when the descriptors or the segment are not what they
    /// should be (wrong kind of descriptor, bad magic, version or size).
    pub fn from_parent() -> Result<MessagePort, OpenError> {
        let value = std::env::var(PORT_ENV).map_err(|_| OpenError::NoPort)?;
        let (sock, mem, spin) = parse_env(&value)?;
        for fd in [sock, mem] {
            // Look before taking ownership: the number must name an open
            // descriptor of the right kind.
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map_err(|_| OpenError::BadDescriptor(format!("descriptor {fd} is not open")))?;
            let target = target.to_string_lossy();
            let ok = if fd == sock {
                target.starts_with("socket:")
            } else {
                target.starts_with("/memfd:")
            };
            if !ok {
                return Err(OpenError::BadDescriptor(format!(
                    "descriptor {fd} is {target}"
                )));
            }
        }
        if ADOPTED.swap(true, Ordering::AcqRel) {
            return Err(OpenError::AlreadyAdopted);
        }
        // SAFETY: both numbers name open descriptors (checked above) that
        // the parent passed to this process for the port; the ADOPTED flag
        // makes this the only place that ever takes ownership of them.
        let (sock, mem) = unsafe { (OwnedFd::from_raw_fd(sock), OwnedFd::from_raw_fd(mem)) };
        adopt(sock, mem, spin)
    }

    /// Adopt the child's end of a channel from its two descriptors: the
    /// port's socket and its shared-memory segment, as [`spawn`] passes
    /// them and as [`into_fds`](Self::into_fds) makes them. For a child
    /// that was started some other way than [`spawn`] (its own `fork` and
    /// `exec`, a process manager), given the two descriptors and told
    /// their numbers by any means (arguments, a file).
    ///
    /// Both descriptors are marked close-on-exec (this process's own
    /// children do not inherit them) and are owned by the port from then
    /// on, or closed if the call fails. Fails with
    /// [`OpenError::BadDescriptor`] when `sock` is not a `SOCK_SEQPACKET`
    /// socket; when `segment` is not a shmport segment this version can
    /// use, with [`OpenError::BadMagic`], [`OpenError::BadVersion`] (the
    /// other side runs another layout version), [`OpenError::BadGeometry`]
    /// or [`OpenError::Corrupt`]; with [`OpenError::Io`] when a system call
    /// fails (a `segment` that cannot be mapped).
    ///
    /// ```
    /// use shmport::{MessageChannel, MessagePort};
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let (sock, mem) = b.into_fds().map_err(|_| "not a child's end")?;
    /// // …hand `sock` and `mem` to another process, which then does:
    /// let b = MessagePort::from_fds(sock, mem)?;
    /// a.post_bytes(b"hello")?;
    /// assert_eq!(b.recv()?.bytes(), b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fds(sock: OwnedFd, segment: OwnedFd) -> Result<MessagePort, OpenError> {
        adopt(sock, segment, DEFAULT_SPIN)
    }

    /// Take apart the child's end of a new channel into the two
    /// descriptors that [`from_fds`](Self::from_fds) adopts in another
    /// process: the port's socket and its segment. Only the second port of
    /// a [`MessageChannel`](crate::MessageChannel) (`into_ports().1`) is a
    /// child's end, and only while it holds no attachments (ports,
    /// out-of-line memory) taken in from its socket ahead of their messages
    /// — always true of a port that never received. Messages waiting in its
    /// ring or socket stay there and are received by the adopter. Any
    /// other port comes back unchanged as the `Err` (boxed: a port is
    /// large), as it does when the segment's descriptor cannot be copied
    /// (this process is out of descriptors).
    ///
    /// Both descriptors are close-on-exec. To hand them to a program
    /// started with `fork` and `exec`: in the child, before `exec`, clear
    /// `FD_CLOEXEC` on both (or `dup2` them to the numbers the program
    /// expects); pass their numbers to the program; and in the parent,
    /// after the fork, close both. The parent's copy of the socket must be
    /// closed: while it is open, the child's exit does not hang up the
    /// parent's port.
    pub fn into_fds(self) -> Result<(OwnedFd, OwnedFd), Box<MessagePort>> {
        if self.ready_to_travel().is_err() {
            return Err(Box::new(self));
        }
        match self.child_end_segment() {
            Some(Ok(mem)) => Ok((self.into_parts().sock, mem)),
            None | Some(Err(_)) => Err(Box::new(self)),
        }
    }
}

/// Adopt a child's end: socket and segment, checked.
fn adopt(sock: OwnedFd, mem: OwnedFd, spin: Duration) -> Result<MessagePort, OpenError> {
    // Our own children must not inherit them.
    sys::child::close_on_exec(&sock)?;
    sys::child::close_on_exec(&mem)?;
    if !sys::socket::is_seqpacket(&sock) {
        return Err(OpenError::BadDescriptor(
            "the port's socket is not a SOCK_SEQPACKET socket".into(),
        ));
    }
    let seg = Segment::open(mem)?;
    MessagePort::from_parts(seg, Side::B, sock, spin).map_err(|c| OpenError::Corrupt(c.0))
}

fn parse_env(value: &str) -> Result<(RawFd, RawFd, Duration), OpenError> {
    let bad = || {
        OpenError::BadDescriptor(format!(
            "{PORT_ENV}={value:?} is not \"<fd>,<fd>[,<spin ns>]\""
        ))
    };
    let mut parts = value.split(',');
    let mut fd = || -> Result<RawFd, OpenError> {
        parts
            .next()
            .ok_or_else(bad)?
            .trim()
            .parse()
            .map_err(|_| bad())
    };
    let (a, b) = (fd()?, fd()?);
    let spin = match parts.next() {
        None => DEFAULT_SPIN,
        Some(ns) => Duration::from_nanos(ns.trim().parse().map_err(|_| bad())?),
    };
    if parts.next().is_some() || a < 3 || b < 3 || a == b {
        return Err(bad());
    }
    Ok((a, b, spin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_value_is_parsed_strictly() {
        assert_eq!(parse_env("5,6").unwrap(), (5, 6, DEFAULT_SPIN));
        assert_eq!(
            parse_env("5,6,1000").unwrap(),
            (5, 6, Duration::from_micros(1))
        );
        for bad in [
            "", "5", "5,", "a,6", "5,5", "1,6", "-3,6", "5;6", "5,6,x", "5,6,1,2",
        ] {
            assert!(
                matches!(parse_env(bad), Err(OpenError::BadDescriptor(_))),
                "{bad:?}"
            );
        }
    }
}
