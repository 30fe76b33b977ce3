//! Rendezvous between real processes: a host listens on a socket path or an
//! abstract name, children connect and get their first port.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{peer, role};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shmport::{CloseReason, ConnectError, Listener, MessagePort, RecvError};

/// Where a peer connects: a socket path, or an abstract name.
const ADDR: &str = "SHMPORT_TEST_ADDR";
/// "path" or "abstract".
const ADDR_KIND: &str = "SHMPORT_TEST_ADDR_KIND";
/// The error an "expect" peer must get: "rejected" or "protocol".
const EXPECT: &str = "SHMPORT_TEST_EXPECT";

/// How long peers and hosts wait for each other: generous, for loaded
/// machines; a passing run never waits this long.
const PATIENCE: Duration = Duration::from_secs(20);

/// Time within which a listener call with a misbehaving connector must
/// return: it never waits on the connector at all.
const PROMPT: Duration = Duration::from_secs(2);

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let addr = std::env::var(ADDR).expect("address for the peer");
    match role.as_str() {
        "client" => {
            let port = connect_env(&addr).unwrap();
            port.post(&std::process::id()).unwrap();
            let n = port.recv().unwrap().get::<u64>().unwrap().to_native();
            port.post(&(n * 2)).unwrap();
            match port.recv() {
                Err(RecvError::Closed(CloseReason::Closed)) => {}
                other => panic!("expected the host to close, got {other:?}"),
            }
        }
        "expect" => {
            let want = std::env::var(EXPECT).unwrap();
            match (want.as_str(), connect_env(&addr)) {
                ("rejected", Err(ConnectError::Rejected)) => {}
                ("protocol", Err(ConnectError::Protocol(why))) => println!("PROTOCOL: {why}"),
                (want, other) => panic!("expected {want}, got {other:?}"),
            }
        }
        "bad-close" => {
            // Connect, then close at once.
            drop(raw_connect(&addr));
        }
        "bad-garbage" => {
            let fd = raw_connect(&addr);
            rustix::net::send(&fd, b"\xffgarbage", rustix::net::SendFlags::empty()).unwrap();
            println!("READY");
            // Read (dropping any descriptors) until the host closes.
            let mut buf = [0u8; 64];
            while let Ok(n) = rustix::net::recv(&fd, &mut buf, rustix::net::RecvFlags::empty()) {
                if n.0 == 0 {
                    break;
                }
            }
        }
        "bad-silent" => {
            let _fd = raw_connect(&addr);
            println!("READY");
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn connect_env(addr: &str) -> Result<MessagePort, ConnectError> {
    match std::env::var(ADDR_KIND).as_deref() {
        Ok("abstract") => shmport::connect_abstract_timeout(addr, PATIENCE),
        _ => shmport::connect_timeout(addr, PATIENCE),
    }
}

fn seqpacket() -> OwnedFd {
    rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A plain connection to a socket path, no shmport involved.
fn raw_connect(path: &str) -> OwnedFd {
    let fd = seqpacket();
    rustix::net::connect(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    fd
}

/// A plain listening socket at `path` (a server that does not speak
/// shmport).
fn raw_listener(path: &Path) -> OwnedFd {
    let fd = seqpacket();
    rustix::net::bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    rustix::net::listen(&fd, 8).unwrap();
    fd
}

/// A socket bound to `path` that does not listen.
fn bound_only(path: &Path) -> OwnedFd {
    let fd = seqpacket();
    rustix::net::bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    fd
}

/// Wait until `fd` is readable (at most PATIENCE).
fn wait_readable(fd: impl AsFd) {
    let mut pfd = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: PATIENCE.as_secs() as i64,
        tv_nsec: 0,
    };
    let n = rustix::event::poll(&mut pfd, Some(&ts)).unwrap();
    assert_eq!(n, 1, "nothing became readable");
}

/// A per-test directory, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shmport-rdv-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A peer process; killed and waited for if the test ends without
/// [`Peer::finish`], so none is left behind.
struct Peer(Child);

impl Peer {
    fn spawn(role: &str, addr: &str, kind: &str, expect: &str, piped: bool) -> Peer {
        let mut cmd: Command = peer(role);
        cmd.env(ADDR, addr).env(ADDR_KIND, kind).env(EXPECT, expect);
        if piped {
            cmd.stdout(Stdio::piped());
        }
        Peer(cmd.spawn().unwrap())
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    /// Read the peer's stdout until a line ends with `word`.
    fn wait_for_line(&mut self, word: &str) {
        common::wait_for_line(&mut self.0, word);
    }

    /// Wait for the peer to exit; it must have succeeded.
    fn finish(mut self) {
        let status = self.0.wait().unwrap();
        assert!(status.success(), "peer failed: {status}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Host side of a "client" peer: check its credentials, give it a port and
/// talk.
fn serve_client(listener: &Listener, client: &Peer) {
    let incoming = listener
        .accept_timeout(PATIENCE)
        .unwrap()
        .expect("the client connected");
    serve(incoming, client);
}

fn serve(incoming: shmport::Incoming, client: &Peer) {
    let cred = incoming.credentials();
    assert_eq!(cred.pid, client.id());
    assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
    assert_eq!(cred.gid, rustix::process::getegid().as_raw());
    let port = incoming.accept().unwrap();
    assert_eq!(
        port.recv_timeout(PATIENCE)
            .unwrap()
            .get::<u32>()
            .unwrap()
            .to_native(),
        client.id()
    );
    port.post(&21u64).unwrap();
    assert_eq!(
        port.recv_timeout(PATIENCE)
            .unwrap()
            .get::<u64>()
            .unwrap()
            .to_native(),
        42
    );
}

// ---------------------------------------------------------------- paths

#[test]
fn a_child_connects_to_a_path_and_gets_a_port() {
    let dir = TempDir::new("path");
    let path = dir.join("host.sock");
    let listener = Listener::bind(&path).unwrap();
    assert_eq!(listener.path(), Some(path.as_path()));
    assert_eq!(listener.abstract_name(), None);

    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);

    let client = Peer::spawn("client", path_str(&path), "path", "", false);
    serve_client(&listener, &client);
    // The port was dropped at the end of `serve`: the client sees the close.
    client.finish();

    drop(listener);
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "socket file left behind"
    );
}

#[test]
fn an_existing_path_is_refused_and_a_replaced_file_is_spared() {
    let dir = TempDir::new("exists");
    let path = dir.join("taken.sock");
    std::fs::write(&path, b"someone's file").unwrap();
    let err = Listener::bind(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone's file");

    // A stale socket file is not silently replaced either.
    let stale = dir.join("stale.sock");
    drop(Listener::bind(&stale).unwrap());
    drop(raw_listener(&stale)); // leaves its file behind
    let err = Listener::bind(&stale).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    // A file put in place of the socket survives the listener's drop.
    let moved = dir.join("moved.sock");
    let listener = Listener::bind(&moved).unwrap();
    std::fs::remove_file(&moved).unwrap();
    std::fs::write(&moved, b"new").unwrap();
    drop(listener);
    assert_eq!(std::fs::read(&moved).unwrap(), b"new");
}

// ---------------------------------------------------------------- abstract

#[test]
fn abstract_names_work() {
    let name = format!("shmport-test-{}-abstract", std::process::id());
    let listener = Listener::bind_abstract(&name).unwrap();
    assert_eq!(listener.path(), None);
    assert_eq!(listener.abstract_name(), Some(name.as_bytes()));
    assert_eq!(
        Listener::bind_abstract(&name).unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );

    let client = Peer::spawn("client", &name, "abstract", "", false);
    serve_client(&listener, &client);
    client.finish();

    // The name goes with the listener (once no other process holds its
    // descriptor: a parallel test's child between fork and exec may, for a
    // moment).
    drop(listener);
    let start = Instant::now();
    loop {
        match shmport::connect_abstract_timeout(&name, PATIENCE) {
            Err(ConnectError::Refused) => break,
            Err(ConnectError::Rejected) if start.elapsed() < PATIENCE => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => panic!("expected Refused, got {other:?}"),
        }
    }
    drop(Listener::bind_abstract(&name).unwrap());
}

// ---------------------------------------------------------------- bad peers

#[test]
fn bad_peers_do_not_block_the_listener() {
    let dir = TempDir::new("bad");
    let path = dir.join("host.sock");
    let addr = path_str(&path).to_owned();
    let listener = Listener::bind(&path).unwrap();

    // Queue, in this order: a connection whose process closed it and
    // exited, one that sent garbage and waits, one that never reads, and a
    // good client.
    let closer = Peer::spawn("bad-close", &addr, "path", "", false);
    let closer_pid = closer.id();
    closer.finish();
    let mut garbage = Peer::spawn("bad-garbage", &addr, "path", "", true);
    garbage.wait_for_line("READY");
    let mut silent = Peer::spawn("bad-silent", &addr, "path", "", true);
    silent.wait_for_line("READY");
    let client = Peer::spawn("client", &addr, "path", "", false);

    let mut garbage_port = None;
    let mut silent_port = None;
    for _ in 0..4 {
        let incoming = listener.accept_timeout(PATIENCE).unwrap().expect("queued");
        let pid = incoming.credentials().pid;
        if pid == client.id() {
            serve(incoming, &client);
            continue;
        }
        let t = Instant::now();
        let r = incoming.accept();
        assert!(t.elapsed() < PROMPT, "accept waited {:?}", t.elapsed());
        if pid == closer_pid {
            let e = r.expect_err("the closer is gone");
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        } else if pid == garbage.id() {
            garbage_port = Some(r.unwrap());
        } else if pid == silent.id() {
            silent_port = Some(r.unwrap());
        } else {
            panic!("unknown connector {pid}");
        }
    }
    client.finish();

    // The garbage sender read its port's message without taking the
    // descriptors: the port it never held reads as gone.
    garbage.finish();
    assert!(matches!(
        garbage_port.unwrap().recv_timeout(PATIENCE),
        Err(RecvError::Closed(_))
    ));
    // The port of the process that never read sits in its socket until it
    // dies.
    let silent_port = silent_port.unwrap();
    assert!(matches!(silent_port.try_recv(), Err(RecvError::Empty)));
    drop(silent);
    assert!(matches!(
        silent_port.recv_timeout(PATIENCE),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));

    // Still serving.
    let client = Peer::spawn("client", &addr, "path", "", false);
    serve_client(&listener, &client);
    client.finish();
}

#[test]
fn a_server_that_is_not_shmport_gives_clear_errors() {
    let dir = TempDir::new("garbage");
    let path = dir.join("junk.sock");
    let addr = path_str(&path).to_owned();
    let server = raw_listener(&path);
    let accept = || {
        wait_readable(&server);
        rustix::net::accept_with(&server, SocketFlags::CLOEXEC).unwrap()
    };

    // Junk bytes, connection left open.
    let mut child = Peer::spawn("expect", &addr, "path", "protocol", true);
    let conn = accept();
    rustix::net::send(&conn, b"hello, not a port", rustix::net::SendFlags::empty()).unwrap();
    child.wait_for_line("not a port");
    child.finish();
    drop(conn);

    // An attachment tag with a body that is not a port.
    let child = Peer::spawn("expect", &addr, "path", "protocol", false);
    let conn = accept();
    rustix::net::send(&conn, b"A\x07", rustix::net::SendFlags::empty()).unwrap();
    child.finish();
    drop(conn);

    // Accepted and closed without a word.
    let child = Peer::spawn("expect", &addr, "path", "rejected", false);
    drop(accept());
    child.finish();

    // A stream socket is not a listener at all.
    drop(server);
    std::fs::remove_file(&path).unwrap();
    let stream = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&stream, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    rustix::net::listen(&stream, 8).unwrap();
    assert!(matches!(
        shmport::connect_timeout(&path, PATIENCE),
        Err(ConnectError::Protocol(_))
    ));
}

// ---------------------------------------------------------------- rejection

#[test]
fn rejecting_an_incoming_gives_the_connector_rejected() {
    let dir = TempDir::new("reject");
    let path = dir.join("host.sock");
    let addr = path_str(&path).to_owned();
    let listener = Listener::bind(&path).unwrap();

    let child = Peer::spawn("expect", &addr, "path", "rejected", false);
    let incoming = listener.accept_timeout(PATIENCE).unwrap().expect("queued");
    assert_eq!(incoming.credentials().pid, child.id());
    incoming.reject();
    child.finish();

    // A connection still queued when the listener goes is rejected too.
    let child = Peer::spawn("expect", &addr, "path", "rejected", false);
    wait_readable(&listener);
    drop(listener);
    child.finish();
}

// ---------------------------------------------------------------- in-process

#[test]
fn connect_errors_are_clear() {
    let dir = TempDir::new("errors");
    let t = Duration::from_millis(200);

    let missing = dir.join("missing.sock");
    let e = shmport::connect_timeout(&missing, t).unwrap_err();
    assert!(matches!(e, ConnectError::NotFound), "{e:?}");
    assert!(!e.to_string().is_empty());
    let e = shmport::connect_timeout(dir.join("no-dir/x.sock"), t).unwrap_err();
    assert!(matches!(e, ConnectError::NotFound), "{e:?}");

    // Something that is not a socket: a regular file, a directory.
    let file = dir.join("plain-file");
    std::fs::write(&file, b"not a socket").unwrap();
    for not_a_socket in [file.as_path(), dir.0.as_path()] {
        let e = shmport::connect_timeout(not_a_socket, t).unwrap_err();
        assert!(matches!(e, ConnectError::NotASocket), "{e:?}");
        assert!(e.to_string().contains("not a socket"), "{e}");
    }

    // A socket file nobody listens on (bound, not listening: a closed
    // listener's file reads the same, but a parallel test's fork may hold
    // a closed descriptor open for a moment).
    let stale = dir.join("stale.sock");
    let _bound = bound_only(&stale);
    let e = shmport::connect_timeout(&stale, t).unwrap_err();
    assert!(matches!(e, ConnectError::Refused), "{e:?}");

    let unused = format!("shmport-test-{}-unused", std::process::id());
    let e = shmport::connect_abstract_timeout(&unused, t).unwrap_err();
    assert!(matches!(e, ConnectError::Refused), "{e:?}");

    // A listener that never accepts.
    let path = dir.join("busy.sock");
    let _listener = Listener::bind(&path).unwrap();
    let start = Instant::now();
    let e = shmport::connect_timeout(&path, t).unwrap_err();
    assert!(matches!(e, ConnectError::Timeout), "{e:?}");
    assert!(start.elapsed() >= t);
    assert!(start.elapsed() < t + PROMPT);
}

#[test]
fn try_accept_and_polling() {
    let name = format!("shmport-test-{}-poll", std::process::id());
    let listener = Listener::bind_abstract(&name).unwrap();
    assert!(listener.try_accept().unwrap().is_none());
    assert!(
        listener
            .accept_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );

    let client = std::thread::spawn(move || {
        let port = shmport::connect_abstract_timeout(&name, PATIENCE).unwrap();
        port.post_bytes(b"from the thread").unwrap();
    });
    wait_readable(&listener);
    let incoming = listener
        .try_accept()
        .unwrap()
        .expect("readable means waiting");
    assert_eq!(incoming.credentials().pid, std::process::id());
    let port = incoming.accept().unwrap();
    assert_eq!(port.recv().unwrap().bytes(), b"from the thread");
    client.join().unwrap();
}

/// A connector that hangs up without taking its port, and lives on: the
/// accepted port reads the close at once, as `PeerDied` (the port went away
/// without its close), not only when the connector's process exits.
#[test]
fn a_connector_that_leaves_without_its_port_closes_the_accepted_port_at_once() {
    let dir = TempDir::new("leave");
    let path = dir.join("host.sock");
    let listener = Listener::bind(&path).unwrap();
    let conn = raw_connect(path_str(&path));
    let incoming = listener.accept_timeout(PATIENCE).unwrap().expect("queued");
    assert_eq!(incoming.credentials().pid, std::process::id());
    let port = incoming.accept().unwrap();
    // The port sits unread in the connection; closing the connection drops
    // it while this process (the connector) runs on.
    drop(conn);
    assert!(matches!(
        port.recv_timeout(PATIENCE),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));
}
