//! Received messages: bytes read in place, ports taken out, freed once.

use shmport_core::TakePortsError;

use crate::boundary::{Out, guard, handle};
use crate::handles::{MESSAGES, message, new_port_handle, shmport_message, shmport_port};
use crate::status::shmport_status::{self, *};

/// The message's bytes, read in place: `*data` points to `*len` bytes that
/// stay valid, unchanged, until `shmport_message_free`. When `*len` is 0,
/// `*data` must not be dereferenced.
///
/// A message posted by a Rust process with `post_bytes` reads as exactly
/// those bytes; one posted as a typed value reads as its rkyv archive
/// (`shmport_message_fingerprint` tells them apart).
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `msg`, `data` or `len` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `msg` is not a live message;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `data` and `len` are NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_message_bytes(
    msg: *mut shmport_message,
    data: *mut *const u8,
    len: *mut usize,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (out_data, out_len) = unsafe { (Out::new(data)?, Out::new(len)?) };
        let b = message(msg)?.msg.bytes();
        out_data.put(b.as_ptr());
        out_len.put(b.len());
        Ok(())
    })
}

/// The type fingerprint the sender attached, in `*fingerprint`: 0 for raw
/// bytes (everything a C host posts), non-zero for a typed value posted by
/// Rust.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `msg` or `fingerprint` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `msg` is not a live message;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `fingerprint` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_message_fingerprint(
    msg: *mut shmport_message,
    fingerprint: *mut u64,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(fingerprint) }?;
        out.put(message(msg)?.msg.fingerprint());
        Ok(())
    })
}

/// How many ports came with the message and were not taken yet, in
/// `*count`.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `msg` or `count` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `msg` is not a live message;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `count` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_message_port_count(
    msg: *mut shmport_message,
    count: *mut usize,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(count) }?;
        out.put(message(msg)?.msg.port_count());
        Ok(())
    })
}

/// Take the ports that came with the message, in the order they were
/// posted: they are written to `ports[0 .. *count]`, each a new port the
/// caller closes (or posts) once. Ports not taken are closed when the
/// message is freed (their peers see `SHMPORT_CLOSED`). A second call
/// takes nothing (`*count` = 0).
///
/// `capacity` must be at least `shmport_message_port_count`
/// (`SHMPORT_ERR_INVALID_ARGUMENT` otherwise, and nothing is taken).
///
/// If a received port is not valid (its segment or socket is not what a
/// port's must be), it is closed and the call returns
/// `SHMPORT_ERR_BAD_PORT` — and still writes the valid ports and their
/// number, which the caller then owns: no good port is lost. This is the
/// one function that writes its outputs on a failure.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `msg` or `count` is NULL, or `ports` is NULL and the
///   message has ports;
/// - `SHMPORT_ERR_BAD_HANDLE`: `msg` is not a live message;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `capacity` is less than the port count
///   (nothing taken);
/// - `SHMPORT_ERR_BAD_PORT`: a received port is not valid (the valid ones and
///   their number are written);
/// - `SHMPORT_ERR_IO`: `errno` `ENOMEM` when this process holds too many
///   handles (the ports that got a handle and their number are written; the
///   others are closed);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `ports` is NULL (only if `capacity` is 0) or valid for writing
/// `capacity` pointers; `count` is NULL or valid for writing. No other
/// thread uses the message or its port during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_message_take_ports(
    msg: *mut shmport_message,
    ports: *mut *mut shmport_port,
    capacity: usize,
    count: *mut usize,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out_count = unsafe { Out::new(count) }?;
        let m = message(msg)?;
        let n = m.msg.port_count();
        if n > capacity {
            return Err(SHMPORT_ERR_INVALID_ARGUMENT);
        }
        if n > 0 && ports.is_null() {
            return Err(SHMPORT_ERR_NULL);
        }
        let (taken, status) = match m.msg.take_ports() {
            Ok(p) => (p, SHMPORT_OK),
            Err(TakePortsError { ports, .. }) => (ports, SHMPORT_ERR_BAD_PORT),
        };
        let mut written = 0;
        let mut result = Ok(());
        for p in taken {
            match new_port_handle(p) {
                Ok(h) => {
                    // SAFETY: `written < n <= capacity`, and `ports` is valid
                    // for `capacity` writes (the contract).
                    unsafe { ports.add(written).write(h) };
                    written += 1;
                }
                Err(e) => result = Err(e),
            }
        }
        out_count.put(written);
        result?;
        if status == SHMPORT_OK {
            Ok(())
        } else {
            Err(status)
        }
    })
}

/// Free a message: its bytes are no longer valid, its ring space goes back
/// to the sender, ports not taken from it are closed.
///
/// NULL is accepted and does nothing (`SHMPORT_OK`). A message already
/// freed is `SHMPORT_ERR_BAD_HANDLE` (detected as long as its slot was not
/// reused 2^23 times).
///
/// Returns `SHMPORT_OK` on success (and for NULL, which does nothing), or:
/// - `SHMPORT_ERR_BAD_HANDLE`: `msg` is not a live message (freed already?);
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// No other thread uses the message or its port during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_message_free(msg: *mut shmport_message) -> shmport_status {
    if msg.is_null() {
        return SHMPORT_OK;
    }
    guard(|| {
        // SAFETY: no reference to the message outlives a call; this call
        // alone uses the handle.
        let (port, slot) = unsafe { MESSAGES.drop_in_place(handle(msg)?, |m| m.port) }?;
        port.remove_message();
        port.keep_message_slot(slot);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::ptr::null_mut;

    use super::*;
    use crate::SHMPORT_FOREVER;
    use crate::port::{
        shmport_channel_new, shmport_port_close, shmport_port_post, shmport_port_recv,
    };

    /// Post `n` messages on `a` and receive them on `b`, holding them all.
    fn receive(a: *mut shmport_port, b: *mut shmport_port, n: u8) -> Vec<*mut shmport_message> {
        (0..n)
            .map(|i| {
                let mut m = null_mut();
                // SAFETY: live ports, valid pointers, one thread.
                unsafe {
                    assert_eq!(shmport_port_post(a, &i, 1, SHMPORT_FOREVER), SHMPORT_OK);
                    assert_eq!(shmport_port_recv(b, SHMPORT_FOREVER, &mut m), SHMPORT_OK);
                }
                m
            })
            .collect()
    }

    /// A new channel's two ports.
    fn channel() -> (*mut shmport_port, *mut shmport_port) {
        let (mut a, mut b) = (null_mut(), null_mut());
        // SAFETY: valid pointers for the two ports.
        let status = unsafe { shmport_channel_new(0, &mut a, &mut b) };
        assert_eq!(status, SHMPORT_OK);
        (a, b)
    }

    /// The slot a message handle names (its index bits).
    fn slot_of(m: *mut shmport_message) -> u32 {
        m as usize as u32
    }

    #[test]
    fn freed_slots_are_kept_by_the_port_and_reused() {
        let (a, b) = channel();
        let held = receive(a, b, 3);
        let (mut data, mut len) = (std::ptr::null(), 0);
        // SAFETY: live or stale handles, valid pointers, one thread.
        unsafe {
            for (i, &m) in held.iter().enumerate() {
                assert_eq!(shmport_message_bytes(m, &mut data, &mut len), SHMPORT_OK);
                assert_eq!((len, *data), (1, i as u8));
            }
            assert_eq!(shmport_port_close(b), SHMPORT_ERR_BUSY);
            for &m in &[held[1], held[0], held[2]] {
                assert_eq!(shmport_message_free(m), SHMPORT_OK);
                assert_eq!(shmport_message_free(m), SHMPORT_ERR_BAD_HANDLE);
                assert_eq!(
                    shmport_message_bytes(m, &mut data, &mut len),
                    SHMPORT_ERR_BAD_HANDLE
                );
            }
        }
        // The port kept the three slots: another port's message does not
        // get one, and this port's next three messages take them again,
        // under new handles.
        let mut before: Vec<u32> = held.iter().map(|&m| slot_of(m)).collect();
        before.sort_unstable();
        let (c, d) = channel();
        let other = receive(c, d, 1)[0];
        assert!(!before.contains(&slot_of(other)));
        let again = receive(a, b, 3);
        let mut after: Vec<u32> = again.iter().map(|&m| slot_of(m)).collect();
        after.sort_unstable();
        assert_eq!(before, after);
        // SAFETY: as above.
        unsafe {
            for &m in &again {
                assert!(!held.contains(&m));
                assert_eq!(shmport_message_bytes(m, &mut data, &mut len), SHMPORT_OK);
            }
            for &m in &held {
                assert_eq!(shmport_message_free(m), SHMPORT_ERR_BAD_HANDLE);
            }
            for &m in &again {
                assert_eq!(shmport_message_free(m), SHMPORT_OK);
            }
            // Closing gives the kept slots back; the handle turns stale.
            assert_eq!(shmport_port_close(b), SHMPORT_OK);
            assert_eq!(shmport_port_close(b), SHMPORT_ERR_BAD_HANDLE);
            assert_eq!(shmport_port_close(a), SHMPORT_OK);
            assert_eq!(shmport_message_free(other), SHMPORT_OK);
            assert_eq!(shmport_port_close(c), SHMPORT_OK);
            assert_eq!(shmport_port_close(d), SHMPORT_OK);
        }
    }
}
