//! C and C++ programs against libshmport, built with warnings as errors and
//! with AddressSanitizer and UndefinedBehaviorSanitizer, talking to Rust
//! processes across real process boundaries.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Build, PEER_ARGS, ROLE, compile, program};
use shmport_core::{CloseReason, MessageChannel, MessagePort, RecvError};

/// A child process that is killed and reaped if the test fails first.
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// Wait for it to exit; its status and the rest of its stdout.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.0.take().unwrap();
        let mut out = String::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_string(&mut out).expect("read the child's stdout");
        }
        (child.wait().expect("wait for the child"), out)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Spawn `cmd` with a port (the child adopts it with
/// `shmport_port_from_parent`), its stdout piped.
fn spawn_with_port(mut cmd: Command) -> (Reaped, MessagePort) {
    cmd.stdout(Stdio::piped());
    let (child, port) = shmport_core::spawn(cmd).expect("spawn the C program");
    (Reaped(Some(child)), port)
}

/// Messages each way in the exchange.
const EXCHANGE: u64 = 100_000;
/// Requests the Rust side keeps in flight (bounds what both rings hold).
const WINDOW: u64 = 8;

#[test]
fn exchange_with_rust_both_ways() {
    let exe = compile("exchange", &["tests/c/exchange.c"], Build::SanitizedShared);
    let mut cmd = program(&exe);
    cmd.arg(EXCHANGE.to_string());
    let (child, port) = spawn_with_port(cmd);
    let max = port.max_inline_payload();
    let mut buf = vec![0u8; 1 << 20];
    let (mut sent, mut received) = (0u64, 0u64);
    let (mut sum_out, mut sum_in) = (0u64, 0u64);
    let mut outside_the_ring = 0;
    while received < EXCHANGE {
        while sent < EXCHANGE && sent - received < WINDOW {
            let len = common::message_size(sent, 0);
            if sent % 2 == 1 && len <= max {
                // Zero copy, half the time.
                let mut r = port.reserve_bytes(len).expect("reserve");
                common::message_fill(r.bytes_mut(), sent, 0);
                sum_out ^= common::checksum(r.bytes_mut()).wrapping_add(sent);
                r.commit().expect("commit");
            } else {
                common::message_fill(&mut buf[..len], sent, 0);
                sum_out ^= common::checksum(&buf[..len]).wrapping_add(sent);
                port.post_bytes(&buf[..len]).expect("post");
            }
            sent += 1;
        }
        let msg = port.recv().expect("a reply from C");
        let len = common::message_size(received, 1);
        assert_eq!(msg.bytes().len(), len, "reply {received}: length");
        common::message_fill(&mut buf[..len], received, 1);
        assert!(msg.bytes() == &buf[..len], "reply {received}: bytes differ");
        assert_eq!(msg.fingerprint(), 0);
        outside_the_ring += (msg.is_out_of_line() || msg.is_pooled()) as u32;
        sum_in ^= common::checksum(msg.bytes()).wrapping_add(received);
        received += 1;
    }
    assert!(outside_the_ring > 0, "some replies went outside the ring");
    drop(port);
    let (status, out) = child.finish();
    assert!(status.success(), "the C side failed: {status}\n{out}");
    let want = format!("in {sum_out:016x} out {sum_in:016x}");
    assert!(
        out.contains(&format!("exchange ok: {EXCHANGE} messages each way")) && out.contains(&want),
        "C saw other checksums: {out:?}, expected {want}"
    );
    println!("C side: {}", out.trim());
}

#[test]
fn c_process_passes_a_port_on() {
    let exe = compile("forward", &["tests/c/forward.c"], Build::SanitizedShared);
    let mut cmd = program(&exe);
    cmd.arg("forward");
    let (child, to_c) = spawn_with_port(cmd);
    let (near, far) = MessageChannel::new().unwrap().into_ports();
    // Queued on the far end before it travels: they move with it.
    let mut expected = Vec::new();
    for i in 0..100 {
        let m = format!("queued before the hop {i}");
        near.post_bytes(m.as_bytes()).unwrap();
        expected.push(m);
    }
    to_c.post_bytes_with_ports(b"port for you", vec![far])
        .unwrap();
    let mut echoes = Vec::new();
    for i in 0..1000 {
        let m = format!("posted during the hop {i}");
        near.post_bytes(m.as_bytes()).unwrap();
        expected.push(m);
        while let Ok(e) = near.try_recv() {
            echoes.push(e.bytes().to_vec());
        }
    }
    while echoes.len() < expected.len() {
        echoes.push(near.recv().expect("an echo").bytes().to_vec());
    }
    for (e, m) in echoes.iter().zip(&expected) {
        assert_eq!(e, format!("echo:{m}").as_bytes());
    }
    assert_eq!(to_c.recv().unwrap().bytes(), b"forwarded");
    // Closing our end ends the echo, which reports to the C forwarder.
    drop(near);
    let (status, out) = child.finish();
    assert!(status.success(), "the C forwarder failed: {status}\n{out}");
    assert!(out.contains("echo done n=1100"), "{out:?}");
    assert!(matches!(
        to_c.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn c_host_sees_its_killed_peer_as_peer_died() {
    let exe = compile("killed", &["tests/c/killed.c"], Build::SanitizedShared);
    let me = std::env::current_exe().unwrap();
    let out = program(&exe)
        .arg(&me)
        .args(PEER_ARGS)
        .env(ROLE, "hold")
        .output()
        .expect("run the C host");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the C host failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("close: peer died"), "{stdout:?}");
}

#[test]
fn c_port_set_serves_processes_and_sees_a_kill() {
    let exe = compile("port_set", &["tests/c/port_set.c"], Build::SanitizedShared);
    let me = std::env::current_exe().unwrap();
    let out = program(&exe)
        .arg(&me)
        .args(PEER_ARGS)
        .output()
        .expect("run the C port set test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the C port set test failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("served 3 clients, 1 killed"), "{stdout:?}");
    assert!(stdout.contains("port set ok"), "{stdout:?}");
}

#[test]
fn c_parent_forks_and_execs_a_child_that_adopts_and_waits_for_room() {
    let exe = compile("adopt", &["tests/c/adopt.c"], Build::SanitizedShared);
    let out = program(&exe).output().expect("run adopt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "adopt failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("adopt ok"), "{stdout:?}");
}

#[test]
fn misuse_is_a_status_not_a_crash() {
    let exe = compile("misuse", &["tests/c/misuse.c"], Build::SanitizedShared);
    let out = program(&exe).output().expect("run misuse");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "misuse failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("misuse ok"), "{stdout:?}");
}

#[test]
fn rendezvous_in_c() {
    let exe = compile(
        "rendezvous",
        &["tests/c/rendezvous.c"],
        Build::SanitizedStatic,
    );
    let dir = TempDir::new("rendezvous");
    let sock = dir.0.join("host.sock");
    let out = program(&exe).arg(&sock).output().expect("run rendezvous");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rendezvous failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rendezvous ok"), "{stdout:?}");
}

#[test]
fn cpp_wrapper() {
    let exe = compile("raii", &["tests/c/raii.cpp"], Build::SanitizedStatic);
    let out = program(&exe).output().expect("run raii");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the C++ test failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("raii ok"), "{stdout:?}");
}

#[test]
fn c_host_example_serves_rust_clients() {
    let lib = common::library();
    // Built the way the README says a C project builds: with the flags
    // pkg-config reads from ffi/shmport.pc.
    let host = compile("c_host", &["../examples/c_host/host.c"], Build::PkgConfig);
    let client = lib.dir.join("examples/c_host_client");
    assert!(client.exists(), "{} was not built", client.display());
    let dir = TempDir::new("c_host");
    let sock = dir.0.join("host.sock");
    let mut h = program(&host);
    h.arg(&sock).arg("2").stdout(Stdio::piped());
    let mut host = Reaped(Some(h.spawn().expect("start the C host")));
    let mut lines = BufReader::new(host.child().stdout.take().unwrap()).lines();
    let first = lines.next().expect("the host's first line").unwrap();
    assert!(first.starts_with("listening on"), "{first:?}");

    // Two clients at once: the host serves both from one poll loop.
    let clients: Vec<Reaped> = (0..2)
        .map(|_| {
            let mut c = Command::new(&client);
            c.arg(&sock).stdout(Stdio::piped());
            Reaped(Some(c.spawn().expect("start a Rust client")))
        })
        .collect();
    for c in clients {
        let (status, stdout) = c.finish();
        assert!(status.success(), "a client failed: {status}\n{stdout}");
        for want in [
            "upper: HELLO FROM RUST",
            "sum: 46",
            "item 0",
            "item 2",
            "stream ended: closed by the peer",
            "streamed: 3",
            "unknown: error: unknown request",
        ] {
            assert!(
                stdout.contains(want),
                "client output lacks {want:?}:\n{stdout}"
            );
        }
    }
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let (status, _) = host.finish();
    assert!(status.success(), "the C host failed: {status}\n{rest:?}");
    let connected = rest.iter().filter(|l| l.contains("connected")).count();
    let closed = rest
        .iter()
        .filter(|l| l.ends_with("closed by the peer"))
        .count();
    assert_eq!((connected, closed), (2, 2), "{rest:?}");
    assert!(!sock.exists(), "the host removes its socket file");
}

/// A directory removed when the test ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("shmport-ffi-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create a temporary directory");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Entry point of this binary run again as a Rust peer of a C program.
#[test]
fn peer_entry() {
    match common::role().as_deref() {
        None => {}
        Some("hold") => {
            // Post, then wait to be killed (at most a minute, in case the
            // C host failed before its kill: then its exit closes us).
            let port = MessagePort::from_parent().expect("adopt the port");
            port.post_bytes(b"ready").unwrap();
            port.post_bytes(b"last").unwrap();
            let r = port.recv_timeout(Duration::from_secs(60));
            assert!(r.is_err(), "the C host posts nothing");
        }
        Some("set_client") => {
            // Requests one at a time, each answered, then close (the
            // C port set test).
            let port = MessagePort::from_parent().expect("adopt the port");
            for i in 0..200 {
                port.post_bytes(format!("request {i}").as_bytes()).unwrap();
                let reply = port.recv().expect("a reply");
                assert_eq!(reply.bytes(), format!("reply {i}").as_bytes());
            }
        }
        Some(other) => panic!("unknown role {other}"),
    }
}
