//! The peer's side of a session: open the peer's end of the link, say
//! ready, then echo or sink the suite's messages until the stop message,
//! checking each one. Written once over [`Link`], like the suite's
//! measuring loops (`measure.rs`).

use std::hint::black_box;

use super::{Link, Mode, Session, iox, ipc, shm, stream};
use crate::Result;
use crate::payload::{self, Op};
use crate::plan::Kind;

/// In the peer process: open the peer's end for `session`, say ready, and
/// serve until the stop message. Damaged messages make it fail.
pub fn serve(session: Session) -> Result<()> {
    match session.transport.kind {
        Kind::ShmRaw | Kind::ShmTyped => serve_on(session, shm::child(&session)?),
        Kind::Uds => serve_on(session, stream::child_socket(&session)?),
        Kind::Pipe => serve_on(session, stream::child_pipes(&session)?),
        Kind::IpcChannel => serve_on(session, ipc::child()?),
        Kind::Iceoryx2 => serve_on(session, iox::child(&session)?),
    }
}

fn serve_on<L: Link>(session: Session, mut link: L) -> Result<()> {
    link.send(&payload::control(Op::Ready, 0, 0))?;
    let errors = match session.mode {
        Mode::Echo => echo_loop(&mut link, session.size, session.verify)?,
        Mode::Sink => sink_loop(&mut link, session.size, session.verify)?,
    };
    if errors > 0 {
        return Err(format!("{errors} messages arrived damaged or out of order").into());
    }
    Ok(())
}

/// The peer's echo loop: check each payload, send it back, until the stop
/// message. Returns the number of damaged or out-of-order messages.
fn echo_loop<L: Link>(link: &mut L, size: usize, verify: bool) -> Result<u64> {
    let pattern = payload::pattern(size);
    let mut expected = 0u64;
    let mut errors = 0u64;
    loop {
        let mut stop = false;
        link.echo(size, |b| {
            match payload::read(b) {
                Some((_, Op::Stop)) => {
                    stop = true;
                    return false;
                }
                Some((seq, Op::Data)) if seq == expected => {
                    if verify && !payload::body_intact(b, &pattern) {
                        errors += 1;
                    }
                }
                _ => errors += 1,
            }
            expected += 1;
            true
        })?;
        if stop {
            return Ok(errors);
        }
    }
}

/// The peer's sink loop: check and count each payload; after one marked
/// last, send an ack with the count and the errors seen in the batch.
fn sink_loop<L: Link>(link: &mut L, size: usize, verify: bool) -> Result<u64> {
    let pattern = payload::pattern(size);
    let mut expected = 0u64;
    let mut errors = 0u64;
    let mut batch_errors = 0u64;
    let mut count = 0u64;
    loop {
        let got = link.recv(size, |b| {
            let stamps = payload::read(b);
            let intact = !verify || payload::body_intact(b, &pattern);
            // Touch the payload the cheap way on the fast path: the two
            // stamps were read above.
            black_box(b.len());
            (stamps, intact)
        })?;
        match got {
            (Some((_, Op::Stop)), _) => return Ok(errors),
            (Some((seq, op @ (Op::Data | Op::Last))), intact) => {
                if seq != expected || !intact {
                    batch_errors += 1;
                }
                expected = seq + 1;
                count += 1;
                if op == Op::Last {
                    link.send(&payload::control(Op::Ack, count, batch_errors))?;
                    errors += batch_errors;
                    count = 0;
                    batch_errors = 0;
                }
            }
            _ => {
                batch_errors += 1;
                expected += 1;
                count += 1;
            }
        }
    }
}
