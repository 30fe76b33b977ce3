//! Pieces the examples share (not an example itself: Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs`).

use std::error::Error;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// A child process that is always waited for: on an early return too.
pub struct Reaped {
    child: Option<Child>,
    what: &'static str,
}

impl Reaped {
    pub fn new(child: Child, what: &'static str) -> Reaped {
        Reaped {
            child: Some(child),
            what,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Wait for the child (it should be exiting); kill it after a while.
    pub fn finish(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {status}", self.what).into())
                };
            }
            thread::sleep(Duration::from_millis(1));
        }
        child.kill()?;
        child.wait()?;
        Err(format!("{} did not exit; killed it", self.what).into())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
