//! Forwarding: a port received by one process is passed on to another, and
//! nothing posted to it is lost or reordered on the way.
//!
//! ```text
//! cargo run --example forward
//! ```
//!
//! Three processes play the seed's context-isolated page (this program
//! re-executes itself; `SHMPORT_FORWARD_ROLE` names the role):
//!
//! - **main** makes a channel, keeps one end (the far end) and sends the
//!   other to the preload process;
//! - **preload** waits for the main world to load, then passes the port on
//!   to it (the preload → main world hop);
//! - **main world** reads the port, answers main directly on it, and checks
//!   what arrived.
//!
//! Main posts on the far end before it sends the port, while the port is
//! travelling (every few milliseconds, until the main world answers on the
//! port itself), and after the hop. The main world receives every message
//! in order — the ones posted before and during the hop waited in the port
//! and moved with it — checks the count, reports it back, and sees the
//! close event when main closes the far end. Each process waits for the one
//! it started.

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use shmport::rkyv::{Archive, Serialize};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

mod common;
use common::Reaped;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Which role a re-executed copy plays.
const ROLE_ENV: &str = "SHMPORT_FORWARD_ROLE";

/// Messages main posts before it sends the port, and after the hop.
const BEFORE: u64 = 5;
const AFTER: u64 = 5;
/// How often main posts while the port travels.
const DURING_EVERY: Duration = Duration::from_micros(250);

/// When main posted a message, relative to the hop.
#[derive(Archive, Serialize, Clone, Copy)]
#[rkyv(crate = shmport::rkyv)]
enum Phase {
    /// Before main sent the port away.
    Before,
    /// After main sent it, before the main world answered on it.
    During,
    /// After the main world answered.
    After,
}

/// What main posts on the far end.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Note {
    /// 0, 1, 2, … in the order main posted.
    seq: u64,
    phase: Phase,
    /// The last message: the main world then knows how many to expect.
    last: bool,
}

/// The main world's report: how many messages arrived (all in order).
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct Report {
    received: u64,
}

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return match role.as_str() {
            "preload" => preload(),
            "main-world" => main_world(),
            other => Err(format!("{ROLE_ENV}={other:?}: unknown role").into()),
        };
    }
    if let Some(arg) = std::env::args().nth(1) {
        return Err(format!("unknown argument {arg:?} (this example takes none)").into());
    }
    main_process()
}

fn role_command(role: &str) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role);
    Ok(cmd)
}

// ------------------------------------------------------------------ main

fn main_process() -> Result<()> {
    let (far, travelling) = MessageChannel::new()?.into_ports();
    let mut seq = 0u64;
    let post = |seq: &mut u64, phase: Phase, last: bool| {
        let r = far.post(&Note {
            seq: *seq,
            phase,
            last,
        });
        *seq += 1;
        r
    };

    for _ in 0..BEFORE {
        post(&mut seq, Phase::Before, false)?;
    }
    println!("main: posted {BEFORE} messages on the far end before sending the port");

    let (child, preload_port) = shmport::spawn(role_command("preload")?)?;
    let mut preload = Reaped::new(child);
    preload_port.post_with_ports(&"main-world-port".to_string(), vec![travelling])?;
    println!(
        "main: sent the port to the preload process (pid {})",
        preload.id()
    );

    // Keep posting while the port travels, until the main world answers on
    // the port itself.
    let hop_started = Instant::now();
    let hello = loop {
        post(&mut seq, Phase::During, false)?;
        match far.recv_timeout(DURING_EVERY) {
            Ok(msg) => break msg.get::<String>()?.as_str().to_string(),
            Err(RecvError::Timeout) => {}
            Err(e) => return Err(format!("waiting for the main world: {e}").into()),
        }
        if hop_started.elapsed() > Duration::from_secs(10) {
            return Err("the main world did not answer within 10 s".into());
        }
    };
    let during = seq - BEFORE;
    println!(
        "main: the main world answered {hello:?} after {:.1} ms; posted {during} messages during the hop",
        hop_started.elapsed().as_secs_f64() * 1e3
    );

    for i in 0..AFTER {
        post(&mut seq, Phase::After, i == AFTER - 1)?;
    }
    println!("main: posted {AFTER} messages after the hop");

    let report = far.recv()?;
    let received = report.get::<Report>()?.received.to_native();
    drop(report);
    if received != seq {
        return Err(
            format!("the main world received {received} messages, main posted {seq}").into(),
        );
    }
    // The main world now sees the close event.
    far.close();
    drop(preload_port);
    preload.finish("preload")?;
    println!(
        "forward: all {seq} messages arrived in order ({BEFORE} before, {during} during, {AFTER} after the hop)"
    );
    Ok(())
}

// --------------------------------------------------------------- preload

/// Receive the port from main, start the main world, wait until it has
/// loaded, pass the port on to it.
fn preload() -> Result<()> {
    let up = MessagePort::from_parent()?;
    let mut msg = up.recv()?;
    if msg.get::<String>()?.as_str() != "main-world-port" {
        return Err("preload: expected \"main-world-port\"".into());
    }
    let port = msg.take_ports()?.pop().ok_or("preload: no port came")?;
    drop(msg);
    println!("preload: got the port from main; starting the main world");

    let (child, world) = shmport::spawn(role_command("main-world")?)?;
    let mut main_world = Reaped::new(child);
    // "await windowLoaded": messages posted to the port meanwhile wait in
    // it.
    let loaded = world.recv()?;
    if loaded.get::<String>()?.as_str() != "loaded" {
        return Err("preload: the main world did not say \"loaded\"".into());
    }
    drop(loaded);
    world.post_with_ports(&"main-world-port".to_string(), vec![port])?;
    println!(
        "preload: passed the port on to the main world (pid {})",
        main_world.id()
    );
    main_world.finish("main world")
}

// ------------------------------------------------------------ main world

/// Say "loaded", take the port, answer main on it, read and check every
/// message until the last, report, then wait for the close event.
fn main_world() -> Result<()> {
    let up = MessagePort::from_parent()?;
    up.post(&"loaded".to_string())?;
    let mut msg = up.recv()?;
    if msg.get::<String>()?.as_str() != "main-world-port" {
        return Err("main world: expected \"main-world-port\"".into());
    }
    let port = msg.take_ports()?.pop().ok_or("main world: no port came")?;
    drop(msg);
    port.post(&"hello from the main world".to_string())?;

    let mut next = 0u64;
    loop {
        let msg = port.recv()?;
        let note = msg.get::<Note>()?;
        let seq = note.seq.to_native();
        let when = match note.phase {
            ArchivedPhase::Before => "before",
            ArchivedPhase::During => "during",
            ArchivedPhase::After => "after",
        };
        println!("  main world: message #{seq}, posted {when} the hop");
        if seq != next {
            return Err(format!("main world: expected message #{next}, got #{seq}").into());
        }
        next += 1;
        if note.last {
            break;
        }
    }
    println!(
        "main world: received {next} messages, #0 to #{}, none missing",
        next - 1
    );
    port.post(&Report { received: next })?;
    match port.recv() {
        Err(RecvError::Closed(CloseReason::Closed)) => {
            println!("main world: main closed the port");
            Ok(())
        }
        Ok(_) => Err("main world: a message after the last one".into()),
        Err(e) => Err(format!("main world: expected the close event, got {e}").into()),
    }
}
