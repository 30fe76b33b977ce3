//! A "host" is a process of its own with its own zenoh session, on
//! 127.0.0.1: this test binary re-executed with a role.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use zenoh::{Session, Wait};

/// Which role a re-executed copy plays, and its arguments (space separated).
pub const ROLE_ENV: &str = "SHMPORT_ZENOH_TEST_ROLE";

/// The link lease every test session uses: a host silent this long is
/// gone.
pub const LEASE: Duration = Duration::from_millis(1000);

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// The zenoh endpoint of `port` on loopback.
pub fn endpoint(port: u16) -> String {
    format!("tcp/127.0.0.1:{port}")
}

/// A session in peer mode, no multicast scouting, lease [`LEASE`].
pub fn session(listen: &[String], connect: &[String]) -> Session {
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let connect: Vec<&str> = connect.iter().map(String::as_str).collect();
    let config = shmport_zenoh::peer_config(&listen, &connect, LEASE).expect("config");
    zenoh::open(config).wait().expect("open a zenoh session")
}

/// [`session`] with zenoh's default transport instead of the low-latency
/// one `peer_config` asks for (a session that asks for it meets this one
/// on the default transport): frames of any size travel, fragmented.
pub fn default_transport_session(listen: &[String], connect: &[String]) -> Session {
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let connect: Vec<&str> = connect.iter().map(String::as_str).collect();
    let mut config = shmport_zenoh::peer_config(&listen, &connect, LEASE).expect("config");
    config
        .insert_json5("transport/unicast/lowlatency", "false")
        .expect("config");
    zenoh::open(config).wait().expect("open a zenoh session")
}

/// A host process; killed (SIGKILL) and reaped when dropped, so no test
/// leaves one behind.
pub struct Host {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Host {
    /// Start `role` with `args`; returns once it printed `ready`.
    pub fn start(role: &str, args: &[String]) -> Host {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, format!("{role} {}", args.join(" ")));
        Host::program(cmd)
    }

    /// Start `cmd`; returns once it printed `ready`.
    pub fn program(mut cmd: Command) -> Host {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn a host");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut host = Host { child, stdout };
        let line = host.line();
        assert_eq!(line.trim(), "ready", "{cmd:?} did not start");
        host
    }

    /// The next line the host prints.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read a host's output");
        line
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Wait for the host to exit by itself, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < until, "host {} did not exit", self.pid());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes of message `i` of length `len`: its number, then bytes derived
/// from it, so that a swapped, lost or damaged message is seen.
pub fn pattern(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    let n = len.min(8);
    v[..n].copy_from_slice(&i.to_le_bytes()[..n]);
    v
}

/// The number at the start of a message of at least 8 bytes.
pub fn number(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}
