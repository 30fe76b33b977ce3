//! Rendezvous: listen on a socket path and hand out ports; connect to one.

use std::ffi::{c_char, c_int};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use shmport_core::{Incoming, Listener};

use crate::boundary::{Out, Wait, builder, guard, handle, path, to_ptr};
use crate::handles::{new_port_handle, shmport_port};
use crate::no_memory;
use crate::registry::{Kind, Registry};
use crate::status::io;
use crate::status::shmport_status::{self, *};

/// A rendezvous point on a Unix socket path. Opaque; made by
/// `shmport_listener_bind`, released by `shmport_listener_close`.
pub struct shmport_listener {
    _opaque: [u8; 0],
}

/// A process waiting for a port. Opaque; made by `shmport_listener_accept`,
/// released by `shmport_incoming_accept` or `shmport_incoming_reject`
/// (exactly one of them, once).
pub struct shmport_incoming {
    _opaque: [u8; 0],
}

/// Who connected, as the kernel recorded it when the process called
/// `connect` (it cannot be forged by the connector).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmport_credentials {
    /// Process id, or 0 when the process is outside this PID namespace.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

static LISTENERS: Registry<Listener> = Registry::new(Kind::Listener);
static INCOMING: Registry<Incoming> = Registry::new(Kind::Incoming);

/// The longest finite wait a connect is given (a `SHMPORT_FOREVER` connect
/// waits this long: about 136 years).
const LONGEST: Duration = Duration::from_secs(u32::MAX as u64);

/// Listen on a new socket file at `path`, made with mode 0600 (only this
/// user may connect). On success `*listener` is a new listener, to be
/// closed with `shmport_listener_close` once; closing removes the file.
///
/// A socket left at `path` by a listener that died is not removed
/// silently: `SHMPORT_ERR_ADDR_IN_USE`.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `path` or `listener` is NULL;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `path` is empty or longer than 107 bytes;
/// - `SHMPORT_ERR_ADDR_IN_USE`: something exists at `path`;
/// - `SHMPORT_ERR_PERMISSION_DENIED`: this process may not create a file there;
/// - `SHMPORT_ERR_IO`: another system call failure (`errno`, e.g. `ENOENT` for
///   a missing directory), or `errno` `ENOMEM` when this process holds too many
///   handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `listener` is NULL or valid
/// for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_listener_bind(
    path: *const c_char,
    listener: *mut *mut shmport_listener,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (out, p) = unsafe { (Out::new(listener)?, self::path(path)?) };
        let l = Listener::bind(p).map_err(|e| {
            // `errno` is set in every case, for callers that look.
            let status = io(&e);
            match e.kind() {
                io::ErrorKind::AddrInUse => SHMPORT_ERR_ADDR_IN_USE,
                io::ErrorKind::PermissionDenied => SHMPORT_ERR_PERMISSION_DENIED,
                // A path the kernel cannot take (longer than 107 bytes).
                io::ErrorKind::InvalidInput => SHMPORT_ERR_INVALID_ARGUMENT,
                _ => status,
            }
        })?;
        out.put(LISTENERS.insert(l).map(to_ptr).ok_or_else(no_memory)?);
        Ok(())
    })
}

/// The listening socket's descriptor, in `*fd`, for the host's event loop:
/// readable when a connection is waiting (then `shmport_listener_accept`
/// with `SHMPORT_NO_WAIT` takes it). Owned by the listener.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `listener` or `fd` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `listener` is not a live listener;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `fd` is NULL or valid for writing an `int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_listener_fd(
    listener: *mut shmport_listener,
    fd: *mut c_int,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(fd) }?;
        // SAFETY: used during this call only.
        let l = unsafe { LISTENERS.get(handle(listener)?) }?;
        out.put(l.as_fd().as_raw_fd());
        Ok(())
    })
}

/// Wait for a process to connect: `*incoming` is the waiting connection.
/// Accept it (`shmport_incoming_accept`) or reject it
/// (`shmport_incoming_reject`) after looking at its credentials.
///
/// `timeout_ns`: `SHMPORT_NO_WAIT` returns `SHMPORT_EMPTY` at once if no
/// connection waits, `SHMPORT_FOREVER` waits as long as it takes, other
/// values wait at most that many nanoseconds (`SHMPORT_TIMEOUT`).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `listener` or `incoming` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `listener` is not a live listener;
/// - `SHMPORT_EMPTY`: no connection waits (`SHMPORT_NO_WAIT` only);
/// - `SHMPORT_TIMEOUT`: none came in time (a finite `timeout_ns` only);
/// - `SHMPORT_ERR_IO`: a system call failed (`errno`), or `errno` `ENOMEM` when
///   this process holds too many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `incoming` is NULL or valid for writing a pointer. No other thread uses
/// the listener during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_listener_accept(
    listener: *mut shmport_listener,
    timeout_ns: u64,
    incoming: *mut *mut shmport_incoming,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(incoming) }?;
        // SAFETY: used during this call only.
        let l = unsafe { LISTENERS.get(handle(listener)?) }?;
        let got = match Wait::from_ns(timeout_ns) {
            Wait::Forever => l.accept().map(Some),
            Wait::No => l.try_accept(),
            Wait::For(d) => l.accept_timeout(d),
        }
        .map_err(|e| io(&e))?;
        let i = match got {
            Some(i) => i,
            None if timeout_ns == 0 => return Err(SHMPORT_EMPTY),
            None => return Err(SHMPORT_TIMEOUT),
        };
        out.put(INCOMING.insert(i).map(to_ptr).ok_or_else(no_memory)?);
        Ok(())
    })
}

/// Close a listener: its socket file is removed (if it is still the one it
/// made), and connections still queued are rejected. NULL does nothing; a
/// listener already closed is `SHMPORT_ERR_BAD_HANDLE`.
///
/// Returns `SHMPORT_OK` on success (and for NULL, which does nothing), or:
/// - `SHMPORT_ERR_BAD_HANDLE`: `listener` is not a live listener;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses the listener during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_listener_close(listener: *mut shmport_listener) -> shmport_status {
    if listener.is_null() {
        return SHMPORT_OK;
    }
    guard(|| {
        // SAFETY: nothing keeps a reference to a listener past a call.
        let (l, slot) = unsafe { LISTENERS.remove(handle(listener)?) }?;
        LISTENERS.recycle(slot);
        drop(l);
        Ok(())
    })
}

/// Who is connecting, in `*credentials`.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `incoming` or `credentials` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `incoming` is not a live connection;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `credentials` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_incoming_credentials(
    incoming: *mut shmport_incoming,
    credentials: *mut shmport_credentials,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(credentials) }?;
        // SAFETY: used during this call only.
        let c = unsafe { INCOMING.get(handle(incoming)?) }?.credentials();
        out.put(shmport_credentials {
            pid: c.pid,
            uid: c.uid,
            gid: c.gid,
        });
        Ok(())
    })
}

/// Accept the connection: make a new channel (`capacity` as for
/// `shmport_channel_new`), send one port to the connector, and return the
/// other in `*port`. Once the arguments are valid (`port` not NULL,
/// `capacity` allowed, `incoming` live), the incoming handle is released
/// whatever the outcome.
/// Never waits on the connector; if it already hung up, the status is
/// `SHMPORT_ERR_IO` (`errno` `EPIPE`).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `incoming` is NULL;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `capacity` over `SHMPORT_MAX_CAPACITY`
///   (`incoming` stays live);
/// - `SHMPORT_ERR_BAD_HANDLE`: `incoming` is not a live connection;
/// - `SHMPORT_ERR_IO`: making the channel or sending the port failed (`errno`;
///   `EPIPE`: the connector hung up), or `errno` `ENOMEM` when this process
///   holds too many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `port` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_incoming_accept(
    incoming: *mut shmport_incoming,
    capacity: usize,
    port: *mut *mut shmport_port,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(port) }?;
        let settings = builder(capacity)?;
        // SAFETY: nothing keeps a reference to an incoming connection.
        let (i, slot) = unsafe { INCOMING.remove(handle(incoming)?) }?;
        INCOMING.recycle(slot);
        let p = i.accept_with(&settings).map_err(|e| io(&e))?;
        out.put(new_port_handle(p)?);
        Ok(())
    })
}

/// Reject the connection: it is closed without a port, and the connector's
/// `shmport_connect` returns `SHMPORT_ERR_REJECTED`. Releases the handle.
/// NULL does nothing.
///
/// Returns `SHMPORT_OK` on success (and for NULL, which does nothing), or:
/// - `SHMPORT_ERR_BAD_HANDLE`: `incoming` is not a live connection;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses the handle during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_incoming_reject(
    incoming: *mut shmport_incoming,
) -> shmport_status {
    if incoming.is_null() {
        return SHMPORT_OK;
    }
    guard(|| {
        // SAFETY: nothing keeps a reference to an incoming connection.
        let (i, slot) = unsafe { INCOMING.remove(handle(incoming)?) }?;
        INCOMING.recycle(slot);
        i.reject();
        Ok(())
    })
}

/// Connect to the listener at socket file `path` and wait for it to accept
/// and send a port: `*port` is this process's end.
///
/// `timeout_ns` bounds the whole wait (`SHMPORT_FOREVER`: no practical
/// limit; `SHMPORT_NO_WAIT` is taken as the shortest wait, one
/// microsecond).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `path` or `port` is NULL;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `path` is empty or longer than 107 bytes;
/// - `SHMPORT_ERR_NOT_FOUND`: nothing exists at `path`;
/// - `SHMPORT_ERR_NOT_A_LISTENER`: `path` is not a socket, or what listens
///   there is not a shmport listener;
/// - `SHMPORT_ERR_REFUSED`: a socket nobody listens on;
/// - `SHMPORT_ERR_PERMISSION_DENIED`: this process may not connect to it;
/// - `SHMPORT_ERR_REJECTED`: the host rejected this process;
/// - `SHMPORT_TIMEOUT`: no port came in time;
/// - `SHMPORT_ERR_BAD_PORT`: the port that came is not valid;
/// - `SHMPORT_ERR_IO`: a system call failed (`errno`), or `errno` `ENOMEM` when
///   this process holds too many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `port` is NULL or valid for
/// writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_connect(
    path: *const c_char,
    timeout_ns: u64,
    port: *mut *mut shmport_port,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (out, p) = unsafe { (Out::new(port)?, self::path(path)?) };
        let timeout = match Wait::from_ns(timeout_ns) {
            Wait::Forever => LONGEST,
            Wait::No => Duration::from_micros(1),
            Wait::For(d) => d.min(LONGEST),
        };
        let port = shmport_core::connect_timeout(p, timeout)?;
        out.put(new_port_handle(port)?);
        Ok(())
    })
}
