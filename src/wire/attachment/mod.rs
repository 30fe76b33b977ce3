//! How descriptors travel with a record: out-of-line payloads and
//! transferred ports.
//!
//! A record that needs descriptors (flag "out of line", or a port count
//! above zero) is preceded on the port's socket by exactly one
//! **attachment**: a small body and all the descriptors. The sender sends
//! it before committing the record; the receiver takes attachments in
//! order, one per such record.
//!
//! A pooled record needs an attachment only for its buffer's first use:
//! the attachment then **announces** the pool buffer (its id, block size
//! and count, and its memfd).
//!
//! ```text
//! attachment := payload u8 (0: none; 1: out-of-line memfd; 2: descriptors
//!               lost; 3: a pool buffer announced) | [buffer, if 3]
//!               | nports u16 | port{nports}
//! buffer     := id u32 | log2 u8 | blocks u32
//! port       := flags u8 (bit 0: side B; bit 1: a partial follows;
//!               bit 2: pool buffers follow; bit 3: the far end of a kit of
//!               the channel it travels on; bit 4: held kits follow; bit 5:
//!               link invitations follow)
//!               | spin_ns u64 | inbox_len u32 | attachment{inbox_len} | [partial]
//!               | [nbuffers u16 | buffer{nbuffers}] | [nkits u16 | kit{nkits}]
//!               | [nlinks u16 | link id u64{nlinks}]
//! kit        := id u64 | side u8 (0: A, 1: B)
//! partial    := lost u8 (0, 1) | len u32 | bytes{len} | nfds u32
//! descriptors, in the same depth-first order:
//!   [ool or buffer memfd] then per port: socket, segment memfd, its inbox's
//!   descriptors, its partial's nfds descriptors, its buffers' memfds,
//!   then per held kit: socket, segment memfd, then per link invitation:
//!   its socket
//! ```
//!
//! A port carries the buffers of its peer's pool that it has mapped (the
//! records queued on it may name them); the pool it owned for sending
//! stays behind (its new owner makes its own). It also carries the idle
//! kit ends it held for the channels it carries (their creator may name
//! them in records still queued or yet to come), and a port that is a
//! kit's far end says so (bit 3: its number and generation are in its
//! segment's header), so its receiver keeps the kit when the port closes
//! (`src/port/kit.rs`). Link invitations its end took in and has not yet
//! needed (no record it read named the link: `src/port/shared.rs`) travel
//! with it too, for records still queued or yet to come that name them.
//!
//! **On the socket**, an attachment that fits one `SOCK_SEQPACKET` message
//! (body up to 4095 bytes, up to 253 descriptors) is one message tagged
//! `A`, so it arrives whole or not at all. A larger one is split into
//! parts, each one message: the body in slices of 4095 bytes and the
//! descriptors in runs of 253, part `i` carrying slice `i` and run `i`
//! (either may be empty), every part but the last tagged `M`, the last
//! `A`. The sender sends the parts back to back before committing the
//! record (wake tokens from the other half may come between them). The
//! receiver gathers parts in the port's core ([`Partial`], under the lock
//! that makes a receive and its queuing one step for the other half) and
//! decodes the attachment at its last part, so its inbox only ever holds
//! whole attachments. A receiver accepts at most [`MAX_ATTACH_BODY`] bytes
//! and [`MAX_ATTACH_FDS`] descriptors in one attachment (more is a protocol
//! error, and what came is closed); a sender refuses to send more
//! ([`PostError::TooManyPorts`](crate::PostError::TooManyPorts)). If one
//! part's descriptors are lost on receipt, the whole attachment is.
//!
//! A transferred port carries its **inbox**: attachments it already took off
//! its socket for records it has not read yet. Attachments still queued in
//! its socket move with the socket itself. A port that has taken in some
//! parts of an attachment still arriving carries them as its **partial**
//! (body bytes as received, not decoded); its new owner gathers the rest
//! from the socket. So the messages queued on a port, and the ports inside
//! them, move with it through any number of hops.
//!
//! Ports nest: a port in a port's inbox has an inbox of its own. A receiver
//! accepts at most [`MAX_DEPTH`] levels; a sender checks before sending
//! ([`scan`]) and refuses deeper nesting
//! ([`PostError::NestedTooDeep`](crate::PostError::NestedTooDeep)).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::shm::pool::BufferInfo;
use crate::shm::pool::reader::MAX_BUFFERS;
use crate::shm::ring::Corrupt;
use crate::shm::segment::{Segment, Side};
use crate::sys::socket::{MAX_BODY, MAX_FDS};

/// First byte of an attachment forwarded in an inbox after its descriptors
/// were lost on receipt.
const LOST: u8 = 2;
/// First byte of an attachment that announces a pool buffer.
const ANNOUNCE: u8 = 3;

/// Deepest nesting of ports inside ports' inboxes a receiver accepts: the
/// attachment a record refers to is at depth 0, the attachments in the
/// inbox of a port it carries at depth 1, and so on.
pub(crate) const MAX_DEPTH: usize = 16;

/// Most body bytes one attachment (all its parts) may have.
pub(crate) const MAX_ATTACH_BODY: usize = 256 * 1024;

/// Most descriptors one attachment (all its parts) may carry.
pub(crate) const MAX_ATTACH_FDS: usize = 16 * 1024;

/// Body bytes in one part (the tag takes the message's first byte).
const PART_BODY: usize = MAX_BODY - 1;

/// Flag bit of a port's first byte: side B (else A).
const SIDE_B: u8 = 1;
/// Flag bit of a port's first byte: a partial follows its inbox.
const HAS_PARTIAL: u8 = 2;
/// Flag bit of a port's first byte: pool buffers follow.
const HAS_POOL: u8 = 4;
/// Flag bit of a port's first byte: the port is the far end of a new kit
/// of the channel it travels on (its number and generation are in its
/// segment's header).
const KIT_TAG: u8 = 8;
/// Flag bit of a port's first byte: idle kits it holds for the channels it
/// carries travel with it.
const HAS_KITS: u8 = 16;
/// Flag bit of a port's first byte: link invitations it took in and has
/// not used travel with it.
const HAS_LINKS: u8 = 32;
/// Most link invitations one port holds unused (an honest peer sends one
/// while the far end of the last is alive, and a new one only after the
/// port's end moved).
pub(crate) const MAX_INVITATIONS: usize = 16;
/// Most held kits one port carries (the peer made at most this many idle
/// kits, plus those whose ports it still holds).
pub(crate) const MAX_HELD_KITS: usize = 4096;

/// The descriptors that travel with one record.
#[derive(Default)]
pub(crate) struct Attachment {
    /// The memfd of an out-of-line payload.
    pub ool: Option<OwnedFd>,
    /// A pool buffer announced (its first use, by this record).
    pub pool: Option<(BufferInfo, OwnedFd)>,
    /// Transferred ports, in the order they were posted.
    pub ports: Vec<PortParts>,
    /// Its descriptors were lost on receipt (out of descriptors): the
    /// record it belongs to cannot be delivered, but the pairing of later
    /// records with their attachments is kept.
    pub lost: bool,
}

/// A port taken apart for travel: what is needed to rebuild it.
pub(crate) struct PortParts {
    /// The segment: mapped (on the sending side) or a descriptor not yet
    /// checked (on the receiving side).
    pub seg: SegmentRef,
    pub sock: OwnedFd,
    pub side: Side,
    pub spin: Duration,
    pub inbox: VecDeque<Attachment>,
    /// The parts of an attachment it had taken in when it left.
    pub partial: Partial,
    /// The buffers of its peer's pool it had mapped.
    pub pool: Vec<(BufferInfo, OwnedFd)>,
    /// The far end of a kit of the channel it travels on (its number and
    /// generation are in its segment's header; `src/port/kit.rs`).
    pub kit: bool,
    /// The idle kit ends it held for the channels it carries.
    pub held: Vec<KitParts>,
    /// Invitations to links its peer made (number, socket) that no record
    /// it read has named yet.
    pub links: Vec<(u64, OwnedFd)>,
}

/// One idle end of a kit, travelling with the port whose channel carries
/// its channels.
pub(crate) struct KitParts {
    pub id: u64,
    pub seg: SegmentRef,
    pub sock: OwnedFd,
    pub side: Side,
}

pub(crate) enum SegmentRef {
    Mapped(Arc<Segment>),
    Unopened(OwnedFd),
}

impl SegmentRef {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            SegmentRef::Mapped(s) => s.as_fd(),
            SegmentRef::Unopened(fd) => fd.as_fd(),
        }
    }

    /// Is this the shared memory of `seg` (compared by the memfd's
    /// identity, for a descriptor not mapped here)?
    fn is(&self, seg: &Arc<Segment>) -> bool {
        match self {
            SegmentRef::Mapped(s) => s.same(seg),
            SegmentRef::Unopened(fd) => match (crate::sys::memfd::file_id(fd), seg.id()) {
                (Ok(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

/// The parts of an attachment received so far, when it comes in several
/// socket messages: its body bytes and descriptors, not decoded until the
/// last part. Kept in the port's core under the lock that makes a receive
/// and its queuing one step (`port::Shared::taking_in`).
#[derive(Default)]
pub(crate) struct Partial {
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// A part's descriptors were lost on receipt: the rest is dropped as it
    /// comes, and the last part gives the placeholder of a lost attachment.
    lost: bool,
}

impl Partial {
    /// Nothing gathered (no part, or parts that carried nothing).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty() && self.fds.is_empty() && !self.lost
    }

    /// Take in one part: its body and descriptors (`None`: they were lost
    /// on receipt). At the `last` part, the whole attachment. An attachment
    /// larger than a receiver accepts, or that does not decode, is refused:
    /// everything gathered is closed.
    pub fn take(
        &mut self,
        body: &[u8],
        fds: Option<Vec<OwnedFd>>,
        last: bool,
    ) -> Result<Option<Attachment>, Corrupt> {
        match fds {
            None => *self = Partial::lost(),
            // One message, the common case: decode it in place.
            Some(fds) if last && self.is_empty() => return Attachment::decode(body, fds).map(Some),
            Some(fds) if !self.lost => {
                if self.body.len() + body.len() > MAX_ATTACH_BODY
                    || self.fds.len() + fds.len() > MAX_ATTACH_FDS
                {
                    *self = Partial::default();
                    return Err(Corrupt("attachment larger than a receiver accepts"));
                }
                self.body.extend_from_slice(body);
                self.fds.extend(fds);
            }
            // After a lost part, the rest of the attachment is closed too.
            Some(_) => {}
        }
        if !last {
            return Ok(None);
        }
        let whole = std::mem::take(self);
        if whole.lost {
            return Ok(Some(Attachment::lost()));
        }
        Attachment::decode(&whole.body, whole.fds).map(Some)
    }

    fn lost() -> Partial {
        Partial {
            lost: true,
            ..Partial::default()
        }
    }

    fn encode<'a>(&'a self, body: &mut Vec<u8>, fds: &mut Vec<BorrowedFd<'a>>) {
        body.push(self.lost as u8);
        body.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        body.extend_from_slice(&self.body);
        body.extend_from_slice(&(self.fds.len() as u32).to_le_bytes());
        fds.extend(self.fds.iter().map(|f| f.as_fd()));
    }

    fn decode(body: &mut &[u8], fds: &mut impl Iterator<Item = OwnedFd>) -> Result<Self, Corrupt> {
        let lost = match take::<1>(body)?[0] {
            0 => false,
            1 => true,
            _ => return Err(Corrupt("bad lost flag in a partial attachment")),
        };
        let len = u32::from_le_bytes(take::<4>(body)?) as usize;
        if len > MAX_ATTACH_BODY || len > body.len() {
            return Err(Corrupt("attachment cut short"));
        }
        let (bytes, rest) = body.split_at(len);
        *body = rest;
        let nfds = u32::from_le_bytes(take::<4>(body)?) as usize;
        if nfds > MAX_ATTACH_FDS {
            return Err(Corrupt("attachment cut short"));
        }
        if lost && (len != 0 || nfds != 0) {
            return Err(Corrupt("a lost partial attachment carries bytes"));
        }
        let mut got = Vec::with_capacity(nfds.min(MAX_FDS));
        for _ in 0..nfds {
            got.push(fds.next().ok_or(Corrupt("attachment cut short"))?);
        }
        Ok(Partial {
            body: bytes.to_vec(),
            fds: got,
            lost,
        })
    }
}

/// The socket messages an encoded attachment travels in, in order: each
/// part's body slice and descriptors, and whether it is the last. One part
/// when it fits one message.
pub(crate) fn parts<'b, 'f>(
    body: &'b [u8],
    fds: &'f [BorrowedFd<'f>],
) -> impl Iterator<Item = (&'b [u8], &'f [BorrowedFd<'f>], bool)> {
    let n = body
        .len()
        .div_ceil(PART_BODY)
        .max(fds.len().div_ceil(MAX_FDS))
        .max(1);
    (0..n).map(move |i| {
        let slice = |len: usize, chunk: usize| (len.min(i * chunk), len.min((i + 1) * chunk));
        let (b0, b1) = slice(body.len(), PART_BODY);
        let (f0, f1) = slice(fds.len(), MAX_FDS);
        (&body[b0..b1], &fds[f0..f1], i + 1 == n)
    })
}

/// What a sender sees in the inbox of a port it is about to send (after
/// taking in what its socket held).
pub(crate) struct Scan {
    /// How deep the attachments in it nest: 0 for an empty inbox, else one
    /// more than the deepest inbox of a port inside (the depth at which the
    /// receiver would decode its deepest attachment).
    pub depth: usize,
    /// The peer of the sending port is in it, at some depth.
    pub holds_peer: bool,
}

/// Scan `inbox` for nesting depth and for the port entangled with the
/// sending port (the one on the other side than `side` of one of `segs`:
/// the segments the sending port's channel was on).
pub(crate) fn scan(inbox: &VecDeque<Attachment>, segs: &[&Arc<Segment>], side: Side) -> Scan {
    let mut out = Scan {
        depth: 0,
        holds_peer: false,
    };
    for a in inbox {
        let mut deepest = 0;
        for p in &a.ports {
            if p.side != side && segs.iter().any(|s| p.seg.is(s)) {
                out.holds_peer = true;
            }
            let inner = scan(&p.inbox, segs, side);
            out.holds_peer |= inner.holds_peer;
            deepest = deepest.max(inner.depth);
        }
        out.depth = out.depth.max(deepest + 1);
    }
    out
}

/// The longest spin a received port keeps from its sender (the receiver
/// may set any spin afterwards).
pub(crate) const MAX_RECEIVED_SPIN: Duration = Duration::from_secs(1);

impl Attachment {
    /// Encode into `body` and the descriptor list `fds` (depth first).
    pub fn encode<'a>(&'a self, body: &mut Vec<u8>, fds: &mut Vec<BorrowedFd<'a>>) {
        if self.lost {
            body.extend_from_slice(&[LOST, 0, 0]);
            return;
        }
        match (&self.ool, &self.pool) {
            (Some(fd), _) => {
                body.push(1);
                fds.push(fd.as_fd());
            }
            (None, Some((info, fd))) => {
                body.push(ANNOUNCE);
                encode_buffer(info, body);
                fds.push(fd.as_fd());
            }
            (None, None) => body.push(0),
        }
        body.extend_from_slice(&(self.ports.len() as u16).to_le_bytes());
        for p in &self.ports {
            let partial = !p.partial.is_empty();
            let side = match p.side {
                Side::A => 0,
                Side::B => SIDE_B,
            };
            body.push(
                side | if partial { HAS_PARTIAL } else { 0 }
                    | if p.pool.is_empty() { 0 } else { HAS_POOL }
                    | if p.kit { KIT_TAG } else { 0 }
                    | if p.held.is_empty() { 0 } else { HAS_KITS }
                    | if p.links.is_empty() { 0 } else { HAS_LINKS },
            );
            body.extend_from_slice(&(p.spin.as_nanos().min(u64::MAX as u128) as u64).to_le_bytes());
            body.extend_from_slice(&(p.inbox.len() as u32).to_le_bytes());
            fds.push(p.sock.as_fd());
            fds.push(p.seg.as_fd());
            for a in &p.inbox {
                a.encode(body, fds);
            }
            if partial {
                p.partial.encode(body, fds);
            }
            if !p.pool.is_empty() {
                body.extend_from_slice(&(p.pool.len() as u16).to_le_bytes());
                for (info, fd) in &p.pool {
                    encode_buffer(info, body);
                    fds.push(fd.as_fd());
                }
            }
            if !p.held.is_empty() {
                body.extend_from_slice(&(p.held.len() as u16).to_le_bytes());
                for k in &p.held {
                    body.extend_from_slice(&k.id.to_le_bytes());
                    body.push(match k.side {
                        Side::A => 0,
                        Side::B => SIDE_B,
                    });
                    fds.push(k.sock.as_fd());
                    fds.push(k.seg.as_fd());
                }
            }
            if !p.links.is_empty() {
                body.extend_from_slice(&(p.links.len() as u16).to_le_bytes());
                for (id, sock) in &p.links {
                    body.extend_from_slice(&id.to_le_bytes());
                    fds.push(sock.as_fd());
                }
            }
        }
    }

    /// Decode a received attachment; every byte and descriptor must be used.
    pub fn decode(body: &[u8], fds: Vec<OwnedFd>) -> Result<Attachment, Corrupt> {
        let mut body = body;
        let mut fds = fds.into_iter();
        let a = Self::decode_one(&mut body, &mut fds, 0)?;
        if !body.is_empty() || fds.next().is_some() {
            return Err(Corrupt("attachment has bytes or descriptors left over"));
        }
        Ok(a)
    }

    fn decode_one(
        body: &mut &[u8],
        fds: &mut impl Iterator<Item = OwnedFd>,
        depth: usize,
    ) -> Result<Attachment, Corrupt> {
        if depth > MAX_DEPTH {
            return Err(Corrupt("attachment nested too deep"));
        }
        let short = Corrupt("attachment cut short");
        let mut pool = None;
        let ool = match take::<1>(body)?[0] {
            0 => None,
            1 => Some(fds.next().ok_or(short)?),
            ANNOUNCE => {
                let info = decode_buffer(body)?;
                pool = Some((info, fds.next().ok_or(short)?));
                None
            }
            LOST => {
                if take::<2>(body)? != [0, 0] {
                    return Err(Corrupt("a lost attachment carries ports"));
                }
                return Ok(Attachment::lost());
            }
            _ => return Err(Corrupt("bad out-of-line flag in attachment")),
        };
        let nports = u16::from_le_bytes(take::<2>(body)?);
        let mut ports = Vec::with_capacity(nports.min(64) as usize);
        for _ in 0..nports {
            let flags = take::<1>(body)?[0];
            if flags & !(SIDE_B | HAS_PARTIAL | HAS_POOL | KIT_TAG | HAS_KITS | HAS_LINKS) != 0 {
                return Err(Corrupt("bad side in attachment"));
            }
            let side = if flags & SIDE_B != 0 {
                Side::B
            } else {
                Side::A
            };
            // The sender's spin time comes along, at most MAX_RECEIVED_SPIN:
            // a peer cannot make this process burn a core for ever.
            let spin =
                Duration::from_nanos(u64::from_le_bytes(take::<8>(body)?)).min(MAX_RECEIVED_SPIN);
            let inbox_len = u32::from_le_bytes(take::<4>(body)?);
            let sock = fds.next().ok_or(short)?;
            let mem = fds.next().ok_or(short)?;
            let mut inbox = VecDeque::new();
            for _ in 0..inbox_len {
                inbox.push_back(Self::decode_one(body, fds, depth + 1)?);
            }
            let partial = if flags & HAS_PARTIAL != 0 {
                Partial::decode(body, fds)?
            } else {
                Partial::default()
            };
            let mut buffers = Vec::new();
            if flags & HAS_POOL != 0 {
                let n = u16::from_le_bytes(take::<2>(body)?) as usize;
                if n > MAX_BUFFERS {
                    return Err(Corrupt(
                        "a port carries more pool buffers than a receiver maps",
                    ));
                }
                for _ in 0..n {
                    let info = decode_buffer(body)?;
                    buffers.push((info, fds.next().ok_or(short)?));
                }
            }
            let kit = flags & KIT_TAG != 0;
            let mut held = Vec::new();
            if flags & HAS_KITS != 0 {
                let n = u16::from_le_bytes(take::<2>(body)?) as usize;
                if n > MAX_HELD_KITS {
                    return Err(Corrupt("a port carries more kits than a receiver holds"));
                }
                for _ in 0..n {
                    let id = u64::from_le_bytes(take::<8>(body)?);
                    let side = match take::<1>(body)?[0] {
                        0 => Side::A,
                        SIDE_B => Side::B,
                        _ => return Err(Corrupt("bad side of a held kit")),
                    };
                    let sock = fds.next().ok_or(short)?;
                    let seg = SegmentRef::Unopened(fds.next().ok_or(short)?);
                    held.push(KitParts {
                        id,
                        seg,
                        sock,
                        side,
                    });
                }
            }
            let mut links = Vec::new();
            if flags & HAS_LINKS != 0 {
                let n = u16::from_le_bytes(take::<2>(body)?) as usize;
                if n > MAX_INVITATIONS {
                    return Err(Corrupt(
                        "a port carries more link invitations than it may hold",
                    ));
                }
                for _ in 0..n {
                    let id = u64::from_le_bytes(take::<8>(body)?);
                    links.push((id, fds.next().ok_or(short)?));
                }
            }
            ports.push(PortParts {
                seg: SegmentRef::Unopened(mem),
                sock,
                side,
                spin,
                inbox,
                partial,
                pool: buffers,
                kit,
                held,
                links,
            });
        }
        Ok(Attachment {
            ool,
            pool,
            ports,
            lost: false,
        })
    }

    /// The placeholder for an attachment whose descriptors were lost.
    pub fn lost() -> Attachment {
        Attachment {
            lost: true,
            ..Attachment::default()
        }
    }
}

fn encode_buffer(info: &BufferInfo, body: &mut Vec<u8>) {
    body.extend_from_slice(&info.id.to_le_bytes());
    body.push(info.log2);
    body.extend_from_slice(&info.blocks.to_le_bytes());
}

/// A pool buffer's announcement; its values are checked by the pool's
/// reader when it maps the buffer.
fn decode_buffer(body: &mut &[u8]) -> Result<BufferInfo, Corrupt> {
    Ok(BufferInfo {
        id: u32::from_le_bytes(take::<4>(body)?),
        log2: take::<1>(body)?[0],
        blocks: u32::from_le_bytes(take::<4>(body)?),
    })
}

fn take<const N: usize>(body: &mut &[u8]) -> Result<[u8; N], Corrupt> {
    if body.len() < N {
        return Err(Corrupt("attachment cut short"));
    }
    let (head, rest) = body.split_at(N);
    *body = rest;
    Ok(head.try_into().expect("split at N"))
}

#[cfg(test)]
mod tests;
