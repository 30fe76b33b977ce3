//! Port sets: wait on many ports at once, fairly (Rust's `PortSet` over
//! the ports C holds).

use std::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use shmport_core::{MessagePort, PortSet, RecvError};

use crate::boundary::{Out, Wait, guard, handle, to_ptr};
use crate::handles::{MessageState, PortState, port_state, shmport_message, shmport_port};
use crate::no_memory;
use crate::registry::{Kind, Registry};
use crate::status::io;
use crate::status::shmport_status::{self, *};

/// A set of ports waited on together. Opaque; made by
/// `shmport_port_set_new`, released by `shmport_port_set_free`.
pub struct shmport_port_set {
    _opaque: [u8; 0],
}

/// What a set handle names.
struct SetState {
    /// Borrows the ports' states in the port registry; each stays there
    /// while it is in the set (its `in_set` is this set's handle, so it
    /// cannot be closed or moved).
    set: PortSet<&'static MessagePort>,
    /// The C handle of the port at each key (0: free key).
    handles: Vec<u64>,
}

static SETS: Registry<SetState> = Registry::new(Kind::PortSet);

/// The set a handle names, for the current call only.
fn set_state(set: *mut shmport_port_set) -> Result<&'static mut SetState, shmport_status> {
    let h = handle(set)?;
    // SAFETY: used only during the current call; the C contract keeps
    // other threads off this set during the call.
    Ok(unsafe { SETS.get_mut(h) }?)
}

/// Make an empty port set: it waits on many ports at once, fairly (round
/// robin, so a busy port does not starve the others), with one system
/// call for all of them when it sleeps. On success `*set` is a new set, to
/// be released with `shmport_port_set_free` once.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set` is NULL;
/// - `SHMPORT_ERR_IO`: making the epoll descriptor failed (`errno`, e.g.
///   `EMFILE`), or `errno` `ENOMEM` when this process holds too many
///   handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `set` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_new(set: *mut *mut shmport_port_set) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(set) }?;
        let state = SetState {
            set: PortSet::empty().map_err(|e| io(&e))?,
            handles: Vec::new(),
        };
        out.put(SETS.insert(state).map(to_ptr).ok_or_else(no_memory)?);
        Ok(())
    })
}

/// Add `port` to `set`. The port stays the caller's and keeps working:
/// post to it and receive from it as before (a message of the port is
/// received either way). While it is in the set it cannot be closed or
/// posted in a transfer list (`SHMPORT_ERR_BUSY`): remove it first, or
/// let its close event (`shmport_port_set_wait`) remove it. A port is in
/// one set at most.
///
/// `key`: NULL, or where to write the port's key in the set: a small
/// number, free again once the port leaves, that `shmport_port_set_wait`
/// reports with the port (an index for the host's own table).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set` or `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set or `port` is not a
///   live port;
/// - `SHMPORT_ERR_BUSY`: `port` is already in a set (this one or another);
/// - `SHMPORT_ERR_IO`: the kernel would not watch the port's descriptor
///   (`errno`, e.g. `ENOMEM`, or `ENOSPC` at the user's epoll watch limit);
///   the port is not in the set and still works;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `key` is NULL or valid for writing a `size_t`. No other thread uses
/// `set` or `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_add(
    set: *mut shmport_port_set,
    port: *mut shmport_port,
    key: *mut usize,
) -> shmport_status {
    guard(|| {
        let out = if key.is_null() {
            None
        } else {
            // SAFETY: the caller's contract.
            Some(unsafe { Out::new(key) }?)
        };
        let me = handle(set)?;
        let st = set_state(set)?;
        let ph = handle(port)?;
        let ps: &'static PortState = port_state(port)?;
        if ps.in_set.get() != 0 {
            return Err(SHMPORT_ERR_BUSY);
        }
        // The set holds `&ps.port` until the port leaves it: `in_set`, set
        // below, keeps the port's state from being removed until then.
        let k = st.set.add(&ps.port).map_err(|e| io(&e.error))?;
        if k == st.handles.len() {
            st.handles.push(ph);
        } else {
            st.handles[k] = ph;
        }
        ps.in_set.set(me);
        if let Some(out) = out {
            out.put(k);
        }
        Ok(())
    })
}

/// Take `port` out of `set`: its key is free again; the port is unchanged
/// (messages waiting on it stay there).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set` or `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set or `port` is not a
///   live port;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `port` is not in this set;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `set` or `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_remove(
    set: *mut shmport_port_set,
    port: *mut shmport_port,
) -> shmport_status {
    guard(|| {
        let st = set_state(set)?;
        let ps = port_state(port)?;
        if ps.in_set.get() != handle(set)? {
            return Err(SHMPORT_ERR_INVALID_ARGUMENT);
        }
        let ph = handle(port)?;
        let k = st
            .handles
            .iter()
            .position(|&h| h == ph)
            .ok_or(SHMPORT_ERR_INVALID_ARGUMENT)?;
        leave(st, k, ps);
        Ok(())
    })
}

/// The port at key `k` leaves the set.
fn leave(st: &mut SetState, k: usize, ps: &PortState) {
    st.set.remove(k);
    st.handles[k] = 0;
    ps.in_set.set(0);
}

/// How many ports are in `set`, in `*len`.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set` or `len` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `len` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_len(
    set: *mut shmport_port_set,
    len: *mut usize,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(len) }?;
        out.put(set_state(set)?.set.len());
        Ok(())
    })
}

/// Receive from the next port of `set` (round robin) that has a message or
/// its close event, waiting at most `timeout_ns` (`SHMPORT_NO_WAIT`,
/// `SHMPORT_FOREVER`, or nanoseconds, as for `shmport_port_recv`).
///
/// - A message: `SHMPORT_OK`; `*key` and `*port` say which port, `*msg` is
///   a new message of that port (free it with `shmport_message_free`,
///   before the port is closed or posted, as for `shmport_port_recv`).
/// - A close event: the close status (`SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`,
///   `SHMPORT_PROTOCOL_ERROR`; `shmport_status_is_close`). The set has
///   removed the port (its key is free), and `*key` and `*port` say which
///   it was: close it (`shmport_port_close`) or keep using it.
/// - A message of a port that could not be received
///   (`SHMPORT_ERR_MESSAGE_REFUSED`, or `SHMPORT_ERR_IO` with `errno`):
///   `*key` and `*port` say which port; it stays in the set and goes on.
///
/// So, unlike other functions, `*key` and `*port` are also written with a
/// close status, `SHMPORT_ERR_MESSAGE_REFUSED` and a port's `SHMPORT_ERR_IO`
/// (`*msg` only with `SHMPORT_OK`). Set `*port` to NULL before the call to
/// tell a port's `SHMPORT_ERR_IO` from the set's own.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set`, `key`, `port` or `msg` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set;
/// - `SHMPORT_EMPTY`: the set has no ports (whatever `timeout_ns`), or
///   nothing is ready now (`SHMPORT_NO_WAIT` only);
/// - `SHMPORT_TIMEOUT`: nothing arrived in time (a finite `timeout_ns`
///   only);
/// - `SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`: the
///   close event of the port in `*port` (removed from the set);
/// - `SHMPORT_ERR_MESSAGE_REFUSED`: a message of the port in `*port` was
///   refused by its trust mode or size limit; the next call goes on;
/// - `SHMPORT_ERR_IO`: waiting failed (epoll; `*port` not written), or a
///   message of the port in `*port` could not be received, e.g. mapping
///   an out-of-line message (`errno`), or `errno` `ENOMEM` when this process
///   holds too many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `key`, `port` and `msg` are NULL or valid for writing. No other thread
/// uses `set`, its ports or their messages during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_wait(
    set: *mut shmport_port_set,
    timeout_ns: u64,
    key: *mut usize,
    port: *mut *mut shmport_port,
    msg: *mut *mut shmport_message,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (key_out, port_out, msg_out) =
            unsafe { (Out::new(key)?, Out::new(port)?, Out::new(msg)?) };
        let st = set_state(set)?;
        let wait = Wait::from_ns(timeout_ns);
        let deadline = match wait {
            Wait::For(d) => Instant::now().checked_add(d),
            _ => None,
        };
        loop {
            if st.set.is_empty() {
                return Err(SHMPORT_EMPTY);
            }
            let ready = match (wait, deadline) {
                (Wait::No, _) => Ok(st.set.poll()),
                (Wait::For(_), Some(d)) => st
                    .set
                    .wait_timeout(d.saturating_duration_since(Instant::now())),
                // Forever, or a wait too long to have a deadline.
                _ => st.set.wait(),
            }
            .map_err(|e| io(&e))?;
            let Some(k) = ready else {
                return Err(match wait {
                    Wait::No => SHMPORT_EMPTY,
                    _ if st.set.is_empty() => SHMPORT_EMPTY,
                    _ => SHMPORT_TIMEOUT,
                });
            };
            let ph = st.handles[k];
            let ps: &'static PortState = port_state(to_ptr::<shmport_port>(ph))?;
            let slot = ps.message_slot()?;
            match ps.port.try_recv() {
                Ok(m) => {
                    ps.add_message();
                    let mh = slot.fill(MessageState { msg: m, port: ps });
                    key_out.put(k);
                    port_out.put(to_ptr(ph));
                    msg_out.put(to_ptr(mh));
                    return Ok(());
                }
                // A wake-up with nothing behind it (yet): wait again.
                Err(RecvError::Empty | RecvError::Timeout) => {
                    ps.keep_message_slot(slot);
                    let passed = match (wait, deadline) {
                        (Wait::No, _) => true,
                        (_, Some(d)) => Instant::now() >= d,
                        _ => false,
                    };
                    if passed {
                        return Err(if matches!(wait, Wait::No) {
                            SHMPORT_EMPTY
                        } else {
                            SHMPORT_TIMEOUT
                        });
                    }
                }
                Err(e) => {
                    ps.keep_message_slot(slot);
                    if matches!(e, RecvError::Closed(_)) {
                        leave(st, k, ps);
                    }
                    key_out.put(k);
                    port_out.put(to_ptr(ph));
                    return Err(e.into());
                }
            }
        }
    })
}

/// The set's descriptor, in `*fd`, for `poll`/`epoll` in the host's own
/// event loop (with `shmport_port_set_prepare_poll`): it turns readable
/// when a port of the set has a message or its close event after the
/// set was prepared. It stays owned by the set: do not close it or read
/// from it; it is valid until the set is freed.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set` or `fd` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `fd` is NULL or valid for writing an `int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_fd(
    set: *mut shmport_port_set,
    fd: *mut c_int,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(fd) }?;
        out.put(set_state(set)?.set.as_fd().as_raw_fd());
        Ok(())
    })
}

/// Before the host's event loop waits on the set's descriptor
/// (`shmport_port_set_fd`): take in what the ports' descriptors hold and
/// announce a sleep on every port, so that a peer's next message, close
/// or death turns the set's descriptor readable.
///
/// `*wait` is true when the loop may wait. It is false when a port already
/// has a message or its close event, or the set is empty: do not wait.
/// Either way, call `shmport_port_set_wait` with `SHMPORT_NO_WAIT` until
/// `SHMPORT_EMPTY`, then prepare again before the next wait:
///
/// ```c
/// for (;;) {
///   bool wait;
///   shmport_port_set_prepare_poll(set, &wait);
///   if (wait) poll(&(struct pollfd){.fd = set_fd, .events = POLLIN}, 1, -1);
///   while ((st = shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg)) != SHMPORT_EMPTY) { ... }
/// }
/// ```
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `set` or `wait` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set;
/// - `SHMPORT_ERR_IO`: taking in a port's descriptor failed (`errno`);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `wait` is NULL or valid for writing a `bool`. No other thread uses
/// `set` or its ports during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_prepare_poll(
    set: *mut shmport_port_set,
    wait: *mut bool,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(wait) }?;
        out.put(set_state(set)?.set.prepare_poll().map_err(|e| io(&e))?);
        Ok(())
    })
}

/// Release a set. The ports in it leave it and stay the caller's, open
/// (close them as usual). NULL does nothing; a set already freed is
/// `SHMPORT_ERR_BAD_HANDLE`.
///
/// Returns `SHMPORT_OK` on success (and for NULL, which does nothing), or:
/// - `SHMPORT_ERR_BAD_HANDLE`: `set` is not a live set;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `set` or its ports during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_free(set: *mut shmport_port_set) -> shmport_status {
    if set.is_null() {
        return SHMPORT_OK;
    }
    guard(|| {
        // SAFETY: nothing keeps a reference to a set past a call.
        let (st, slot) = unsafe { SETS.remove(handle(set)?) }?;
        SETS.recycle(slot);
        for &ph in st.handles.iter().filter(|&&h| h != 0) {
            port_state(to_ptr::<shmport_port>(ph))?.in_set.set(0);
        }
        drop(st);
        Ok(())
    })
}
