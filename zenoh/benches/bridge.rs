//! Round trip and one-way throughput through the zenoh bridge, against a
//! peer process over loopback, beside a plain TCP socket pair doing the
//! same work in the same run.
//!
//! ```text
//! cargo bench -p shmport-zenoh --bench bridge            # about a minute
//! cargo bench -p shmport-zenoh --bench bridge -- --quick # a few seconds
//! ```
//!
//! - **round trip**: one 64-byte message to the peer, which sends it back;
//!   the median and 99th percentile of many.
//! - **throughput**: the sender posts messages of one size back to back;
//!   the peer reads them all (told their count first), sums their bytes,
//!   and answers the sum once at the end. Bytes over the time from the first post to the answer.
//!
//! The bridge: a `shmport_zenoh::connect` port here, a served port in the
//! peer, each host with its own zenoh session (peer mode, TCP on
//! 127.0.0.1, [`shmport_zenoh::peer_config`]: zenoh's low-latency
//! transport). TCP: one connection, `TCP_NODELAY`, each message a 4-byte
//! length then its bytes. For scale, zenoh alone, without the bridge: the
//! round trip of a put answered by a put from the peer's subscriber, on
//! the same sessions and on a second pair of sessions with zenoh's default
//! transport; the floor, the same ping-pong answered on both sides in
//! zenoh's callbacks (no thread of ours in the loop); and the throughput of puts of each size on that second pair
//! (the low-latency transport does not fragment: a put larger than a
//! batch, 64 KiB at most, breaks its session). The peer is this program
//! re-executed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zenoh::Wait;

const ROLE_ENV: &str = "SHMPORT_ZENOH_BENCH_PEER";

fn main() {
    if let Ok(spec) = std::env::var(ROLE_ENV) {
        let mut w = spec.split_whitespace();
        let mut port = || w.next().and_then(|p| p.parse().ok()).expect("a port");
        let (zenoh_port, default_port, tcp_port) = (port(), port(), port());
        return peer(zenoh_port, default_port, tcp_port);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (zenoh_port, default_port, tcp_port) = (free_port(), free_port(), free_port());
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE_ENV, format!("{zenoh_port} {default_port} {tcp_port}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the peer");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("peer ready");
    assert_eq!(line.trim(), "ready");
    let peer = Peer(child);

    let config = shmport_zenoh::peer_config(
        &[],
        &[&format!("tcp/127.0.0.1:{zenoh_port}")],
        Duration::from_secs(10),
    )
    .expect("config");
    let session = zenoh::open(config).wait().expect("session");
    let default_session = zenoh::open(default_transport(
        &[],
        &[&format!("tcp/127.0.0.1:{default_port}")],
    ))
    .wait()
    .expect("session");
    let echo = shmport_zenoh::connect(&session, "bench/echo").expect("connect echo");
    let sink = shmport_zenoh::connect(&session, "bench/sink").expect("connect sink");
    let mut tcp_echo = tcp_connect(tcp_port, b'e');
    let mut tcp_sink = tcp_connect(tcp_port, b's');

    let rounds = if quick { 2_000 } else { 20_000 };
    println!("round trip, 64 B, {rounds} rounds (median / p99, µs):");
    let bridge = percentiles(round_trips(rounds, || {
        echo.post_bytes(&[7u8; 64]).expect("post");
        assert_eq!(echo.recv().expect("echo").bytes().len(), 64);
    }));
    let tcp = percentiles(round_trips(rounds, || {
        tcp_send(&mut tcp_echo, &[7u8; 64]);
        assert_eq!(tcp_recv(&mut tcp_echo).len(), 64);
    }));
    let raw = percentiles(raw_zenoh_round_trips(&session, rounds));
    let raw_default = percentiles(raw_zenoh_round_trips(&default_session, rounds));
    let floor = percentiles(raw_zenoh_callback_round_trips(&session, rounds));
    println!("  bridge {:8.1} / {:8.1}", bridge.0, bridge.1);
    println!("  tcp    {:8.1} / {:8.1}", tcp.0, tcp.1);
    println!(
        "  zenoh  {:8.1} / {:8.1}   (put and subscribe, no bridge; low-latency transport)",
        raw.0, raw.1
    );
    println!(
        "  zenoh  {:8.1} / {:8.1}   (the same, zenoh's default transport)",
        raw_default.0, raw_default.1
    );
    println!(
        "  zenoh  {:8.1} / {:8.1}   (low-latency, answered in zenoh's callback: the floor)",
        floor.0, floor.1
    );
    println!(
        "  bridge / tcp (median): {:.2}x; zenoh alone / tcp: {:.2}x, {:.2}x, floor {:.2}x",
        bridge.0 / tcp.0,
        raw.0 / tcp.0,
        raw_default.0 / tcp.0,
        floor.0 / tcp.0
    );

    let total: usize = if quick { 64 << 20 } else { 1 << 30 };
    println!("one-way throughput, {} MiB per size (MiB/s):", total >> 20);
    println!(
        "  {:>9} {:>10} {:>10} {:>10} {:>10}",
        "size", "bridge", "tcp", "tcp/bridge", "zenoh*"
    );
    let raw = RawThroughput::new(&default_session);
    for size in [64usize << 10, 1 << 20, 16 << 20] {
        let count = (total / size).max(4) as u64;
        let payload = pattern(size);
        let bridge = throughput(size, count, || {
            sink.post_bytes(&count.to_le_bytes()).expect("count");
            for _ in 0..count {
                sink.post_bytes(&payload).expect("post");
            }
            let answer = sink.recv().expect("the sink's answer");
            assert_eq!(read_u64(answer.bytes()), count * checksum(&payload));
        });
        let tcp = throughput(size, count, || {
            tcp_sink.write_all(&count.to_le_bytes()).expect("count");
            for _ in 0..count {
                tcp_send(&mut tcp_sink, &payload);
            }
            let mut answer = [0u8; 8];
            tcp_sink.read_exact(&mut answer).expect("the sink's answer");
            assert_eq!(u64::from_le_bytes(answer), count * checksum(&payload));
        });
        let zenoh = throughput(size, count, || {
            assert_eq!(raw.run(&payload, count), count * checksum(&payload));
        });
        println!(
            "  {:>6} KiB {:>10.0} {:>10.0} {:>9.2}x {:>10.0}",
            size >> 10,
            bridge,
            tcp,
            tcp / bridge,
            zenoh
        );
    }
    println!("  (zenoh*: puts of that size alone, zenoh's default transport)");
    drop((echo, sink, tcp_echo, tcp_sink, raw));
    assert!(shmport_zenoh::wait_idle(Duration::from_secs(10)));
    session.close().wait().expect("close");
    default_session.close().wait().expect("close");
    drop(peer);
}

/// [`shmport_zenoh::peer_config`] with zenoh's default transport (the
/// one that fragments) instead of the low-latency one.
fn default_transport(listen: &[&str], connect: &[&str]) -> zenoh::Config {
    let mut config =
        shmport_zenoh::peer_config(listen, connect, Duration::from_secs(10)).expect("config");
    config
        .insert_json5("transport/unicast/lowlatency", "false")
        .expect("config");
    config
        .insert_json5("transport/unicast/qos/enabled", "true")
        .expect("config");
    config
}

/// A publisher that waits for room (never drops), `express`: unbatched.
fn publisher(
    session: &zenoh::Session,
    key: &'static str,
    express: bool,
) -> zenoh::pubsub::Publisher<'static> {
    session
        .declare_publisher(key)
        .congestion_control(zenoh::qos::CongestionControl::Block)
        .express(express)
        .wait()
        .expect("publisher")
}

/// A subscriber whose samples queue for `recv`.
fn subscriber(
    session: &zenoh::Session,
    key: &'static str,
) -> zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>> {
    session.declare_subscriber(key).wait().expect("subscriber")
}

/// zenoh alone, for scale: a put on `bench/ping`, which the peer's
/// subscriber puts back on `bench/pong`.
fn raw_zenoh_round_trips(session: &zenoh::Session, rounds: usize) -> Vec<f64> {
    let pong = subscriber(session, "bench/pong");
    let ping = publisher(session, "bench/ping", true);
    while !ping.matching_status().wait().expect("matching").matching() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The peer's publisher may not know our subscriber yet: ping until a
    // pong comes.
    loop {
        ping.put(vec![7u8; 64]).wait().expect("put");
        if pong
            .recv_timeout(Duration::from_millis(100))
            .expect("recv")
            .is_some()
        {
            break;
        }
    }
    round_trips(rounds, || {
        ping.put(vec![7u8; 64]).wait().expect("put");
        assert_eq!(pong.recv().expect("pong").payload().len(), 64);
    })
}

/// zenoh alone with no thread of ours in the loop: the subscriber's
/// callback (on zenoh's receiving thread) times each round and puts the
/// next ping itself, as TCP's reader answers from its own thread. Each
/// ping carries its round's number; a pong of another round (a late one
/// of the warm-up) is ignored.
fn raw_zenoh_callback_round_trips(session: &zenoh::Session, rounds: usize) -> Vec<f64> {
    let ping = Arc::new(publisher(session, "bench/ping", true));
    let total = rounds + rounds / 10;
    let (done, times) = std::sync::mpsc::channel::<Vec<f64>>();
    // (the round awaited, when its ping left, the times so far)
    let state = Arc::new(Mutex::new((
        0u64,
        Instant::now(),
        Vec::with_capacity(total),
    )));
    let (next, s) = (Arc::clone(&ping), Arc::clone(&state));
    let _pong = session
        .declare_subscriber("bench/pong")
        .callback(move |sample| {
            let mut s = s.lock().expect("lock");
            if read_u64(&sample.payload().to_bytes()) != s.0 {
                return;
            }
            let elapsed = s.1.elapsed().as_secs_f64() * 1e6;
            s.2.push(elapsed);
            s.0 += 1;
            if s.2.len() == total {
                let _ = done.send(std::mem::take(&mut s.2));
                return;
            }
            s.1 = Instant::now();
            let _ = next.put(round_ping(s.0)).wait();
        })
        .wait()
        .expect("subscriber");
    // The peer's publisher may not know this subscriber yet: ping round 0
    // until it is answered.
    loop {
        state.lock().expect("lock").1 = Instant::now();
        ping.put(round_ping(0)).wait().expect("put");
        std::thread::sleep(Duration::from_millis(100));
        if state.lock().expect("lock").0 > 0 {
            break;
        }
    }
    let mut times = times
        .recv_timeout(Duration::from_secs(600))
        .expect("the rounds");
    times.drain(..rounds / 10);
    times
}

/// 64 bytes: the round's number, then padding.
fn round_ping(round: u64) -> Vec<u8> {
    let mut v = vec![7u8; 64];
    v[..8].copy_from_slice(&round.to_le_bytes());
    v
}

/// zenoh alone, for scale: puts on `bench/raw` (a count, then that many
/// payloads), which the peer's subscriber sums and answers on
/// `bench/raw_sum`.
struct RawThroughput {
    data: zenoh::pubsub::Publisher<'static>,
    sums: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
}

impl RawThroughput {
    fn new(session: &zenoh::Session) -> Self {
        let sums = subscriber(session, "bench/raw_sum");
        let data = publisher(session, "bench/raw", false);
        while !data.matching_status().wait().expect("matching").matching() {
            std::thread::sleep(Duration::from_millis(1));
        }
        RawThroughput { data, sums }
    }

    /// Send `count` copies of `payload`; the peer's sum of their bytes.
    fn run(&self, payload: &[u8], count: u64) -> u64 {
        self.data
            .put(count.to_le_bytes().to_vec())
            .wait()
            .expect("put");
        for _ in 0..count {
            self.data.put(payload.to_vec()).wait().expect("put");
        }
        read_u64(&self.sums.recv().expect("sum").payload().to_bytes())
    }
}

/// The peer process, killed when the run ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A cheap sum the sink computes over every byte it reads (so the bytes
/// are really read, on both transports).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

fn round_trips(rounds: usize, mut once: impl FnMut()) -> Vec<f64> {
    for _ in 0..rounds / 10 {
        once();
    }
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            once();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

/// MiB/s of `count` messages of `size` bytes sent by `run`.
fn throughput(size: usize, count: u64, run: impl FnOnce()) -> f64 {
    let t = Instant::now();
    run();
    (size as f64 * count as f64) / (1 << 20) as f64 / t.elapsed().as_secs_f64()
}

fn tcp_connect(port: u16, mode: u8) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(&[mode]).expect("mode");
    s
}

fn tcp_send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(&(bytes.len() as u32).to_le_bytes())
        .expect("len");
    s.write_all(bytes).expect("bytes");
}

fn tcp_recv(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("len");
    let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut v).expect("bytes");
    v
}

/// The peer: a zenoh session serving `bench/echo` and `bench/sink`, and a
/// TCP listener doing the same per connection (first byte `e` or `s`);
/// zenoh alone on that session and on one with zenoh's default transport.
fn peer(zenoh_port: u16, default_port: u16, tcp_port: u16) {
    let listen = format!("tcp/127.0.0.1:{zenoh_port}");
    let config =
        shmport_zenoh::peer_config(&[&listen], &[], Duration::from_secs(10)).expect("config");
    let session = zenoh::open(config).wait().expect("session");
    let listen = format!("tcp/127.0.0.1:{default_port}");
    let default_session = zenoh::open(default_transport(&[&listen], &[]))
        .wait()
        .expect("session");
    let echo = shmport_zenoh::serve(&session, "bench/echo").expect("serve");
    let sink = shmport_zenoh::serve(&session, "bench/sink").expect("serve");
    let _pongs = [&session, &default_session].map(pong_back);
    let _sums = sum_back(&default_session);
    let tcp = TcpListener::bind(("127.0.0.1", tcp_port)).expect("tcp listen");
    println!("ready");
    std::thread::spawn(move || {
        let port = echo.accept().expect("accept");
        while let Ok(m) = port.recv() {
            if port.post_bytes(m.bytes()).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let port = sink.accept().expect("accept");
        // A round: its count, then that many messages; one answer.
        while let Ok(header) = port.recv() {
            let count = read_u64(header.bytes());
            drop(header);
            let mut sum = 0u64;
            for _ in 0..count {
                let Ok(m) = port.recv() else { return };
                sum += checksum(m.bytes());
            }
            if port.post_bytes(&sum.to_le_bytes()).is_err() {
                return;
            }
        }
    });
    for stream in tcp.incoming() {
        let Ok(mut s) = stream else { continue };
        let _ = s.set_nodelay(true);
        std::thread::spawn(move || {
            let mut mode = [0u8; 1];
            if s.read_exact(&mut mode).is_err() {
                return;
            }
            loop {
                if mode[0] == b'e' {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
                    if s.read_exact(&mut v).is_err() {
                        return;
                    }
                    let _ = s.write_all(&len);
                    let _ = s.write_all(&v);
                } else {
                    let mut count = [0u8; 8];
                    if s.read_exact(&mut count).is_err() {
                        return;
                    }
                    let mut sum = 0u64;
                    for _ in 0..u64::from_le_bytes(count) {
                        sum += checksum(&tcp_recv(&mut s));
                    }
                    let _ = s.write_all(&sum.to_le_bytes());
                }
            }
        });
    }
}

/// In the peer: put every sample of `bench/ping` back on `bench/pong`.
fn pong_back(session: &zenoh::Session) -> zenoh::pubsub::Subscriber<()> {
    let pong = publisher(session, "bench/pong", true);
    session
        .declare_subscriber("bench/ping")
        .callback(move |sample| {
            let _ = pong.put(sample.payload().clone()).wait();
        })
        .wait()
        .expect("subscriber")
}

/// In the peer: sum the samples of `bench/raw` (a round starts with its
/// count) and put each round's sum on `bench/raw_sum`.
fn sum_back(session: &zenoh::Session) -> zenoh::pubsub::Subscriber<()> {
    let sums = publisher(session, "bench/raw_sum", false);
    // (messages still due, running sum).
    let round = std::sync::Mutex::new((0u64, 0u64));
    session
        .declare_subscriber("bench/raw")
        .callback(move |sample| {
            let bytes = sample.payload().to_bytes();
            let mut r = round.lock().expect("lock");
            if r.0 == 0 {
                *r = (read_u64(&bytes), 0);
                return;
            }
            r.1 += checksum(&bytes);
            r.0 -= 1;
            if r.0 == 0 {
                let _ = sums.put(r.1.to_le_bytes().to_vec()).wait();
            }
        })
        .wait()
        .expect("subscriber")
}
