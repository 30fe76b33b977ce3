//! Receiving: take the next record, spin, then sleep; close events.

use core::ptr::NonNull;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Half, MAX_PORTS, MessagePort, PortReceiver, Trust, Wait};
use crate::error::{CloseReason, RecvError};
use crate::port::message::{Arrived, Body, Holder, Message};
use crate::shm::kit::KitWords;
use crate::shm::layout::{
    CLOSED_MOVED, KITS_IN_ARENAS, KitRef, KitRefs, OOL_DESCRIPTOR, OolDescriptor, kit_refs_size,
};
use crate::shm::pool::reader::{AddError, PoolReader};
use crate::shm::ring::{Corrupt, Record};
use crate::sys::{self, Mapping};
use crate::wire::attachment::{MAX_RECEIVED_SPIN, Partial, PortParts, SegmentRef};
use std::sync::atomic::Ordering;

/// How long a spinning wait goes without a look at the socket. A peer
/// killed while we spin is noticed within this time (one non-blocking
/// `recvmsg`, ~0.5 µs, per period: 0.5% of a spinning core).
pub(super) const LOOK_EVERY: Duration = Duration::from_micros(100);

/// How a spin ended.
pub(super) enum Spun {
    /// A record (or the producer's closed flag) is there.
    Ready,
    /// The spin time is over: sleep.
    TimeUp,
    /// Time to look at the socket, then spin on.
    Look,
}

// The receiving API, written out on the port and on its receiving half; each
// method is one call of the internal function that does the work.
impl MessagePort {
    /// Receive the next message, waiting for one. After the last message the
    /// peer posted, returns [`RecvError::Closed`] with the reason: this is
    /// the close event.
    pub fn recv(&self) -> Result<Message<'_>, RecvError> {
        self.rx().recv_wait(Wait::Forever)
    }

    /// Receive a message if one is waiting; [`RecvError::Empty`] otherwise.
    /// When the ring is empty this makes one non-blocking system call to
    /// learn whether the peer is gone.
    pub fn try_recv(&self) -> Result<Message<'_>, RecvError> {
        self.rx().recv_wait(Wait::No)
    }

    /// Receive a message, waiting at most `timeout` ([`RecvError::Timeout`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message<'_>, RecvError> {
        self.rx().recv_wait(Wait::after(timeout))
    }
}

impl PortReceiver {
    /// [`MessagePort::recv`], from the receiving half.
    pub fn recv(&self) -> Result<Message<'_>, RecvError> {
        self.recv_wait(Wait::Forever)
    }

    /// [`MessagePort::try_recv`], from the receiving half.
    pub fn try_recv(&self) -> Result<Message<'_>, RecvError> {
        self.recv_wait(Wait::No)
    }

    /// [`MessagePort::recv_timeout`], from the receiving half.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message<'_>, RecvError> {
        self.recv_wait(Wait::after(timeout))
    }
}

impl MessagePort {
    /// [`recv`](Self::recv), inlined into its caller: for the C library,
    /// whose `shmport_port_recv` is the caller. Not part of the supported
    /// API.
    #[doc(hidden)]
    #[inline]
    pub fn recv_inlined(&self) -> Result<Message<'_>, RecvError> {
        self.rx().recv_wait(Wait::Forever)
    }
}

impl PortReceiver {
    #[inline]
    fn recv_wait(&self, wait: Wait) -> Result<Message<'_>, RecvError> {
        let mut spin_until: Option<Instant> = None;
        loop {
            if let Some(m) = self.take()? {
                return Ok(m);
            }
            self.flush_releases();
            if let Some(reason) = self.close_reason() {
                return Err(RecvError::Closed(reason));
            }
            match wait {
                Wait::No if !self.shared.hung_up() => {
                    // One look at the socket: has the peer gone away?
                    self.drain_socket(false).map_err(RecvError::Io)?;
                    if !self.shared.hung_up() && !self.shared.broken() {
                        return Err(RecvError::Empty);
                    }
                    continue;
                }
                Wait::No => return Err(RecvError::Empty),
                _ if wait.expired() => return Err(RecvError::Timeout),
                _ => {}
            }
            let spin_end = *spin_until.get_or_insert_with(|| Instant::now() + self.shared.spin());
            match self.spin_for_record(spin_end) {
                Spun::Ready => continue,
                Spun::Look => {
                    // A long spin: has the peer died meanwhile?
                    self.drain_socket(false).map_err(RecvError::Io)?;
                    continue;
                }
                Spun::TimeUp => {}
            }
            let word = self.shared.bell_word().map_err(RecvError::Io)?;
            let rx = self.rx.borrow();
            rx.set_bell(word);
            if rx.prepare_sleep() {
                if rx.producer_closed() {
                    rx.end_sleep();
                    continue;
                }
                drop(rx);
                let r = self.shared.sleep(Half::Receiver, wait, false);
                self.rx.borrow().end_sleep();
                r.map_err(RecvError::Io)?;
            }
        }
    }

    /// Spin until a record is ready, the producer closed, `until`, or
    /// [`LOOK_EVERY`] has passed (time to look at the socket for a dead
    /// peer: only the socket learns of a `kill -9`).
    pub(super) fn spin_for_record(&self, until: Instant) -> Spun {
        let rx = self.rx.borrow();
        let look_at = Instant::now() + LOOK_EVERY;
        let mut i = 0u32;
        loop {
            rx.prefetch_next();
            if rx.ready() || rx.producer_closed() {
                return Spun::Ready;
            }
            // Reading the clock costs ~20 ns: look every 64 turns, and at
            // once on the first (a zero spin does not spin).
            if i % 64 == 0 {
                let now = Instant::now();
                if now >= until {
                    return Spun::TimeUp;
                }
                if now >= look_at {
                    return Spun::Look;
                }
            }
            std::hint::spin_loop();
            i = i.wrapping_add(1);
        }
    }

    /// Spin (up to the port's spin time) until `has_event`; returns whether
    /// it did. Looks at the socket every [`LOOK_EVERY`].
    pub(super) fn spin_for_event(&self) -> std::io::Result<bool> {
        let until = Instant::now() + self.shared.spin();
        loop {
            if self.has_event() {
                return Ok(true);
            }
            match self.spin_for_record(until) {
                Spun::Ready => {}
                Spun::Look => self.drain_socket(false)?,
                Spun::TimeUp => return Ok(self.has_event()),
            }
        }
    }

    /// The close reason, if the ring is empty and the peer is gone.
    #[inline]
    fn close_reason(&self) -> Option<CloseReason> {
        if self.shared.broken() {
            return Some(CloseReason::ProtocolError);
        }
        let rx = self.rx.borrow();
        if rx.producer_close_code() == CLOSED_MOVED && !rx.ready() {
            // Not a close: the peer moved the channel off its link.
            drop(rx);
            return self.moved_on().err();
        }
        // The closed flag (Acquire) or the hang-up comes after the peer's
        // last commit: re-check the ring after seeing either.
        let gone = rx.producer_closed() || self.shared.hung_up();
        if gone && !rx.ready() {
            drop(rx);
            // Take in what is still queued on the socket (a reset peer
            // leaves it there), so that orphans are dropped below.
            // (A port on a link has no socket of its own: nothing queued.)
            if !self.shared.eof() && self.shared.link_only().is_none() {
                let _ = self.drain_socket(false);
            }
            // No record will come for attachments still in the inbox: the
            // peer died between sending them and publishing their records.
            // Drop the ports they carry now (no closed flag: their far
            // peers see `PeerDied`, as the process holding them died) rather
            // than when this port drops.
            let orphans: Vec<_> = self.shared.inbox().drain(..).collect();
            drop(orphans);
            // Nor will the rest of an attachment whose first parts came.
            let partial = std::mem::take(&mut *self.shared.partial());
            drop(partial);
            return Some(self.peer_gone_reason());
        }
        None
    }

    /// Publish released space if any is unpublished, waking a producer that
    /// waits for it.
    #[inline]
    pub(super) fn flush_releases(&self) {
        let mut rx = self.rx.borrow_mut();
        let mut wake = rx.unpublished() && rx.publish_head();
        drop(rx);
        // Pool blocks the release queue had no room for (rare: only after
        // the sending port moved, with its old pool's blocks in flight).
        wake |= self.flush_pool();
        if wake {
            let _ = self.shared.wake_peer(self.wake_word());
        }
    }

    /// Send the pool releases held back; `true`: the peer waits for them.
    fn flush_pool(&self) -> bool {
        match self.pool_reader().flush() {
            Ok(wake) => wake,
            Err(c) => {
                self.corrupt(c);
                false
            }
        }
    }

    /// Called by a dropped [`Message`] that held a pool block: give it back
    /// (no system call, unless the peer waits for it).
    pub(crate) fn release_block(&self, key: u64) {
        let r = match crate::shm::pool::in_link_pool(crate::shm::pool::unkey(key).0) {
            false => self.pool_reader().release(key),
            true => match self
                .shared
                .on_link
                .as_ref()
                .and_then(|on| on.link.pool_in())
            {
                Some(pool) => pool.lock().unwrap_or_else(|e| e.into_inner()).release(key),
                None => return,
            },
        };
        match r {
            Ok(true) => {
                let _ = self.shared.wake_peer(1);
            }
            Ok(false) => {}
            // The peer broke its release queue: the port closes with
            // `ProtocolError` at the next receive.
            Err(c) => {
                self.corrupt(c);
            }
        }
    }

    /// The reader of the pool the block `key` is in: the link's the
    /// channel was made on (by the buffer id), or the channel's own.
    pub(crate) fn pool_for(&self, key: u64) -> Option<Arc<Mutex<PoolReader>>> {
        if !crate::shm::pool::in_link_pool(crate::shm::pool::unkey(key).0) {
            return Some(self.pool.clone());
        }
        self.shared.on_link.as_ref()?.link.pool_in()
    }

    /// Called by a dropped [`Message`].
    #[inline]
    pub(crate) fn release(&self, pos: u64, end: u64) {
        let mut rx = self.rx.borrow_mut();
        if rx.release(pos, end) && rx.publish_head() {
            let word = rx.woke();
            drop(rx);
            let _ = self.shared.wake_peer(word);
        }
    }

    /// Take the next record and make it a message.
    #[inline]
    pub(super) fn take(&self) -> Result<Option<Message<'_>>, RecvError> {
        if self.shared.broken() {
            return Err(RecvError::Closed(CloseReason::ProtocolError));
        }
        let r = self.rx.borrow_mut().take();
        let rec = match r {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(None),
            Err(c) => return Err(RecvError::Closed(self.corrupt(c))),
        };
        if !rec.meta.out_of_line && !rec.meta.pool && !rec.meta.kits && rec.meta.nports == 0 {
            let body = Body::in_ring(rec.payload, rec.len);
            return Ok(Some(self.trusted(Message::new(
                self,
                &rec,
                body,
                Vec::new(),
            ))));
        }
        // A pooled record needs its attachment only to announce a buffer;
        // ports travelling as kits need none.
        let found = if rec.meta.kits {
            self.with_kits(&rec)
        } else if rec.meta.pool && !rec.meta.announce && rec.meta.nports == 0 {
            self.pooled(&rec).map(|b| (b, Vec::new()))
        } else {
            self.with_attachment(&rec)
        };
        match found {
            Ok((body, ports)) => Ok(Some(self.trusted(Message::new(self, &rec, body, ports)))),
            Err(e) => {
                self.release(rec.pos, rec.end);
                Err(e)
            }
        }
    }

    /// Apply the trust mode to a message just taken.
    #[inline]
    fn trusted<'p>(&'p self, mut m: Message<'p>) -> Message<'p> {
        if self.trust.get() == Trust::Untrusted {
            m.copy_out_of_ring();
        }
        m
    }

    /// The record needs its attachment: take it from the inbox (or the
    /// socket), check it matches the record, map an out-of-line payload.
    fn with_attachment(&self, rec: &Record) -> Result<(Body, Vec<Arrived>), RecvError> {
        if self.shared.inbox().is_empty() {
            // If the socket fails now, this record's attachment may still be
            // queued and would pair with the next record: stop reading.
            self.drain_socket(true).map_err(|e| {
                let _ = self
                    .shared
                    .broken
                    .set(Corrupt("socket failed while an attachment was due"));
                RecvError::Io(e)
            })?;
        }
        let next = self.shared.inbox().pop_front();
        let Some(att) = next else {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("record without its attachment")),
            ));
        };
        if att.lost {
            // This message's descriptors never arrived (this process ran out
            // of descriptors): an error for this message; the port goes on.
            return Err(RecvError::Io(std::io::Error::from_raw_os_error(
                libc::EMFILE,
            )));
        }
        if att.ports.len() != rec.meta.nports as usize
            || att.ool.is_some() != rec.meta.out_of_line
            || att.pool.is_some() != rec.meta.announce
        {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("attachment does not match its record")),
            ));
        }
        if let Some((info, fd)) = att.pool {
            let added = self.pool_reader().add(info, fd);
            match added {
                Ok(()) => {}
                Err(AddError::Corrupt(c)) => return Err(RecvError::Closed(self.corrupt(c))),
                // Out of address space here: the buffer is unknown, and
                // every record naming it will be refused.
                Err(AddError::Io(e)) => {
                    for p in att.ports {
                        super::parts::discard(p);
                    }
                    return Err(RecvError::Io(e));
                }
            }
        }
        let body = match att.ool {
            Some(fd) => self.map_out_of_line(rec, fd)?,
            None if rec.meta.pool => self.pooled(rec)?,
            None => Body::in_ring(rec.payload, rec.len),
        };
        Ok((body, att.ports.into_iter().map(Arrived::Parts).collect()))
    }

    /// A record whose ports travel as kits this port holds: take each kit
    /// up (its number and generation checked against what this port
    /// holds), the message follows the references.
    fn with_kits(&self, rec: &Record) -> Result<(Body, Vec<Arrived>), RecvError> {
        let n = rec.meta.nports as usize;
        let prefix = kit_refs_size(n);
        if n == 0 || n > MAX_PORTS || prefix > rec.len {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("kit references do not fit their record")),
            ));
        }
        // SAFETY: the record's payload holds `rec.len >= prefix` bytes
        // inside the ring, 32-byte aligned; the references are only
        // atomics, so a peer writing them races with atomics only.
        let head = unsafe { rec.payload.cast::<KitRefs>().as_ref() };
        // Relaxed: ordered after the Acquire load of the commit word.
        if head.flags.load(Ordering::Relaxed) == KITS_IN_ARENAS {
            let id = head.link.load(Ordering::Relaxed);
            let link = match self.link_of_kits(id) {
                Ok(link) => link,
                // The link's invitation came when this process was out of
                // descriptors: this message fails alone (its ports' peers
                // see the link hung up).
                Err(_) if self.shared.link_lost(id) => {
                    return Err(RecvError::Io(std::io::Error::from_raw_os_error(
                        rustix::io::Errno::MFILE.raw_os_error(),
                    )));
                }
                Err(c) => return Err(RecvError::Closed(self.corrupt(c))),
            };
            let (ports, prefix) = super::promote::arena_ports(&link, rec)
                .map_err(|c| RecvError::Closed(self.corrupt(c)))?;
            // SAFETY: `prefix <= rec.len`: the message lies inside the payload.
            let body = Body::in_ring(unsafe { rec.payload.add(prefix) }, rec.len - prefix);
            return Ok((
                body,
                ports
                    .into_iter()
                    .map(|p| Arrived::Built(Box::new(p)))
                    .collect(),
            ));
        }
        // Relaxed: ordered after the Acquire load of the commit word. Each
        // field is read once; only the copies are checked and used.
        if head.count.load(Ordering::Relaxed) as usize != n {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("kit references disagree with their record")),
            ));
        }
        let link = self.shared.link();
        let mut ports = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: entry `i` lies inside the prefix, inside the payload.
            let r = unsafe {
                rec.payload
                    .add(size_of::<KitRefs>() + i * size_of::<KitRef>())
                    .cast::<KitRef>()
                    .as_ref()
            };
            let (id, generation) = (
                r.id.load(Ordering::Relaxed),
                r.generation.load(Ordering::Relaxed),
            );
            let spin =
                Duration::from_nanos(r.spin_ns.load(Ordering::Relaxed)).min(MAX_RECEIVED_SPIN);
            // The kits taken so far close with `ports` (their peer's ports
            // see them hung up): this port is broken anyway.
            let kit = link
                .take_held(id, generation)
                .map_err(|c| RecvError::Closed(self.corrupt(c)))?;
            ports.push(Arrived::Parts(PortParts {
                seg: SegmentRef::Mapped(kit.seg),
                sock: kit.sock,
                side: kit.side,
                spin,
                inbox: Default::default(),
                partial: Partial::default(),
                pool: Vec::new(),
                kit: true,
                held: Vec::new(),
                links: Vec::new(),
            }));
        }
        // SAFETY: `prefix <= rec.len`: the message lies inside the payload.
        let body = Body::in_ring(unsafe { rec.payload.add(prefix) }, rec.len - prefix);
        Ok((body, ports))
    }

    /// The link named `id` that kits of a record on this port live in: the
    /// one this port's channel lives on, or one the peer's end sent over
    /// its socket (before the record: it is queued there if not taken in).
    pub(super) fn link_of_kits(
        &self,
        id: u64,
    ) -> Result<std::sync::Arc<crate::link::ArenaLink>, Corrupt> {
        if let Some(on) = self.shared.link_only() {
            if on.link.id() == id {
                return Ok(on.link.clone());
            }
            return Err(Corrupt("a record names another link's kits"));
        }
        for round in 0..2 {
            if let Some(l) = self.shared.adopt_link(id) {
                return l;
            }
            if round == 0 {
                let _ = self.drain_socket(false);
            }
        }
        Err(Corrupt("a record names a link never sent"))
    }

    /// A port that came on a kit of this port's channel (`arrived`: as a
    /// new kit's far end, with its descriptors) is kept by this port's
    /// link when it closes cleanly. Its number and generation are read
    /// from its segment: a peer that lies there harms only kits between
    /// the two of them.
    pub(crate) fn keep_kit_of(&self, port: &MessagePort, arrived: bool) {
        let seg = &port.tx().shared.seg;
        let (id, generation) = (seg.kit_id(), seg.kit_gen());
        let link = self.shared.link();
        if arrived {
            // One held under the same number is stale: it is never named again.
            link.forget_held(id);
        }
        port.keep_kit(link.home(id, generation, false));
    }

    /// The body of a pooled record: the block its reference names, in the
    /// peer's pool buffer mapped here.
    fn pooled(&self, rec: &Record) -> Result<Body, RecvError> {
        let Some((buffer, block, len)) = crate::shm::pool::reference(rec) else {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("pool reference has the wrong size")),
            ));
        };
        let resolved = match crate::shm::pool::in_link_pool(buffer) {
            false => self.pool_reader().resolve(buffer, block, len),
            true => match self.shared.on_link.as_ref() {
                Some(on) => on
                    .link
                    .with_peer_block(buffer, block, len, |_, bytes, key| {
                        (NonNull::from(bytes).cast::<u8>(), bytes.len(), key)
                    }),
                None => Err(Corrupt("a block of a link's pool off a link")),
            },
        };
        let (ptr, len, key) = resolved.map_err(|c| RecvError::Closed(self.corrupt(c)))?;
        if len > self.max_message.get() {
            // The block goes back at once; this message only.
            self.release_block(key);
            return Err(RecvError::Refused(
                "pooled message larger than this port's max_message_size",
            ));
        }
        Ok(Body {
            ptr,
            len,
            holder: Holder::Block(key),
        })
    }

    fn map_out_of_line(&self, rec: &Record, fd: OwnedFd) -> Result<Body, RecvError> {
        if rec.len != OOL_DESCRIPTOR {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("out-of-line descriptor has the wrong size")),
            ));
        }
        // SAFETY: the record's payload holds OOL_DESCRIPTOR bytes inside the
        // ring, 32-byte aligned (more than an OolDescriptor needs); the
        // descriptor is only atomics, so a peer writing it races with
        // atomics only.
        let descriptor = unsafe { rec.payload.cast::<OolDescriptor>().as_ref() };
        // Relaxed: ordered after the Acquire load of the commit word that
        // handed us the record. Read once; only the copy is checked and used.
        let len = descriptor.len.load(core::sync::atomic::Ordering::Relaxed);
        let size = sys::memfd::checked_size(&fd, sys::memfd::SIZE_SEALS).map_err(|_| {
            RecvError::Closed(self.corrupt(Corrupt("out-of-line memfd not sealed")))
        })?;
        if self.trust.get() == Trust::Untrusted
            && sys::memfd::checked_size(&fd, sys::memfd::OOL_SEALS).is_err()
        {
            // Mapped as it is, the peer could still write to it after we
            // validate it: refused (this message only).
            return Err(RecvError::Refused(
                "untrusted port: out-of-line payload not sealed against writes",
            ));
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > size || len == 0 {
            return Err(RecvError::Closed(
                self.corrupt(Corrupt("out-of-line length outside its memfd")),
            ));
        }
        if len > self.max_message.get() {
            // Checked before mapping: nothing of it is mapped or populated.
            // This message only; the port goes on.
            return Err(RecvError::Refused(
                "out-of-line message larger than this port's max_message_size",
            ));
        }
        // Private: reads are the file's pages all the same, and a binding that
        // hands the bytes on as writable memory (`Message::into_shared_bytes`)
        // can make them copy-on-write without touching the sender's file.
        let map = Mapping::private(&fd, len, true).map_err(RecvError::Io)?;
        Ok(Body {
            ptr: map.ptr(),
            len,
            holder: Holder::Mapped(map),
        })
    }
}
