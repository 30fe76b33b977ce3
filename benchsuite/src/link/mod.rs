//! A link: the two ends of one transport between the suite and a peer
//! process, behind one small interface, so that every transport runs the
//! same measuring code.
//!
//! Each transport module makes the suite's end (starting the peer with
//! whatever the transport needs to reach it) and the peer's end. The peer
//! says it is ready with a control message before anything is timed.

pub mod iox;
mod ipc;
mod serve;
mod shm;
mod stream;

use std::time::Duration;

use crate::payload::{self, Op};
use crate::peer::{self, Cpus, Peer, Watchdog};
use crate::plan::{Kind, Transport};
use crate::{Result, cleanup};

pub use serve::serve;

/// The operations every transport offers.
pub trait Link {
    /// Send one message with these bytes.
    fn send(&mut self, payload: &[u8]) -> Result<()>;

    /// Wait for the next message (`len` bytes) and give its bytes to `f`:
    /// in place where the transport allows it, else from a buffer the
    /// transport filled.
    fn recv<R>(&mut self, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R>;

    /// Receive one message (`len` bytes), give it to `f`, and send the same
    /// bytes back if `f` returns `true`. Returns what `f` returned.
    fn echo(&mut self, len: usize, f: impl FnOnce(&[u8]) -> bool) -> Result<bool>;
}

/// What the peer does with the messages of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send every message back (round trips): both directions carry the
    /// payload.
    Echo,
    /// Count messages and ack each batch with a control message (one-way
    /// throughput): the way back carries only acks.
    Sink,
}

/// One session: a transport, a payload size, a peer mode.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub transport: Transport,
    pub size: usize,
    pub mode: Mode,
    /// Check every byte of every message (quick mode), not just the stamps.
    pub verify: bool,
}

impl Session {
    /// Largest message from the suite to the peer.
    pub fn out_len(&self) -> usize {
        self.size
    }

    /// Largest message from the peer to the suite.
    pub fn back_len(&self) -> usize {
        match self.mode {
            Mode::Echo => self.size.max(payload::CTRL_LEN),
            Mode::Sink => payload::CTRL_LEN,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            self.transport.code(),
            match self.mode {
                Mode::Echo => "echo".into(),
                Mode::Sink => "sink".into(),
            },
            self.size.to_string(),
            u8::from(self.verify).to_string(),
        ]
    }

    pub fn parse(args: &[String]) -> Option<Session> {
        let [t, mode, size, verify] = args else {
            return None;
        };
        Some(Session {
            transport: Transport::parse(t)?,
            mode: match mode.as_str() {
                "echo" => Mode::Echo,
                "sink" => Mode::Sink,
                _ => return None,
            },
            size: size.parse().ok()?,
            verify: verify == "1",
        })
    }

    /// A name unique within the run, for rendezvous names.
    fn tag(&self) -> String {
        let t = self.transport.code().replace('/', "-");
        let mode = match self.mode {
            Mode::Echo => "echo",
            Mode::Sink => "sink",
        };
        format!("{t}-{mode}-{}", self.size)
    }
}

/// What the suite runs on a live link; generic over the link, so each
/// transport gets its own compiled copy of the measuring loops.
pub trait Work {
    type Out;
    fn run<L: Link>(self, link: &mut L) -> Result<Self::Out>;
}

/// Start a peer for `session`, wait for it to be ready, run `work`, stop the
/// peer and reap it. Fails if the peer reports damaged messages (it exits
/// non-zero) or hangs (`limit`).
pub fn run<W: Work>(session: Session, cpus: Cpus, limit: Duration, work: W) -> Result<W::Out> {
    let cmd = peer::command(&session.args(), cpus)?;
    match session.transport.kind {
        Kind::ShmRaw | Kind::ShmTyped => {
            let (link, child) = shm::parent(&session, cmd)?;
            drive(session, link, child, limit, work)
        }
        Kind::Uds => {
            let (link, child) = stream::parent_socket(&session, cmd)?;
            drive(session, link, child, limit, work)
        }
        Kind::Pipe => {
            let (link, child) = stream::parent_pipes(&session, cmd)?;
            drive(session, link, child, limit, work)
        }
        Kind::IpcChannel => {
            let (link, child) = ipc::parent(&session, cmd, limit)?;
            drive(session, link, child, limit, work)
        }
        Kind::Iceoryx2 => {
            let (link, child) = iox::parent(&session, cmd, &session.tag())?;
            drive(session, link, child, limit, work)
        }
    }
}

fn drive<L: Link, W: Work>(
    session: Session,
    mut link: L,
    peer: Peer,
    limit: Duration,
    work: W,
) -> Result<W::Out> {
    let what = format!(
        "{} ({}, {})",
        session.transport.name(),
        session.transport.wait.label(),
        crate::plan::size_label(session.size)
    );
    let watchdog = Watchdog::new(peer.id(), limit, what, cleanup::emergency);
    let result = (|| {
        let ready = link.recv(payload::CTRL_LEN, payload::read_control)?;
        if !matches!(ready, Some((Op::Ready, _, 0))) {
            return Err(format!("the peer's ready message is wrong: {ready:?}").into());
        }
        let out = work.run(&mut link)?;
        let mut stop = payload::pattern(session.size);
        payload::stamp(&mut stop, u64::MAX, Op::Stop);
        link.send(&stop)?;
        Ok(out)
    })();
    drop(watchdog);
    // Close the suite's end before waiting: a peer that missed the stop
    // message sees the close.
    drop(link);
    match result {
        Ok(out) => {
            peer.finish()?;
            Ok(out)
        }
        // The peer is killed and reaped as `peer` drops.
        Err(e) => Err(e),
    }
}
