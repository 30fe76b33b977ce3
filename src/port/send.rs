//! Posting: reserve, serialize in place, attach descriptors, commit, wake.

use std::io;
use std::time::{Duration, Instant};

use rkyv::rancor;

use super::recv::LOOK_EVERY;
use super::{MAX_PORTS, MessagePort, Wait};
use crate::error::{PostError, TransferError};
use crate::fault;
use crate::layout::OOL_DESCRIPTOR;
use crate::ring::{Kind, RecordMeta, Slot};
use crate::ser::{Postable, RecordWriter, fingerprint};
use crate::sys;
use crate::transfer::{Attachment, PortParts};

impl MessagePort {
    // ---------------------------------------------------------------- post

    /// Post `value` as a typed message, waiting for room if the ring is
    /// full. The value is serialized straight into shared memory.
    ///
    /// Fails with [`PostError::Closed`] when the peer is gone (the value was
    /// only borrowed: the caller still has it).
    pub fn post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.post_typed(value, Wait::Forever)
    }

    /// Post `value` if there is room now; [`PostError::Full`] otherwise.
    pub fn try_post<T: Postable>(&self, value: &T) -> Result<(), PostError> {
        self.post_typed(value, Wait::No)
    }

    /// Post `value`, waiting at most `timeout` for room
    /// ([`PostError::Timeout`]).
    pub fn post_timeout<T: Postable>(&self, value: &T, timeout: Duration) -> Result<(), PostError> {
        self.post_typed(value, Wait::after(timeout))
    }

    /// Post opaque bytes, waiting for room if the ring is full.
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::Forever)
    }

    /// Post opaque bytes if there is room now; [`PostError::Full`] otherwise.
    pub fn try_post_bytes(&self, bytes: &[u8]) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::No)
    }

    /// Post opaque bytes, waiting at most `timeout` for room.
    pub fn post_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), PostError> {
        self.post_raw(bytes, Wait::after(timeout))
    }

    #[inline]
    /// Post `value` with `ports` attached (like `postMessage(message,
    /// [ports])`): the receiver takes them from the message, in the same
    /// order, as working ports ([`Message::take_ports`](crate::Message::take_ports)). Messages already
    /// queued on a transferred port, and ports inside them, move with it.
    ///
    /// Atomic: on any error nothing is sent and every port comes back in
    /// the error. This port's own peer cannot be sent over it
    /// ([`PostError::PeerInTransfer`]).
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let (mine, theirs) = MessageChannel::new()?.into_ports();
    /// a.post_with_ports(&"here is a port".to_string(), vec![theirs])?;
    /// let mut msg = b.recv()?;
    /// let got = msg.take_ports()?.pop().unwrap();
    /// mine.post_bytes(b"hello")?;
    /// assert_eq!(got.recv()?.bytes(), b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        let meta = typed_meta::<T>();
        self.transfer(meta, 0, Wait::Forever, ports, |w| self.serialize(value, w))
    }

    /// [`post_with_ports`](MessagePort::post_with_ports) for raw bytes.
    pub fn post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer(RAW_META, bytes.len(), Wait::Forever, ports, |w| {
            w.put(bytes)
        })
    }

    /// [`post_with_ports`](MessagePort::post_with_ports) without waiting for
    /// room ([`PostError::Full`]).
    pub fn try_post_with_ports<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        let meta = typed_meta::<T>();
        self.transfer(meta, 0, Wait::No, ports, |w| self.serialize(value, w))
    }

    /// [`post_bytes_with_ports`](MessagePort::post_bytes_with_ports)
    /// without waiting for room ([`PostError::Full`]).
    pub fn try_post_bytes_with_ports(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.transfer(RAW_META, bytes.len(), Wait::No, ports, |w| w.put(bytes))
    }

    fn transfer(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        ports: Vec<MessagePort>,
        fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
    ) -> Result<(), TransferError> {
        let refuse = |error, ports| Err(TransferError { error, ports });
        if ports.iter().any(|p| self.is_peer(p)) {
            return refuse(PostError::PeerInTransfer, ports);
        }
        if ports.len() > MAX_PORTS {
            return refuse(PostError::TooManyPorts, ports);
        }
        meta.nports = ports.len() as u16;
        let parts = ports.into_iter().map(MessagePort::into_parts).collect();
        self.send_record(meta, size_hint, wait, fill, parts)
            .map_err(|(error, parts)| TransferError {
                error,
                ports: reassemble(parts),
            })
    }

    fn serialize<T: Postable>(&self, value: &T, w: &mut RecordWriter) -> Result<(), rancor::Error> {
        let mut arena = self.arena.borrow_mut();
        rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(value, w, arena.acquire())
            .map(|_| ())
    }

    fn post_typed<T: Postable>(&self, value: &T, wait: Wait) -> Result<(), PostError> {
        self.send_record(
            typed_meta::<T>(),
            0,
            wait,
            |w| self.serialize(value, w),
            Vec::new(),
        )
        .map_err(|(e, _)| e)
    }

    fn post_raw(&self, bytes: &[u8], wait: Wait) -> Result<(), PostError> {
        self.send_record(RAW_META, bytes.len(), wait, |w| w.put(bytes), Vec::new())
            .map_err(|(e, _)| e)
    }

    /// Write one record: reserve, fill in place, send the attachment (if
    /// ports travel), commit, wake the peer if it sleeps. `size_hint` is a
    /// known lower bound on the payload size. On failure nothing was
    /// committed and the ports' parts come back.
    #[inline]
    fn send_record(
        &self,
        meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        if let Err(e) = self
            .check_not_reserved()
            .and_then(|()| self.check_postable())
        {
            return Err((e, ports));
        }
        let max = self.max_inline_payload();
        let mut need = size_hint;
        while need <= max {
            let slot = match self.reserve(need, wait) {
                Ok(s) => s,
                Err(e) => return Err((e, ports)),
            };
            // SAFETY: the slot's payload area is `room` bytes of ring memory
            // that only this producer writes until it commits.
            let mut w = unsafe { RecordWriter::slot(slot.payload, slot.room) };
            match fill(&mut w) {
                Ok(()) => {
                    let len = w.len();
                    if !ports.is_empty() {
                        let att = Attachment {
                            ool: None,
                            ports,
                            lost: false,
                        };
                        fault::reach(fault::Point::BeforeAttachment);
                        if let Err(e) = self.send_attachment(&att, wait) {
                            return Err((e, att.ports));
                        }
                        fault::reach(fault::Point::AfterAttachment);
                    }
                    return self.commit(slot, len, meta).map_err(|e| (e, Vec::new()));
                }
                Err(e) => match w.wanted() {
                    // It did not fit: ask for at least what it wanted.
                    Some(wanted) => need = wanted.max(need + 1),
                    None => return Err((PostError::Serialize(e), ports)),
                },
            }
        }
        self.send_out_of_line(meta, need, wait, fill, ports)
    }

    /// A message too large for the ring: serialize it into its own memfd,
    /// seal it, send it (with any ports) as the record's attachment, then
    /// commit a small record pointing to it.
    fn send_out_of_line(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        ports: Vec<PortParts>,
    ) -> Result<(), (PostError, Vec<PortParts>)> {
        let slot = match self.reserve(OOL_DESCRIPTOR, wait) {
            Ok(s) => s,
            Err(e) => return Err((e, ports)),
        };
        let mut w = match RecordWriter::memfd(size_hint) {
            Ok(w) => w,
            Err(e) => return Err((PostError::Io(e), ports)),
        };
        if let Err(e) = fill(&mut w) {
            return Err((PostError::Serialize(e), ports));
        }
        let len = w.len() as u64;
        let fd = match w.finish_memfd() {
            Ok(fd) => fd,
            Err(e) => return Err((PostError::Io(e), ports)),
        };
        let att = Attachment {
            ool: Some(fd),
            ports,
            lost: false,
        };
        fault::reach(fault::Point::BeforeAttachment);
        if let Err(e) = self.send_attachment(&att, wait) {
            return Err((e, att.ports));
        }
        fault::reach(fault::Point::AfterAttachment);
        // SAFETY: the slot holds at least OOL_DESCRIPTOR bytes, aligned to
        // 32, written only by this producer until commit.
        unsafe { slot.payload.cast::<u64>().as_ptr().write(len) };
        meta.out_of_line = true;
        self.commit(slot, OOL_DESCRIPTOR, meta)
            .map_err(|e| (e, Vec::new()))
    }

    fn send_attachment(&self, att: &Attachment, wait: Wait) -> Result<(), PostError> {
        let mut body = Vec::new();
        let mut fds = Vec::new();
        att.encode(&mut body, &mut fds);
        loop {
            match sys::socket::send_attachment(&*self.sock, &body, &fds, false) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The peer has not taken earlier attachments in yet.
                    if matches!(wait, Wait::No) {
                        return Err(PostError::Full);
                    }
                    if wait.expired() {
                        return Err(PostError::Timeout);
                    }
                    let ready = sys::socket::wait(&*self.sock, true, wait.remaining())
                        .map_err(PostError::Io)?;
                    if ready.readable || ready.hung_up {
                        self.drain_socket(false).map_err(PostError::Io)?;
                        self.check_postable()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.hung_up.set(true);
                    return Err(PostError::Closed(self.peer_gone_reason()));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    return Err(PostError::TooManyPorts);
                }
                Err(e) => return Err(PostError::Io(e)),
            }
        }
    }

    #[inline]
    pub(super) fn commit(&self, slot: Slot, len: usize, meta: RecordMeta) -> Result<(), PostError> {
        let wake = self.tx.borrow_mut().commit(slot, len, meta);
        if wake {
            self.wake_peer().map_err(PostError::Closed)?;
        }
        Ok(())
    }

    /// A slot with room for at least `need` payload bytes, waiting as `wait`
    /// allows: spin, then sleep on the socket until the consumer frees room.
    #[inline]
    pub(super) fn reserve(&self, need: usize, wait: Wait) -> Result<Slot, PostError> {
        let mut spin_until: Option<Instant> = None;
        let mut look_at: Option<Instant> = None;
        loop {
            let r = self.tx.borrow_mut().reserve(need);
            match r {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => {}
                Err(c) => return Err(PostError::Closed(self.corrupt(c))),
            }
            self.check_postable()?;
            if matches!(wait, Wait::No) {
                self.wanted_room.set(need);
                return Err(PostError::Full);
            }
            if wait.expired() {
                return Err(PostError::Timeout);
            }
            let now = Instant::now();
            let spin_end = *spin_until.get_or_insert_with(|| now + self.spin.get());
            if now < spin_end {
                // Only the socket learns of a peer killed while we spin.
                let look = look_at.get_or_insert(now + LOOK_EVERY);
                if now >= *look {
                    self.drain_socket(false).map_err(PostError::Io)?;
                    *look = now + LOOK_EVERY;
                }
                std::hint::spin_loop();
                continue;
            }
            // Our peer may itself be waiting for room we released.
            self.flush_releases();
            let sleep = self
                .tx
                .borrow_mut()
                .prepare_wait(need)
                .map_err(|c| PostError::Closed(self.corrupt(c)))?;
            if sleep {
                let r = self.sleep(wait);
                self.tx.borrow().end_wait();
                r.map_err(PostError::Io)?;
            }
        }
    }
}

pub(super) const RAW_META: RecordMeta = RecordMeta {
    kind: Kind::Raw,
    out_of_line: false,
    nports: 0,
    fingerprint: 0,
};

fn typed_meta<T: Postable>() -> RecordMeta {
    RecordMeta {
        kind: Kind::Typed,
        out_of_line: false,
        nports: 0,
        fingerprint: fingerprint::<T>(),
    }
}

/// Rebuild ports that were taken apart for a transfer that failed. Their
/// segments are still mapped here, so this cannot fail short of memory.
fn reassemble(parts: Vec<PortParts>) -> Vec<MessagePort> {
    parts
        .into_iter()
        .filter_map(|p| p.assemble().ok())
        .collect()
}
