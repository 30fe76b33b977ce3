//! What a run leaves on the machine: nothing.
//!
//! shmport creates nothing in the filesystem (anonymous memfds). iceoryx2
//! creates files under a root directory and shared memory objects in
//! `/dev/shm`; ipc-channel's one-shot server and the FIFO set-ups create
//! files too. The suite points iceoryx2 at a directory of its own
//! (`/tmp/shmport-benchsuite-<pid>/`, also used for the FIFOs) and a
//! `/dev/shm` prefix of its own (`shmpbs<pid>_`), removes both at the end,
//! and reports anything it had to remove. A run that was killed leaves
//! them behind: the next run removes those of runs whose process is gone.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::Result;

const DIR_ENV: &str = "SHMPORT_BENCHSUITE_DIR";
const PREFIX_ENV: &str = "SHMPORT_BENCHSUITE_SHM_PREFIX";
const DIR_STEM: &str = "shmport-benchsuite-";
const PREFIX_STEM: &str = "shmpbs";
const SHM: &str = "/dev/shm";

/// This run's private places.
#[derive(Debug)]
pub struct Paths {
    /// The run's directory (iceoryx2's root, the FIFOs).
    pub dir: PathBuf,
    /// The prefix of every `/dev/shm` object iceoryx2 creates for the run.
    pub shm_prefix: String,
}

static PATHS: OnceLock<Paths> = OnceLock::new();

/// The run's paths: made up by the suite, read from the environment by a
/// peer.
pub fn paths() -> &'static Paths {
    PATHS.get_or_init(
        || match (std::env::var(DIR_ENV), std::env::var(PREFIX_ENV)) {
            (Ok(dir), Ok(shm_prefix)) => Paths {
                dir: dir.into(),
                shm_prefix,
            },
            _ => {
                let pid = std::process::id();
                Paths {
                    dir: std::env::temp_dir().join(format!("{DIR_STEM}{pid}")),
                    shm_prefix: format!("{PREFIX_STEM}{pid}_"),
                }
            }
        },
    )
}

/// Tell a peer the run's paths.
pub fn pass_to(cmd: &mut std::process::Command) {
    let p = paths();
    cmd.env(DIR_ENV, &p.dir).env(PREFIX_ENV, &p.shm_prefix);
}

/// At the start of a run: remove what killed runs left, make the run's
/// directory. Returns what was removed.
pub fn start() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in list(&std::env::temp_dir().to_string_lossy()) {
        if let Some(pid) = entry.strip_prefix(DIR_STEM).and_then(|p| p.parse().ok())
            && !alive(pid)
        {
            let path = std::env::temp_dir().join(&entry);
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path.display().to_string());
            }
        }
    }
    for entry in list(SHM) {
        let pid = entry
            .strip_prefix(PREFIX_STEM)
            .and_then(|rest| rest.split('_').next())
            .and_then(|p| p.parse().ok());
        if let Some(pid) = pid
            && !alive(pid)
            && std::fs::remove_file(format!("{SHM}/{entry}")).is_ok()
        {
            removed.push(format!("{SHM}/{entry}"));
        }
    }
    std::fs::create_dir_all(&paths().dir)?;
    Ok(removed)
}

/// At the end of a run (every peer gone): remove the run's directory and
/// any `/dev/shm` object with the run's prefix. Returns the `/dev/shm`
/// objects that were still there (they should not be: iceoryx2 removes its
/// own when its last port, service and node drop).
pub fn finish() -> Vec<String> {
    let p = paths();
    let _ = std::fs::remove_dir_all(&p.dir);
    let mut left = Vec::new();
    for entry in list(SHM) {
        if entry.starts_with(&p.shm_prefix) {
            let _ = std::fs::remove_file(format!("{SHM}/{entry}"));
            left.push(entry);
        }
    }
    left
}

/// Clean up on the way out of a hung run (called by a watchdog).
pub fn emergency() {
    let left = finish();
    if !left.is_empty() {
        eprintln!("removed {} leftover /dev/shm objects", left.len());
    }
}

fn list(dir: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
