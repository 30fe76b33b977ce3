//! shmport: a port from `spawn` / `from_parent`, raw bytes or a typed rkyv
//! message, spin or block.

use std::process::Command;
use std::time::Duration;

use shmport::rkyv::with::InlineAsBox;
use shmport::rkyv::{Archive, Serialize};
use shmport::{Message, MessageChannel, MessagePort};

use super::{Link, Session};
use crate::peer::Peer;
use crate::plan::{Kind, Wait};
use crate::{Result, payload};

/// Spin "for ever" on the busy-poll path: a receiver never parks while the
/// run goes on.
pub const SPIN_FOREVER: Duration = Duration::from_secs(10);

/// The typed message: the payload bytes as an rkyv boxed slice, borrowed
/// when serialized (no copy into a `Vec` first), read in place as
/// `&[u8]` after validation; and the sequence number as a field.
#[derive(Archive, Serialize)]
#[rkyv(crate = shmport::rkyv)]
pub struct Frame<'a> {
    pub seq: u64,
    #[rkyv(with = InlineAsBox)]
    pub data: &'a [u8],
}

pub struct ShmLink {
    port: MessagePort,
    typed: bool,
}

fn spin(session: &Session) -> Duration {
    match session.transport.wait {
        Wait::BusyPoll => SPIN_FOREVER,
        Wait::Sleep => Duration::ZERO,
    }
}

pub fn parent(session: &Session, cmd: Command) -> Result<(ShmLink, Peer)> {
    let capacity = session.transport.ring.capacity(session.size);
    // The builder passes the spin time to the peer's port too.
    let (child, port) = MessageChannel::builder()
        .capacity(capacity)
        .spin(spin(session))
        .spawn(cmd)?;
    let peer = Peer::new(child, session.transport.name().to_string());
    Ok((
        ShmLink {
            port,
            typed: session.transport.kind == Kind::ShmTyped,
        },
        peer,
    ))
}

pub fn child(session: &Session) -> Result<ShmLink> {
    let port = MessagePort::from_parent()?;
    port.set_spin(spin(session));
    Ok(ShmLink {
        port,
        typed: session.transport.kind == Kind::ShmTyped,
    })
}

impl ShmLink {
    fn post(&self, bytes: &[u8]) -> Result<()> {
        if self.typed {
            let seq = payload::read(bytes).map_or(0, |(seq, _)| seq);
            self.port.post(&Frame { seq, data: bytes })?;
        } else {
            self.port.post_bytes(bytes)?;
        }
        Ok(())
    }
}

/// The payload of a message: its bytes (raw), or the validated frame's
/// data (typed; the frame's seq must match the data's stamp).
fn body<'m>(msg: &'m Message<'_>, typed: bool) -> Result<&'m [u8]> {
    if !typed {
        return Ok(msg.bytes());
    }
    let frame = msg.get::<Frame<'static>>()?;
    let data: &[u8] = frame.data.get();
    if payload::read(data).map(|(seq, _)| seq) != Some(frame.seq.to_native()) {
        return Err("typed frame: its seq field does not match its data".into());
    }
    Ok(data)
}

impl Link for ShmLink {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.post(payload)
    }

    fn recv<R>(&mut self, _len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let msg = self.port.recv()?;
        Ok(f(body(&msg, self.typed)?))
    }

    fn echo(&mut self, _len: usize, f: impl FnOnce(&[u8]) -> bool) -> Result<bool> {
        let msg = self.port.recv()?;
        let bytes = body(&msg, self.typed)?;
        let again = f(bytes);
        if again {
            // Straight from the received message into the ring: one copy.
            self.post(bytes)?;
        }
        Ok(again)
    }
}
