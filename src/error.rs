//! Errors, one type per kind of operation.

use std::fmt;
use std::io;

/// Why a port's peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer port was closed: [`MessagePort::close`](crate::MessagePort::close)
    /// or dropped.
    Closed,
    /// The peer port went away without being closed: the kernel reported
    /// the hang-up of the port's socket, and the peer's closed flag was
    /// never set. Almost always the process holding it ended (killed,
    /// crashed, or exited with the port still open). A process that lets a
    /// port's descriptors go without closing it (closes the raw
    /// descriptors, or drops a connection to a [`Listener`](crate::Listener)
    /// before taking its port) looks the same to the kernel, and is reported
    /// the same way while it still runs: the port cannot tell which
    /// process holds its peer, since ports move.
    PeerDied,
    /// The peer broke the protocol (corrupt ring, bad descriptor); this port
    /// stopped reading from it.
    ProtocolError,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Closed => "closed by the peer",
            CloseReason::PeerDied => "peer died",
            CloseReason::ProtocolError => "protocol error",
        })
    }
}

/// Receiving failed.
///
/// Later versions may add variants: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing to receive now ([`try_recv`](crate::MessagePort::try_recv) only).
    Empty,
    /// The time limit passed ([`recv_timeout`](crate::MessagePort::recv_timeout) only).
    Timeout,
    /// Every message the peer posted has been received, and the peer is
    /// gone: this is the close event.
    Closed(CloseReason),
    /// The operating system refused a call (for example mapping an
    /// out-of-line message when out of memory or descriptors).
    Io(io::Error),
    /// This message was refused by the port's trust mode (see
    /// [`Trust::Untrusted`](crate::Trust::Untrusted)); the port goes on.
    Refused(&'static str),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("no message waiting"),
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::Closed(r) => write!(f, "port closed: {r}"),
            RecvError::Io(e) => write!(f, "receive failed: {e}"),
            RecvError::Refused(why) => write!(f, "message refused: {why}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Posting failed; nothing was sent. The value was only borrowed, so the
/// caller still has it.
///
/// Later versions may add variants: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum PostError {
    /// The ring has no room now ([`try_post`](crate::MessagePort::try_post) only).
    Full,
    /// No room appeared in time (timed posts only).
    Timeout,
    /// The peer is gone; the message could never be read.
    Closed(CloseReason),
    /// The value's own serialization failed (not a lack of room).
    Serialize(rkyv::rancor::Error),
    /// A port's own entangled peer was in the transfer list (it would
    /// arrive at the port it is entangled with), or in the queue of a port
    /// in the list (in a message queued on it, or on a port inside such a
    /// message, at any depth): it would travel into its own socket's queue,
    /// where nobody could take it out, and the channel would be lost.
    PeerInTransfer,
    /// More ports than one message carries ([`MAX_PORTS`](crate::MAX_PORTS)),
    /// or more descriptors or attachment bytes queued with them than a
    /// receiver accepts in one message (16,384 descriptors, 256 KiB).
    TooManyPorts,
    /// A port in the transfer list holds ports nested deeper than a
    /// receiver accepts (16 levels: a port in a message queued on a port in
    /// a message queued on …).
    NestedTooDeep,
    /// The operating system refused a call (for example creating the memfd
    /// of an out-of-line message).
    Io(io::Error),
    /// Too large: a message over [`MAX_MESSAGE_SIZE`](crate::MAX_MESSAGE_SIZE)
    /// (refused before anything is allocated), or a reservation over what
    /// fits in the ring
    /// ([`MessagePort::reserve_bytes`](crate::MessagePort::reserve_bytes),
    /// at most [`max_inline_payload`](crate::MessagePort::max_inline_payload)).
    TooLarge {
        /// Bytes asked for (for a typed value, a lower bound: its
        /// serialization stopped there).
        len: usize,
        /// The most allowed: `MAX_MESSAGE_SIZE` for a message, the ring's
        /// limit for a reservation.
        max: usize,
    },
    /// A [`Reservation`](crate::Reservation) on this port is still live:
    /// commit or drop it first.
    Reserved,
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Full => f.write_str("ring full"),
            PostError::Timeout => f.write_str("timed out waiting for room"),
            PostError::Closed(r) => write!(f, "peer gone: {r}"),
            PostError::Serialize(e) => write!(f, "serialization failed: {e}"),
            PostError::PeerInTransfer => {
                f.write_str("a port cannot be sent over its own entangled peer")
            }
            PostError::TooManyPorts => f.write_str("too many ports for one message"),
            PostError::NestedTooDeep => f.write_str("ports nested deeper than a receiver accepts"),
            PostError::Io(e) => write!(f, "post failed: {e}"),
            PostError::TooLarge { len, max } => {
                write!(f, "{len} bytes exceed the largest allowed, {max}")
            }
            PostError::Reserved => f.write_str("a reservation on this port is not yet committed"),
        }
    }
}

impl std::error::Error for PostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PostError::Serialize(e) => Some(e),
            PostError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reading a received message as a type failed.
///
/// Later versions may add variants: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum AccessError {
    /// The message was posted as raw bytes, not as a typed value.
    NotTyped,
    /// The message holds another type.
    TypeMismatch {
        /// Fingerprint of the type asked for.
        expected: u64,
        /// Fingerprint the message carries.
        found: u64,
    },
    /// The bytes are not a valid archive of the type (rkyv's validation).
    Invalid(rkyv::rancor::Error),
    /// Fewer bytes than the archived type's root
    /// ([`Message::get_unchecked`](crate::Message::get_unchecked)).
    TooShort,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::NotTyped => f.write_str("message holds raw bytes, not a typed value"),
            AccessError::TypeMismatch { expected, found } => write!(
                f,
                "type mismatch: asked for fingerprint {expected:#018x}, message has {found:#018x}"
            ),
            AccessError::Invalid(e) => write!(f, "invalid archive: {e}"),
            AccessError::TooShort => f.write_str("message shorter than the archived type"),
        }
    }
}

impl std::error::Error for AccessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AccessError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::{ConnectError, OpenError, TransferError};

    /// The `source` of `e`, as text.
    fn source_of(e: &dyn Error) -> Option<String> {
        e.source().map(|s| s.to_string())
    }

    #[test]
    fn errors_that_wrap_one_give_it_as_their_source() {
        let io = || io::Error::from_raw_os_error(libc::ENOMEM);
        let want = Some(io().to_string());
        assert_eq!(source_of(&RecvError::Io(io())), want);
        assert_eq!(source_of(&PostError::Io(io())), want);
        assert_eq!(source_of(&OpenError::Io(io())), want);
        assert_eq!(source_of(&ConnectError::Io(io())), want);
        let rkyv = || <rkyv::rancor::Error as rkyv::rancor::Source>::new(io());
        assert_eq!(
            source_of(&PostError::Serialize(rkyv())),
            Some(rkyv().to_string())
        );
        assert_eq!(
            source_of(&AccessError::Invalid(rkyv())),
            Some(rkyv().to_string())
        );
        let transfer = TransferError {
            error: PostError::TooManyPorts,
            ports: Vec::new(),
        };
        assert_eq!(
            source_of(&transfer),
            Some(PostError::TooManyPorts.to_string())
        );
        // Nothing wrapped, no source.
        assert_eq!(source_of(&RecvError::Timeout), None);
        assert_eq!(source_of(&PostError::Full), None);
        assert_eq!(source_of(&AccessError::TooShort), None);
        assert_eq!(source_of(&ConnectError::NotASocket), None);
    }
}
