//! How descriptors travel with a record: out-of-line payloads and
//! transferred ports.
//!
//! A record that needs descriptors (flag "out of line", or a port count
//! above zero) is preceded on the port's socket by exactly one
//! **attachment**: one `SOCK_SEQPACKET` message holding a small body and all
//! the descriptors, so it arrives whole or not at all. The sender sends it
//! before committing the record; the receiver takes attachments in order,
//! one per such record.
//!
//! ```text
//! attachment := has_ool u8 (0, 1; 2: descriptors lost) | nports u16 | port{nports}
//! port       := side u8 | spin_ns u64 | inbox_len u32 | attachment{inbox_len}
//! descriptors, in the same depth-first order:
//!   [ool memfd] then per port: socket, segment memfd, its inbox's descriptors
//! ```
//!
//! A transferred port carries its **inbox**: attachments it already took off
//! its socket for records it has not read yet. Attachments still queued in
//! its socket move with the socket itself. So the messages queued on a port,
//! and the ports inside them, move with it through any number of hops.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::error::OpenError;
use crate::port::{MessagePort, Side};
use crate::ring::Corrupt;
use crate::segment::Segment;

/// First byte of an attachment forwarded in an inbox after its descriptors
/// were lost on receipt.
const LOST: u8 = 2;

/// Deepest nesting of ports inside ports' inboxes a receiver accepts.
const MAX_DEPTH: usize = 16;

/// The descriptors that travel with one record.
#[derive(Default)]
pub(crate) struct Attachment {
    /// The memfd of an out-of-line payload.
    pub ool: Option<OwnedFd>,
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
}

impl PortParts {
    /// Put the port back together (checking a received segment).
    pub fn assemble(self) -> Result<MessagePort, OpenError> {
        let seg = match self.seg {
            SegmentRef::Mapped(s) => s,
            SegmentRef::Unopened(fd) => {
                // A received descriptor claimed to be a port's socket.
                if !crate::sys::socket::is_seqpacket(&self.sock) {
                    return Err(OpenError::BadDescriptor(
                        "a received port's socket is not a SOCK_SEQPACKET socket".into(),
                    ));
                }
                Segment::open(fd)?
            }
        };
        MessagePort::from_parts(seg, self.side, self.sock, self.spin)
            .map(|p| p.with_inbox(self.inbox))
            .map_err(|c| OpenError::Corrupt(c.0))
    }

    /// Put back together a port of this process whose transfer failed: it
    /// always comes back, broken if its peer corrupted the positions
    /// meanwhile ([`MessagePort::rebuild`]). `None` only for parts that
    /// were received, never this process's own.
    pub(crate) fn rebuild(self) -> Option<MessagePort> {
        match self.seg {
            SegmentRef::Mapped(seg) => Some(
                MessagePort::rebuild(seg, self.side, self.sock, self.spin).with_inbox(self.inbox),
            ),
            SegmentRef::Unopened(_) => None,
        }
    }
}

/// A port that arrived in a message and was never taken out: close it
/// properly, so its peer sees `Closed` rather than a death.
pub(crate) fn discard(parts: PortParts) {
    // If the segment cannot be opened, dropping the descriptors still hangs
    // up the socket: the peer sees the port gone.
    let _ = parts.assemble();
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
        body.push(self.ool.is_some() as u8);
        if let Some(fd) = &self.ool {
            fds.push(fd.as_fd());
        }
        body.extend_from_slice(&(self.ports.len() as u16).to_le_bytes());
        for p in &self.ports {
            body.push(match p.side {
                Side::A => 0,
                Side::B => 1,
            });
            body.extend_from_slice(&(p.spin.as_nanos().min(u64::MAX as u128) as u64).to_le_bytes());
            body.extend_from_slice(&(p.inbox.len() as u32).to_le_bytes());
            fds.push(p.sock.as_fd());
            fds.push(p.seg.as_fd());
            for a in &p.inbox {
                a.encode(body, fds);
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
        let ool = match take::<1>(body)?[0] {
            0 => None,
            1 => Some(fds.next().ok_or(short)?),
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
            let side = match take::<1>(body)?[0] {
                0 => Side::A,
                1 => Side::B,
                _ => return Err(Corrupt("bad side in attachment")),
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
            ports.push(PortParts {
                seg: SegmentRef::Unopened(mem),
                sock,
                side,
                spin,
                inbox,
            });
        }
        Ok(Attachment {
            ool,
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

fn take<const N: usize>(body: &mut &[u8]) -> Result<[u8; N], Corrupt> {
    if body.len() < N {
        return Err(Corrupt("attachment cut short"));
    }
    let (head, rest) = body.split_at(N);
    *body = rest;
    Ok(head.try_into().expect("split at N"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd() -> OwnedFd {
        crate::sys::memfd::create("t", 4096).unwrap()
    }

    #[test]
    fn nested_attachments_round_trip() {
        let inner = Attachment {
            ool: Some(memfd()),
            ports: vec![],
            lost: false,
        };
        let a = Attachment {
            lost: false,
            ool: Some(memfd()),
            ports: vec![PortParts {
                seg: SegmentRef::Unopened(memfd()),
                sock: memfd(),
                side: Side::B,
                spin: Duration::from_micros(7),
                inbox: VecDeque::from([inner]),
            }],
        };
        let mut body = Vec::new();
        let mut fds = Vec::new();
        a.encode(&mut body, &mut fds);
        assert_eq!(fds.len(), 4);
        let owned: Vec<OwnedFd> = fds
            .iter()
            .map(|f| f.try_clone_to_owned().unwrap())
            .collect();
        let b = Attachment::decode(&body, owned).unwrap();
        assert!(b.ool.is_some());
        assert_eq!(b.ports.len(), 1);
        assert_eq!(b.ports[0].side, Side::B);
        assert_eq!(b.ports[0].spin, Duration::from_micros(7));
        assert_eq!(b.ports[0].inbox.len(), 1);
        assert!(b.ports[0].inbox[0].ool.is_some());
    }

    #[test]
    fn a_lost_attachment_travels_as_a_placeholder() {
        let mut body = Vec::new();
        let mut fds = Vec::new();
        let lost = Attachment::lost();
        lost.encode(&mut body, &mut fds);
        assert!(fds.is_empty());
        assert!(Attachment::decode(&body, Vec::new()).unwrap().lost);
        assert_eq!(
            Attachment::decode(&[2, 1, 0], Vec::new()).err().unwrap().0,
            "a lost attachment carries ports"
        );
    }

    #[test]
    fn malformed_attachments_are_refused() {
        let fd = || vec![memfd()];
        for (body, fds, why) in [
            (vec![], vec![], "attachment cut short"),
            (vec![3, 0, 0], vec![], "bad out-of-line flag in attachment"),
            (vec![1, 0, 0], vec![], "attachment cut short"),
            (
                vec![0, 0, 0, 9],
                vec![],
                "attachment has bytes or descriptors left over",
            ),
            (
                vec![0, 0, 0],
                fd(),
                "attachment has bytes or descriptors left over",
            ),
            (vec![0, 1, 0, 5], vec![], "bad side in attachment"),
            (
                vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                fd(),
                "attachment cut short",
            ),
        ] {
            assert_eq!(Attachment::decode(&body, fds).err().unwrap().0, why);
        }
        // Hostile nesting depth.
        let mut body = Vec::new();
        for _ in 0..40 {
            body.extend_from_slice(&[0, 1, 0, 0]);
            body.extend_from_slice(&[0; 8]);
            body.extend_from_slice(&1u32.to_le_bytes());
        }
        let fds: Vec<OwnedFd> = (0..80).map(|_| memfd()).collect();
        assert_eq!(
            Attachment::decode(&body, fds).err().unwrap().0,
            "attachment nested too deep"
        );
    }
}

/// Send `port` alone over a plain socket (rendezvous): one attachment.
pub(crate) fn send_port(sock: BorrowedFd<'_>, port: MessagePort) -> std::io::Result<()> {
    let parts = port.into_parts();
    let att = Attachment {
        ool: None,
        ports: vec![parts],
        lost: false,
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    att.encode(&mut body, &mut fds);
    let r = crate::sys::socket::send_attachment(sock, &body, &fds, false);
    drop(fds);
    if r.is_err() {
        // Close the port properly: its peer sees `Closed`.
        for p in att.ports {
            discard(p);
        }
    }
    r
}

/// Why receiving a port over a plain socket failed.
#[derive(Debug)]
pub(crate) enum RecvPortError {
    /// Nothing arrived in time.
    Timeout,
    /// The other side closed without sending a port.
    HungUp,
    /// What arrived is not one port.
    Garbage(&'static str),
    /// The port arrived but its segment is not valid.
    Open(OpenError),
    /// A system call failed.
    Io(std::io::Error),
}

/// Receive one port sent by [`send_port`], waiting at most `timeout`.
pub(crate) fn recv_port(
    sock: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> Result<MessagePort, RecvPortError> {
    use crate::sys::socket::{self, Incoming};
    let ready = socket::wait(sock, false, timeout).map_err(RecvPortError::Io)?;
    if !ready.readable && !ready.hung_up {
        return Err(RecvPortError::Timeout);
    }
    let mut got = socket::recv(sock, false).map_err(RecvPortError::Io)?;
    if matches!(got, Incoming::Reset) {
        // Reported once, before whatever the peer sent before it went.
        got = socket::recv(sock, false).map_err(RecvPortError::Io)?;
    }
    match got {
        Incoming::Attachment(body, fds) => {
            let mut att =
                Attachment::decode(&body, fds).map_err(|c| RecvPortError::Garbage(c.0))?;
            if att.lost || att.ool.is_some() || att.ports.len() != 1 {
                return Err(RecvPortError::Garbage("expected exactly one port"));
            }
            att.ports
                .pop()
                .expect("one port")
                .assemble()
                .map_err(RecvPortError::Open)
        }
        Incoming::HungUp | Incoming::Reset => Err(RecvPortError::HungUp),
        Incoming::Empty => Err(RecvPortError::Timeout),
        Incoming::Lost => Err(RecvPortError::Io(std::io::Error::from_raw_os_error(
            libc::EMFILE,
        ))),
        Incoming::Wake | Incoming::Garbage => Err(RecvPortError::Garbage("not a port")),
    }
}
