//! Frames from the peer: checked, put back in order by sequence number,
//! chunks joined into messages, messages posted into the local port, and
//! the window re-opened as the application reads.

use std::collections::{BTreeMap, VecDeque};

use shmport::{CloseReason, MessageChannel, MessagePort, PostError, TransferError};

use super::Endpoint;
use crate::frame::{self, EndpointId, FRAME_COST, Frame, MessageHead};
use crate::keys;

/// The largest reassembly buffer kept for reuse.
const MAX_SPARE: usize = 64 << 20;

/// A chunk that arrived ahead of its turn.
pub(super) struct Chunk {
    head: Option<MessageHead>,
    last: bool,
    bytes: Vec<u8>,
    cost: u64,
}

/// A message whose chunks all arrived, waiting for room in the port.
pub(super) struct Arrived {
    bytes: Vec<u8>,
    fingerprint: u64,
    ports: Vec<MessagePort>,
    cost: u64,
}

/// A message whose chunks are arriving.
struct Assembly {
    head: MessageHead,
    bytes: Vec<u8>,
    cost: u64,
}

/// The receiving direction's state.
#[derive(Default)]
pub(super) struct Receiving {
    /// The next DATA frame to take.
    next_seq: u64,
    /// Window cost of the DATA frames received.
    received: u64,
    /// Window cost of the frames whose messages were delivered (or
    /// dropped because the application closed its port).
    delivered: u64,
    /// The most the peer may have sent in all (OPEN's window, then
    /// CREDIT's limits).
    pub(super) granted: u64,
    reorder: BTreeMap<u64, Chunk>,
    /// A delivered message's buffer, kept for the next one to reassemble
    /// in (fresh memory costs page faults on every large message).
    spare: Vec<u8>,
    assembling: Option<Assembly>,
    pub(super) ready: VecDeque<Arrived>,
    /// The port had no room for a message of this many bytes.
    pub(super) blocked_len: Option<usize>,
    /// The peer's CLOSE: DATA frames it sent before, and why it closed.
    peer_close_at: Option<u64>,
    pub(super) peer_close_why: Option<CloseReason>,
}

impl Receiving {
    /// Forget what arrived only in part (the peer is gone).
    pub(super) fn discard_partial(&mut self) {
        self.reorder.clear();
        self.assembling = None;
    }

    /// The peer closed, and all it sent before is in the port.
    pub(super) fn peer_closed_and_delivered(&self) -> bool {
        self.peer_close_at == Some(self.next_seq)
            && self.assembling.is_none()
            && self.ready.is_empty()
    }

    /// The peer closed in the middle of a message.
    fn closed_mid_message(&self) -> bool {
        self.peer_close_at == Some(self.next_seq) && self.assembling.is_some()
    }
}

impl Endpoint {
    /// A frame published on this endpoint's key.
    pub(super) fn on_frame(&mut self, bytes: &[u8]) {
        if self.gone.is_some() {
            // After a death or an error nothing more is read.
            return;
        }
        let (from, frame) = match frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => return self.protocol_error(e.0),
        };
        match &self.peer {
            Some(p) if p.id != from => {
                return self
                    .protocol_error("a frame from an endpoint that is not this port's peer");
            }
            Some(_) => {}
            None => {
                if !matches!(frame, Frame::Open { .. }) {
                    return self.protocol_error("a frame before OPEN");
                }
                if matches!(self.expected, Some(e) if e != from) {
                    return self.protocol_error("OPEN from an endpoint that did not accept");
                }
                self.bind(from);
            }
        }
        let Some(peer) = &mut self.peer else { return };
        match frame {
            Frame::Open { window } => {
                if peer.window.is_some() {
                    self.protocol_error("a second OPEN")
                } else if window < crate::options::MIN_WINDOW {
                    self.protocol_error("a window smaller than the least allowed")
                } else {
                    peer.window = Some(window);
                    self.tx.credit = window;
                }
            }
            Frame::Data {
                seq,
                head,
                last,
                chunk,
            } => self.on_data(seq, head, last, chunk),
            Frame::Credit { limit } => {
                if peer.window.is_none() || limit < self.tx.credit {
                    self.protocol_error("a CREDIT that shrinks the window")
                } else {
                    self.tx.credit = limit;
                }
            }
            Frame::Close { next_seq, why } => {
                let rx = &mut self.rx;
                let behind = next_seq < rx.next_seq
                    || rx
                        .reorder
                        .last_key_value()
                        .is_some_and(|(s, _)| *s >= next_seq);
                if rx.peer_close_at.is_some() || behind {
                    return self.protocol_error("a CLOSE that contradicts the DATA sent");
                }
                rx.peer_close_at = Some(next_seq);
                rx.peer_close_why = Some(why);
                if rx.closed_mid_message() {
                    self.protocol_error("a CLOSE in the middle of a message");
                }
            }
            Frame::CloseAck => {
                if self.tx.close_sent {
                    self.tx.close_acked = true;
                } else {
                    self.protocol_error("a CLOSE_ACK with no CLOSE sent");
                }
            }
            Frame::Abort => self.peer_gone(CloseReason::ProtocolError),
        }
    }

    fn on_data(&mut self, seq: u64, head: Option<MessageHead>, last: bool, chunk: &[u8]) {
        let rx = &mut self.rx;
        if seq < rx.next_seq || rx.reorder.contains_key(&seq) {
            return self.protocol_error("a duplicated DATA sequence number");
        }
        if matches!(rx.peer_close_at, Some(n) if seq >= n) {
            return self.protocol_error("DATA after the peer's CLOSE");
        }
        let nports = head.as_ref().map_or(0, |h| h.ports.len());
        let cost = frame::data_cost(chunk.len(), nports, self.options.window);
        rx.received = rx.received.saturating_add(cost);
        if rx.received > rx.granted {
            return self.protocol_error("more DATA than the window allows");
        }
        // Every frame in flight costs at least FRAME_COST of the window.
        if seq - rx.next_seq > rx.granted / FRAME_COST {
            return self.protocol_error("a DATA sequence number beyond the window");
        }
        if seq != rx.next_seq {
            let bytes = chunk.to_vec();
            let early = Chunk {
                head,
                last,
                bytes,
                cost,
            };
            rx.reorder.insert(seq, early);
            return;
        }
        rx.next_seq += 1;
        let head = self.post_whole(head, last, chunk, cost).err();
        if let Some(Err(why)) = head.map(|head| self.assemble(head, last, chunk, cost)) {
            return self.protocol_error(why);
        }
        while let Some(c) = self.rx.reorder.remove(&self.rx.next_seq) {
            self.rx.next_seq += 1;
            if let Err(why) = self.assemble(c.head, c.last, &c.bytes, c.cost) {
                return self.protocol_error(why);
            }
        }
        if self.rx.closed_mid_message() {
            self.protocol_error("a CLOSE in the middle of a message");
        }
    }

    /// The common case, without a copy: a whole message in one frame, in
    /// order, nothing queued before it, no ports, room in the port: post it
    /// straight from the received frame. `Err` hands the chunk's head back
    /// when it did not (then the chunk takes the general path).
    #[allow(clippy::result_large_err)]
    fn post_whole(
        &mut self,
        head: Option<MessageHead>,
        last: bool,
        chunk: &[u8],
        cost: u64,
    ) -> Result<(), Option<MessageHead>> {
        let Some(head) = head else {
            return Err(None);
        };
        let direct = last
            && head.ports.is_empty()
            && head.total == chunk.len() as u64
            && self.rx.assembling.is_none()
            && self.rx.ready.is_empty();
        let Some(port) = self.port.as_ref().filter(|_| direct) else {
            return Err(Some(head));
        };
        match port.try_post_forwarded(chunk, head.fingerprint, Vec::new()) {
            Err(TransferError {
                error: PostError::Full,
                ..
            }) => Err(Some(head)),
            // Posted, or dropped as `deliver` drops what cannot be posted.
            _ => {
                self.rx.delivered += cost;
                Ok(())
            }
        }
    }

    /// Add the next chunk in order to the message it belongs to.
    fn assemble(
        &mut self,
        head: Option<MessageHead>,
        last: bool,
        chunk: &[u8],
        cost: u64,
    ) -> Result<(), &'static str> {
        match (&self.rx.assembling, head) {
            (None, Some(head)) => {
                if head.total > self.options.max_message_size as u64 {
                    return Err("a message larger than this port accepts");
                }
                // Memory grows with what arrives, not with what the header
                // claims (at most the window ahead of it).
                let reserve = (head.total as usize).min(self.options.window as usize);
                let mut bytes = std::mem::take(&mut self.rx.spare);
                bytes.clear();
                bytes.reserve(reserve);
                self.rx.assembling = Some(Assembly {
                    head,
                    bytes,
                    cost: 0,
                });
            }
            (Some(_), Some(_)) => return Err("a message began before the previous one ended"),
            (None, None) => return Err("a continuation chunk with no message begun"),
            (Some(_), None) => {}
        }
        let Some(a) = &mut self.rx.assembling else {
            return Err("a continuation chunk with no message begun");
        };
        if (a.bytes.len() + chunk.len()) as u64 > a.head.total {
            return Err("a message longer than its header says");
        }
        a.bytes.extend_from_slice(chunk);
        if last {
            a.cost += cost;
        } else {
            // Taken in: the window re-opens for the next chunk, so that a
            // message larger than the window streams through. Only whole
            // messages wait for the application (and hold the window).
            self.rx.delivered += cost;
        }
        if !last {
            return Ok(());
        }
        if a.bytes.len() as u64 != a.head.total {
            return Err("a message shorter than its header says");
        }
        let Some(a) = self.rx.assembling.take() else {
            return Ok(());
        };
        let ports = self.import_ports(&a.head.ports);
        self.rx.ready.push_back(Arrived {
            bytes: a.bytes,
            fingerprint: a.head.fingerprint,
            ports,
            cost: a.cost,
        });
        Ok(())
    }

    /// Ports that crossed: for each remote endpoint, a local channel whose
    /// one end a new endpoint bridges to it and whose other end goes to
    /// the application. A port that cannot be made is left out (its remote
    /// end then sees its peer never come: `PeerDied`).
    fn import_ports(&mut self, ids: &[EndpointId]) -> Vec<MessagePort> {
        let builder = MessageChannel::builder().capacity(self.options.capacity);
        let mut ports = Vec::with_capacity(ids.len());
        for &remote in ids {
            let Ok(channel) = builder.build() else {
                continue;
            };
            let (app, bridge) = channel.into_ports();
            let me = keys::new_id(&self.session);
            if super::spawn(
                &self.session,
                me,
                super::Bind::To(remote),
                bridge,
                &self.options,
            )
            .is_ok()
            {
                ports.push(app);
            }
        }
        ports
    }

    /// Post what arrived into the port, in order, while it has room.
    pub(super) fn deliver(&mut self) -> bool {
        let mut progress = false;
        self.rx.blocked_len = None;
        while let Some(a) = self.rx.ready.front_mut() {
            let Some(port) = &self.port else { break };
            let ports = std::mem::take(&mut a.ports);
            match port.try_post_forwarded(&a.bytes, a.fingerprint, ports) {
                Ok(()) => {}
                Err(TransferError {
                    error: PostError::Full,
                    ports,
                    ..
                }) => {
                    a.ports = ports;
                    self.rx.blocked_len = Some(a.bytes.len());
                    break;
                }
                // The application closed its port (its ring takes nothing
                // more), or the message cannot be posted here: it is
                // dropped, as a local port drops what arrives after its
                // close, and its ports close.
                Err(_) => {}
            }
            if let Some(a) = self.rx.ready.pop_front() {
                self.rx.delivered += a.cost;
                if a.bytes.capacity() > self.rx.spare.capacity() && a.bytes.capacity() <= MAX_SPARE
                {
                    self.rx.spare = a.bytes;
                }
            }
            progress = true;
        }
        progress
    }

    /// Re-open the window as messages are delivered (in steps of a
    /// quarter of it, so credit frames stay few).
    pub(super) fn grant_credit(&mut self) {
        if self.gone.is_some() || self.peer.is_none() {
            return;
        }
        let window = self.options.window;
        let limit = self.rx.delivered + window;
        if limit >= self.rx.granted + window / 4 && limit > self.rx.granted {
            self.rx.granted = limit;
            self.send(frame::credit(self.me, limit));
        }
    }
}
