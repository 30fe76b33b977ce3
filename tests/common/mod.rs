//! Helpers shared by the integration tests: run this test binary again as a
//! peer process, and make checkable payloads.
#![allow(dead_code)]

pub mod raw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE: &str = "SHMPORT_TEST_ROLE";

/// A command that runs this test binary as a peer playing `role`: only the
/// `peer_entry` test runs, and it dispatches on the role. Its stdout is
/// discarded unless the caller sets it.
pub fn peer(role: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args(["--exact", "peer_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        // The peer's libtest chatter would mix with ours; tests that read
        // the peer's output pipe it instead.
        .stdout(std::process::Stdio::null());
    c
}

/// The role this process plays, if it is a peer.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// 64-bit checksum of `bytes` (FNV-1a over 8-byte words, then the tail).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h ^= u64::from_le_bytes(c.try_into().unwrap());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

/// Pseudo-random bytes (xorshift) to slice payloads from.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Open descriptors of this process (numbers), from /proc/self/fd.
pub fn open_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    // The directory handle used for the listing is gone by now: drop
    // numbers that no longer resolve.
    fds.retain(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok());
    fds
}

/// Files in /dev/shm.
pub fn dev_shm() -> Vec<String> {
    match std::fs::read_dir("/dev/shm") {
        Ok(d) => d
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Read a peer's piped stdout until a line ends with `word` (libtest prints
/// "test peer_entry ... " before the peer's own output on the same line).
pub fn wait_for_line(child: &mut Child, word: &str) {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim_end().ends_with(word) => return,
            Some(Ok(_)) => continue,
            other => panic!("peer ended before {word}: {other:?}"),
        }
    }
}

/// A peer process that is killed and reaped when dropped (a failing test
/// leaves no process behind), with its piped stdout kept for reading lines.
pub struct Victim {
    child: Child,
    out: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
}

impl Victim {
    /// Take over `child` (whose stdout should be piped, to wait for lines).
    pub fn new(mut child: Child) -> Victim {
        let out = child.stdout.take().map(|o| BufReader::new(o).lines());
        Victim { child, out }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Read the peer's stdout until a line ends with `word`.
    pub fn wait_for(&mut self, word: &str) {
        let lines = self.out.as_mut().expect("piped stdout");
        loop {
            match lines.next() {
                Some(Ok(l)) if l.trim_end().ends_with(word) => return,
                Some(Ok(_)) => continue,
                other => panic!("peer ended before {word}: {other:?}"),
            }
        }
    }

    /// Write `line` (and a newline) to the peer's piped stdin.
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to the peer");
        stdin.flush().expect("flush");
    }

    /// Send `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// `kill -9` and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for a normal, successful exit.
    pub fn wait_success(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "peer failed: {status}");
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Map the segment whose descriptor the parent passed in SHMPORT_PORT;
/// returns the mapping, each ring's capacity, and the socket's descriptor
/// number (for children playing a hostile peer).
pub fn map_parent_segment() -> (std::ptr::NonNull<u8>, usize, std::os::fd::RawFd) {
    let env = std::env::var(shmport::PORT_ENV).unwrap();
    let mut fields = env
        .split(',')
        .map(|f| f.parse::<std::os::fd::RawFd>().unwrap());
    let (sock, mem) = (fields.next().unwrap(), fields.next().unwrap());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{mem}"))
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh shared mapping of the whole segment file at an
    // address the kernel picks; it aliases nothing and is never unmapped.
    let base = unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            &file,
            0,
        )
    }
    .unwrap();
    (
        std::ptr::NonNull::new(base.cast()).unwrap(),
        (len - shmport::testing::layout::HEADER_AREA) / 2,
        sock,
    )
}

/// Let this process open at least `n` descriptors if its hard limit allows
/// (the soft limit is raised to the hard one); returns the soft limit now.
pub fn allow_fds(n: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < n) {
        lim.current = lim.maximum;
        setrlimit(Resource::Nofile, lim).unwrap();
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Receive the report of a child playing the "fds" role (its open
/// descriptors and its port variable) and check it holds stdio and its
/// port's two descriptors, nothing else.
pub fn assert_child_holds_only_stdio_and_its_port(port: &shmport::MessagePort) {
    let m = port.recv().unwrap();
    let (fds, env) = m.deserialize::<(Vec<i32>, String)>().unwrap();
    let fields: Vec<i32> = env.split(',').take(2).map(|f| f.parse().unwrap()).collect();
    let mut want = vec![0, 1, 2, fields[0], fields[1]];
    want.sort();
    assert_eq!(fds, want, "descriptors open in the child");
}
