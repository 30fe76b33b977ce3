//! The status every function returns, its text, and how Rust errors map to
//! it.

use std::ffi::{CStr, c_char};
use std::io;

use shmport_core::{CloseReason, ConnectError, OpenError, PostError, RecvError};

use crate::registry::Stale;

/// What a shmport function did. `SHMPORT_OK` (0) is success; every other
/// value is a distinct outcome. The values never collide with `errno`
/// values and are never reused for another meaning.
/// `shmport_status_str` gives the text of each.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum shmport_status {
    /// Success.
    SHMPORT_OK = 0,

    // ---- waiting ----
    /// Nothing to receive now (a receive that was not to wait).
    SHMPORT_EMPTY = 7001,
    /// The ring has no room now (a post or reservation that was not to wait).
    SHMPORT_FULL = 7002,
    /// The time limit passed.
    SHMPORT_TIMEOUT = 7003,

    // ---- the peer is gone (the close event) ----
    /// The peer port was closed; every message it posted before has been
    /// received. Text: "closed by the peer".
    SHMPORT_CLOSED = 7010,
    /// The process holding the peer port ended without closing it (killed,
    /// crashed, or exited with the port open). Text: "peer died".
    SHMPORT_PEER_DIED = 7011,
    /// The peer broke the protocol (corrupt ring or descriptors); this port
    /// stopped using the channel. Text: "protocol error".
    SHMPORT_PROTOCOL_ERROR = 7012,

    // ---- the caller's mistakes ----
    /// A pointer argument that must not be NULL was NULL.
    SHMPORT_ERR_NULL = 7100,
    /// Not a live handle of the kind the function takes: already freed,
    /// closed or transferred, or never a handle of this kind.
    SHMPORT_ERR_BAD_HANDLE = 7101,
    /// The port still has messages received from it that are not freed, or
    /// a reservation that is not committed or cancelled, or it is in a port
    /// set: free, commit or cancel them, or remove it from the set, first.
    /// Nothing was done.
    SHMPORT_ERR_BUSY = 7102,
    /// An argument is out of range: a ring capacity over
    /// `SHMPORT_MAX_CAPACITY`, a capacity too small for the message's ports,
    /// the same port twice in a transfer list, a commit longer than the
    /// reservation, an unknown trust mode, an empty path or one longer than
    /// a socket address holds (107 bytes).
    SHMPORT_ERR_INVALID_ARGUMENT = 7103,
    /// A port was in the transfer list of a post on itself.
    SHMPORT_ERR_SELF_TRANSFER = 7104,
    /// `shmport_port_commit` or `shmport_port_cancel` on a port with no
    /// reservation.
    SHMPORT_ERR_NO_RESERVATION = 7105,

    // ---- posting ----
    /// A message longer than `SHMPORT_MAX_MESSAGE_SIZE`, or a reservation
    /// longer than fits in the ring (`shmport_port_max_reservation`).
    /// Nothing was read, allocated or sent.
    SHMPORT_ERR_TOO_LARGE = 7200,
    /// A reservation on this port is live: commit or cancel it before
    /// posting or reserving again.
    SHMPORT_ERR_RESERVED = 7201,
    /// A port's own entangled peer was in its transfer list, or in the
    /// queue of a port in the list (in a message queued on it, at any
    /// depth): it would arrive in its own queue and the channel be lost.
    /// Nothing was sent.
    SHMPORT_ERR_PEER_IN_TRANSFER = 7202,
    /// More ports than one message carries (`SHMPORT_MAX_PORTS`), or more
    /// descriptors (16,384) or attachment bytes (256 KiB) queued with them
    /// than a receiver accepts in one message.
    SHMPORT_ERR_TOO_MANY_PORTS = 7203,
    /// A port in the transfer list holds ports nested deeper than a
    /// receiver accepts (16 levels of ports in messages queued on ports).
    /// Nothing was sent.
    SHMPORT_ERR_NESTED_TOO_DEEP = 7204,

    // ---- opening a port ----
    /// No port was passed to this process (`SHMPORT_PORT` is not set).
    SHMPORT_ERR_NO_PORT = 7300,
    /// The port passed to this process was already adopted.
    SHMPORT_ERR_ALREADY_ADOPTED = 7301,
    /// A port's descriptors or shared segment are not valid (wrong kind of
    /// descriptor, bad magic, layout version or size, corrupt ring).
    SHMPORT_ERR_BAD_PORT = 7302,

    // ---- rendezvous ----
    /// Nothing exists at the path (or a directory on the way is missing).
    SHMPORT_ERR_NOT_FOUND = 7400,
    /// Nothing listens at the path (a socket file left by a listener that
    /// is gone).
    SHMPORT_ERR_REFUSED = 7401,
    /// This process may not connect to, or create, the socket file.
    SHMPORT_ERR_PERMISSION_DENIED = 7402,
    /// The listener closed the connection without sending a port (it
    /// rejected this process, or it was closed).
    SHMPORT_ERR_REJECTED = 7403,
    /// The path is not a socket (a regular file, a directory, ...), or the
    /// socket there is not a shmport listener.
    SHMPORT_ERR_NOT_A_LISTENER = 7404,
    /// Something already exists at the path given to
    /// `shmport_listener_bind`.
    SHMPORT_ERR_ADDR_IN_USE = 7405,

    // ---- the system ----
    /// A system call failed; `errno` holds its error.
    SHMPORT_ERR_IO = 7500,

    // ---- receiving ----
    /// This message was refused by the port's trust mode (an untrusting
    /// port received an out-of-line payload that is not write-sealed); the
    /// port goes on with the next message.
    SHMPORT_ERR_MESSAGE_REFUSED = 7600,

    /// A bug in shmport was caught at the C boundary (a Rust panic). The
    /// call did not complete; the handles involved may be unusable.
    SHMPORT_ERR_PANIC = 7900,
}

use shmport_status::*;

impl shmport_status {
    /// Every status.
    const ALL: [shmport_status; 30] = [
        SHMPORT_OK,
        SHMPORT_EMPTY,
        SHMPORT_FULL,
        SHMPORT_TIMEOUT,
        SHMPORT_CLOSED,
        SHMPORT_PEER_DIED,
        SHMPORT_PROTOCOL_ERROR,
        SHMPORT_ERR_NULL,
        SHMPORT_ERR_BAD_HANDLE,
        SHMPORT_ERR_BUSY,
        SHMPORT_ERR_INVALID_ARGUMENT,
        SHMPORT_ERR_SELF_TRANSFER,
        SHMPORT_ERR_NO_RESERVATION,
        SHMPORT_ERR_TOO_LARGE,
        SHMPORT_ERR_RESERVED,
        SHMPORT_ERR_PEER_IN_TRANSFER,
        SHMPORT_ERR_TOO_MANY_PORTS,
        SHMPORT_ERR_NESTED_TOO_DEEP,
        SHMPORT_ERR_NO_PORT,
        SHMPORT_ERR_ALREADY_ADOPTED,
        SHMPORT_ERR_BAD_PORT,
        SHMPORT_ERR_NOT_FOUND,
        SHMPORT_ERR_REFUSED,
        SHMPORT_ERR_PERMISSION_DENIED,
        SHMPORT_ERR_REJECTED,
        SHMPORT_ERR_NOT_A_LISTENER,
        SHMPORT_ERR_ADDR_IN_USE,
        SHMPORT_ERR_IO,
        SHMPORT_ERR_MESSAGE_REFUSED,
        SHMPORT_ERR_PANIC,
    ];

    /// The status with this value, if any.
    fn from_code(code: u32) -> Option<shmport_status> {
        Self::ALL.into_iter().find(|s| *s as u32 == code)
    }

    /// The status's text (static, NUL-terminated).
    fn text(self) -> &'static CStr {
        match self {
            SHMPORT_OK => c"success",
            SHMPORT_EMPTY => c"nothing to receive now",
            SHMPORT_FULL => c"ring full",
            SHMPORT_TIMEOUT => c"timed out",
            SHMPORT_CLOSED => c"closed by the peer",
            SHMPORT_PEER_DIED => c"peer died",
            SHMPORT_PROTOCOL_ERROR => c"protocol error",
            SHMPORT_ERR_NULL => c"a required pointer argument is NULL",
            SHMPORT_ERR_BAD_HANDLE => {
                c"not a live handle of this kind (freed, closed, transferred, or never one)"
            }
            SHMPORT_ERR_BUSY => {
                c"the port has messages or a reservation outstanding, or is in a port set"
            }
            SHMPORT_ERR_INVALID_ARGUMENT => c"invalid argument",
            SHMPORT_ERR_SELF_TRANSFER => c"a port cannot be posted over itself",
            SHMPORT_ERR_NO_RESERVATION => c"no reservation on this port",
            SHMPORT_ERR_TOO_LARGE => c"message or reservation too large",
            SHMPORT_ERR_RESERVED => c"a reservation on this port is not yet committed",
            SHMPORT_ERR_PEER_IN_TRANSFER => c"a port cannot be sent over its own entangled peer",
            SHMPORT_ERR_TOO_MANY_PORTS => c"too many ports for one message",
            SHMPORT_ERR_NESTED_TOO_DEEP => c"ports nested deeper than a receiver accepts",
            SHMPORT_ERR_NO_PORT => c"no port was passed to this process",
            SHMPORT_ERR_ALREADY_ADOPTED => c"the inherited port was already adopted",
            SHMPORT_ERR_BAD_PORT => c"the port's descriptors or segment are not valid",
            SHMPORT_ERR_NOT_FOUND => c"nothing exists at that path",
            SHMPORT_ERR_REFUSED => c"connection refused: nothing listens there",
            SHMPORT_ERR_PERMISSION_DENIED => c"permission denied",
            SHMPORT_ERR_REJECTED => c"the listener closed the connection without sending a port",
            SHMPORT_ERR_NOT_A_LISTENER => c"not a socket, or not a shmport listener",
            SHMPORT_ERR_ADDR_IN_USE => c"address in use",
            SHMPORT_ERR_IO => c"system call failed (see errno)",
            SHMPORT_ERR_MESSAGE_REFUSED => {
                c"message refused by the port's trust mode or largest message size"
            }
            SHMPORT_ERR_PANIC => c"internal error (a panic was caught)",
        }
    }
}

/// The status of a close event.
pub(crate) fn closed(reason: CloseReason) -> shmport_status {
    match reason {
        CloseReason::Closed => SHMPORT_CLOSED,
        CloseReason::PeerDied => SHMPORT_PEER_DIED,
        CloseReason::ProtocolError => SHMPORT_PROTOCOL_ERROR,
        // A reason this library does not know yet: the port is closed, for
        // a reason it cannot name.
        _ => SHMPORT_PEER_DIED,
    }
}

/// `SHMPORT_ERR_IO`, with `errno` set to the error's code (EIO if it has
/// none).
pub(crate) fn io(e: &io::Error) -> shmport_status {
    set_errno(e.raw_os_error().unwrap_or(libc::EIO));
    SHMPORT_ERR_IO
}

/// An error variant this mapping does not know (the Rust error enums are
/// `#[non_exhaustive]`; each variant gets its own status when it is added):
/// `SHMPORT_ERR_IO` with `errno` `EIO`, the generic failure. Not reached by
/// this build, which maps every variant it knows.
fn unknown(e: &dyn std::error::Error) -> shmport_status {
    io(&io::Error::other(e.to_string()))
}

fn set_errno(code: i32) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = code };
}

impl From<Stale> for shmport_status {
    fn from(_: Stale) -> Self {
        SHMPORT_ERR_BAD_HANDLE
    }
}

impl From<RecvError> for shmport_status {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Empty => SHMPORT_EMPTY,
            RecvError::Timeout => SHMPORT_TIMEOUT,
            RecvError::Closed(r) => closed(r),
            RecvError::Io(e) => io(&e),
            RecvError::Refused(_) => SHMPORT_ERR_MESSAGE_REFUSED,
            other => unknown(&other),
        }
    }
}

impl From<PostError> for shmport_status {
    fn from(e: PostError) -> Self {
        match e {
            PostError::Full => SHMPORT_FULL,
            PostError::Timeout => SHMPORT_TIMEOUT,
            PostError::Closed(r) => closed(r),
            PostError::PeerInTransfer => SHMPORT_ERR_PEER_IN_TRANSFER,
            PostError::TooManyPorts => SHMPORT_ERR_TOO_MANY_PORTS,
            PostError::NestedTooDeep => SHMPORT_ERR_NESTED_TOO_DEEP,
            PostError::Io(e) => io(&e),
            PostError::TooLarge { .. } => SHMPORT_ERR_TOO_LARGE,
            PostError::Reserved => SHMPORT_ERR_RESERVED,
            // Raw bytes are copied, never serialized: this cannot happen
            // here, short of a bug.
            PostError::Serialize(_) => SHMPORT_ERR_PANIC,
            other => unknown(&other),
        }
    }
}

impl From<OpenError> for shmport_status {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::NoPort => SHMPORT_ERR_NO_PORT,
            OpenError::AlreadyAdopted => SHMPORT_ERR_ALREADY_ADOPTED,
            OpenError::Io(e) => io(&e),
            _ => SHMPORT_ERR_BAD_PORT,
        }
    }
}

impl From<ConnectError> for shmport_status {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::NotFound => SHMPORT_ERR_NOT_FOUND,
            ConnectError::NotASocket => SHMPORT_ERR_NOT_A_LISTENER,
            ConnectError::Refused => SHMPORT_ERR_REFUSED,
            ConnectError::PermissionDenied => SHMPORT_ERR_PERMISSION_DENIED,
            ConnectError::Timeout => SHMPORT_TIMEOUT,
            ConnectError::Rejected => SHMPORT_ERR_REJECTED,
            ConnectError::Protocol(_) => SHMPORT_ERR_NOT_A_LISTENER,
            ConnectError::Open(e) => e.into(),
            // A path the kernel cannot take (longer than 107 bytes).
            ConnectError::Io(e) if e.kind() == io::ErrorKind::InvalidInput => {
                io(&e);
                SHMPORT_ERR_INVALID_ARGUMENT
            }
            ConnectError::Io(e) => io(&e),
            other => unknown(&other),
        }
    }
}

/// The text of a status: a static NUL-terminated string, never NULL, never
/// to be freed. Unknown values give "unknown status".
///
/// The three close statuses read "closed by the peer", "peer died" and
/// "protocol error".
#[unsafe(no_mangle)]
pub extern "C" fn shmport_status_str(status: u32) -> *const c_char {
    shmport_status::from_code(status)
        .map_or(c"unknown status", shmport_status::text)
        .as_ptr()
}

/// Is `status` one of the close events (`SHMPORT_CLOSED`,
/// `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`)? After one, the port
/// receives nothing more; close it.
#[unsafe(no_mangle)]
pub extern "C" fn shmport_status_is_close(status: u32) -> bool {
    matches!(status, 7010..=7012)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_text() {
        let texts: std::collections::HashSet<_> =
            shmport_status::ALL.iter().map(|s| s.text()).collect();
        assert_eq!(texts.len(), shmport_status::ALL.len());
        assert!(!texts.contains(c"unknown status"));
        for s in shmport_status::ALL {
            assert_eq!(shmport_status::from_code(s as u32), Some(s));
        }
        assert_eq!(shmport_status::from_code(1), None);
        assert_eq!(SHMPORT_PEER_DIED.text(), c"peer died");
        assert!(shmport_status_is_close(SHMPORT_PEER_DIED as u32));
        assert!(!shmport_status_is_close(SHMPORT_TIMEOUT as u32));
    }
}
