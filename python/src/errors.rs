//! The exceptions, and shmport's errors turned into them.
//!
//! The close event is an exception carrying the reason: `Closed` (the peer
//! closed or dropped its port, or this port was closed here), `PeerDied`
//! (its process ended without closing, `kill -9` included) and
//! `ProtocolError` (a broken or hostile peer), all subclasses of
//! `ClosedError`, whose `reason` attribute is `"closed"`, `"peer_died"`,
//! `"protocol_error"` or `"closed_here"`.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use shmport::{CloseReason, PostError, RecvError};

create_exception!(
    shmport,
    ClosedError,
    PyException,
    "The close event of a port: the peer is gone (or this port was closed). `reason` says why."
);
create_exception!(
    shmport,
    Closed,
    ClosedError,
    "The peer closed (or dropped) its port, after every message it posted; or this port was closed here."
);
create_exception!(
    shmport,
    PeerDied,
    ClosedError,
    "The peer's process ended without closing its port (kill -9 included)."
);
create_exception!(
    shmport,
    ProtocolError,
    ClosedError,
    "The peer broke the protocol (a bug or a hostile process); the port no longer reads or writes."
);
create_exception!(
    shmport,
    BusyError,
    PyRuntimeError,
    "The port is in use by another thread (a port is used by one thread at a time; \
     one thread may receive while another posts)."
);
create_exception!(
    shmport,
    Full,
    PyException,
    "try_post: the ring has no room for the message now."
);
create_exception!(
    shmport,
    Refused,
    PyValueError,
    "A message was refused (larger than max_message_size, or not sealed on an untrusted port); \
     the port goes on."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("PeerDied", py.get_type::<PeerDied>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    m.add("Full", py.get_type::<Full>())?;
    m.add("Refused", py.get_type::<Refused>())?;
    Ok(())
}

/// The close event for `reason`.
pub(crate) fn closed(reason: CloseReason) -> PyErr {
    let (e, r) = match reason {
        CloseReason::PeerDied => (PeerDied::new_err("peer died"), "peer_died"),
        CloseReason::ProtocolError => (
            ProtocolError::new_err("the peer broke the protocol"),
            "protocol_error",
        ),
        _ => (Closed::new_err("closed by the peer"), "closed"),
    };
    with_reason(e, r)
}

/// The error for a port closed (or transferred) here.
pub(crate) fn closed_here(what: &str) -> PyErr {
    with_reason(Closed::new_err(what.to_string()), "closed_here")
}

fn with_reason(e: PyErr, reason: &str) -> PyErr {
    Python::attach(|py| {
        let _ = e.value(py).setattr("reason", reason);
    });
    e
}

pub(crate) fn busy(what: &str) -> PyErr {
    BusyError::new_err(what.to_string())
}

pub(crate) fn os_error(msg: String) -> PyErr {
    PyOSError::new_err(msg)
}

pub(crate) fn io(e: std::io::Error) -> PyErr {
    PyErr::from(e)
}

/// A port could not be split at its first use (out of descriptors): the
/// errno, and what became of the port.
pub(crate) fn split(e: std::io::Error) -> PyErr {
    let what = format!(
        "the port could not be made ready for use ({e}: it needs two eventfds); \
         it is unchanged: use it again once descriptors are free, or close it"
    );
    match e.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, what)),
        None => PyOSError::new_err(what),
    }
}

/// A failed post.
pub(crate) fn post(e: PostError) -> PyErr {
    match e {
        PostError::Full => Full::new_err("the ring is full"),
        PostError::Timeout => PyTimeoutError::new_err("timed out waiting for room"),
        PostError::Closed(r) => closed(r),
        PostError::Io(e) => io(e),
        PostError::TooLarge { len, max } => PyValueError::new_err(format!(
            "message of {len} bytes is larger than the largest allowed ({max})"
        )),
        PostError::Reserved => busy("a reservation on this port is not committed yet"),
        PostError::PeerInTransfer => {
            PyValueError::new_err("a port cannot be posted over its own entangled peer")
        }
        e @ (PostError::TooManyPorts | PostError::NestedTooDeep) => {
            PyValueError::new_err(e.to_string())
        }
        e => PyTypeError::new_err(e.to_string()),
    }
}

/// A failed receive (not `Empty` or `Timeout`, which callers handle).
pub(crate) fn recv(e: RecvError) -> PyErr {
    match e {
        RecvError::Closed(r) => closed(r),
        RecvError::Io(e) => io(e),
        RecvError::Refused(why) => Refused::new_err(why),
        RecvError::Timeout => PyTimeoutError::new_err("timed out waiting for a message"),
        e => PyRuntimeError::new_err(e.to_string()),
    }
}
