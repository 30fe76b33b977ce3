//! Counting the endpoints that run in this process, so that it can wait
//! for them to finish before it exits ([`wait_idle`]).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static RUNNING: Mutex<usize> = Mutex::new(0);
static CHANGED: Condvar = Condvar::new();

fn running() -> std::sync::MutexGuard<'static, usize> {
    // A count is consistent whatever panicked.
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by each endpoint's thread while it runs.
pub(crate) struct Running(());

impl Running {
    pub(crate) fn start() -> Running {
        *running() += 1;
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *running() -= 1;
        CHANGED.notify_all();
    }
}

/// Wait until every bridged port of this process has finished its work
/// (delivered what it holds, sent its close and had it confirmed, or seen
/// its peer gone), at most `timeout`; `true` if they all did.
///
/// A process that exits (or closes its zenoh session) while bridges still
/// run takes them down with it: their peers then see
/// [`CloseReason::PeerDied`](shmport::CloseReason::PeerDied) instead of
/// the close. Call this after closing the ports and before exiting.
pub fn wait_idle(timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    let mut n = running();
    while *n > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = CHANGED
            .wait_timeout(n, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// How many bridged ports run in this process now.
pub fn running_bridges() -> usize {
    *running()
}
