//! Messages to the peer: taken from the local port, cut into chunks that
//! fit the window the peer granted, numbered, published; ports they carry
//! bridged by endpoints of their own; the close sent after the last.

use shmport::{CloseReason, MessagePort, RecvError, SharedBytes};
use zenoh::Wait;

use super::Endpoint;
use crate::frame::{self, EndpointId, MessageHead};
use crate::keys;

/// The largest chunk one DATA frame carries: 30 KiB. The sessions of
/// [`peer_config`](crate::peer_config) use zenoh's low-latency transport,
/// which does not fragment: a message must fit in one batch of the link,
/// whose size zenoh derives from the TCP segment size, at least about
/// 32,700 bytes on any TCP link (49,152 on this machine's loopback, for
/// the accepting side). A chunk, the frame's header with up to
/// [`MAX_PORTS`](frame::MAX_PORTS) port ids (1,645 bytes), and zenoh's own
/// header stay under that.
pub(crate) const CHUNK: u64 = 30 << 10;

/// A message's remainder at least this large, held outside the ring (a
/// pool block, an out-of-line memfd), is kept there while it waits for
/// the window instead of being copied (keeping it costs two `mprotect`s).
const KEEP_IN_PLACE: usize = 1 << 20;

/// What the port gave, when it cannot all go out at once: a message with
/// ports (its bytes, fingerprint and ports), or what is left of one whose
/// first chunks went out while the window allowed.
enum Taken {
    /// All of it went out.
    Sent,
    WithPorts(Vec<u8>, u64, Vec<MessagePort>),
    Rest(Outgoing),
}

/// The bytes of a message being sent.
enum Payload {
    /// Copied out of the port.
    Copied(Vec<u8>),
    /// Kept where the port received it (zero copy).
    InPlace(SharedBytes),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Copied(v) => v,
            Payload::InPlace(s) => s.bytes(),
        }
    }
}

/// A message being sent, chunk by chunk.
struct Outgoing {
    /// Sent with the first chunk.
    head: Option<MessageHead>,
    bytes: Payload,
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
    /// there is none yet. A message without ports goes out straight from
    /// the port, as many chunks as the window allows; only what is left
    /// waits (copied, unless it is large and held outside the ring).
    fn take_from_port(&mut self) -> bool {
        let Some(port) = &self.port else {
            self.tx.local_closed = Some(CloseReason::Closed);
            return true;
        };
        let chunk_max = self.chunk_max();
        let window = self.peer.as_ref().and_then(|p| p.window).unwrap_or(0);
        let mut put_failed = false;
        let taken = match port.try_recv() {
            Ok(mut msg) => {
                let ports = match msg.take_ports() {
                    Ok(p) => p,
                    // A port that could not be opened is closed; the others
                    // travel.
                    Err(e) => e.ports,
                };
                if !ports.is_empty() {
                    Taken::WithPorts(msg.bytes().to_vec(), msg.fingerprint(), ports)
                } else {
                    let len = msg.bytes().len();
                    let mut head = Some(MessageHead {
                        total: len as u64,
                        fingerprint: msg.fingerprint(),
                        ports: Vec::new(),
                    });
                    let mut offset = 0;
                    while let Some(peer) = self.peer.as_ref().filter(|_| chunk_max > 0) {
                        let n = (len - offset).min(chunk_max);
                        let cost = frame::data_cost(n, 0, window);
                        if self.tx.sent + cost > self.tx.credit {
                            break;
                        }
                        let last = offset + n == len;
                        let data = frame::data(
                            self.me,
                            self.tx.next_seq,
                            head.take().as_ref(),
                            last,
                            &msg.bytes()[offset..offset + n],
                        );
                        self.tx.next_seq += 1;
                        self.tx.sent += cost;
                        offset += n;
                        if peer.publisher.put(data).wait().is_err() {
                            put_failed = true;
                            break;
                        }
                        if last {
                            break;
                        }
                    }
                    if offset == len && head.is_none() {
                        Taken::Sent
                    } else {
                        let rest = len - offset;
                        let bytes =
                            if rest >= KEEP_IN_PLACE && (msg.is_pooled() || msg.is_out_of_line()) {
                                match msg.into_shared_bytes() {
                                    Ok(shared) => Payload::InPlace(shared),
                                    Err(msg) => Payload::Copied(msg.bytes()[offset..].to_vec()),
                                }
                            } else {
                                Payload::Copied(msg.bytes()[offset..].to_vec())
                            };
                        // A kept payload starts where the message did.
                        let offset = match bytes {
                            Payload::InPlace(_) => offset,
                            Payload::Copied(_) => 0,
                        };
                        Taken::Rest(Outgoing {
                            head,
                            bytes,
                            offset,
                        })
                    }
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
        match taken {
            Taken::Sent => {}
            Taken::Rest(out) => self.tx.current = Some(out),
            Taken::WithPorts(bytes, fingerprint, ports) => {
                let ports = self.export_ports(ports);
                self.tx.current = Some(Outgoing {
                    head: Some(MessageHead {
                        total: bytes.len() as u64,
                        fingerprint,
                        ports,
                    }),
                    bytes: Payload::Copied(bytes),
                    offset: 0,
                });
            }
        }
        finish_take(self, put_failed)
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
        let total = out.bytes.bytes().len();
        let n = (total - out.offset).min(chunk_max);
        let cost = frame::data_cost(n, nports, window);
        if self.tx.sent + cost > self.tx.credit {
            return false;
        }
        let end = out.offset + n;
        let last = end == total;
        let head = out.head.take();
        let data = frame::data(
            self.me,
            self.tx.next_seq,
            head.as_ref(),
            last,
            &out.bytes.bytes()[out.offset..end],
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

/// After a take: a publication that failed means the session cannot
/// reach the peer any more.
fn finish_take(endpoint: &mut Endpoint, put_failed: bool) -> bool {
    if put_failed {
        endpoint.peer_gone(CloseReason::PeerDied);
    }
    true
}
