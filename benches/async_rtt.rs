//! Async against sync: 64-byte round trips between two processes, through
//! `AsyncPort` on a tokio current-thread runtime and through the plain
//! blocking calls, in one run (feature `tokio`):
//!
//! ```text
//! cargo bench --features tokio --bench async_rtt
//! cargo bench --features tokio --bench async_rtt -- --test   # CI: once each
//! ```
//!
//! - `rtt_64B/{sync,async}_spin`: both sides busy-spin; the async receive
//!   finds the reply while spinning and never goes through the reactor.
//! - `rtt_64B/{sync,async}_block`: both sides park at once (spin 0); the
//!   async side waits in the reactor (epoll), the sync side in `recvmsg`.
//!
//! The peer is this binary re-executed with `SHMPORT_BENCH_ROLE=echo`: a
//! blocking echo with the same spin as the measuring side.

mod common;

use std::time::{Duration, Instant};

use shmport::aio::AsyncPort;
use shmport::{MessagePort, RecvError};

const ROLE_ENV: &str = "SHMPORT_BENCH_ROLE";
const SPIN_ENV: &str = "SHMPORT_BENCH_SPIN_NS";
const BUSY: Duration = Duration::from_secs(10);

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("echo") {
        echo();
        return;
    }
    let mut c = common::criterion();
    let mut group = c.benchmark_group("rtt_64B");
    for (name, spin) in [("spin", BUSY), ("block", Duration::ZERO)] {
        let (mut child, port) = spawn_echo(spin);
        group.bench_function(format!("sync_{name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    port.post_bytes(&[7u8; 64]).expect("post");
                    let m = port.recv().expect("echo");
                    assert_eq!(m.bytes().len(), 64);
                }
                start.elapsed()
            })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut port = rt.block_on(async { AsyncPort::new(port).expect("register") });
        group.bench_function(format!("async_{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        port.post_bytes(&[7u8; 64]).await.expect("post");
                        let m = port.recv().await.expect("echo");
                        assert_eq!(m.bytes().len(), 64);
                    }
                    start.elapsed()
                })
            })
        });
        let port = rt.block_on(async { port.into_inner() });
        drop(port);
        child.wait().expect("echo exits");
    }
    group.finish();
    c.final_summary();
}

fn spawn_echo(spin: Duration) -> (std::process::Child, MessagePort) {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("bench binary"));
    cmd.env(ROLE_ENV, "echo")
        .env(SPIN_ENV, spin.as_nanos().to_string());
    let (child, port) = shmport::spawn(cmd).expect("spawn the echo peer");
    port.set_spin(spin);
    (child, port)
}

/// Echo every message until the bench's port closes.
fn echo() {
    let port = MessagePort::from_parent().expect("adopt the port");
    let spin = std::env::var(SPIN_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(BUSY, Duration::from_nanos);
    port.set_spin(spin);
    loop {
        let m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("echo: {e}"),
        };
        let mut reply = [0u8; 64];
        reply.copy_from_slice(&m.bytes()[..64]);
        drop(m);
        if port.post_bytes(&reply).is_err() {
            return;
        }
    }
}
