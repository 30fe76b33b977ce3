//! Port benchmarks between real processes: what a channel per request
//! costs, whether a transferred port is as fast as the original, and a
//! worker serving four clients.
//!
//! ```text
//! cargo bench --bench ports            # about 20 s
//! cargo bench --bench ports -- --test  # every benchmark once (CI)
//! ```
//!
//! - `channel_per_request`: make a channel, send one end to another
//!   process, which posts one message on it and drops it; receive the
//!   message and the close event. Both sides busy-spin, so the figure is
//!   the work, not two sleep/wake hops between vCPUs.
//! - `transferred_rtt/{original,transferred}`: 64-byte round trip, busy
//!   spin, on the port `spawn` made, and on a port that travelled to the
//!   child inside a message.
//! - `worker_4_clients`: four client threads, each with its own port to one
//!   worker process that waits on all four with a `PortSet` and answers
//!   each small request (the sum of 16 integers); throughput in requests.
//!
//! The peer is this binary, re-executed with `SHMPORT_BENCH_ROLE` set.

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shmport::{MessageChannel, MessagePort, PortSet, RecvError};

const ROLE_ENV: &str = "SHMPORT_BENCH_ROLE";
const BUSY: Duration = Duration::from_secs(10);

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        run_role(&role);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
        .configure_from_args();
    channel_per_request(&mut c);
    transferred_rtt(&mut c);
    worker_4_clients(&mut c);
    c.final_summary();
}

fn peer(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
    cmd.env(ROLE_ENV, role).stdout(Stdio::null());
    cmd
}

fn finish(mut child: Child, port: MessagePort) {
    drop(port);
    let status = child.wait().expect("wait for the peer");
    assert!(status.success(), "peer failed: {status}");
}

// ------------------------------------------------------------------ peers

fn run_role(role: &str) {
    let port = MessagePort::from_parent().expect("adopt the bench's port");
    match role {
        "acceptor" => {
            port.set_spin(BUSY);
            acceptor(port)
        }
        "echo" => {
            port.set_spin(BUSY);
            echo(&port)
        }
        "adopt-echo" => {
            // The first message brings the port to echo on.
            let mut m = port.recv().expect("the port to echo on");
            let p = m.take_ports().expect("a port").pop().expect("one port");
            drop(m);
            p.set_spin(BUSY);
            echo(&p)
        }
        "worker" => worker(port),
        other => panic!("{ROLE_ENV}={other:?}: unknown role"),
    }
}

/// Each message brings a fresh port: post one message on it and drop it.
fn acceptor(port: MessagePort) {
    loop {
        let mut m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("acceptor: {e}"),
        };
        for p in m.take_ports().expect("ports") {
            p.post(&1u64).expect("reply");
        }
    }
}

fn echo(port: &MessagePort) {
    loop {
        let m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("echo: {e}"),
        };
        let w = m.get::<[u64; 8]>().expect("64-byte message")[0].to_native();
        drop(m);
        port.post(&[w; 8]).expect("echo");
    }
}

/// The first message brings four client ports; serve them until all close.
fn worker(port: MessagePort) {
    let mut m = port.recv().expect("client ports");
    let mut set = PortSet::new().expect("port set");
    for p in m.take_ports().expect("ports") {
        set.add(p).expect("add");
    }
    drop(m);
    while let Some(k) = set.wait().expect("wait") {
        let client = set.get(k).expect("key");
        let keep = match client.try_recv() {
            Ok(m) => {
                let sum: u64 = m
                    .get::<[u32; 16]>()
                    .expect("request")
                    .iter()
                    .map(|x| x.to_native() as u64)
                    .sum();
                drop(m);
                client.post(&sum).is_ok()
            }
            Err(RecvError::Closed(_)) => false,
            Err(e) => panic!("worker: {e}"),
        };
        if !keep {
            drop(set.remove(k));
        }
    }
}

// ------------------------------------------------------------- benchmarks

fn channel_per_request(c: &mut Criterion) {
    let (child, port) = shmport::spawn(peer("acceptor")).expect("spawn");
    c.bench_function("channel_per_request", |b| {
        b.iter(|| {
            let (mine, theirs) = MessageChannel::builder()
                .spin(BUSY)
                .build()
                .expect("channel")
                .into_ports();
            port.post_with_ports(&(), vec![theirs])
                .expect("send a port");
            let v = mine
                .recv()
                .expect("reply")
                .get::<u64>()
                .expect("u64")
                .to_native();
            assert_eq!(v, 1);
            assert!(matches!(mine.recv(), Err(RecvError::Closed(_))));
        })
    });
    finish(child, port);
}

fn rtt(port: &MessagePort, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        port.post(&[i; 8]).expect("post");
        let m = port.recv().expect("echo");
        assert_eq!(m.get::<[u64; 8]>().expect("reply")[0], i);
    }
    start.elapsed()
}

fn transferred_rtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("transferred_rtt");
    let (child, port) = MessageChannel::builder()
        .spin(BUSY)
        .spawn(peer("echo"))
        .expect("spawn");
    group.bench_function("original", |b| b.iter_custom(|n| rtt(&port, n)));
    finish(child, port);

    let (child, carrier) = shmport::spawn(peer("adopt-echo")).expect("spawn");
    let (mine, theirs) = MessageChannel::builder()
        .spin(BUSY)
        .build()
        .expect("channel")
        .into_ports();
    carrier
        .post_with_ports(&(), vec![theirs])
        .expect("send the port");
    group.bench_function("transferred", |b| b.iter_custom(|n| rtt(&mine, n)));
    drop(mine);
    finish(child, carrier);
    group.finish();
}

fn worker_4_clients(c: &mut Criterion) {
    let mut group = c.benchmark_group("worker_4_clients");
    group.throughput(Throughput::Elements(4));
    let (child, carrier) = shmport::spawn(peer("worker")).expect("spawn");
    // Five threads on this 2-core machine: the default spin (20 us), not a
    // busy spin, so that waiting threads give their core up.
    let (clients, theirs): (Vec<_>, Vec<_>) = (0..4)
        .map(|_| MessageChannel::new().expect("channel").into_ports())
        .unzip();
    carrier.post_with_ports(&(), theirs).expect("send ports");
    let mut clients = Some(clients);
    group.bench_function("requests", |b| {
        b.iter_custom(|n| {
            // Four threads, n requests each; the time is the slowest's.
            let ports = clients.take().expect("clients");
            let start = Instant::now();
            let handles: Vec<_> = ports
                .into_iter()
                .enumerate()
                .map(|(t, p)| {
                    thread::spawn(move || {
                        let req: [u32; 16] = std::array::from_fn(|i| (i + t) as u32);
                        let want: u64 = req.iter().map(|&x| x as u64).sum();
                        for _ in 0..n {
                            p.post(&req).expect("request");
                            let got = p
                                .recv()
                                .expect("reply")
                                .get::<u64>()
                                .expect("u64")
                                .to_native();
                            assert_eq!(black_box(got), want);
                        }
                        p
                    })
                })
                .collect();
            let back: Vec<MessagePort> = handles
                .into_iter()
                .map(|h| h.join().expect("client"))
                .collect();
            let elapsed = start.elapsed();
            clients = Some(back);
            elapsed
        })
    });
    drop(clients);
    finish(child, carrier);
    group.finish();
}
