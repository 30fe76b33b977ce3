//! Code that runs in a forked child before `exec`: only async-signal-safe
//! system calls, no allocation. What it needs is computed before the fork
//! ([`KeepOnly::new`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use rustix::io::{FdFlags, fcntl_setfd};
use rustix::process::{Resource, getrlimit};

/// Tests only: walk the descriptor numbers even where close_range(2) works
/// (see `fault::walk_descriptors_in_children`).
pub static FORCE_WALK: AtomicBool = AtomicBool::new(false);

/// What a spawned child does with its descriptors: stdio and exactly
/// `keep` survive `exec`.
#[derive(Debug, Clone, Copy)]
pub struct KeepOnly {
    keep: [RawFd; 2],
    /// `Some(end)`: close_range(2) cannot mark them (kernels before 5.11),
    /// walk the numbers `3..end` one by one.
    walk_to: Option<RawFd>,
}

impl KeepOnly {
    /// In the parent, before the fork: can the child use close_range(2),
    /// and if not, how far must it walk? The walk ends past every
    /// descriptor the child can hold: the current soft limit of
    /// RLIMIT_NOFILE (no new descriptor can be numbered at or above it), or
    /// past the highest one open now if that is higher (opened before the
    /// limit was lowered).
    pub fn new(keep: [RawFd; 2]) -> KeepOnly {
        let walk_to = if FORCE_WALK.load(Ordering::Relaxed) || !close_range_works() {
            Some(walk_end())
        } else {
            None
        };
        KeepOnly { keep, walk_to }
    }

    /// In the child, between fork and exec (after the standard streams
    /// were set up): mark every descriptor from 3 up close-on-exec, then
    /// clear the flag on `keep` and on the standard streams, which a parent
    /// may have marked close-on-exec (Node does) and which the child
    /// inherits all the same.
    pub fn apply(&self) -> io::Result<()> {
        let end = match self.walk_to {
            Some(end) => end,
            None if cloexec_from(3) == 0 => 0,
            // It worked in the parent; should it fail here, walk as far as
            // the limit lets a descriptor be numbered (a system call, no
            // allocation).
            None => soft_limit(),
        };
        for fd in 3..end {
            // SAFETY: setting a flag on a number that may not be open is
            // harmless (EBADF); the borrow does not outlive the call.
            let _ = fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::CLOEXEC);
        }
        for &fd in &self.keep {
            // SAFETY: the caller passes descriptors it keeps open across the
            // fork; the borrow lasts for this call only.
            fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::empty())?;
        }
        for fd in 0..3 {
            // SAFETY: as above; a standard stream that is closed gives EBADF,
            // ignored (the child then has none, as the parent).
            let _ = fcntl_setfd(unsafe { BorrowedFd::borrow_raw(fd) }, FdFlags::empty());
        }
        Ok(())
    }
}

/// close_range(first, ~0, CLOSE_RANGE_CLOEXEC); 0 on success.
fn cloexec_from(first: libc::c_uint) -> libc::c_long {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC takes three integers
    // and touches no memory of ours; it closes nothing, it only sets the
    // close-on-exec flag on a range of descriptor numbers.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    }
}

/// Does this kernel take close_range(2) with CLOSE_RANGE_CLOEXEC (5.11 and
/// later)? Asked once, on the range past the largest number, which holds
/// no descriptor.
fn close_range_works() -> bool {
    // 0: not asked yet, 1: yes, 2: no.
    static WORKS: AtomicU8 = AtomicU8::new(0);
    match WORKS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = cloexec_from(libc::c_uint::MAX) == 0;
            WORKS.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// The current soft limit on descriptor numbers.
fn soft_limit() -> RawFd {
    let limit = getrlimit(Resource::Nofile).current;
    limit.map_or(RawFd::MAX, |l| l.min(RawFd::MAX as u64) as RawFd)
}

/// Where a walk over every open descriptor can stop: past the soft limit
/// and past the highest descriptor open now.
fn walk_end() -> RawFd {
    let highest = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .max()
        .unwrap_or(0);
    soft_limit().max(highest.saturating_add(1))
}

/// Mark a descriptor this process inherited close-on-exec, so that it does
/// not reach this process's own children.
pub fn close_on_exec(fd: impl AsFd) -> io::Result<()> {
    Ok(fcntl_setfd(fd, FdFlags::CLOEXEC)?)
}
