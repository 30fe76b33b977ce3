//! Byte streams: a Unix domain socket pair (`SOCK_STREAM`) or two pipes.
//! Each message is one `write_all` of its bytes and one `read_exact` into
//! the receiver's buffer; both sizes are known to both sides, so there is
//! no framing. The peer gets its end as its standard input (socket, or the
//! pipe towards it) and standard output (the pipe back).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use super::{Link, Session};
use crate::Result;
use crate::peer::Peer;

pub struct StreamLink {
    rd: File,
    wr: File,
    buf: Vec<u8>,
}

impl StreamLink {
    fn new(rd: OwnedFd, wr: OwnedFd, max_in: usize) -> StreamLink {
        StreamLink {
            rd: File::from(rd),
            wr: File::from(wr),
            buf: vec![0; max_in],
        }
    }
}

pub fn parent_socket(session: &Session, mut cmd: Command) -> Result<(StreamLink, Peer)> {
    let (mine, theirs) = UnixStream::pair()?;
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
    let child = cmd.spawn()?;
    // `cmd` held the peer's end: drop it so that only the peer has it.
    drop(cmd);
    let peer = Peer::new(child, "unix socket".into());
    let mine = OwnedFd::from(mine);
    let rd = mine.try_clone()?;
    Ok((StreamLink::new(rd, mine, session.back_len()), peer))
}

pub fn child_socket(session: &Session) -> Result<StreamLink> {
    let sock = io::stdin().as_fd().try_clone_to_owned()?;
    let wr = sock.try_clone()?;
    Ok(StreamLink::new(sock, wr, session.out_len()))
}

pub fn parent_pipes(session: &Session, mut cmd: Command) -> Result<(StreamLink, Peer)> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn()?;
    drop(cmd);
    let (to, from) = (child.stdin.take(), child.stdout.take());
    let peer = Peer::new(child, "pipe".into());
    let (Some(to), Some(from)) = (to, from) else {
        return Err("pipe peer: no stdin/stdout pipes".into());
    };
    Ok((
        StreamLink::new(OwnedFd::from(from), OwnedFd::from(to), session.back_len()),
        peer,
    ))
}

pub fn child_pipes(session: &Session) -> Result<StreamLink> {
    let rd = io::stdin().as_fd().try_clone_to_owned()?;
    let wr = io::stdout().as_fd().try_clone_to_owned()?;
    Ok(StreamLink::new(rd, wr, session.out_len()))
}

impl StreamLink {
    fn fill(&mut self, len: usize) -> Result<&[u8]> {
        if len > self.buf.len() {
            return Err(format!("a {len}-byte message on a {}-byte link", self.buf.len()).into());
        }
        self.rd.read_exact(&mut self.buf[..len])?;
        Ok(&self.buf[..len])
    }
}

impl Link for StreamLink {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.wr.write_all(payload)?;
        Ok(())
    }

    fn recv<R>(&mut self, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        Ok(f(self.fill(len)?))
    }

    fn echo(&mut self, len: usize, f: impl FnOnce(&[u8]) -> bool) -> Result<bool> {
        self.fill(len)?;
        let again = f(&self.buf[..len]);
        if again {
            self.wr.write_all(&self.buf[..len])?;
        }
        Ok(again)
    }
}
