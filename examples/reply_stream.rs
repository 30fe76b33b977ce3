//! Reply streams: one request, a stream of replies, then the close event.
//!
//! ```text
//! cargo run --example reply_stream
//! ```
//!
//! A request-response IPC gives one answer per request. With ports, a
//! request can carry a fresh port, and the responder streams as many
//! messages as it likes on it, then closes it: the requester reads every
//! message and then the close event, which says "stream ended". Channels
//! are cheap, so each request gets its own.
//!
//! The requester (this program) starts a copy of itself as the responder
//! (with `SHMPORT_REPLY_STREAM_ROLE=responder` set, `main` plays the
//! responder). For each request it makes a `MessageChannel`, keeps one end
//! and posts the request with the other end attached. All requests are in
//! flight before the requester reads the first stream: each stream waits in
//! its own port. The responder exits when the requester's port closes; the
//! requester waits for it.

use std::error::Error;
use std::process::Command;

use shmport::rkyv::{Archive, Serialize};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

mod common;
use common::Reaped;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Which role a re-executed copy plays.
const ROLE_ENV: &str = "SHMPORT_REPLY_STREAM_ROLE";

/// The requests: (element, count) — "send me `count` messages about
/// `element`".
const REQUESTS: [(u64, u32); 4] = [(42, 10), (7, 3), (1000, 1), (99, 25)];

/// "Give me a stream": its reply port travels with it.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct StreamRequest {
    element: u64,
    count: u32,
}

/// One message of a stream.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
struct StreamItem {
    element: u64,
    /// 0, 1, 2, … within its stream.
    seq: u32,
}

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return match role.as_str() {
            "responder" => responder(),
            other => Err(format!("{ROLE_ENV}={other:?}: unknown role").into()),
        };
    }
    if let Some(arg) = std::env::args().nth(1) {
        return Err(format!("unknown argument {arg:?} (this example takes none)").into());
    }
    requester()
}

// ------------------------------------------------------------- requester

fn requester() -> Result<()> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "responder");
    let (child, port) = shmport::spawn(cmd)?;
    let mut responder = Reaped::new(child);
    println!("requester: started the responder (pid {})", responder.id());

    // One fresh channel per request; the responder gets the far end.
    let mut streams = Vec::new();
    for (element, count) in REQUESTS {
        let (mine, theirs) = MessageChannel::new()?.into_ports();
        port.post_with_ports(&StreamRequest { element, count }, vec![theirs])?;
        println!("requester: asked for {} about {element}", messages(count));
        streams.push((element, count, mine));
    }

    let mut total = 0;
    for (element, count, stream) in &streams {
        total += read_stream(*element, *count, stream)?;
    }

    // Closing our port ends the responder.
    drop(port);
    responder.finish("responder")?;
    println!(
        "reply_stream: {} requests, {total} messages, every stream ended after exactly the messages asked for",
        REQUESTS.len()
    );
    Ok(())
}

/// Read one stream to its close event; check every message.
fn read_stream(element: u64, count: u32, stream: &MessagePort) -> Result<u32> {
    let mut got = 0u32;
    loop {
        match stream.recv() {
            Ok(msg) => {
                let item = msg.get::<StreamItem>()?;
                let (e, seq) = (item.element.to_native(), item.seq.to_native());
                println!("  got response data: {e} (#{seq} of the stream for {element})");
                if e != element || seq != got {
                    return Err(
                        format!("stream for {element}: message #{got} was {e} #{seq}").into(),
                    );
                }
                got += 1;
            }
            Err(RecvError::Closed(CloseReason::Closed)) => {
                println!("stream ended (request for {element}: {})", messages(got));
                break;
            }
            Err(e) => return Err(format!("stream for {element}: {e}").into()),
        }
    }
    if got != count {
        return Err(format!("stream for {element}: {got} messages, asked for {count}").into());
    }
    Ok(got)
}

/// "1 message", "3 messages".
fn messages(n: u32) -> String {
    if n == 1 {
        "1 message".to_string()
    } else {
        format!("{n} messages")
    }
}

// ------------------------------------------------------------- responder

/// For each request: take its reply port, stream `count` messages on it,
/// close it. Exit when the requester's port closes.
fn responder() -> Result<()> {
    let port = MessagePort::from_parent()?;
    loop {
        let mut msg = match port.recv() {
            Ok(msg) => msg,
            Err(RecvError::Closed(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let req = msg.get::<StreamRequest>()?;
        let (element, count) = (req.element.to_native(), req.count.to_native());
        let reply = msg
            .take_ports()?
            .pop()
            .ok_or("a request without its port")?;
        drop(msg);
        for seq in 0..count {
            reply.post(&StreamItem { element, seq })?;
        }
        // The requester reads every message, then the close event.
        reply.close();
        println!(
            "responder: streamed {} about {element}, closed the port",
            messages(count)
        );
    }
}
