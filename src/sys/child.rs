//! Code that runs in a forked child before `exec`: only async-signal-safe
//! system calls, no allocation.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use rustix::io::{FdFlags, fcntl_setfd};

/// Mark every descriptor from 3 up close-on-exec, then clear the flag on
/// `keep`: after `exec` the child holds stdio and exactly `keep`.
pub fn keep_only(keep: &[RawFd]) -> io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC closes nothing; it only
    // sets the close-on-exec flag on a range of descriptor numbers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        // Kernels before 5.11: walk the numbers one by one. Descriptors the
        // std library set up for the child are already close-on-exec.
        for fd in 3..65_536 {
            // SAFETY: setting a flag on a number that may not be open is
            // harmless (EBADF); the borrow does not outlive the call.
            let _ = fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::CLOEXEC);
        }
    }
    for &fd in keep {
        // SAFETY: the caller passes descriptors it keeps open across the
        // fork; the borrow lasts for this call only.
        fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::empty())?;
    }
    Ok(())
}
