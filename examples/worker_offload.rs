//! Worker offloading: a main process connects apps straight to a hidden
//! worker process, after checking that each asker is an app it started.
//!
//! ```text
//! cargo run --release --example worker_offload            # a few seconds
//! cargo run --release --example worker_offload -- --quick # under a second
//! cargo run --release --features tokio --example worker_offload -- --async-worker
//! ```
//!
//! This program re-executes itself for each role
//! (`SHMPORT_WORKER_OFFLOAD_ROLE` names it):
//!
//! - **main** starts the worker, two apps and an untrusted plugin, each with
//!   a port from [`shmport::spawn`]. It waits on all those ports at once
//!   (a [`PortSet`]). When a request for a worker channel comes in, main
//!   checks who asks: the request must arrive on the port of an app main
//!   started, and carry that app's pid, as main recorded it from
//!   `Child::id()`. Then main makes a channel and posts one end to the worker
//!   and the other to the app. From then on the app and the worker talk
//!   directly; main is not in the path. (The port is what identifies the
//!   asker: main made it and gave it to that child alone. The pid is the
//!   app's own claim, checked against what main recorded.)
//! - **worker** serves every client at once, fairly, from one thread: a
//!   [`PortSet`] holds its port to main and one port per client. Each
//!   request is real work: the sum of the squares of 4096 numbers, read in
//!   place from shared memory. With `--async-worker` (feature `tokio`) the
//!   worker is async instead: one tokio task per client on a single-thread
//!   runtime, each awaiting its port through the reactor (no thread per
//!   client).
//! - **app** asks for a worker channel, then keeps a few requests in flight
//!   for its run time, checks every answer against a closed form, and prints
//!   its requests per second.
//! - **plugin** asks for a worker channel pretending to be the first app
//!   (its pid); main refuses, because the request came on the plugin's port.
//!
//! Halfway through, the first app "reloads": main kills it (`kill -9`) and
//! starts it again; the worker sees that client's close event (peer died)
//! and keeps serving the others. At the end main asks the worker for its
//! per-client counts and prints the requests per second of each app and in
//! total. Every process is waited for.

use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::Reaped;
use shmport::rkyv::{Archive, Deserialize, Serialize};
use shmport::{MessageChannel, MessagePort, PortSet, PostError, RecvError};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Which role a re-executed copy plays.
const ROLE_ENV: &str = "SHMPORT_WORKER_OFFLOAD_ROLE";
/// An app's (or the plugin's) name.
const NAME_ENV: &str = "SHMPORT_WORKER_OFFLOAD_NAME";
/// How long an app sends requests, in milliseconds.
const RUN_ENV: &str = "SHMPORT_WORKER_OFFLOAD_RUN_MS";
/// The pid the plugin claims to have.
const CLAIM_ENV: &str = "SHMPORT_WORKER_OFFLOAD_CLAIM";

/// Numbers per request.
const JOB_LEN: u64 = 4096;
/// Requests an app keeps in flight: enough to keep the worker busy with it
/// while the app itself waits to be scheduled.
const WINDOW: usize = 16;
/// How long main waits for anything before it gives up.
const PATIENCE: Duration = Duration::from_secs(10);

// -------------------------------------------------------------- messages

/// App or plugin → main, on its spawn port: "connect me to the worker".
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct WorkerChannelRequest {
    /// The pid the asker says it has.
    pid: u32,
}

/// Main → app: the answer (a granted one carries the app's end).
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
enum WorkerChannelReply {
    Granted,
    Refused { reason: String },
}

/// Main → worker, on the worker's spawn port.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
enum ToWorker {
    /// A new client; its port is attached.
    NewClient { name: String, pid: u32 },
    /// No more clients will come: report once the current ones are gone.
    Shutdown,
}

/// What the worker did for one client.
#[derive(Archive, Serialize, Deserialize, Clone)]
#[rkyv(crate = shmport::rkyv)]
struct ClientSummary {
    name: String,
    pid: u32,
    requests: u64,
    /// From the client's arrival to its close event.
    secs: f64,
    /// How the client left (its close reason).
    ended: String,
}

/// Worker → main, after `Shutdown`.
#[derive(Archive, Serialize, Deserialize)]
#[rkyv(crate = shmport::rkyv)]
struct WorkerSummary {
    clients: Vec<ClientSummary>,
    /// From the first client's arrival to the last one's departure.
    span_secs: f64,
}

/// App → worker: the sum of the squares of `data`, please.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Job {
    id: u64,
    data: Vec<f64>,
}

/// Worker → app.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Answer {
    id: u64,
    sum_of_squares: f64,
}

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return match role.as_str() {
            "worker" => worker(),
            "worker-async" => async_worker::run(),
            "app" => app(),
            "plugin" => plugin(),
            other => Err(format!("{ROLE_ENV}={other:?}: unknown role").into()),
        };
    }
    let mut quick = false;
    let mut worker_role = "worker";
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--async-worker" if cfg!(feature = "tokio") => worker_role = "worker-async",
            "--async-worker" => {
                return Err("--async-worker needs the tokio feature (--features tokio)".into());
            }
            other => {
                return Err(
                    format!("unknown argument {other:?} (try --quick, --async-worker)").into(),
                );
            }
        }
    }
    let run = if quick {
        Duration::from_millis(400)
    } else {
        Duration::from_secs(2)
    };
    main_process(run, worker_role)
}

// ------------------------------------------------------------------ main

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Worker,
    App,
    Plugin,
}

/// A process main started, with main's port to it (in the set).
struct Proc {
    name: String,
    kind: Kind,
    child: Reaped,
}

impl Proc {
    fn label(&self) -> String {
        format!("{} (pid {})", self.name, self.child.id())
    }
}

/// Main's view: the set of its ports to its children, and who is behind
/// each key.
struct Main {
    set: PortSet,
    procs: HashMap<usize, Proc>,
    worker: usize,
    run: Duration,
}

fn main_process(run: Duration, worker_role: &str) -> Result<()> {
    let started = Instant::now();
    let mut set = PortSet::new()?;
    let (child, port) = shmport::spawn(role_command(worker_role))?;
    let worker = set.add(port)?;
    let mut main = Main {
        set,
        procs: HashMap::new(),
        worker,
        run,
    };
    let proc = Proc {
        name: "worker".into(),
        kind: Kind::Worker,
        child: Reaped::new(child),
    };
    println!(
        "main: started the hidden {worker_role} (pid {})",
        proc.child.id()
    );
    main.procs.insert(worker, proc);

    // The first app1 would run until it is reloaded (killed), however
    // late that comes.
    let app1 = main.start(Kind::App, "app1", PATIENCE, None)?;
    main.start(Kind::App, "app2", run, None)?;
    let app1_pid = main.procs[&app1].child.id();
    main.start(Kind::Plugin, "plugin", run, Some(app1_pid))?;

    // Serve requests and close events; reload app1 when it has run half
    // its time.
    let mut reloaded = false;
    let mut reload_at = None;
    let mut last_event = Instant::now();
    loop {
        if reload_at.is_some_and(|at| Instant::now() >= at) {
            reload_at = None;
            reloaded = true;
            main.reload(app1)?;
        }
        if reloaded && main.procs.len() == 1 {
            break; // only the worker is left
        }
        let timeout = reload_at.map_or(PATIENCE, |at: Instant| {
            at.saturating_duration_since(Instant::now())
        });
        match main.set.wait_timeout(timeout)? {
            Some(key) => {
                let granted = main.handle(key)?;
                if granted && key == app1 && !reloaded {
                    reload_at = Some(Instant::now() + run / 2);
                }
                last_event = Instant::now();
            }
            None if last_event.elapsed() >= PATIENCE => {
                return Err("main: nothing happened for 10 s".into());
            }
            None => {}
        }
    }

    // Every app is gone: ask the worker for its counts.
    let port = main.set.get(main.worker).ok_or("the worker's port")?;
    port.post(&ToWorker::Shutdown)?;
    let msg = port.recv_timeout(PATIENCE)?;
    let summary = msg.deserialize::<WorkerSummary>()?;
    drop(msg);
    let port = main.set.remove(main.worker).ok_or("the worker's port")?;
    drop(port);
    let mut worker = main.procs.remove(&main.worker).ok_or("the worker")?;
    worker.child.finish("worker")?;

    println!("main: requests per second of each app, as the worker counted them:");
    let mut total = 0;
    for c in &summary.clients {
        println!(
            "  {} (pid {}): {} requests in {:.2} s = {:.0} requests/s (left: {})",
            c.name,
            c.pid,
            c.requests,
            c.secs,
            c.requests as f64 / c.secs,
            c.ended
        );
        total += c.requests;
    }
    println!(
        "  total: {total} requests in {:.2} s = {:.0} requests/s over {} clients",
        summary.span_secs,
        total as f64 / summary.span_secs,
        summary.clients.len()
    );
    println!(
        "worker_offload: {} clients talked to the worker directly, the plugin was refused, done in {:.1} s",
        summary.clients.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn role_command(role: &str) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let mut cmd = Command::new(exe);
    cmd.env(ROLE_ENV, role);
    cmd
}

impl Main {
    /// Start an app (sending requests for `run`) or the plugin; returns its
    /// key in the set.
    fn start(
        &mut self,
        kind: Kind,
        name: &str,
        run: Duration,
        claim: Option<u32>,
    ) -> Result<usize> {
        let mut cmd = role_command(if kind == Kind::App { "app" } else { "plugin" });
        cmd.env(NAME_ENV, name)
            .env(RUN_ENV, run.as_millis().to_string());
        if let Some(pid) = claim {
            cmd.env(CLAIM_ENV, pid.to_string());
        }
        let (child, port) = shmport::spawn(cmd)?;
        let proc = Proc {
            name: name.into(),
            kind,
            child: Reaped::new(child),
        };
        let key = self.set.add(port)?;
        println!("main: started {}", proc.label());
        self.procs.insert(key, proc);
        Ok(key)
    }

    /// The app "reloads": kill it, start it again.
    fn reload(&mut self, key: usize) -> Result<()> {
        let Some(mut proc) = self.procs.remove(&key) else {
            return Err("main: the app to reload is gone already".into());
        };
        let label = proc.label();
        drop(self.set.remove(key));
        proc.child.kill();
        println!("main: {label} reloads: killed it, starting it again");
        self.start(Kind::App, &proc.name, self.run, None)?;
        Ok(())
    }

    /// A port of the set has a message or its close event. Returns `true`
    /// when the process behind it was just connected to the worker.
    fn handle(&mut self, key: usize) -> Result<bool> {
        let kind = self
            .procs
            .get(&key)
            .ok_or("main: a key without a process")?
            .kind;
        let event = {
            let port = self.set.get(key).ok_or("main: a key not in the set")?;
            let received = port.try_recv();
            match received {
                Ok(_) if kind == Kind::Worker => {
                    return Err("main: the worker spoke out of turn".into());
                }
                Ok(msg) => Ok(msg.get::<WorkerChannelRequest>()?.pid.to_native()),
                Err(RecvError::Empty) => return Ok(false),
                Err(RecvError::Closed(reason)) => Err(reason),
                Err(e) => return Err(e.into()),
            }
        };
        match event {
            Ok(claimed) => self.answer(key, claimed),
            Err(reason) => {
                drop(self.set.remove(key));
                let mut proc = self.procs.remove(&key).ok_or("main: no process")?;
                if kind == Kind::Worker {
                    return Err(format!("main: the worker is gone ({reason})").into());
                }
                let label = proc.label();
                proc.child.finish(&label)?;
                println!("main: {label} exited");
                Ok(false)
            }
        }
    }

    /// Check who asks for a worker channel (by the port it came in on and
    /// the pid it gives); connect it to the worker (`true`), or refuse.
    fn answer(&mut self, key: usize, claimed: u32) -> Result<bool> {
        let proc = &self.procs[&key];
        let port = self.set.get(key).ok_or("main: no port")?;
        let label = proc.label();
        let refusal = if proc.kind != Kind::App {
            Some(format!(
                "the request came on the port of {label}, which is not an app main started"
            ))
        } else if claimed != proc.child.id() {
            Some(format!(
                "the request came on the port of {label} but claims pid {claimed}"
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            println!(
                "main: {label} asks for a worker channel as pid {claimed}: refused ({reason})"
            );
            port.post(&WorkerChannelReply::Refused { reason })?;
            return Ok(false);
        }
        let (for_worker, for_app) = MessageChannel::new()?.into_ports();
        let worker = self.set.get(self.worker).ok_or("main: no worker port")?;
        let new_client = ToWorker::NewClient {
            name: proc.name.clone(),
            pid: claimed,
        };
        worker.post_with_ports(&new_client, vec![for_worker])?;
        port.post_with_ports(&WorkerChannelReply::Granted, vec![for_app])?;
        println!(
            "main: {label} asks for a worker channel: granted; one end went to the worker, the other to the app"
        );
        Ok(true)
    }
}

// ---------------------------------------------------------------- worker

/// A client being served.
struct Client {
    name: String,
    pid: u32,
    requests: u64,
    since: Instant,
}

/// Serve main's port and every client's port from one `PortSet`.
fn worker() -> Result<()> {
    let mut set = PortSet::new()?;
    let control = set.add(MessagePort::from_parent()?)?;
    let mut control_open = true;
    let mut shutdown = false;
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut done: Vec<ClientSummary> = Vec::new();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();

    loop {
        if clients.is_empty() && (shutdown || !control_open) {
            break;
        }
        let Some(key) = set.wait()? else { break };
        let port = set.get(key).ok_or("worker: a key not in the set")?;
        if key == control {
            match control_event(port)? {
                Control::Nothing => {}
                Control::NewClient(name, pid, port) => {
                    let key = set.add(*port)?;
                    println!("worker: new client {name} (pid {pid})");
                    let now = Instant::now();
                    first.get_or_insert(now);
                    let client = Client {
                        name,
                        pid,
                        requests: 0,
                        since: now,
                    };
                    clients.insert(key, client);
                }
                Control::Shutdown => shutdown = true,
                Control::Closed => {
                    drop(set.remove(control));
                    control_open = false;
                }
            }
            continue;
        }
        let client = clients
            .get_mut(&key)
            .ok_or("worker: a key without a client")?;
        let left = match serve(port) {
            Ok(true) => {
                client.requests += 1;
                None
            }
            Ok(false) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = left {
            drop(set.remove(key));
            let c = clients.remove(&key).ok_or("worker: no client")?;
            last = Instant::now();
            let secs = c.since.elapsed().as_secs_f64();
            println!(
                "worker: client {} (pid {}) left ({why}) after {} requests",
                c.name, c.pid, c.requests
            );
            done.push(ClientSummary {
                name: c.name,
                pid: c.pid,
                requests: c.requests,
                secs,
                ended: why,
            });
        }
    }

    if control_open {
        let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
        let summary = WorkerSummary {
            clients: done,
            span_secs: span,
        };
        let port = set.get(control).ok_or("worker: no port to main")?;
        port.post(&summary)?;
        // Wait for main to close its port, so that it reads the summary.
        while port.recv().is_ok() {}
    }
    Ok(())
}

/// The worker as tokio tasks: the control port in the main task, one task
/// per client. Same protocol, same counts, same summary as [`worker`].
#[cfg(feature = "tokio")]
mod async_worker {
    use std::time::Instant;

    use shmport::aio::AsyncPort;
    use shmport::{MessagePort, PostError, RecvError};

    use super::{
        Answer, ArchivedToWorker, ClientSummary, Job, Result, ToWorker, WorkerSummary, sum_job,
    };

    pub fn run() -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(serve_all())
    }

    async fn serve_all() -> Result<()> {
        let mut control = AsyncPort::new(MessagePort::from_parent()?)?;
        let mut clients = Vec::new();
        let mut first: Option<Instant> = None;
        let open = loop {
            let mut msg = match control.recv().await {
                Ok(m) => m,
                Err(RecvError::Closed(_)) => break false,
                Err(e) => return Err(e.into()),
            };
            let (name, pid) = match msg.get::<ToWorker>()? {
                ArchivedToWorker::NewClient { name, pid } => (name.to_string(), pid.to_native()),
                ArchivedToWorker::Shutdown => break true,
            };
            let port = msg
                .take_ports()?
                .pop()
                .ok_or("worker: a new client without a port")?;
            drop(msg);
            println!("worker: new client {name} (pid {pid})");
            first.get_or_insert_with(Instant::now);
            let port = AsyncPort::new(port)?;
            clients.push(tokio::spawn(serve_client(name, pid, port)));
        };
        // Report the clients in the order they left, as the threaded worker
        // does: each task returns the moment its client left.
        let mut done = Vec::new();
        for c in clients {
            done.push(c.await?);
        }
        done.sort_by_key(|&(_, left)| left);
        let done: Vec<ClientSummary> = done.into_iter().map(|(summary, _)| summary).collect();
        if open {
            let span = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            let summary = WorkerSummary {
                clients: done,
                span_secs: span,
            };
            control.post(&summary).await?;
            // Wait for main to close its port, so that it reads the summary.
            while control.recv().await.is_ok() {}
        }
        Ok(())
    }

    /// Answer this client's jobs until its close event; returns the summary
    /// and the moment the client left.
    async fn serve_client(name: String, pid: u32, mut port: AsyncPort) -> (ClientSummary, Instant) {
        let since = Instant::now();
        let mut requests = 0;
        let ended = loop {
            let answer = match port.recv().await {
                Ok(msg) => match msg.get::<Job>() {
                    // Read in place; the message is dropped before the
                    // next await.
                    Ok(job) => Answer {
                        id: job.id.to_native(),
                        sum_of_squares: sum_job(job),
                    },
                    Err(e) => break format!("bad request: {e}"),
                },
                Err(RecvError::Closed(reason)) => break reason.to_string(),
                Err(e) => break e.to_string(),
            };
            match port.post(&answer).await {
                Ok(()) => {}
                Err(PostError::Closed(reason)) => break reason.to_string(),
                Err(e) => break e.to_string(),
            }
            requests += 1;
        };
        println!("worker: client {name} (pid {pid}) left ({ended}) after {requests} requests");
        let left = Instant::now();
        let summary = ClientSummary {
            name,
            pid,
            requests,
            secs: left.duration_since(since).as_secs_f64(),
            ended,
        };
        (summary, left)
    }
}

#[cfg(not(feature = "tokio"))]
mod async_worker {
    pub fn run() -> super::Result<()> {
        Err("the async worker needs the tokio feature".into())
    }
}

/// The sum of the squares of a job's numbers, read in place.
fn sum_job(job: &ArchivedJob) -> f64 {
    job.data
        .iter()
        .map(|x| {
            let x = x.to_native();
            x * x
        })
        .sum()
}

/// What came on the worker's port to main.
enum Control {
    Nothing,
    /// A port is a few hundred bytes: boxed, the enum stays small.
    NewClient(String, u32, Box<MessagePort>),
    Shutdown,
    Closed,
}

fn control_event(port: &MessagePort) -> Result<Control> {
    let mut msg = match port.try_recv() {
        Ok(msg) => msg,
        Err(RecvError::Empty) => return Ok(Control::Nothing),
        Err(RecvError::Closed(_)) => return Ok(Control::Closed),
        Err(e) => return Err(e.into()),
    };
    let (name, pid) = match msg.get::<ToWorker>()? {
        ArchivedToWorker::NewClient { name, pid } => (name.to_string(), pid.to_native()),
        ArchivedToWorker::Shutdown => return Ok(Control::Shutdown),
    };
    let port = msg
        .take_ports()?
        .pop()
        .ok_or("worker: a new client without a port")?;
    Ok(Control::NewClient(name, pid, Box::new(port)))
}

/// Answer one request if one is waiting (`Ok(true)`); `Err` with the reason
/// when the client is gone or sent something that is not a `Job`.
fn serve(port: &MessagePort) -> Result<bool, String> {
    let msg = match port.try_recv() {
        Ok(msg) => msg,
        Err(RecvError::Empty) => return Ok(false),
        Err(RecvError::Closed(reason)) => return Err(reason.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let job = msg.get::<Job>().map_err(|e| format!("bad request: {e}"))?;
    let id = job.id.to_native();
    // Read in place, in shared memory.
    let sum_of_squares = sum_job(job);
    drop(msg);
    match port.post(&Answer { id, sum_of_squares }) {
        Ok(()) => Ok(true),
        Err(PostError::Closed(reason)) => Err(reason.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

// ------------------------------------------------------------ app, plugin

fn env_u64(name: &str) -> Result<u64> {
    let v = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    Ok(v.parse()
        .map_err(|_| format!("{name}={v:?} is not a number"))?)
}

/// Ask main for a worker channel, claiming `pid`.
fn ask(up: &MessagePort, pid: u32) -> Result<Result<MessagePort, String>> {
    up.post(&WorkerChannelRequest { pid })?;
    let mut reply = up.recv_timeout(PATIENCE)?;
    let refused = match reply.get::<WorkerChannelReply>()? {
        ArchivedWorkerChannelReply::Granted => None,
        ArchivedWorkerChannelReply::Refused { reason } => Some(reason.to_string()),
    };
    if let Some(reason) = refused {
        return Ok(Err(reason));
    }
    let port = reply.take_ports()?.pop().ok_or("granted without a port")?;
    Ok(Ok(port))
}

/// Sum of i² for i in 0..n.
fn squares_below(n: u64) -> u128 {
    let n = u128::from(n);
    if n == 0 {
        return 0;
    }
    (n - 1) * n * (2 * n - 1) / 6
}

/// Get a worker channel, send requests for the run time with a few in
/// flight, check each answer, print the rate.
fn app() -> Result<()> {
    let name = std::env::var(NAME_ENV)?;
    let run = Duration::from_millis(env_u64(RUN_ENV)?);
    let up = MessagePort::from_parent()?;
    let me = std::process::id();
    let port = match ask(&up, me)? {
        Ok(port) => port,
        Err(reason) => return Err(format!("{name}: main refused: {reason}").into()),
    };

    let start = Instant::now();
    let deadline = start + run;
    let mut job = Job {
        id: 0,
        data: Vec::with_capacity(JOB_LEN as usize),
    };
    let mut in_flight: VecDeque<(u64, f64)> = VecDeque::with_capacity(WINDOW);
    let mut checked = 0u64;
    loop {
        while in_flight.len() < WINDOW && Instant::now() < deadline {
            // The numbers first..first+JOB_LEN: the sum of their squares
            // has a closed form, exact in f64 (below 2^53).
            let first = job.id.wrapping_mul(0x9E37_79B9) % 100_000;
            job.data.clear();
            job.data.extend((first..first + JOB_LEN).map(|v| v as f64));
            let expected = (squares_below(first + JOB_LEN) - squares_below(first)) as f64;
            port.post(&job)?;
            in_flight.push_back((job.id, expected));
            job.id += 1;
        }
        let Some((id, expected)) = in_flight.pop_front() else {
            break;
        };
        let msg = port.recv()?;
        let answer = msg.get::<Answer>()?;
        let (got_id, got) = (answer.id.to_native(), answer.sum_of_squares.to_native());
        if got_id != id || got != expected {
            return Err(format!(
                "{name}: request {id}: the worker answered {got} for request {got_id}, expected {expected}"
            )
            .into());
        }
        checked += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name} (pid {me}): {checked} requests in {secs:.2} s = {:.0} requests/s, all {checked} answers checked",
        checked as f64 / secs
    );
    Ok(())
}

/// Ask for a worker channel with someone else's pid; expect a refusal.
fn plugin() -> Result<()> {
    let name = std::env::var(NAME_ENV)?;
    let claim = u32::try_from(env_u64(CLAIM_ENV)?)?;
    let up = MessagePort::from_parent()?;
    match ask(&up, claim)? {
        Ok(_) => {
            Err(format!("{name}: main granted a channel to a plugin posing as pid {claim}").into())
        }
        Err(reason) => {
            println!("{name}: refused as expected: {reason}");
            Ok(())
        }
    }
}
