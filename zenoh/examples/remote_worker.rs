//! Worker offloading with the worker on "another host": separate
//! processes, each with its own zenoh session on 127.0.0.1 (peer mode, no
//! multicast scouting, explicit endpoints), talking through ordinary
//! shmport ports.
//!
//! ```text
//! cargo run --release -p shmport-zenoh --example remote_worker            # a few seconds
//! cargo run --release -p shmport-zenoh --example remote_worker -- --quick # about a second
//! ```
//!
//! This program re-executes itself for each role
//! (`SHMPORT_REMOTE_WORKER_ROLE` names it):
//!
//! - **main** starts the worker host, then two app hosts, and waits for
//!   them. It is not in the path: the apps reach the worker by its zenoh
//!   key.
//! - **worker** (listens on `tcp/127.0.0.1:<port>`) offers ports under
//!   `jobs/worker` and serves each client on a thread of its own. A
//!   request is real work: the sum of the squares of 4096 numbers, read in
//!   place from its ring (the bridge put it there). When a client's port
//!   closes it prints how many requests that client made and why the port
//!   closed.
//! - **app** (connects to the worker's endpoint) keeps a few requests in
//!   flight for its run time, checks every answer against a closed form,
//!   prints its requests per second, closes its port, and waits for its
//!   bridge to deliver the close before it exits.

use std::collections::VecDeque;
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmport::MessagePort;
use shmport::rkyv::{Archive, Deserialize, Serialize};
use zenoh::Wait;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

const ROLE_ENV: &str = "SHMPORT_REMOTE_WORKER_ROLE";
/// Numbers per request.
const N: usize = 4096;
/// Requests an app keeps in flight.
const IN_FLIGHT: usize = 4;
/// A silent host is gone after this long.
const LEASE: Duration = Duration::from_secs(2);

#[derive(Archive, Serialize, Deserialize)]
struct Job {
    id: u64,
    input: Vec<f32>,
}

#[derive(Archive, Serialize, Deserialize)]
struct Answer {
    id: u64,
    sum: f64,
}

fn main() -> Result<()> {
    match std::env::var(ROLE_ENV)
        .ok()
        .as_deref()
        .map(str::split_whitespace)
    {
        None => main_role(),
        Some(mut words) => {
            let role = words.next().unwrap_or_default();
            let endpoint = words.next().unwrap_or_default().to_owned();
            match role {
                "worker" => worker(&endpoint),
                "app" => {
                    let name = words.next().unwrap_or_default().to_owned();
                    let ms: u64 = words.next().unwrap_or("1000").parse()?;
                    app(&endpoint, &name, Duration::from_millis(ms))
                }
                other => Err(format!("unknown role {other}").into()),
            }
        }
    }
}

fn main_role() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let run_ms = if quick { 500 } else { 3000 };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let exe = std::env::current_exe()?;
    let mut worker = Command::new(&exe)
        .env(ROLE_ENV, format!("worker {endpoint}"))
        .stdout(Stdio::piped())
        .spawn()?;
    let mut worker_out = BufReader::new(worker.stdout.take().ok_or("worker stdout")?);
    let mut line = String::new();
    worker_out.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = worker.kill();
        let _ = worker.wait();
        return Err(format!("the worker did not start: {line:?}").into());
    }
    println!("worker host up on {endpoint}");
    let apps: Vec<_> = ["app-1", "app-2"]
        .iter()
        .map(|name| {
            Command::new(&exe)
                .env(ROLE_ENV, format!("app {endpoint} {name} {run_ms}"))
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut failed = false;
    for mut app in apps {
        failed |= !app.wait()?.success();
    }
    // The worker reports each client's end, then main stops it.
    for _ in 0..2 {
        line.clear();
        worker_out.read_line(&mut line)?;
        print!("worker: {line}");
    }
    worker.kill()?;
    worker.wait()?;
    if failed {
        return Err("an app failed".into());
    }
    Ok(())
}

fn session(listen: &[&str], connect: &[&str]) -> Result<zenoh::Session> {
    let config = shmport_zenoh::peer_config(listen, connect, LEASE)?;
    zenoh::open(config).wait()
}

fn worker(endpoint: &str) -> Result<()> {
    let session = session(&[endpoint], &[])?;
    let server = shmport_zenoh::serve(&session, "jobs/worker")?;
    println!("ready");
    let mut client = 0;
    loop {
        let port = server.accept()?;
        client += 1;
        std::thread::spawn(move || serve_client(client, port));
    }
}

fn serve_client(client: usize, port: MessagePort) {
    let mut served = 0u64;
    let end = loop {
        let msg = match port.recv() {
            Ok(m) => m,
            Err(e) => break e.to_string(),
        };
        let Ok(job) = msg.get::<Job>() else {
            break "a message that is not a Job".to_owned();
        };
        // Read in place: the numbers are in this process's ring.
        let sum: f64 = job
            .input
            .iter()
            .map(|x| f64::from(x.to_native()).powi(2))
            .sum();
        let answer = Answer {
            id: job.id.to_native(),
            sum,
        };
        drop(msg);
        if let Err(e) = port.post(&answer) {
            break e.to_string();
        }
        served += 1;
    };
    println!("client {client} ended ({end}) after {served} requests");
}

fn app(endpoint: &str, name: &str, run: Duration) -> Result<()> {
    let session = session(&[], &[endpoint])?;
    let port = shmport_zenoh::connect(&session, "jobs/worker")?;
    let start = Instant::now();
    let mut next = 0u64;
    let mut pending = VecDeque::new();
    let mut done = 0u64;
    while start.elapsed() < run || !pending.is_empty() {
        while pending.len() < IN_FLIGHT && start.elapsed() < run {
            let base = next as f32;
            let input: Vec<f32> = (0..N).map(|i| base + i as f32).collect();
            port.post(&Job { id: next, input })?;
            pending.push_back(next);
            next += 1;
        }
        let msg = port.recv()?;
        let answer = msg.get::<Answer>()?;
        let id = pending.pop_front().ok_or("an answer nobody asked for")?;
        if answer.id.to_native() != id {
            return Err(format!("{name}: answer {} for request {id}", answer.id).into());
        }
        if (answer.sum.to_native() - expected(id)).abs() > expected(id) * 1e-6 {
            return Err(format!("{name}: wrong sum for request {id}").into());
        }
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("{name}: {done} requests answered and checked, {rate:.0} requests/s");
    drop(port);
    if !shmport_zenoh::wait_idle(Duration::from_secs(10)) {
        return Err(format!("{name}: the close was not confirmed").into());
    }
    session.close().wait()?;
    Ok(())
}

/// Σ (b + i)² for i in 0..N, as the worker computes it (f32 inputs).
fn expected(id: u64) -> f64 {
    (0..N)
        .map(|i| f64::from(id as f32 + i as f32).powi(2))
        .sum()
}
