//! The frames one bridge sends another over zenoh, and their decoding.
//!
//! Every frame is published on the receiving endpoint's key
//! ([`crate::keys::port_key`]) and starts with the same header:
//!
//! ```text
//! 0  version  u8    FORMAT_VERSION
//! 1  kind     u8    OPEN | DATA | CREDIT | CLOSE | CLOSE_ACK | ABORT
//! 2  from     u128  the sending endpoint's id (little endian, as all fields)
//! 18 body     per kind:
//!    OPEN       window u64           bytes of DATA the sender may have in flight
//!    DATA       seq u64, flags u8 (FIRST, LAST),
//!               if FIRST: total u64, fingerprint u64, nports u16, nports × id u128
//!               then the chunk's bytes (the rest of the frame)
//!    CREDIT     limit u64            total DATA bytes the receiver accepts so far
//!    CLOSE      next_seq u64, why u8 DATA frames sent before the close, and
//!                                    why the sender's port closed (CLOSED_*)
//!    CLOSE_ACK  (nothing)
//!    ABORT      (nothing)            the sender saw a protocol error
//! ```
//!
//! Everything here comes from the network: decoding checks every length
//! and count and returns an error, never panics.

use shmport::CloseReason;

/// The frame format this crate speaks; a frame of another is refused.
pub const FORMAT_VERSION: u8 = 1;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const CREDIT: u8 = 3;
const CLOSE: u8 = 4;
const CLOSE_ACK: u8 = 5;
const ABORT: u8 = 6;

const CLOSED: u8 = 0;
const CLOSED_PEER_DIED: u8 = 1;
const CLOSED_PROTOCOL_ERROR: u8 = 2;

const FIRST: u8 = 1;
const LAST: u8 = 2;

/// What each DATA frame costs of the window beyond its chunk's bytes, so
/// that empty chunks are bounded too (frames in flight number at most the
/// window over this).
pub const FRAME_COST: u64 = 64;

/// What a DATA frame costs of the receiver's `window`: its chunk's bytes,
/// [`FRAME_COST`], and a 256th of the window per port its message carries
/// (each port becomes a bridge with a thread on the receiving host, so a
/// peer can have at most 256 ports per window in flight). Sender and
/// receiver compute it alike. At most half the window for a chunk of at
/// most half of it: a frame always fits.
pub fn data_cost(chunk: usize, ports: usize, window: u64) -> u64 {
    chunk as u64 + FRAME_COST + ports as u64 * (window / 256)
}

/// Bytes before a frame's body.
pub const HEADER: usize = 18;

/// Most ports one message carries across hosts (as on one host).
pub const MAX_PORTS: usize = shmport::MAX_PORTS;

/// An endpoint id: names one bridged port end on the key space.
pub type EndpointId = u128;

/// The first chunk of a message says what the message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHead {
    /// Payload bytes of the whole message.
    pub total: u64,
    /// Its type fingerprint (0 for raw bytes).
    pub fingerprint: u64,
    /// Endpoints bridging the ports it carries, in order.
    pub ports: Vec<EndpointId>,
}

/// A decoded frame; `chunk` borrows the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The sender is bound to the receiver.
    Open {
        /// Window cost of DATA the sender accepts before its first CREDIT.
        window: u64,
    },
    /// One chunk of a message.
    Data {
        /// The frame's number among the sender's DATA frames, from 0.
        seq: u64,
        /// On a message's first chunk: what the message is.
        head: Option<MessageHead>,
        /// The message's last chunk.
        last: bool,
        /// The chunk's bytes.
        chunk: &'a [u8],
    },
    /// The receiver of DATA accepts frames up to this total window cost.
    Credit {
        /// The total, counted from the first DATA frame.
        limit: u64,
    },
    /// The sender's port closed.
    Close {
        /// DATA frames the sender sent before.
        next_seq: u64,
        /// Why: its application closed it, or (a port that was itself
        /// bridged further) its own peer died or broke the protocol.
        why: CloseReason,
    },
    /// The CLOSE arrived and everything before it was delivered.
    CloseAck,
    /// The sender saw a protocol error and stopped.
    Abort,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame(pub &'static str);

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Reads fields off a received frame, checking each length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadFrame> {
        if self.bytes.len() < n {
            return Err(BadFrame("truncated frame"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BadFrame> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BadFrame> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BadFrame> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, BadFrame> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, BadFrame> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    fn end(self) -> Result<(), BadFrame> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(BadFrame("bytes after the end of the frame"))
        }
    }
}

/// Decode a received frame: who sent it, and what it says.
pub fn decode(bytes: &[u8]) -> Result<(EndpointId, Frame<'_>), BadFrame> {
    let mut r = Reader { bytes };
    if r.u8()? != FORMAT_VERSION {
        return Err(BadFrame("unknown frame format version"));
    }
    let kind = r.u8()?;
    let from = r.u128()?;
    let frame = match kind {
        OPEN => {
            let window = r.u64()?;
            r.end()?;
            Frame::Open { window }
        }
        DATA => {
            let seq = r.u64()?;
            let flags = r.u8()?;
            if flags & !(FIRST | LAST) != 0 {
                return Err(BadFrame("unknown DATA flags"));
            }
            let head = if flags & FIRST != 0 {
                let total = r.u64()?;
                let fingerprint = r.u64()?;
                let nports = r.u16()? as usize;
                if nports > MAX_PORTS {
                    return Err(BadFrame("more ports than a message carries"));
                }
                let ports = (0..nports).map(|_| r.u128()).collect::<Result<_, _>>()?;
                Some(MessageHead {
                    total,
                    fingerprint,
                    ports,
                })
            } else {
                None
            };
            Frame::Data {
                seq,
                head,
                last: flags & LAST != 0,
                chunk: r.bytes,
            }
        }
        CREDIT => {
            let limit = r.u64()?;
            r.end()?;
            Frame::Credit { limit }
        }
        CLOSE => {
            let next_seq = r.u64()?;
            let why = match r.u8()? {
                CLOSED => CloseReason::Closed,
                CLOSED_PEER_DIED => CloseReason::PeerDied,
                CLOSED_PROTOCOL_ERROR => CloseReason::ProtocolError,
                _ => return Err(BadFrame("unknown CLOSE reason")),
            };
            r.end()?;
            Frame::Close { next_seq, why }
        }
        CLOSE_ACK => {
            r.end()?;
            Frame::CloseAck
        }
        ABORT => {
            r.end()?;
            Frame::Abort
        }
        _ => return Err(BadFrame("unknown frame kind")),
    };
    Ok((from, frame))
}

fn header(kind: u8, from: EndpointId, body: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + body);
    v.push(FORMAT_VERSION);
    v.push(kind);
    v.extend_from_slice(&from.to_le_bytes());
    v
}

/// An OPEN frame.
pub fn open(from: EndpointId, window: u64) -> Vec<u8> {
    let mut v = header(OPEN, from, 8);
    v.extend_from_slice(&window.to_le_bytes());
    v
}

/// A DATA frame carrying `chunk`, the message's first if `head` is given.
pub fn data(
    from: EndpointId,
    seq: u64,
    head: Option<&MessageHead>,
    last: bool,
    chunk: &[u8],
) -> Vec<u8> {
    let head_len = head.map_or(0, |h| 18 + 16 * h.ports.len());
    let mut v = header(DATA, from, 9 + head_len + chunk.len());
    v.extend_from_slice(&seq.to_le_bytes());
    let flags = if head.is_some() { FIRST } else { 0 } | if last { LAST } else { 0 };
    v.push(flags);
    if let Some(h) = head {
        v.extend_from_slice(&h.total.to_le_bytes());
        v.extend_from_slice(&h.fingerprint.to_le_bytes());
        v.extend_from_slice(&(h.ports.len() as u16).to_le_bytes());
        for p in &h.ports {
            v.extend_from_slice(&p.to_le_bytes());
        }
    }
    v.extend_from_slice(chunk);
    v
}

/// A CREDIT frame.
pub fn credit(from: EndpointId, limit: u64) -> Vec<u8> {
    let mut v = header(CREDIT, from, 8);
    v.extend_from_slice(&limit.to_le_bytes());
    v
}

/// A CLOSE frame.
pub fn close(from: EndpointId, next_seq: u64, why: CloseReason) -> Vec<u8> {
    let mut v = header(CLOSE, from, 9);
    v.extend_from_slice(&next_seq.to_le_bytes());
    v.push(match why {
        CloseReason::PeerDied => CLOSED_PEER_DIED,
        CloseReason::ProtocolError => CLOSED_PROTOCOL_ERROR,
        _ => CLOSED,
    });
    v
}

/// A CLOSE_ACK frame.
pub fn close_ack(from: EndpointId) -> Vec<u8> {
    header(CLOSE_ACK, from, 0)
}

/// An ABORT frame.
pub fn abort(from: EndpointId) -> Vec<u8> {
    header(ABORT, from, 0)
}

/// The payload of a connection request (the connecting endpoint's id) and
/// of its reply (the accepting endpoint's id): the format version, then
/// the id.
pub fn hello(id: EndpointId) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(FORMAT_VERSION);
    v.extend_from_slice(&id.to_le_bytes());
    v
}

/// Decode [`hello`].
pub fn decode_hello(bytes: &[u8]) -> Result<EndpointId, BadFrame> {
    let mut r = Reader { bytes };
    if r.u8()? != FORMAT_VERSION {
        return Err(BadFrame("unknown frame format version"));
    }
    let id = r.u128()?;
    r.end()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_decodes_to_what_was_encoded() {
        let head = MessageHead {
            total: 70_000,
            fingerprint: 0xfeed,
            ports: vec![1, u128::MAX],
        };
        let cases: Vec<(Vec<u8>, Frame<'_>)> = vec![
            (open(7, 4096), Frame::Open { window: 4096 }),
            (
                data(7, 3, Some(&head), false, b"abc"),
                Frame::Data {
                    seq: 3,
                    head: Some(head.clone()),
                    last: false,
                    chunk: b"abc",
                },
            ),
            (
                data(7, 4, None, true, b""),
                Frame::Data {
                    seq: 4,
                    head: None,
                    last: true,
                    chunk: b"",
                },
            ),
            (credit(7, 99), Frame::Credit { limit: 99 }),
            (
                close(7, 5, CloseReason::Closed),
                Frame::Close {
                    next_seq: 5,
                    why: CloseReason::Closed,
                },
            ),
            (
                close(7, 6, CloseReason::PeerDied),
                Frame::Close {
                    next_seq: 6,
                    why: CloseReason::PeerDied,
                },
            ),
            (close_ack(7), Frame::CloseAck),
            (abort(7), Frame::Abort),
        ];
        for (bytes, want) in &cases {
            assert_eq!(decode(bytes), Ok((7, clone_frame(want))));
        }
    }

    fn clone_frame<'a>(f: &Frame<'a>) -> Frame<'a> {
        match f {
            Frame::Open { window } => Frame::Open { window: *window },
            Frame::Data {
                seq,
                head,
                last,
                chunk,
            } => Frame::Data {
                seq: *seq,
                head: head.clone(),
                last: *last,
                chunk,
            },
            Frame::Credit { limit } => Frame::Credit { limit: *limit },
            Frame::Close { next_seq, why } => Frame::Close {
                next_seq: *next_seq,
                why: *why,
            },
            Frame::CloseAck => Frame::CloseAck,
            Frame::Abort => Frame::Abort,
        }
    }

    #[test]
    fn hello_carries_an_id_and_nothing_else() {
        assert_eq!(decode_hello(&hello(42)), Ok(42));
        let mut long = hello(42);
        long.push(1);
        assert!(decode_hello(&long).is_err());
        assert!(decode_hello(&hello(42)[..16]).is_err());
    }

    #[test]
    fn every_truncation_of_a_frame_is_refused() {
        let head = MessageHead {
            total: 3,
            fingerprint: 0,
            ports: vec![9],
        };
        for whole in [
            open(1, 2),
            data(1, 0, Some(&head), true, b""),
            credit(1, 2),
            close(1, 2, CloseReason::Closed),
            close_ack(1),
        ] {
            for len in 0..whole.len() {
                assert!(decode(&whole[..len]).is_err(), "{len} of {}", whole.len());
            }
        }
    }

    #[test]
    fn unknown_versions_kinds_flags_and_port_counts_are_refused() {
        let mut f = open(1, 2);
        f[0] = 9;
        assert_eq!(decode(&f), Err(BadFrame("unknown frame format version")));
        let mut f = open(1, 2);
        f[1] = 77;
        assert_eq!(decode(&f), Err(BadFrame("unknown frame kind")));
        let mut f = data(1, 0, None, false, b"x");
        f[HEADER + 8] = 0x80;
        assert_eq!(decode(&f), Err(BadFrame("unknown DATA flags")));
        let mut f = data(
            1,
            0,
            Some(&MessageHead {
                total: 0,
                fingerprint: 0,
                ports: vec![],
            }),
            true,
            b"",
        );
        let at = HEADER + 9 + 16;
        f[at..at + 2].copy_from_slice(&(MAX_PORTS as u16 + 1).to_le_bytes());
        assert_eq!(
            decode(&f),
            Err(BadFrame("more ports than a message carries"))
        );
        let mut f = close(1, 2, CloseReason::Closed);
        f[HEADER + 8] = 9;
        assert_eq!(decode(&f), Err(BadFrame("unknown CLOSE reason")));
        let mut f = close_ack(1);
        f.push(0);
        assert_eq!(
            decode(&f),
            Err(BadFrame("bytes after the end of the frame"))
        );
    }
}
