//! `shmport-zenoh-bridge`: a local rendezvous path whose every connection
//! is forwarded to a port server on another host, over zenoh. C, C++ and
//! Python programs then reach the remote peer with shmport's ordinary
//! `connect` (`shmport_connect` in C), without linking zenoh.
//!
//! ```text
//! shmport-zenoh-bridge --path /run/app/worker.sock --key jobs/worker \
//!     [--listen tcp/127.0.0.1:7448] [--connect tcp/10.0.0.2:7447]... \
//!     [--lease-ms 10000] [--ready]
//! ```
//!
//! It runs until killed; each connection's bridge ends with it (the remote
//! side then sees `PeerDied`). With `--ready` it prints `ready` once the
//! path accepts connections.

use std::process::ExitCode;
use std::time::Duration;

use shmport::{CloseReason, Listener};
use shmport_zenoh::{Options, connect_port, peer_config};
use zenoh::Wait;

/// What the command line asks for.
struct Args {
    path: String,
    key: String,
    listen: Vec<String>,
    connect: Vec<String>,
    lease: Duration,
    ready: bool,
}

const USAGE: &str = "usage: shmport-zenoh-bridge --path <rendezvous path> --key <zenoh key> \
[--listen <zenoh endpoint>]... [--connect <zenoh endpoint>]... [--lease-ms <ms>] [--ready]";

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        path: String::new(),
        key: String::new(),
        listen: Vec::new(),
        connect: Vec::new(),
        lease: Duration::from_secs(10),
        ready: false,
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--path" => args.path = value()?,
            "--key" => args.key = value()?,
            "--listen" => args.listen.push(value()?),
            "--connect" => args.connect.push(value()?),
            "--lease-ms" => {
                let ms = value()?;
                let ms: u64 = ms.parse().map_err(|_| format!("bad --lease-ms {ms:?}"))?;
                args.lease = Duration::from_millis(ms);
            }
            "--ready" => args.ready = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.path.is_empty() || args.key.is_empty() {
        return Err("--path and --key are required".into());
    }
    Ok(args)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listen: Vec<&str> = args.listen.iter().map(String::as_str).collect();
    let connect: Vec<&str> = args.connect.iter().map(String::as_str).collect();
    let session = zenoh::open(peer_config(&listen, &connect, args.lease)?).wait()?;
    let listener = Listener::bind(&args.path)?;
    if args.ready {
        println!("ready");
    }
    let options = Options::new();
    loop {
        let port = listener.accept()?.accept()?;
        if let Err(e) = connect_port(&session, &args.key, port, &options) {
            eprintln!("shmport-zenoh-bridge: {}: {}", args.key, e.error);
            // The local program sees the remote side as gone.
            e.port.close_with_reason(CloseReason::PeerDied);
        }
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmport-zenoh-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
