//! Handing a port over a plain Unix socket (the rendezvous): one port, in
//! one socket message, outside any channel.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::port::MessagePort;
use crate::port::parts::discard;
use crate::shm::segment::OpenError;
use crate::wire::attachment::Attachment;

/// Send `port` alone over a plain socket (rendezvous): one attachment, in
/// one message. The port is a new channel's (nothing queued on it, so no
/// inbox or partial): it always fits, and [`recv_port`] takes nothing but
/// one message. (Were it ever too large, the send would fail with
/// `InvalidInput`, and the port be closed.)
pub(crate) fn send_port(sock: BorrowedFd<'_>, port: MessagePort) -> std::io::Result<()> {
    port.ready_to_travel()?;
    let parts = port.into_parts();
    let att = Attachment {
        ool: None,
        pool: None,
        ports: vec![parts],
        lost: false,
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    att.encode(&mut body, &mut fds);
    let r = crate::sys::socket::send_attachment(sock, &body, &fds, true, false);
    drop(fds);
    if r.is_err() {
        // Close the port properly: its peer sees `Closed`.
        for p in att.ports {
            discard(p);
        }
    }
    r
}

/// Why receiving a port over a plain socket failed.
#[derive(Debug)]
pub(crate) enum RecvPortError {
    /// Nothing arrived in time.
    Timeout,
    /// The other side closed without sending a port.
    HungUp,
    /// What arrived is not one port.
    Garbage(&'static str),
    /// The port arrived but its segment is not valid.
    Open(OpenError),
    /// A system call failed.
    Io(std::io::Error),
}

/// Receive one port sent by [`send_port`], waiting at most `timeout`.
pub(crate) fn recv_port(
    sock: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> Result<MessagePort, RecvPortError> {
    use crate::sys::socket::{self, Incoming};
    let ready = socket::wait(sock, false, timeout).map_err(RecvPortError::Io)?;
    if !ready.readable && !ready.hung_up {
        return Err(RecvPortError::Timeout);
    }
    let mut got = socket::recv(sock, false).map_err(RecvPortError::Io)?;
    if matches!(got, Incoming::Reset) {
        // Reported once, before whatever the peer sent before it went.
        got = socket::recv(sock, false).map_err(RecvPortError::Io)?;
    }
    match got {
        Incoming::Attachment(body, fds) => {
            let mut att =
                Attachment::decode(&body, fds).map_err(|c| RecvPortError::Garbage(c.0))?;
            if att.lost || att.ool.is_some() || att.ports.len() != 1 {
                return Err(RecvPortError::Garbage("expected exactly one port"));
            }
            att.ports
                .pop()
                .expect("one port")
                .assemble()
                .map_err(RecvPortError::Open)
        }
        Incoming::HungUp | Incoming::Reset => Err(RecvPortError::HungUp),
        Incoming::Empty => Err(RecvPortError::Timeout),
        Incoming::Lost => Err(RecvPortError::Io(std::io::Error::from_raw_os_error(
            libc::EMFILE,
        ))),
        Incoming::Wake
        | Incoming::Garbage
        | Incoming::Part(..)
        | Incoming::LostPart
        | Incoming::Link(..)
        | Incoming::LinkLost(_)
        | Incoming::Moved(..) => Err(RecvPortError::Garbage("not a port")),
    }
}
