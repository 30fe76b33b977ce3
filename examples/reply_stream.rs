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
//!
//! ```text
//! cargo run --release --example reply_stream -- --time 10000
//! ```
//!
//! then also makes 10,000 more requests of one message each, one after the
//! other, and prints what one took (the channel, the request, the message
//! and the close event): channels made per request come back as kits of
//! the channel that carried them, with no system call (ARCHITECTURE.md,
//! "Kits").

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let timed = match args.as_slice() {
        [] => None,
        [flag, n] if flag == "--time" => Some(n.parse::<u32>()?),
        _ => return Err(format!("unknown arguments {args:?} (only --time N)").into()),
    };
    requester(timed)
}

// ------------------------------------------------------------- requester

fn requester(timed: Option<u32>) -> Result<()> {
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

    if let Some(n) = timed {
        time_requests(&port, n)?;
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

/// `n` requests of one message each, one after the other: print the
/// median time of one, over batches of 1,000.
fn time_requests(port: &MessagePort, n: u32) -> Result<()> {
    let mut batches = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let start = std::time::Instant::now();
        for i in 0..k {
            let (mine, theirs) = MessageChannel::new()?.into_ports();
            let element = u64::from(i);
            port.post_with_ports(&StreamRequest { element, count: 1 }, vec![theirs])?;
            if read_quietly(&mine)? != element {
                return Err("a reply to another request".into());
            }
        }
        batches.push(start.elapsed() / k);
        left -= k;
    }
    batches.sort();
    println!(
        "requester: {n} requests of one message each, one at a time: {:?} per request (median of {} batches)",
        batches[batches.len() / 2],
        batches.len()
    );
    Ok(())
}

/// The one message of a stream, then its close event.
fn read_quietly(stream: &MessagePort) -> Result<u64> {
    let element = stream.recv()?.get::<StreamItem>()?.element.to_native();
    match stream.recv() {
        Err(RecvError::Closed(CloseReason::Closed)) => Ok(element),
        other => Err(format!("after the one message: {:?}", other.map(|_| ())).into()),
    }
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
