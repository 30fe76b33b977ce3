//! Asymmetric fences with `membarrier(2)`.
//!
//! The sleep/wake handshake needs a full fence on both sides: the side that
//! goes to sleep, and the side that publishes (on every message). With
//! `MEMBARRIER_CMD_GLOBAL_EXPEDITED` the sleeper pays for both: the call
//! makes every running thread of every registered process execute a full
//! barrier, so a registered publisher needs only a compiler fence. The
//! sleeper is about to block for tens of microseconds anyway; the
//! publisher's hot path loses its fence.

use std::sync::atomic::{AtomicU8, Ordering};

const CMD_QUERY: libc::c_int = 0;
const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier(2) takes two integers and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    }
}

/// Register this process for global expedited barriers (once). `true` when
/// the process is registered: other processes' [`heavy`] calls then order
/// this process's memory accesses too.
pub fn registered() -> bool {
    // Relaxed: a cache of an idempotent answer; racing first callers both
    // register, which is harmless.
    match STATE.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let q = membarrier(CMD_QUERY);
            let ok = q > 0
                && q & (CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED) as libc::c_long
                    == (CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED) as libc::c_long
                && membarrier(CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
            STATE.store(if ok { YES } else { NO }, Ordering::Relaxed);
            ok
        }
    }
}

static CAN_ISSUE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Can this process issue global expedited barriers ([`heavy`])? Any
/// process can on a kernel that has them, registered or not (registration
/// is for being *ordered* by them), unless a filter (seccomp) forbids the
/// call: one trial call tells.
pub fn available() -> bool {
    // Relaxed: a cache of an idempotent answer, as in `registered`.
    match CAN_ISSUE.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let q = membarrier(CMD_QUERY);
            let ok = q > 0
                && q & CMD_GLOBAL_EXPEDITED as libc::c_long != 0
                && membarrier(CMD_GLOBAL_EXPEDITED) == 0;
            CAN_ISSUE.store(if ok { YES } else { NO }, Ordering::Relaxed);
            ok
        }
    }
}

/// A full barrier on every CPU running a registered process (including this
/// one, if registered). Only called when [`available`] returned true.
pub fn heavy() {
    if membarrier(CMD_GLOBAL_EXPEDITED) != 0 {
        // Cannot happen once a trial call succeeded; keep our own order.
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}
