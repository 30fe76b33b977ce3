//! The second process: how the suite starts it, pins it, and always reaps
//! it.
//!
//! The peer is this binary, re-executed with `--peer` and a description of
//! its case. It asks the kernel to kill it if the suite dies
//! (`PR_SET_PDEATHSIG`), so no peer outlives a crashed or interrupted run.

use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

/// The suite's pid, passed to a peer so it can tell whether its parent is
/// still the suite when it sets its death signal.
const PARENT_ENV: &str = "SHMPORT_BENCHSUITE_PARENT";
/// The CPU a peer pins itself to.
const CPU_ENV: &str = "SHMPORT_BENCHSUITE_CPU";

/// The two CPUs of a run: the suite's and the peer's.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    pub main: Option<usize>,
    pub peer: Option<usize>,
}

impl Cpus {
    /// The first two CPUs this process may run on; `None` for both when
    /// there are fewer than two (then nothing is pinned).
    pub fn pick() -> Cpus {
        let allowed = allowed_cpus();
        if allowed.len() < 2 {
            return Cpus {
                main: None,
                peer: None,
            };
        }
        Cpus {
            main: Some(allowed[0]),
            peer: Some(allowed[1]),
        }
    }

    pub fn describe(&self) -> String {
        match (self.main, self.peer) {
            (Some(a), Some(b)) => format!("suite on CPU {a}, peer on CPU {b}"),
            _ => "not pinned (fewer than two CPUs)".to_string(),
        }
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid (empty)
    // set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size;
    // pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so inside the set's bits.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pin the calling thread (and threads it starts later) to `cpu`.
pub fn pin(cpu: usize) -> Result<()> {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("CPU {cpu} is beyond the CPU set").into());
    }
    // SAFETY: `cpu` is below CPU_SETSIZE (checked), so inside the set's bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is this
    // thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// The command that starts a peer for `args` (after `--peer`).
pub fn command(args: &[String], cpus: Cpus) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--peer").args(args);
    cmd.env(PARENT_ENV, std::process::id().to_string());
    crate::cleanup::pass_to(&mut cmd);
    match cpus.peer {
        Some(cpu) => cmd.env(CPU_ENV, cpu.to_string()),
        None => cmd.env_remove(CPU_ENV),
    };
    Ok(cmd)
}

/// In a peer, first thing: die with the suite, and pin to the peer's CPU.
pub fn init_in_peer() -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this
    // process's death signal.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if rc != 0 {
        return Err(format!("prctl: {}", std::io::Error::last_os_error()).into());
    }
    // The suite may have died before the signal was set.
    let parent: Option<u32> = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
    if parent != Some(std::os::unix::process::parent_id()) {
        return Err("the suite that started this peer is gone".into());
    }
    if let Some(cpu) = std::env::var(CPU_ENV).ok().and_then(|c| c.parse().ok()) {
        pin(cpu)?;
    }
    Ok(())
}

/// A peer process that is always waited for: [`Peer::finish`] on success,
/// killed and reaped on drop otherwise.
pub struct Peer {
    child: Option<Child>,
    what: String,
}

impl Peer {
    pub fn new(child: Child, what: String) -> Peer {
        Peer {
            child: Some(child),
            what,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Wait for the peer, which should be exiting; kill it if it has not
    /// exited after 20 s. Its exit status must be success.
    pub fn finish(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = wait_or_kill(&mut child, Duration::from_secs(20))?;
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!("{} peer exited with {s}", self.what).into()),
            None => Err(format!("{} peer did not exit in 20 s; killed", self.what).into()),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `Some(status)` if the child exited within `limit`, else kill it, reap it
/// and return `None`.
fn wait_or_kill(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Kills a hung case: if the case has not finished (dropped the watchdog)
/// within its time limit, the peer is killed, which ends every blocking
/// receive on the suite's side with an error. If even that does not end
/// the case, the suite cleans up and exits.
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(pid: u32, limit: Duration, what: String, on_give_up: fn()) -> Watchdog {
        let (done, wait) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if wait.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            eprintln!("{what}: no progress in {limit:?}; killing the peer (pid {pid})");
            // SAFETY: kill(2) with a pid and a signal number. The pid is our
            // own child's, not yet reaped (the case still runs: it reaps
            // only after dropping this watchdog), so it names that child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            if wait.recv_timeout(Duration::from_secs(10)) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("{what}: still stuck after killing the peer; giving up");
                on_give_up();
                std::process::exit(2);
            }
        });
        Watchdog {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
