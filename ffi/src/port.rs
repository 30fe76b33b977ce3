//! Ports: make a channel, post, receive, reserve, close.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr;

use shmport_core::{TransferError, Trust};

use crate::boundary::{Out, Wait, builder, bytes, guard, handle, to_ptr};
use crate::handles::{
    MessageState, PortState, new_port_handle, port_state, restore, retire, shmport_message,
    shmport_port, take_out,
};
use crate::status::shmport_status::{self, *};
use crate::{SHMPORT_MAX_PORTS, SHMPORT_TRUST_UNTRUSTED, SHMPORT_TRUST_VALIDATED};

/// Make a channel: two entangled ports. What one posts, the other receives,
/// in order, in both directions.
///
/// `capacity`: bytes of each direction's ring, 0 for the default
/// (`SHMPORT_DEFAULT_CAPACITY`, 1 MiB); rounded up to a power of two and
/// to at least 4 KiB (`shmport_port_capacity` reads back what a port got);
/// over `SHMPORT_MAX_CAPACITY` (1 GiB) it is refused. A message up to half
/// the ring travels inside it; larger ones go out of line, each in its own
/// sealed memfd.
///
/// On success `*port1` and `*port2` are two new ports, each to be closed
/// with `shmport_port_close` (or posted to another port) exactly once.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port1` or `port2` is NULL;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `capacity` over `SHMPORT_MAX_CAPACITY`;
/// - `SHMPORT_ERR_IO`: making the segment or sockets failed (`errno`: e.g.
///   `EMFILE`, `ENOMEM`), or `errno` `ENOMEM` when this process holds too many
///   handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `port1` and `port2` are NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_channel_new(
    capacity: usize,
    port1: *mut *mut shmport_port,
    port2: *mut *mut shmport_port,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (out1, out2) = unsafe { (Out::new(port1)?, Out::new(port2)?) };
        let (a, b) = builder(capacity)?
            .build()
            .map_err(|e| crate::status::io(&e))?
            .into_ports();
        let ha = new_port_handle(a)?;
        let hb = match new_port_handle(b) {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: `ha` was made just above and handed to no one.
                let state = unsafe { take_out(ha) }?;
                // SAFETY: taken out just above.
                unsafe { retire(ha) }?;
                drop(state);
                return Err(e);
            }
        };
        out1.put(ha);
        out2.put(hb);
        Ok(())
    })
}

/// Close a port and release its handle. The peer receives every message
/// posted before, then the close event `SHMPORT_CLOSED`.
///
/// NULL is accepted and does nothing (`SHMPORT_OK`). A handle already
/// closed or transferred is `SHMPORT_ERR_BAD_HANDLE` (detected as long as
/// its slot was not reused 2^23 times). A port with messages not yet freed
/// or a reservation not yet committed or cancelled is `SHMPORT_ERR_BUSY`:
/// nothing is closed, free them first.
///
/// Returns `SHMPORT_OK` on success (and for NULL, which does nothing), or:
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_BUSY`: messages received from it are not freed, or a
///   reservation is live (nothing was closed);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` or its messages during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_close(port: *mut shmport_port) -> shmport_status {
    if port.is_null() {
        return SHMPORT_OK;
    }
    guard(|| {
        port_state(port)?.check_idle()?;
        // SAFETY: the port has no messages and no reservation, so nothing
        // holds a reference to its state; this call alone uses the handle.
        let state = unsafe { take_out(port) }?;
        // SAFETY: taken out just above.
        unsafe { retire(port) }?;
        drop(state.into_port());
        Ok(())
    })
}

/// Post `len` bytes from `data` to the peer (copied into the ring).
///
/// `timeout_ns`: how long to wait for room when the ring is full:
/// `SHMPORT_NO_WAIT` (0) fails at once with `SHMPORT_FULL`,
/// `SHMPORT_FOREVER` waits as long as it takes, any other value waits at
/// most that many nanoseconds (`SHMPORT_TIMEOUT`). Messages up to
/// `SHMPORT_MAX_MESSAGE_SIZE` are accepted: those over half the ring go out
/// of line. Nothing is sent on failure.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL, or `data` is NULL and `len` is not 0;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_TOO_LARGE`: `len` over `SHMPORT_MAX_MESSAGE_SIZE` (`data` is
///   not read);
/// - `SHMPORT_ERR_RESERVED`: a reservation on `port` is live;
/// - `SHMPORT_FULL`: no room now (`SHMPORT_NO_WAIT` only);
/// - `SHMPORT_TIMEOUT`: no room in time (a finite `timeout_ns` only);
/// - `SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`: the peer
///   is gone (the close event);
/// - `SHMPORT_ERR_IO`: a system call failed, e.g. making the memfd of an
///   out-of-line message (`errno`);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `data` is NULL (only if `len` is 0) or valid for reading `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_post(
    port: *mut shmport_port,
    data: *const u8,
    len: usize,
    timeout_ns: u64,
) -> shmport_status {
    guard(|| {
        let ps = port_state(port)?;
        // SAFETY: the caller's contract.
        let data = unsafe { bytes(data, len) }?;
        match Wait::from_ns(timeout_ns) {
            Wait::Forever => ps.port.post_bytes(data),
            Wait::No => ps.port.try_post_bytes(data),
            Wait::For(d) => ps.port.post_bytes_timeout(data, d),
        }
        .map_err(Into::into)
    })
}

/// Post `len` bytes with `nports` ports attached (like `postMessage(data,
/// [ports])`). The receiver takes them from the message, in this order, as
/// working ports; messages already queued on them move with them.
///
/// Waits for room as long as it takes. Atomic: on success every port in
/// `ports` is transferred and its handle is released (do not close it); on
/// any failure nothing is sent and every handle in `ports` still names its
/// port, owned by the caller.
///
/// Refused before anything happens: a NULL or stale handle in `ports`
/// (`SHMPORT_ERR_NULL`, `SHMPORT_ERR_BAD_HANDLE`), `port` itself in the
/// list (`SHMPORT_ERR_SELF_TRANSFER`), a port twice
/// (`SHMPORT_ERR_INVALID_ARGUMENT`), a port with messages or a reservation
/// outstanding (`SHMPORT_ERR_BUSY`), more than `SHMPORT_MAX_PORTS`
/// (`SHMPORT_ERR_TOO_MANY_PORTS`), and `port`'s own entangled peer
/// (`SHMPORT_ERR_PEER_IN_TRANSFER`).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL, `data` is NULL and `len` is not 0,
///   `ports` is NULL and `nports` is not 0, or an entry of `ports` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` or an entry of `ports` is not a live
///   port;
/// - `SHMPORT_ERR_TOO_LARGE`: `len` over `SHMPORT_MAX_MESSAGE_SIZE`;
/// - `SHMPORT_ERR_TOO_MANY_PORTS`: `nports` over `SHMPORT_MAX_PORTS`, or more
///   descriptors (16,384) or attachment bytes (256 KiB) queued with the
///   ports than a receiver accepts in one message;
/// - `SHMPORT_ERR_SELF_TRANSFER`: `port` is in `ports`;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: a port is in `ports` twice;
/// - `SHMPORT_ERR_BUSY`: a port in `ports` has messages not freed or a live
///   reservation;
/// - `SHMPORT_ERR_PEER_IN_TRANSFER`: `port`'s own entangled peer is in
///   `ports`, or queued on a port in `ports` (at any depth);
/// - `SHMPORT_ERR_NESTED_TOO_DEEP`: a port in `ports` holds ports nested
///   deeper than a receiver accepts (16 levels);
/// - `SHMPORT_ERR_RESERVED`: a reservation on `port` is live;
/// - `SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`: the peer
///   is gone (the close event);
/// - `SHMPORT_ERR_IO`: a system call failed (`errno`);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `data` as for `shmport_port_post`; `ports` is NULL (only if `nports` is
/// 0) or valid for reading `nports` handles. No other thread uses any of
/// these ports during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_post_with_ports(
    port: *mut shmport_port,
    data: *const u8,
    len: usize,
    ports: *const *mut shmport_port,
    nports: usize,
) -> shmport_status {
    guard(|| {
        let ps = port_state(port)?;
        let me = handle(port)?;
        // SAFETY: the caller's contract.
        let data = unsafe { bytes(data, len) }?;
        if nports > SHMPORT_MAX_PORTS {
            return Err(SHMPORT_ERR_TOO_MANY_PORTS);
        }
        let handles: &[*mut shmport_port] = if nports == 0 {
            &[]
        } else if ports.is_null() {
            return Err(SHMPORT_ERR_NULL);
        } else {
            // SAFETY: non-NULL and valid for `nports` handles (the contract).
            unsafe { std::slice::from_raw_parts(ports, nports) }
        };
        // Check everything before taking anything.
        let mut seen = HashSet::with_capacity(nports);
        for &p in handles {
            let h = handle(p)?;
            if h == me {
                return Err(SHMPORT_ERR_SELF_TRANSFER);
            }
            port_state(p)?.check_idle()?;
            if !seen.insert(h) {
                return Err(SHMPORT_ERR_INVALID_ARGUMENT);
            }
        }
        let mut moving = Vec::with_capacity(nports);
        for &p in handles {
            // SAFETY: checked live and idle above (no message or reservation
            // refers to it); the handle stays live until restored or retired
            // below.
            let state = unsafe { take_out(p) }?;
            moving.push(state.into_port());
        }
        let result = ps.port.post_bytes_with_ports(data, moving);
        match result {
            Ok(()) => {
                for &p in handles {
                    // SAFETY: taken out above, not restored.
                    unsafe { retire(p) }?;
                }
                Ok(())
            }
            Err(TransferError { error, ports }) if ports.len() == nports => {
                for (&p, back) in handles.iter().zip(ports) {
                    // SAFETY: taken out above, not restored. `ports` comes back
                    // in the order it was given.
                    unsafe { restore(p, PortState::new(back)) }?;
                }
                Err(error.into())
            }
            Err(TransferError { error, ports }) => {
                // The core hands every port back (a corrupted one comes
                // back broken), so this is only a guard: if ever a port
                // were missing, which handle is which would be unknown, so
                // none stays live, and the ones that came back close.
                drop(ports);
                for &p in handles {
                    // SAFETY: taken out above, not restored.
                    unsafe { retire(p) }?;
                }
                Err(error.into())
            }
        }
    })
}

/// Receive the next message. On success `*msg` is a new message: its bytes
/// are read in place with `shmport_message_bytes` and stay valid until
/// `shmport_message_free`, which must be called exactly once, before the
/// port is closed or posted.
///
/// `timeout_ns`: `SHMPORT_NO_WAIT` (0) returns `SHMPORT_EMPTY` at once if
/// nothing is waiting, `SHMPORT_FOREVER` waits as long as it takes, other
/// values wait at most that many nanoseconds (`SHMPORT_TIMEOUT`).
///
/// After the last message the peer posted, returns the close event: a close
/// status (`SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`;
/// see `shmport_status_is_close`), again on every later call.
///
/// Several messages may be held at once and freed in any order; the ring
/// space of a message goes back to the sender when it is freed.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `msg` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_EMPTY`: nothing to receive now (`SHMPORT_NO_WAIT` only);
/// - `SHMPORT_TIMEOUT`: nothing arrived in time (a finite `timeout_ns` only);
/// - `SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`: the peer closed its port, or
///   exited or was killed (the close event), after every message it posted;
/// - `SHMPORT_PROTOCOL_ERROR`: the close event when the peer broke the
///   protocol (wrote garbage to the ring or the socket, a record without
///   its attachment, an out-of-line message in memory not sealed or shorter
///   than it claims), or after an `SHMPORT_ERR_IO` that left the socket out
///   of step (below); returned as soon as it is seen, so messages posted
///   after the breach are not received;
/// - `SHMPORT_ERR_MESSAGE_REFUSED`: this message was refused by the port's
///   trust mode (`shmport_port_set_trust`: an out-of-line payload not sealed
///   against writes) or is larger than it accepts
///   (`shmport_port_set_max_message_size`); the message is dropped, the
///   next call receives the next one;
/// - `SHMPORT_ERR_IO`, with `errno`:
///   - `EMFILE`: the message's descriptors (its out-of-line
///     memory, its ports) never arrived because this process had no free
///     descriptor; the message is dropped, the next call receives the next
///     one;
///   - `ENOMEM`: this process holds too many handles (nothing was
///     received: the next call receives it);
///   - `ENOMEM` or another `mmap` code: mapping an out-of-line message
///     failed (the message is dropped);
///   - another code: reading the port's socket failed; if it failed while
///     a message's attachment was due, the port is out of step and every
///     later call returns `SHMPORT_PROTOCOL_ERROR`;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `msg` is NULL or valid for writing a pointer. No other thread uses
/// `port` or its messages during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_recv(
    port: *mut shmport_port,
    timeout_ns: u64,
    msg: *mut *mut shmport_message,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(msg) }?;
        let ps = port_state(port)?;
        // Claimed before receiving, so that a message is never received and
        // then lost for want of a slot.
        let slot = ps.message_slot()?;
        let m = match Wait::from_ns(timeout_ns) {
            Wait::Forever => ps.port.recv_inlined(),
            Wait::No => ps.port.try_recv(),
            Wait::For(d) => ps.port.recv_timeout(d),
        };
        match m {
            Ok(msg) => {
                ps.add_message();
                out.put(to_ptr(slot.fill(MessageState { msg, port: ps })));
                Ok(())
            }
            Err(e) => {
                ps.keep_message_slot(slot);
                Err(e.into())
            }
        }
    })
}

/// Reserve `len` bytes in the ring for a message written in place
/// (zero copy): on success `*data` points to `len` writable bytes (their
/// contents unspecified), valid until `shmport_port_commit` or
/// `shmport_port_cancel`. The peer sees nothing until the commit.
///
/// A message larger than half the ring is reserved in a block of the
/// port's pool: written in place where the peer reads it. Up to
/// `shmport_port_max_reservation` bytes (`SHMPORT_ERR_TOO_LARGE` beyond).
/// While the reservation is live, posts and reservations on this port fail
/// with `SHMPORT_ERR_RESERVED` and closing it with `SHMPORT_ERR_BUSY`.
/// `timeout_ns` as for `shmport_port_post`.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `data` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_RESERVED`: a reservation on `port` is already live;
/// - `SHMPORT_ERR_TOO_LARGE`: `len` over `shmport_port_max_reservation`;
/// - `SHMPORT_FULL`: no room now (`SHMPORT_NO_WAIT` only);
/// - `SHMPORT_TIMEOUT`: no room in time (a finite `timeout_ns` only);
/// - `SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`: the peer
///   is gone (the close event);
/// - `SHMPORT_ERR_IO`: a system call failed while waiting (`errno`);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `data` is NULL or valid for writing a pointer. No other thread uses
/// `port` during the call or writes through `*data` after the reservation
/// ends.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_reserve(
    port: *mut shmport_port,
    len: usize,
    timeout_ns: u64,
    data: *mut *mut u8,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(data) }?;
        let ps = port_state(port)?;
        // Borrowed across the reservation: nothing it calls looks here.
        let mut live = ps.reservation.borrow_mut();
        if live.is_some() {
            return Err(SHMPORT_ERR_RESERVED);
        }
        let mut r = match Wait::from_ns(timeout_ns) {
            Wait::Forever => ps.port.reserve_bytes(len),
            Wait::No => ps.port.try_reserve_bytes(len),
            Wait::For(d) => ps.port.reserve_bytes_timeout(len, d),
        }?;
        let p = if len == 0 {
            ptr::NonNull::dangling().as_ptr()
        } else {
            r.bytes_mut().as_mut_ptr()
        };
        *live = Some(r);
        out.put(p);
        Ok(())
    })
}

/// Publish the first `len` bytes of the live reservation as one message
/// (`len` at most the reserved length, else `SHMPORT_ERR_INVALID_ARGUMENT`
/// and the reservation stays live). The reservation ends whatever the
/// outcome: on a close status the message is not delivered.
///
/// `SHMPORT_ERR_NO_RESERVATION` if the port has none.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_NO_RESERVATION`: no reservation is live;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `len` over the reserved length (the
///   reservation stays live);
/// - `SHMPORT_CLOSED`, `SHMPORT_PEER_DIED`, `SHMPORT_PROTOCOL_ERROR`: the peer
///   is gone (the close event) (the reservation ended, nothing was delivered);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_commit(
    port: *mut shmport_port,
    len: usize,
) -> shmport_status {
    guard(|| {
        let ps = port_state(port)?;
        let mut slot = ps.reservation.borrow_mut();
        match slot.as_ref() {
            None => return Err(SHMPORT_ERR_NO_RESERVATION),
            Some(r) if len > r.len() => return Err(SHMPORT_ERR_INVALID_ARGUMENT),
            Some(_) => {}
        }
        let r = slot.take().ok_or(SHMPORT_ERR_NO_RESERVATION)?;
        drop(slot);
        r.commit_len(len).map_err(Into::into)
    })
}

/// Abandon the live reservation: the peer sees nothing of it.
/// `SHMPORT_ERR_NO_RESERVATION` if the port has none.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_NO_RESERVATION`: no reservation is live;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_cancel(port: *mut shmport_port) -> shmport_status {
    guard(|| {
        let ps = port_state(port)?;
        let r = ps
            .reservation
            .borrow_mut()
            .take()
            .ok_or(SHMPORT_ERR_NO_RESERVATION)?;
        drop(r);
        Ok(())
    })
}

/// The largest reservation this port allows, in `*len`: the largest block
/// of its pool (64 MiB unless `shmport_port_set_pool_limit` lowered it), or
/// half its ring (less a header) if that is more.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `len` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `len` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_max_reservation(
    port: *mut shmport_port,
    len: *mut usize,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(len) }?;
        out.put(port_state(port)?.port.max_reservation());
        Ok(())
    })
}

/// Bytes in each direction's ring of this port's channel, in `*capacity`:
/// the capacity it was made with, rounded up to a power of two and to at
/// least 4 KiB (the same at both ends, wherever the port travels).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `capacity` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `capacity` is NULL or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_capacity(
    port: *mut shmport_port,
    capacity: *mut usize,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(capacity) }?;
        out.put(port_state(port)?.port.capacity());
        Ok(())
    })
}

/// How long blocking calls on this port spin (checking the ring, no system
/// call) before they sleep, in nanoseconds (default 20 µs). 0 sleeps at
/// once; a long spin gives the lowest latency and keeps a core busy while
/// waiting.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_spin(
    port: *mut shmport_port,
    spin_ns: u64,
) -> shmport_status {
    guard(|| {
        port_state(port)?
            .port
            .set_spin(std::time::Duration::from_nanos(spin_ns));
        Ok(())
    })
}

/// How this port treats what its peer writes: `SHMPORT_TRUST_VALIDATED`
/// (the default: messages are read in place, zero copy) or
/// `SHMPORT_TRUST_UNTRUSTED` (for a peer that may be hostile: each message
/// is copied into private memory when it is received, so the peer cannot
/// change its bytes while they are read; out-of-line messages are accepted
/// only in memfds sealed against writing, others are refused with
/// `SHMPORT_ERR_MESSAGE_REFUSED`). Other values are
/// `SHMPORT_ERR_INVALID_ARGUMENT`. A port taken from a message starts
/// validated.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `trust` is neither
///   `SHMPORT_TRUST_VALIDATED` nor `SHMPORT_TRUST_UNTRUSTED`;
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_trust(
    port: *mut shmport_port,
    trust: u32,
) -> shmport_status {
    guard(|| {
        let trust = match trust {
            SHMPORT_TRUST_VALIDATED => Trust::Validated,
            SHMPORT_TRUST_UNTRUSTED => Trust::Untrusted,
            _ => return Err(SHMPORT_ERR_INVALID_ARGUMENT),
        };
        port_state(port)?.port.set_trust(trust);
        Ok(())
    })
}

/// The largest message this port accepts, in bytes (default 1 GiB). A
/// larger message from outside the ring (in the peer's pool, or out of
/// line) is refused before it is read (an out-of-line one before it is
/// mapped): that receive returns `SHMPORT_ERR_MESSAGE_REFUSED`, the message
/// is dropped, and the port goes on. It bounds what a peer can make this
/// process map with one message. A port taken from a message starts with
/// the default.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_max_message_size(
    port: *mut shmport_port,
    bytes: usize,
) -> shmport_status {
    guard(|| {
        port_state(port)?.port.set_max_message_size(bytes);
        Ok(())
    })
}

/// Cap the memory of this port's large-message pool at `bytes`
/// (`SIZE_MAX`: the default, the larger of 64 MiB and four blocks of the
/// largest size class in use; 0 turns the pool off). Messages larger than
/// half the ring and up to 64 MiB go into blocks of this pool, reused from
/// message to message; at the cap, a post that needs a block waits for the
/// peer to give one back (`SHMPORT_FULL` with `SHMPORT_NO_WAIT`), as a full
/// ring makes it wait. A message larger than the cap allows travels in a
/// memfd of its own. Kept in this process only: a port taken from a
/// message starts with the default.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_set_pool_limit(
    port: *mut shmport_port,
    bytes: usize,
) -> shmport_status {
    guard(|| {
        let limit = (bytes != usize::MAX).then_some(bytes);
        port_state(port)?.port.set_pool_limit(limit);
        Ok(())
    })
}

/// The port's socket descriptor, in `*fd`, for `poll`/`epoll` in the host's
/// own event loop (with `shmport_port_prepare_poll`). It stays owned by the
/// port: do not close it or read from it; it is valid until the port is
/// closed or posted.
///
/// It reports `POLLHUP` (and `POLLIN`) as soon as the peer is gone, closed
/// or killed, and turns readable when the peer posts after
/// `shmport_port_prepare_poll` said to wait.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `fd` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `fd` is NULL or valid for writing an `int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_fd(
    port: *mut shmport_port,
    fd: *mut std::ffi::c_int,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(fd) }?;
        out.put(port_state(port)?.port.as_fd().as_raw_fd());
        Ok(())
    })
}

/// Before the host's event loop waits on the port's descriptor
/// (`shmport_port_fd`): announce that this side sleeps, so that the peer's
/// next message writes a wake-up to the descriptor.
///
/// `*wait` is true when the loop may wait: the descriptor turns readable
/// at the peer's next message, close or death. It is false when a message
/// or the close event is already there: receive instead of waiting. Either
/// way, receive with `SHMPORT_NO_WAIT` until `SHMPORT_EMPTY` (which also
/// takes in the wake-up), then prepare again before the next wait:
///
/// ```c
/// for (;;) {
///   bool wait;
///   shmport_port_prepare_poll(port, &wait);
///   if (wait) poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, -1);
///   while ((st = shmport_port_recv(port, SHMPORT_NO_WAIT, &msg)) == SHMPORT_OK) { ... }
///   if (st != SHMPORT_EMPTY) break;   /* the close event */
/// }
/// ```
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `wait` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `wait` is NULL or valid for writing a `bool`. No other thread uses
/// `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_prepare_poll(
    port: *mut shmport_port,
    wait: *mut bool,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(wait) }?;
        out.put(port_state(port)?.port.prepare_poll());
        Ok(())
    })
}

/// Before the host's event loop waits on the port's descriptor
/// (`shmport_port_fd`) for room to post a message of `len` bytes, after a
/// post returned `SHMPORT_FULL`: announce that this side waits for room, so
/// that the peer's next receive (the room it frees) or its close writes a
/// wake-up to the descriptor, which then polls readable (`POLLIN`).
///
/// `*wait` is true when the loop may wait. It is false when there is
/// nothing to wait for: the room is already there, or the post would fail
/// at once (the peer closed or is gone, a reservation is live): post
/// instead. When the poll ends, woken or not, call
/// `shmport_port_end_post_poll`, then post with `SHMPORT_NO_WAIT`;
/// `SHMPORT_FULL` again means prepare again:
///
/// ```c
/// while ((st = shmport_port_post(port, data, len, SHMPORT_NO_WAIT)) == SHMPORT_FULL) {
///   bool wait;
///   shmport_port_prepare_post_poll(port, len, &wait);
///   if (wait) {
///     poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, -1);
///     shmport_port_end_post_poll(port);
///   }
/// }
/// ```
///
/// The same descriptor also turns readable for messages
/// (`shmport_port_prepare_poll`): a loop that both receives and posts
/// prepares both, polls once, and then tries both.
///
/// A message over about half the ring (the `capacity` of its channel) goes
/// out of line: its room is one record slot in the ring, which this waits
/// for, and room in the socket for its memory's descriptor. The socket has
/// room unless the peer has not taken in earlier ones; if the post returns
/// `SHMPORT_FULL` although `*wait` was false, the socket lacks it: poll the
/// descriptor for `POLLOUT` instead.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` or `wait` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `wait` is NULL or valid for writing a `bool`. No other thread uses
/// `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_prepare_post_poll(
    port: *mut shmport_port,
    len: usize,
    wait: *mut bool,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(wait) }?;
        out.put(port_state(port)?.port.prepare_post_poll(len));
        Ok(())
    })
}

/// After a poll that followed `shmport_port_prepare_post_poll` said to wait,
/// woken or not: withdraw the announcement and take in what the socket
/// holds (the wake-up), so that the descriptor stops polling readable.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_IO`: reading the socket failed (`errno`); the
///   announcement is withdrawn all the same;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_end_post_poll(port: *mut shmport_port) -> shmport_status {
    guard(|| {
        port_state(port)?
            .port
            .end_post_poll()
            .map_err(|e| crate::status::io(&e))
    })
}
