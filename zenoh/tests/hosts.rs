//! Ports across hosts: every "host" is a process of its own with its own
//! zenoh session (this binary re-executed in a role, `support::roles`),
//! talking over 127.0.0.1 only.
//!
//! `cargo test --release -p shmport-zenoh --test hosts [-- <name filter>]`

mod support;

use std::time::{Duration, Instant};

use rustix::process::Signal;
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};
use support::host::{Host, LEASE, ROLE_ENV, endpoint, free_port, number, pattern, session};

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    (
        "hundred_thousand_messages_each_way_in_order",
        hundred_thousand_each_way,
    ),
    (
        "one_byte_to_sixteen_mebibytes_raw_and_typed",
        sizes_raw_and_typed,
    ),
    ("ports_cross_three_hosts_in_order", ports_cross_three_hosts),
    ("back_pressure_bounds_what_is_in_flight", back_pressure),
    (
        "many_ports_in_one_message_through_a_small_window",
        many_ports_small_window,
    ),
    ("close_after_drain", close_after_drain),
    ("kill_9_is_peer_died_within_the_lease", kill_9),
    (
        "sigstop_is_peer_died_after_the_lease_nothing_twice",
        sigstop,
    ),
    ("session_dropped_mid_stream", session_dropped),
    ("bad_input_is_a_protocol_error_on_that_port_only", bad_input),
    ("no_server_is_not_found", no_server),
    (
        "bridge_program_serves_a_local_rendezvous_path",
        bridge_program,
    ),
];

fn main() {
    if let Ok(spec) = std::env::var(ROLE_ENV) {
        support::roles::run(&spec);
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, case) in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let start = Instant::now();
        case();
        ran += 1;
        println!(
            "test {name} ... ok ({:.2} s)",
            start.elapsed().as_secs_f64()
        );
    }
    println!("{ran} cases passed");
}

/// An echo host, and a session here connected to it.
fn echo_pair() -> (Host, zenoh::Session) {
    let port = free_port();
    let host = Host::start("echo", &[endpoint(port)]);
    let s = session(&[], &[endpoint(port)]);
    (host, s)
}

fn connect(s: &zenoh::Session, key: &str) -> MessagePort {
    shmport_zenoh::connect(s, key).expect("connect")
}

/// Connect (with `connect`) and accept on this host's `server`: the
/// accept waits on another thread, as the connection needs both.
fn connect_and_accept(
    server: &shmport_zenoh::Server,
    connect: impl FnOnce() -> MessagePort,
) -> (MessagePort, MessagePort) {
    std::thread::scope(|scope| {
        let accepted = scope.spawn(|| server.accept().expect("accept"));
        let port = connect();
        (port, accepted.join().expect("accept thread"))
    })
}

fn closed_reason(r: Result<shmport::Message<'_>, RecvError>) -> CloseReason {
    match r {
        Err(RecvError::Closed(reason)) => reason,
        Err(e) => panic!("expected the close event, got {e}"),
        Ok(m) => panic!(
            "expected the close event, got a message of {} bytes",
            m.bytes().len()
        ),
    }
}

/// Wait for this process's bridges to end, then close `s`.
fn finish(s: zenoh::Session) {
    finish_leaving(s, 0);
}

/// Wait until only `others` bridges (of other sessions) still run, then
/// close `s`.
fn finish_leaving(s: zenoh::Session, others: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while shmport_zenoh::running_bridges() > others {
        assert!(
            Instant::now() < until,
            "bridges still running: {}",
            shmport_zenoh::running_bridges()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    zenoh::Wait::wait(s.close()).expect("close the session");
}

/// 100,000 messages to the echo host and back, each checked (its number
/// and its bytes) in order, while the next ones are sent.
fn hundred_thousand_each_way() {
    const N: u64 = 100_000;
    let (_host, s) = echo_pair();
    let port = connect(&s, "t/echo");
    let (tx, rx) = port.split().expect("split");
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx.post_bytes(&pattern(i, 8 + (i % 120) as usize))
                .expect("post");
        }
        tx
    });
    for i in 0..N {
        let m = rx.recv().expect("echo");
        assert_eq!(
            m.bytes(),
            &pattern(i, 8 + (i % 120) as usize)[..],
            "echo {i}"
        );
    }
    let tx = sender.join().expect("sender");
    drop(tx.rejoin(rx).expect("rejoin"));
    finish(s);
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Job {
    id: u64,
    name: String,
    input: Vec<f32>,
}

/// Raw messages of 1 B to 16 MiB, and typed ones (small and 4 MiB), come
/// back whole; typed ones keep their type.
fn sizes_raw_and_typed() {
    let (_host, s) = echo_pair();
    let port = connect(&s, "t/echo");
    for (i, len) in [1, 7, 100, 4095, 65_536, 1_048_579, 4 << 20, 16 << 20]
        .into_iter()
        .enumerate()
    {
        let want = pattern(i as u64, len);
        port.post_bytes(&want).expect("post");
        let m = port.recv().expect("echo");
        assert!(!m.is_typed());
        assert!(m.bytes() == &want[..], "{len} bytes came back different");
    }
    for n in [3usize, 1 << 20] {
        let job = Job {
            id: n as u64,
            name: format!("job {n}"),
            input: (0..n).map(|x| x as f32).collect(),
        };
        port.post(&job).expect("post typed");
        let m = port.recv().expect("echo");
        assert!(m.is_typed());
        assert_eq!(m.deserialize::<Job>().expect("a Job"), job);
        assert!(matches!(
            m.get::<u64>(),
            Err(shmport::AccessError::TypeMismatch { .. })
        ));
    }
    drop(port);
    finish(s);
}

/// A port made here travels to a relay host, which posts it on to an echo
/// host: messages posted on its peer here before, during and after the
/// two hops come back from the third host in order; the third host's death
/// comes back as `PeerDied`.
fn ports_cross_three_hosts() {
    let (echo_port, relay_port) = (free_port(), free_port());
    let echo = Host::start("echo", &[endpoint(echo_port)]);
    let _relay = Host::start("relay", &[endpoint(relay_port), endpoint(echo_port)]);
    let s = session(&[], &[endpoint(relay_port), endpoint(echo_port)]);
    let to_relay = connect(&s, "t/relay");
    let (mine, travelling) = MessageChannel::new().expect("channel").into_ports();
    for i in 0..100 {
        mine.post_bytes(&pattern(i, 64)).expect("post before");
    }
    to_relay
        .post_bytes_with_ports(b"here is a port", vec![travelling])
        .expect("send the port");
    for i in 100..1000 {
        mine.post_bytes(&pattern(i, 64)).expect("post during");
    }
    for i in 0..1000 {
        let m = mine.recv().expect("echo from the third host");
        assert_eq!(number(m.bytes()), i);
        assert_eq!(m.bytes(), &pattern(i, 64)[..]);
    }
    // Its peer's death, on the third host, comes back over both hops.
    echo.signal(Signal::KILL);
    assert_eq!(closed_reason(mine.recv()), CloseReason::PeerDied);
    drop(mine);
    drop(to_relay);
    finish(s);
}

/// A reader that does not read stops the writer: with a 64 KiB window and
/// 16 KiB rings, a writer on the other host can get only a bounded amount
/// ahead (its ring, the window, the reader's ring), then `try_post`
/// returns Full.
fn back_pressure() {
    let port = free_port();
    let host_session = session(&[endpoint(port)], &[]);
    let options = shmport_zenoh::Options::new()
        .window(64 << 10)
        .capacity(16 << 10);
    let server = shmport_zenoh::serve_with(&host_session, "t/slow", &options).expect("serve");
    let s = session(&[], &[endpoint(port)]);
    let (writer, reader) = connect_and_accept(&server, || {
        shmport_zenoh::connect_with(&s, "t/slow", &options).expect("connect")
    });
    let chunk = vec![7u8; 1000];
    let mut posted = 0usize;
    let until = Instant::now() + Duration::from_secs(5);
    let mut full_since: Option<Instant> = None;
    while Instant::now() < until {
        match writer.try_post_bytes(&chunk) {
            Ok(()) => {
                posted += 1;
                full_since = None;
            }
            Err(shmport::PostError::Full) => {
                // Full for half a second: the bridges stopped taking.
                let since = *full_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("post: {e}"),
        }
    }
    let bound = (16 << 10) * 2 / 1000 + (64 << 10) / 1000 + 8;
    assert!(full_since.is_some(), "the writer was never held back");
    assert!(
        posted <= bound,
        "{posted} messages in flight, bound {bound}"
    );
    // Reading lets everything through, in order and whole.
    for _ in 0..posted {
        assert_eq!(reader.recv().expect("recv").bytes(), &chunk[..]);
    }
    writer.post_bytes(b"after").expect("post after");
    assert_eq!(reader.recv().expect("recv").bytes(), b"after");
    drop((writer, reader, server));
    finish(s);
    zenoh::Wait::wait(host_session.close()).expect("close");
}

/// A message carrying 40 ports and 12 KiB through a 16 KiB window (each
/// port costs a 256th of the window, so the message is cut in chunks a
/// quarter of it): it arrives whole and every port works.
fn many_ports_small_window() {
    let port = free_port();
    let host_session = session(&[endpoint(port)], &[]);
    let options = shmport_zenoh::Options::new().window(16 << 10);
    let server = shmport_zenoh::serve_with(&host_session, "t/ports", &options).expect("serve");
    let s = session(&[], &[endpoint(port)]);
    let (p, served) = connect_and_accept(&server, || {
        shmport_zenoh::connect_with(&s, "t/ports", &options).expect("connect")
    });
    let echo = std::thread::spawn(move || support::roles::echo(served));
    let (mine, theirs): (Vec<_>, Vec<_>) = (0..40)
        .map(|_| MessageChannel::new().expect("channel").into_ports())
        .unzip();
    let mut theirs = Some(theirs);
    for round in 0..3 {
        let body = pattern(round, 12 << 10);
        let ports = if round == 1 {
            theirs.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        p.post_bytes_with_ports(&body, ports)
            .expect("post with ports");
        assert_eq!(p.recv().expect("echo").bytes(), &body[..]);
    }
    for (i, m) in mine.iter().enumerate() {
        m.post_bytes(&pattern(i as u64, 100))
            .expect("post on a carried port");
        assert_eq!(m.recv().expect("echo").bytes(), &pattern(i as u64, 100)[..]);
    }
    drop((mine, p));
    echo.join().expect("echo thread");
    drop(server);
    finish(s);
    zenoh::Wait::wait(host_session.close()).expect("close");
}

/// What a port posts before it closes all arrives, then `Closed`, in both
/// directions of a connection.
fn close_after_drain() {
    let port = free_port();
    let host_session = session(&[endpoint(port)], &[]);
    let server = shmport_zenoh::serve(&host_session, "t/close").expect("serve");
    let s = session(&[], &[endpoint(port)]);
    let (a, b) = connect_and_accept(&server, || connect(&s, "t/close"));
    for i in 0..500 {
        a.post_bytes(&pattern(i, 3000)).expect("post");
    }
    drop(a);
    for i in 0..500 {
        assert_eq!(b.recv().expect("recv").bytes(), &pattern(i, 3000)[..]);
    }
    assert_eq!(closed_reason(b.recv()), CloseReason::Closed);
    // The bridge closes its receiving side just after its sending side
    // (as a local port's drop does): posts fail from then on.
    let until = Instant::now() + Duration::from_secs(2);
    let end = loop {
        match b.post_bytes(b"x") {
            Ok(()) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(shmport::PostError::Closed(CloseReason::Closed))),
        "{end:?}"
    );
    drop(b);
    drop(server);
    finish(s);
    zenoh::Wait::wait(host_session.close()).expect("close");
}

/// `kill -9` of the echo host: the port here reports `PeerDied` well
/// within the lease (the TCP connection closes at once).
fn kill_9() {
    let (host, s) = echo_pair();
    let port = connect(&s, "t/echo");
    port.post_bytes(b"ping").expect("post");
    assert_eq!(port.recv().expect("echo").bytes(), b"ping");
    let start = Instant::now();
    host.signal(Signal::KILL);
    assert_eq!(closed_reason(port.recv()), CloseReason::PeerDied);
    let took = start.elapsed();
    println!(
        "  kill -9 -> PeerDied in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(took < LEASE, "took {took:?}");
    drop(port);
    drop(host);
    finish(s);
}

/// `SIGSTOP` of the echo host (a silent host): `PeerDied` here after the
/// lease; when it resumes, its port reports `PeerDied` too, and neither
/// side received anything twice.
fn sigstop() {
    let port = free_port();
    let mut host = Host::start("checked_echo", &[endpoint(port)]);
    let s = session(&[], &[endpoint(port)]);
    let p = connect(&s, "t/echo");
    for i in 0..100 {
        p.post_bytes(&pattern(i, 100)).expect("post");
        assert_eq!(number(p.recv().expect("echo").bytes()), i);
    }
    host.signal(Signal::STOP);
    let start = Instant::now();
    // Posts go on while the host is stopped (they wait in the bridges).
    for i in 100..110 {
        p.post_bytes(&pattern(i, 100)).expect("post");
    }
    let mut next = 100;
    let end = loop {
        match p.recv() {
            Ok(m) => {
                assert_eq!(number(m.bytes()), next, "delivered twice or out of order");
                next += 1;
            }
            Err(e) => break e,
        }
    };
    let took = start.elapsed();
    assert!(
        matches!(end, RecvError::Closed(CloseReason::PeerDied)),
        "{end}"
    );
    println!(
        "  SIGSTOP -> PeerDied in {:.0} ms (lease {} ms)",
        took.as_secs_f64() * 1e3,
        LEASE.as_millis()
    );
    assert!(took >= LEASE / 2 && took < LEASE * 4, "took {took:?}");
    host.signal(Signal::CONT);
    let report = host.line();
    assert!(
        report.starts_with("PeerDied in_order=true"),
        "the stopped host saw: {report}"
    );
    assert!(host.wait(Duration::from_secs(10)).success());
    drop(p);
    finish(s);
}

/// The sending host closes its zenoh session mid-stream: here the
/// messages that arrived are a prefix, in order, then `PeerDied`; there
/// the port's posts fail with `PeerDied`.
fn session_dropped() {
    let port = free_port();
    let mut host = Host::start("drop_session", &[endpoint(port), "20000".into()]);
    let s = session(&[], &[endpoint(port)]);
    let p = connect(&s, "t/stream");
    let mut next = 0;
    let end = loop {
        match p.recv() {
            Ok(m) => {
                assert_eq!(m.bytes(), &pattern(next, 1000)[..], "message {next}");
                next += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(end, RecvError::Closed(CloseReason::PeerDied)),
        "{end}"
    );
    assert!(next <= 20_000);
    println!("  {next} of 20000 messages arrived before the session closed");
    assert_eq!(host.line().trim(), "PeerDied");
    assert!(host.wait(Duration::from_secs(10)).success());
    drop(p);
    finish(s);
}

/// Each way of breaking the protocol closes the port it was aimed at
/// with `ProtocolError`, after the good messages before it; a port to
/// another host, on the same session, is not affected. Frames that
/// arrive out of order within the window are put back in order.
fn bad_input() {
    let (_echo, s) = echo_pair();
    let healthy = connect(&s, "t/echo");
    for mode in [
        "truncated",
        "duplicated",
        "forged_seq",
        "forged_id",
        "garbage",
        "lying_length",
        "over_window",
    ] {
        let port = free_port();
        let _hostile = Host::start("hostile", &[endpoint(port), mode.into()]);
        let hs = session(&[], &[endpoint(port)]);
        let p = connect(&hs, "t/hostile");
        assert_eq!(
            p.recv().expect("the good message").bytes(),
            b"good",
            "{mode}"
        );
        assert_eq!(
            closed_reason(p.recv()),
            CloseReason::ProtocolError,
            "{mode}"
        );
        healthy
            .post_bytes(mode.as_bytes())
            .expect("post on the healthy port");
        assert_eq!(healthy.recv().expect("echo").bytes(), mode.as_bytes());
        drop(p);
        finish_leaving(hs, 1);
    }
    let port = free_port();
    let _hostile = Host::start("hostile", &[endpoint(port), "reordered".into()]);
    let hs = session(&[], &[endpoint(port)]);
    let p = connect(&hs, "t/hostile");
    for want in [&b"first"[..], b"second", b"good"] {
        assert_eq!(p.recv().expect("in order").bytes(), want);
    }
    assert_eq!(closed_reason(p.recv()), CloseReason::ProtocolError);
    drop(p);
    finish_leaving(hs, 1);
    drop(healthy);
    finish(s);
}

/// Nobody serves the key: `connect` fails with NotFound after the open
/// timeout, and leaves no bridge running.
fn no_server() {
    let (_host, s) = echo_pair();
    let options = shmport_zenoh::Options::new().open_timeout(Duration::from_millis(300));
    let err = shmport_zenoh::connect_with(&s, "t/nobody", &options).expect_err("no server");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    // connect_port hands its port back, still connected.
    let (mine, theirs) = MessageChannel::new().expect("channel").into_ports();
    let err = shmport_zenoh::connect_port(&s, "t/nobody", theirs, &options).expect_err("no server");
    assert_eq!(err.error.kind(), std::io::ErrorKind::NotFound);
    mine.post_bytes(b"still here").expect("post");
    assert_eq!(err.port.recv().expect("recv").bytes(), b"still here");
    finish(s);
}

/// `shmport-zenoh-bridge` exposes a rendezvous path here; a process that
/// only knows shmport's `connect` reaches the echo host through it, and
/// sees the echo host's death as `PeerDied`.
fn bridge_program() {
    let port = free_port();
    let echo = Host::start("echo", &[endpoint(port)]);
    let path = std::env::temp_dir().join(format!("shmport-zenoh-test-{}.sock", std::process::id()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shmport-zenoh-bridge"));
    cmd.args([
        "--path",
        path.to_str().expect("utf-8 path"),
        "--key",
        "t/echo",
    ])
    .args([
        "--connect",
        &endpoint(port),
        "--lease-ms",
        "1000",
        "--ready",
    ]);
    let bridge = Host::program(cmd);
    let p = shmport::connect(&path).expect("connect to the bridge program");
    for i in 0..1000 {
        p.post_bytes(&pattern(i, 500)).expect("post");
    }
    p.post_bytes(&pattern(1000, 3 << 20))
        .expect("post a large one");
    for i in 0..1000 {
        assert_eq!(p.recv().expect("echo").bytes(), &pattern(i, 500)[..]);
    }
    assert!(p.recv().expect("echo").bytes() == &pattern(1000, 3 << 20)[..]);
    echo.signal(Signal::KILL);
    assert_eq!(closed_reason(p.recv()), CloseReason::PeerDied);
    drop(p);
    drop(bridge);
    drop(echo);
    let _ = std::fs::remove_file(&path);
}
