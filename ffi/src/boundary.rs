//! The C boundary: panics stop here, arguments (pointers, lengths, sizes) are
//! checked here.

use std::ffi::{CStr, OsStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::time::Duration;

use shmport_core::ChannelBuilder;

use crate::SHMPORT_MAX_CAPACITY;
use crate::status::shmport_status::{self, *};

/// What a function body returns: `Err` carries the status to return.
pub(crate) type Outcome = Result<(), shmport_status>;

/// Run an entry point's body: its status, or `SHMPORT_ERR_PANIC` if it
/// panicked. No panic crosses into C.
#[inline]
pub(crate) fn guard(body: impl FnOnce() -> Outcome) -> shmport_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SHMPORT_OK,
        Ok(Err(status)) => status,
        Err(_) => SHMPORT_ERR_PANIC,
    }
}

/// An output parameter: checked non-NULL before the call does anything,
/// written once, on success.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// # Safety
    /// `p` is NULL or valid for writing one `T` (aligned, writable) for the
    /// duration of the call: the C caller's side of every function's
    /// contract.
    #[inline]
    pub(crate) unsafe fn new(p: *mut T) -> Result<Out<T>, shmport_status> {
        NonNull::new(p).map(Out).ok_or(SHMPORT_ERR_NULL)
    }

    /// Write the result.
    #[inline]
    pub(crate) fn put(self, value: T) {
        // SAFETY: non-NULL and valid for writes (the contract of `new`);
        // `write` does not read or drop what the caller left there.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// A handle argument as the value it carries; NULL is `SHMPORT_ERR_NULL`.
#[inline]
pub(crate) fn handle<T>(p: *mut T) -> Result<u64, shmport_status> {
    if p.is_null() {
        Err(SHMPORT_ERR_NULL)
    } else {
        Ok(p as usize as u64)
    }
}

/// A handle value as the opaque pointer C holds (never dereferenced).
#[inline]
pub(crate) fn to_ptr<T>(h: u64) -> *mut T {
    h as usize as *mut T
}

/// A NUL-terminated string argument, as an OS string (any bytes but NUL).
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that stays valid and
/// unchanged for the call.
pub(crate) unsafe fn os_str<'a>(s: *const c_char) -> Result<&'a OsStr, shmport_status> {
    if s.is_null() {
        return Err(SHMPORT_ERR_NULL);
    }
    // SAFETY: non-NULL, NUL-terminated and valid for the call (the contract).
    let bytes = unsafe { CStr::from_ptr(s) }.to_bytes();
    Ok(OsStr::from_bytes(bytes))
}

/// A path or program name argument: [`os_str`], not empty.
///
/// # Safety
/// As for [`os_str`].
pub(crate) unsafe fn path<'a>(s: *const c_char) -> Result<&'a OsStr, shmport_status> {
    // SAFETY: the same contract.
    let p = unsafe { os_str(s) }?;
    if p.is_empty() {
        return Err(SHMPORT_ERR_INVALID_ARGUMENT);
    }
    Ok(p)
}

/// A message's `len` bytes at `data` (which may be NULL when `len` is 0).
/// A length over `SHMPORT_MAX_MESSAGE_SIZE` is `SHMPORT_ERR_TOO_LARGE`,
/// before the pointer is looked at: no such slice is ever made (one over
/// `isize::MAX` could not exist).
///
/// # Safety
/// `data` is NULL or valid for reading `len` bytes for the call.
pub(crate) unsafe fn bytes<'a>(data: *const u8, len: usize) -> Result<&'a [u8], shmport_status> {
    if len > shmport_core::MAX_MESSAGE_SIZE {
        return Err(SHMPORT_ERR_TOO_LARGE);
    }
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(SHMPORT_ERR_NULL);
    }
    // SAFETY: non-NULL and valid for `len` bytes (the contract), and `len`
    // is at most MAX_MESSAGE_SIZE <= isize::MAX; C memory is
    // initialized bytes as far as Rust is concerned, and nothing writes it
    // during the call (the caller's side of the contract).
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Channel settings: `capacity` bytes per ring (0 for the default); over
/// `SHMPORT_MAX_CAPACITY` is `SHMPORT_ERR_INVALID_ARGUMENT`.
pub(crate) fn builder(capacity: usize) -> Result<ChannelBuilder, shmport_status> {
    let b = ChannelBuilder::new();
    match capacity {
        0 => Ok(b),
        // What the builder would refuse, as the status that says so.
        c if c > SHMPORT_MAX_CAPACITY => Err(SHMPORT_ERR_INVALID_ARGUMENT),
        c => Ok(b.capacity(c)),
    }
}

/// How long a call may wait, from a `timeout_ns` argument.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// `SHMPORT_NO_WAIT` (0).
    No,
    /// At most this long.
    For(Duration),
    /// `SHMPORT_FOREVER`.
    Forever,
}

impl Wait {
    #[inline]
    pub(crate) fn from_ns(timeout_ns: u64) -> Wait {
        match timeout_ns {
            0 => Wait::No,
            u64::MAX => Wait::Forever,
            ns => Wait::For(Duration::from_nanos(ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status() {
        assert_eq!(guard(|| Ok(())), SHMPORT_OK);
        assert_eq!(guard(|| Err(SHMPORT_FULL)), SHMPORT_FULL);
        assert_eq!(guard(|| panic!("a bug")), SHMPORT_ERR_PANIC);
    }

    #[test]
    fn null_arguments_are_refused() {
        // SAFETY: NULL is allowed by each contract.
        unsafe {
            assert!(matches!(
                Out::<u32>::new(std::ptr::null_mut()),
                Err(SHMPORT_ERR_NULL)
            ));
            assert_eq!(os_str(std::ptr::null()), Err(SHMPORT_ERR_NULL));
            assert_eq!(path(c"".as_ptr()), Err(SHMPORT_ERR_INVALID_ARGUMENT));
            assert_eq!(os_str(c"".as_ptr()), Ok(OsStr::new("")));
            assert_eq!(bytes(std::ptr::null(), 1), Err(SHMPORT_ERR_NULL));
            assert_eq!(bytes(std::ptr::null(), 0), Ok(&[][..]));
            let one = [7u8];
            for len in [usize::MAX, isize::MAX as usize + 1, isize::MAX as usize] {
                assert_eq!(bytes(one.as_ptr(), len), Err(SHMPORT_ERR_TOO_LARGE));
            }
            assert_eq!(
                bytes(one.as_ptr(), shmport_core::MAX_MESSAGE_SIZE + 1),
                Err(SHMPORT_ERR_TOO_LARGE)
            );
        }
        assert_eq!(handle::<u8>(std::ptr::null_mut()), Err(SHMPORT_ERR_NULL));
        assert_eq!(
            handle(to_ptr::<u8>(0x0000_0151_0000_0001)),
            Ok(0x0000_0151_0000_0001)
        );
    }
}
