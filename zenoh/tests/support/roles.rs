//! The roles a re-executed test binary plays: each opens its own zenoh
//! session, prints `ready` once it serves, and does one job.

use std::time::Duration;

use shmport::{MessagePort, RecvError};
use zenoh::Wait;

use super::host::{LEASE, default_transport_session, number, session};
use shmport_zenoh::testing as wire;

/// Run the role named in `spec` ("name arg arg…"); the process then exits.
pub fn run(spec: &str) {
    let mut words = spec.split_whitespace().map(str::to_owned);
    let role = words.next().unwrap_or_default();
    let args: Vec<String> = words.collect();
    match role.as_str() {
        "echo" => echo_host(&args),
        "relay" => relay_host(&args),
        "checked_echo" => checked_echo_host(&args),
        "drop_session" => drop_session_host(&args),
        "hostile" => hostile_host(&args),
        other => panic!("unknown role {other:?}"),
    }
}

fn ready() {
    println!("ready");
}

/// `echo <listen>`: serve `t/echo`; every port accepted (and every port
/// that arrives in a message) sends back each message as it came. Runs
/// until killed.
fn echo_host(args: &[String]) {
    let s = session(&args[..1], &args[1..]);
    let server = shmport_zenoh::serve(&s, "t/echo").expect("serve");
    ready();
    loop {
        let port = server.accept().expect("accept");
        std::thread::spawn(move || echo(port));
    }
}

/// Send back every message; ports that arrive get an echo of their own.
pub fn echo(port: MessagePort) {
    loop {
        let mut msg = match port.recv() {
            Ok(m) => m,
            Err(_) => return,
        };
        if let Ok(ports) = msg.take_ports() {
            for p in ports {
                std::thread::spawn(move || echo(p));
            }
        }
        if port
            .post_forwarded(msg.bytes(), msg.fingerprint(), Vec::new())
            .is_err()
        {
            return;
        }
    }
}

/// `relay <listen> <connect>`: serve `t/relay`; the ports that arrive on
/// the accepted port are posted on to `t/echo` (on the host it connects
/// to), with the messages that carried them.
fn relay_host(args: &[String]) {
    let s = session(&args[..1], &args[1..]);
    let server = shmport_zenoh::serve(&s, "t/relay").expect("serve");
    ready();
    let from = server.accept().expect("accept");
    let to = shmport_zenoh::connect(&s, "t/echo").expect("connect to the echo host");
    while let Ok(mut msg) = from.recv() {
        let ports = msg.take_ports().expect("ports");
        to.post_bytes_with_ports(msg.bytes(), ports)
            .expect("post on");
    }
    drop(to);
    assert!(shmport_zenoh::wait_idle(Duration::from_secs(10)));
}

/// `checked_echo <listen>`: echo the one port accepted, checking that the
/// numbers of its messages only grow (nothing delivered twice); print how
/// the port ended and whether the numbers held.
fn checked_echo_host(args: &[String]) {
    let s = session(&args[..1], &args[1..]);
    let server = shmport_zenoh::serve(&s, "t/echo").expect("serve");
    ready();
    let port = server.accept().expect("accept");
    let mut next = 0;
    let mut in_order = true;
    let end = loop {
        match port.recv() {
            Ok(m) => {
                let n = number(m.bytes());
                in_order &= n == next;
                next = n + 1;
                let _ = port.post_bytes(m.bytes());
            }
            Err(RecvError::Closed(reason)) => break reason,
            Err(e) => panic!("recv: {e}"),
        }
    };
    println!("{end:?} in_order={in_order} received={next}");
}

/// `drop_session <listen> <count>`: serve `t/stream`; on the accepted
/// port post `count` numbered messages, then close the zenoh session
/// while they are still on their way; report how posting then ends.
fn drop_session_host(args: &[String]) {
    let s = session(&args[..1], &[]);
    let count: u64 = args[1].parse().expect("count");
    let server = shmport_zenoh::serve(&s, "t/stream").expect("serve");
    ready();
    let port = server.accept().expect("accept");
    for i in 0..count {
        port.post_bytes(&super::host::pattern(i, 1000))
            .expect("post");
    }
    s.close().wait().expect("close the session");
    // The bridge sees the session closed: the port's peer is gone.
    let end = loop {
        match port.post_bytes_timeout(b"after", Duration::from_secs(10)) {
            Ok(()) => std::thread::sleep(Duration::from_millis(5)),
            Err(shmport::PostError::Closed(r)) => break r,
            Err(e) => panic!("post: {e}"),
        }
    };
    println!("{end:?}");
}

/// `hostile <listen> <mode>`: answer `t/hostile` by hand, as an endpoint
/// that breaks the protocol in the way `mode` names, after one good
/// message. Keeps its liveliness token (so the port's end is not a death).
fn hostile_host(args: &[String]) {
    // The default transport: it carries a frame larger than any batch
    // (over_window), which the low-latency one cannot.
    let s = default_transport_session(&args[..1], &[]);
    let mode = args[1].clone();
    let queryable = s.declare_queryable("t/hostile").wait().expect("queryable");
    ready();
    let query = queryable.recv().expect("a connection request");
    let asker = wire::decode_hello(&query.payload().expect("payload").to_bytes()).expect("hello");
    let me = wire::new_id(&s);
    let _frames = s
        .declare_subscriber(wire::port_key(me))
        .callback(|_| {})
        .wait()
        .expect("subscriber");
    let _token = s
        .liveliness()
        .declare_token(wire::alive_key(me))
        .wait()
        .expect("token");
    query
        .reply(query.key_expr().clone(), wire::hello(me))
        .wait()
        .expect("reply");
    drop(query);
    let publisher = s
        .declare_publisher(wire::port_key(asker))
        .wait()
        .expect("publisher");
    while !publisher
        .matching_status()
        .wait()
        .expect("matching")
        .matching()
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let put = |bytes: Vec<u8>| publisher.put(bytes).wait().expect("put");
    let msg = |seq: u64, body: &[u8]| {
        let head = wire::MessageHead {
            total: body.len() as u64,
            fingerprint: 0,
            ports: vec![],
        };
        wire::data(me, seq, Some(&head), true, body)
    };
    put(wire::open(me, 1 << 20));
    match mode.as_str() {
        "truncated" => {
            put(msg(0, b"good"));
            let mut f = msg(1, b"cut short");
            f.truncate(wire::data(me, 1, None, true, b"").len() - 3);
            put(f);
        }
        "duplicated" => {
            put(msg(0, b"good"));
            put(msg(0, b"again"));
        }
        "reordered" => {
            // Within the window: put back in order, not an error.
            put(msg(1, b"second"));
            put(msg(0, b"first"));
            put(msg(2, b"good"));
            put(wire::abort(me));
        }
        "forged_seq" => {
            put(msg(0, b"good"));
            put(msg(u64::MAX / 2, b"far ahead"));
        }
        "forged_id" => {
            put(msg(0, b"good"));
            put(wire::data(me ^ 1, 1, None, true, b"who?"));
        }
        "garbage" => {
            put(msg(0, b"good"));
            put(b"\x01\x02 not a frame".to_vec());
        }
        "lying_length" => {
            put(msg(0, b"good"));
            let head = wire::MessageHead {
                total: 3,
                fingerprint: 0,
                ports: vec![],
            };
            put(wire::data(me, 1, Some(&head), true, b"longer than three"));
        }
        "over_window" => {
            put(msg(0, b"good"));
            // More than the 8 MiB default window, in one frame.
            let big = vec![0u8; 9 << 20];
            put(msg(1, &big));
        }
        other => panic!("unknown mode {other}"),
    }
    // Stay alive (the token present) until the test ends us.
    std::thread::sleep(LEASE * 30);
}
