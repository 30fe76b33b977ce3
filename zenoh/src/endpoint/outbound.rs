//! Messages to the peer: taken from the local port, cut into chunks that
//! fit the window the peer granted, numbered, published; ports they carry
//! bridged by endpoints of their own; the close sent after the last.

use shmport::{CloseReason, MessagePort, RecvError};

use super::Endpoint;
use crate::frame::{self, EndpointId, MessageHead};
use crate::keys;

/// The largest chunk one DATA frame carries.
pub(crate) const CHUNK: u64 = 1 << 20;

/// What the port gave: a whole message already made into its one frame,
/// or one to send in chunks (its bytes, fingerprint and ports).
enum Taken {
    Frame(Vec<u8>, usize),
    Message(Vec<u8>, u64, Vec<MessagePort>),
}

/// A message being sent, chunk by chunk.
struct Outgoing {
    /// Sent with the first chunk.
    head: Option<MessageHead>,
    bytes: Vec<u8>,
    offset: usize,
}

/// The sending direction's state.
#[derive(Default)]
pub(super) struct Sending {
    next_seq: u64,
    /// Window cost of the DATA frames sent.
    sent: u64,
    /// The most the peer accepts in all (its OPEN's window, then its
    /// CREDIT limits).
    pub(super) credit: u64,
    current: Option<Outgoing>,
    /// The application's port closed (why): every message it posted was
    /// taken.
    pub(super) local_closed: Option<CloseReason>,
    pub(super) close_sent: bool,
    pub(super) close_acked: bool,
}

impl Sending {
    /// Would the endpoint take a message from the port now?
    pub(super) fn wants_port(&self) -> bool {
        self.current.is_none() && self.local_closed.is_none()
    }
}

impl Endpoint {
    /// Send what the port holds while the window allows; the CLOSE once the
    /// port closed and everything before went out.
    pub(super) fn pump_out(&mut self) -> bool {
        let mut progress = false;
        while self.peer_ready() && !self.tx.close_sent {
            if self.tx.current.is_none() {
                if let Some(why) = self.tx.local_closed {
                    let close = frame::close(self.me, self.tx.next_seq, why);
                    self.tx.close_sent = true;
                    self.deadline = Some(std::time::Instant::now() + self.options.open_timeout);
                    self.send(close);
                    return true;
                }
                if !self.take_from_port() {
                    break;
                }
                progress = true;
                continue;
            }
            if !self.send_chunk() {
                break;
            }
            progress = true;
        }
        progress
    }

    /// Take the next message (or the close) from the port; `false` when
    /// there is none yet.
    fn take_from_port(&mut self) -> bool {
        let Some(port) = &self.port else {
            self.tx.local_closed = Some(CloseReason::Closed);
            return true;
        };
        let chunk_max = self.chunk_max();
        let room = self.tx.credit.saturating_sub(self.tx.sent);
        let taken = match port.try_recv() {
            Ok(mut msg) => {
                let ports = match msg.take_ports() {
                    Ok(p) => p,
                    // A port that could not be opened is closed; the others
                    // travel.
                    Err(e) => e.ports,
                };
                let len = msg.bytes().len();
                if ports.is_empty() && len <= chunk_max && frame::data_cost(len, 0, 0) <= room {
                    // The common case, without a copy: one frame made
                    // straight from the ring.
                    let head = MessageHead {
                        total: len as u64,
                        fingerprint: msg.fingerprint(),
                        ports: Vec::new(),
                    };
                    let seq = self.tx.next_seq;
                    Taken::Frame(
                        frame::data(self.me, seq, Some(&head), true, msg.bytes()),
                        len,
                    )
                } else {
                    Taken::Message(msg.bytes().to_vec(), msg.fingerprint(), ports)
                }
            }
            Err(RecvError::Empty) => return false,
            // Refused by the port's own limits: that message is dropped.
            Err(RecvError::Refused(_)) => return true,
            // Closed: the reason travels on (a port bridged further whose
            // own peer died passes that on).
            Err(RecvError::Closed(why)) => {
                self.tx.local_closed = Some(why);
                return true;
            }
            // The port can no longer be read: nothing more will come from
            // it, as if its peer had died.
            Err(_) => {
                self.tx.local_closed = Some(CloseReason::PeerDied);
                return true;
            }
        };
        let (bytes, fingerprint, ports) = match taken {
            Taken::Frame(data, len) => {
                self.tx.next_seq += 1;
                self.tx.sent += frame::data_cost(len, 0, 0);
                self.send(data);
                return true;
            }
            Taken::Message(bytes, fingerprint, ports) => (bytes, fingerprint, ports),
        };
        let ports = self.export_ports(ports);
        self.tx.current = Some(Outgoing {
            head: Some(MessageHead {
                total: bytes.len() as u64,
                fingerprint,
                ports,
            }),
            bytes,
            offset: 0,
        });
        true
    }

    /// Each port a message carries gets an endpoint of its own, which the
    /// receiving host's endpoint binds to.
    fn export_ports(&mut self, ports: Vec<MessagePort>) -> Vec<EndpointId> {
        let mut ids = Vec::with_capacity(ports.len());
        for port in ports {
            let id = keys::new_id(&self.session);
            // On failure the port is dropped: its peer sees it closed.
            if super::spawn(&self.session, id, super::Bind::Any, port, &self.options).is_ok() {
                ids.push(id);
            }
        }
        ids
    }

    /// The largest chunk for the peer's window (half of it, so that a
    /// chunk always fits once the window is half free).
    fn chunk_max(&self) -> usize {
        let window = self.peer.as_ref().and_then(|p| p.window).unwrap_or(0);
        (window / 2).min(CHUNK) as usize
    }

    /// Send the current message's next chunk if the window has room.
    fn send_chunk(&mut self) -> bool {
        let chunk_max = self.chunk_max();
        let window = self.peer.as_ref().and_then(|p| p.window).unwrap_or(0);
        if chunk_max == 0 {
            return false;
        }
        let Some(out) = &mut self.tx.current else {
            return false;
        };
        let nports = out.head.as_ref().map_or(0, |h| h.ports.len());
        // The receiver may hold back up to a quarter of the window before
        // it grants more: a frame must fit in three quarters. With ports
        // (up to 0.39 of it), the chunk is cut to a quarter.
        let chunk_max = if nports > 0 {
            chunk_max.min((window / 4) as usize)
        } else {
            chunk_max
        };
        let n = (out.bytes.len() - out.offset).min(chunk_max);
        let cost = frame::data_cost(n, nports, window);
        if self.tx.sent + cost > self.tx.credit {
            return false;
        }
        let end = out.offset + n;
        let last = end == out.bytes.len();
        let head = out.head.take();
        let data = frame::data(
            self.me,
            self.tx.next_seq,
            head.as_ref(),
            last,
            &out.bytes[out.offset..end],
        );
        out.offset = end;
        self.tx.next_seq += 1;
        self.tx.sent += cost;
        if last {
            self.tx.current = None;
        }
        self.send(data);
        true
    }
}
