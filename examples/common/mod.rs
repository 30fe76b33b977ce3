//! Pieces the examples share (not an example itself: Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs`).
#![allow(dead_code)] // each example uses its own part of this

use std::error::Error;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// How long a child that should be exiting gets before it is killed.
const EXIT_PATIENCE: Duration = Duration::from_secs(10);

/// Wait for `child` (it should be exiting) and check it succeeded; kill it
/// if it has not exited after a while, so that no process is left behind.
pub fn reap(child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + EXIT_PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{what} exited with {status}").into())
            };
        }
        thread::sleep(Duration::from_millis(1));
    }
    child.kill()?;
    child.wait()?;
    Err(format!("{what} did not exit; killed it").into())
}

/// A child process that is always waited for: on an early return too
/// (dropping it kills it).
pub struct Reaped {
    child: Option<Child>,
    id: u32,
}

impl Reaped {
    pub fn new(child: Child) -> Reaped {
        Reaped {
            id: child.id(),
            child: Some(child),
        }
    }

    /// The child's pid (known after it is gone too).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// `kill -9` and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait for the child (it should be exiting); see [`reap`].
    pub fn finish(&mut self, what: &str) -> Result<()> {
        match self.child.take() {
            Some(mut child) => reap(&mut child, what),
            None => Ok(()),
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}
