//! What travels on a link's socket: announcements that carry a descriptor
//! (an arena, a doorbell, a moved channel's new segment and socket, a
//! buffer of the sender's link pool), each one socket message, sent before
//! anything in shared memory names it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::shm::pool::BufferInfo;
use crate::sys::{self, socket::Incoming};

/// One announcement.
#[derive(Debug)]
pub(crate) enum Control {
    /// Arena `id` of the sender's: its memfd.
    Arena { id: u32, fd: OwnedFd },
    /// Doorbell `index` of the sender's: the socket end to write a wake-up
    /// to when a sleep word names it.
    Doorbell { index: u32, fd: OwnedFd },
    /// The channel on kit `id` at `generation` moved to a segment of its
    /// own: its memfd, and the receiver's end of its new socket pair.
    Moved {
        id: u64,
        generation: u32,
        seg: OwnedFd,
        sock: OwnedFd,
    },
    /// A buffer of the sender's link pool (`super::pool`): its memfd; the
    /// pool's release queue is in the segment at kit number `queue` of the
    /// sender's arenas.
    PoolBuffer {
        queue: u64,
        info: BufferInfo,
        fd: OwnedFd,
    },
}

const ARENA: u8 = 1;
const DOORBELL: u8 = 2;
const MOVED: u8 = 3;
const POOL_BUFFER: u8 = 4;

impl Control {
    /// Send it (blocking while the socket is full). A hung-up peer is
    /// `BrokenPipe`.
    pub(crate) fn send(&self, sock: impl AsFd) -> io::Result<()> {
        let mut body = Vec::with_capacity(16);
        let fds: Vec<_> = match self {
            Control::Arena { id, fd } => {
                body.push(ARENA);
                body.extend_from_slice(&id.to_le_bytes());
                vec![fd.as_fd()]
            }
            Control::Doorbell { index, fd } => {
                body.push(DOORBELL);
                body.extend_from_slice(&index.to_le_bytes());
                vec![fd.as_fd()]
            }
            Control::Moved {
                id,
                generation,
                seg,
                sock,
            } => {
                body.push(MOVED);
                body.extend_from_slice(&id.to_le_bytes());
                body.extend_from_slice(&generation.to_le_bytes());
                vec![seg.as_fd(), sock.as_fd()]
            }
            Control::PoolBuffer { queue, info, fd } => {
                body.push(POOL_BUFFER);
                body.extend_from_slice(&queue.to_le_bytes());
                body.extend_from_slice(&info.id.to_le_bytes());
                body.push(info.log2);
                body.extend_from_slice(&info.blocks.to_le_bytes());
                vec![fd.as_fd()]
            }
        };
        sys::socket::send_attachment(sock, &body, &fds, true, true)
    }

    /// Decode what [`sys::socket::recv`] returned. `Ok(None)`: nothing was
    /// there. A message that is not an announcement is `Err`: the link is
    /// corrupt.
    pub(crate) fn decode(got: Incoming) -> Result<Option<Control>, Got> {
        let (body, fds) = match got {
            Incoming::Empty => return Ok(None),
            Incoming::HungUp | Incoming::Reset => return Err(Got::HungUp),
            Incoming::Attachment(body, fds) => (body, fds),
            _ => return Err(Got::Garbage),
        };
        let mut fds = fds.into_iter();
        let u32_at = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(body.get(i..i + 4)?.try_into().ok()?))
        };
        let c = match (body.first(), body.len(), fds.len()) {
            (Some(&ARENA), 5, 1) => Control::Arena {
                id: u32_at(1).ok_or(Got::Garbage)?,
                fd: fds.next().ok_or(Got::Garbage)?,
            },
            (Some(&DOORBELL), 5, 1) => Control::Doorbell {
                index: u32_at(1).ok_or(Got::Garbage)?,
                fd: fds.next().ok_or(Got::Garbage)?,
            },
            (Some(&MOVED), 13, 2) => Control::Moved {
                id: u64::from_le_bytes(body[1..9].try_into().map_err(|_| Got::Garbage)?),
                generation: u32_at(9).ok_or(Got::Garbage)?,
                seg: fds.next().ok_or(Got::Garbage)?,
                sock: fds.next().ok_or(Got::Garbage)?,
            },
            (Some(&POOL_BUFFER), 18, 1) => Control::PoolBuffer {
                queue: u64::from_le_bytes(body[1..9].try_into().map_err(|_| Got::Garbage)?),
                info: BufferInfo {
                    id: u32_at(9).ok_or(Got::Garbage)?,
                    log2: body[13],
                    blocks: u32_at(14).ok_or(Got::Garbage)?,
                },
                fd: fds.next().ok_or(Got::Garbage)?,
            },
            _ => return Err(Got::Garbage),
        };
        Ok(Some(c))
    }
}

/// A receive that found no announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Got {
    /// The peer's end of the link is gone.
    HungUp,
    /// Something that is not an announcement.
    Garbage,
}
