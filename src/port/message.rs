//! A received message: its bytes, read in place.

use std::fmt;

use crate::shm::segment::OpenError;
use core::ptr::NonNull;

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::{Archive, Portable};

use crate::error::AccessError;
use crate::port::{MessagePort, PortReceiver};
use crate::shm::ring::{Kind, Record, RecordMeta};
use std::sync::{Arc, Mutex, Weak};

use crate::port::Shared;
use crate::shm::pool::reader::PoolReader;
use crate::sys::Mapping;
use crate::wire::attachment::PortParts;
use crate::wire::writer::fingerprint;

/// Where a message's bytes are, and what keeps them there.
pub(crate) struct Body {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) holder: Holder,
}

/// What keeps a message's bytes valid, besides its ring record (which the
/// message holds until it drops, or until untrusted mode copies it out).
/// One field for all the cases keeps a `Message` small: a move of one is a
/// few words, not a call to `memcpy`.
pub(crate) enum Holder {
    /// The bytes are the ring record's payload.
    Ring,
    /// A block of the peer's pool (its key), given back on drop.
    Block(u64),
    /// A sealed memfd mapped private and read-only for this message.
    Mapped(Mapping),
    /// A private copy (untrusted mode): `ptr` points into it.
    Copied(
        // Never read through: it owns the bytes `ptr` points into.
        #[allow(dead_code)] rkyv::util::AlignedVec<16>,
    ),
}

impl Body {
    /// The payload of a ring record.
    pub(crate) fn in_ring(ptr: NonNull<u8>, len: usize) -> Body {
        Body {
            ptr,
            len,
            holder: Holder::Ring,
        }
    }
}

/// A value that can be read from a typed message: its archived form can be
/// validated. Implemented automatically for every `rkyv::Archive` type whose
/// archive derives `CheckBytes` (rkyv's derive does by default).
pub trait Receivable:
    Archive<Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
{
}

impl<T> Receivable for T where
    T: Archive<Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
{
}

/// A received message. Its bytes stay where the sender wrote them (in the
/// ring, or in an out-of-line memfd) and are valid while the message lives;
/// dropping it gives the ring space back to the sender.
///
/// The message borrows its port: the port cannot be closed or moved while
/// messages from it are held. Several messages may be held at once, and
/// dropped in any order.
pub struct Message<'p> {
    port: &'p PortReceiver,
    pos: u64,
    end: u64,
    meta: RecordMeta,
    body: Body,
    ports: Vec<Arrived>,
    /// The record's ring space is still held (released on drop).
    holds_ring: bool,
}

impl<'p> Message<'p> {
    #[inline]
    pub(crate) fn new(
        port: &'p PortReceiver,
        rec: &Record,
        body: Body,
        ports: Vec<Arrived>,
    ) -> Self {
        Message {
            port,
            pos: rec.pos,
            end: rec.end,
            meta: rec.meta,
            body,
            ports,
            holds_ring: true,
        }
    }

    /// Untrusted mode: copy a payload that lies in the ring or in a pool
    /// block (memory the peer can still write) into private memory, and
    /// give the ring space and the block back at once. From here on nothing
    /// the peer writes can change what this message reads, so validation
    /// holds (no time-of-check to time-of-use gap).
    pub(crate) fn copy_out_of_ring(&mut self) {
        if matches!(self.body.holder, Holder::Mapped(_)) || !self.holds_ring {
            return;
        }
        let mut copy = rkyv::util::AlignedVec::<16>::with_capacity(self.body.len);
        copy.extend_from_slice(self.bytes());
        // The copy's heap buffer does not move while it is owned here.
        self.body.ptr = NonNull::new(copy.as_mut_ptr()).unwrap_or(NonNull::dangling());
        let held = std::mem::replace(&mut self.body.holder, Holder::Copied(copy));
        self.holds_ring = false;
        self.port.release(self.pos, self.end);
        if let Holder::Block(key) = held {
            self.port.release_block(key);
        }
    }

    /// The payload: an rkyv archive for typed messages, the posted bytes
    /// for raw ones. Zero copy.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr/len` lie inside the ring's data area (checked when
        // the record was taken; the producer does not write the record until
        // this message releases it on drop), or inside a pool block of a
        // read-only mapping of a buffer sealed against resizes, which the
        // port keeps mapped while it lives (and this message borrows the
        // port; the block was checked to lie inside the buffer and `len` to
        // fit the block), or inside `map`, a read-only
        // mapping of at least `len` bytes of a memfd sealed against resizes
        // (so no SIGBUS), or inside `copy` (`len` bytes): both owned by this
        // message.
        unsafe { core::slice::from_raw_parts(self.body.ptr.as_ptr(), self.body.len) }
    }

    /// Was this message posted as a typed value (rather than raw bytes)?
    pub fn is_typed(&self) -> bool {
        self.meta.kind == Kind::Typed
    }

    /// Did the payload travel out of line (in its own memfd)?
    pub fn is_out_of_line(&self) -> bool {
        matches!(self.body.holder, Holder::Mapped(_))
    }

    /// Is the payload read in place in a block of the sender's pool (a
    /// message too large for the ring)? Untrusted ports copy it out first
    /// and answer `false`.
    pub fn is_pooled(&self) -> bool {
        matches!(self.body.holder, Holder::Block(_))
    }

    /// For a payload read in a block of the sender's pool
    /// ([`is_pooled`](Self::is_pooled)): the block's size, and how many
    /// blocks of that size the sender's pool has shown this receiver so
    /// far. A sender whose pool is at its cap waits for a block to come
    /// back; a receiver that keeps payloads past their messages for a time
    /// it does not control ([`into_shared_bytes`](Self::into_shared_bytes)
    /// handed to a garbage collector) keeps fewer than that many blocks of
    /// one size, and copies the rest, so that one always comes back.
    /// `None` for other payloads.
    pub fn pool_class(&self) -> Option<(usize, usize)> {
        match self.body.holder {
            Holder::Block(key) => self
                .port
                .pool_for(key)?
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .class_of(key),
            _ => None,
        }
    }

    /// Number of ports that came with this message and have not been taken.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// Take the ports that came with this message, in the order they were
    /// posted. Ports not taken are closed when the message drops (their
    /// peers see [`CloseReason::Closed`](crate::CloseReason::Closed)).
    ///
    /// If a received port is not valid (its segment has a bad magic, version
    /// or size, or its socket is of the wrong kind), that port is closed and
    /// the error carries every port that is valid, in order: no good port is
    /// lost.
    pub fn take_ports(&mut self) -> Result<Vec<MessagePort>, TakePortsError> {
        let mut ports = Vec::with_capacity(self.ports.len());
        let mut error = None;
        for arrived in self.ports.drain(..) {
            let parts = match arrived {
                Arrived::Built(p) => {
                    ports.push(*p);
                    continue;
                }
                Arrived::Parts(parts) => parts,
            };
            let (kit, arrived) = (
                parts.kit,
                matches!(parts.seg, crate::wire::attachment::SegmentRef::Unopened(_)),
            );
            match parts.assemble() {
                Ok(p) => {
                    if kit {
                        self.port.keep_kit_of(&p, arrived);
                    }
                    ports.push(p)
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        match error {
            None => Ok(ports),
            Some(error) => Err(TakePortsError { error, ports }),
        }
    }

    /// The type fingerprint the sender attached (0 for raw bytes).
    pub fn fingerprint(&self) -> u64 {
        self.meta.fingerprint
    }

    /// The archived value, validated, read in place.
    ///
    /// Fails with [`AccessError::TypeMismatch`] if the message holds another
    /// type, [`AccessError::NotTyped`] for raw bytes, and
    /// [`AccessError::Invalid`] if the bytes are not a valid archive of `T`.
    /// Validation costs tens of nanoseconds for plain data, and grows with
    /// the number of strings and nested values.
    pub fn get<T: Receivable>(&self) -> Result<&T::Archived, AccessError> {
        access::<T>(self.meta, self.bytes())
    }

    /// The archived value without validation: only the message's kind and
    /// `T`'s fingerprint are checked. For trusted peers, where validation
    /// is measurable (large or deeply nested values).
    ///
    /// # Safety
    /// The peer must have posted a valid archive of `T` (a process built
    /// from the same code, posting `T` with [`MessagePort::post`]), and must
    /// not write to the record after publishing it (the protocol forbids
    /// it; only a hostile process would). Otherwise reading the value is
    /// undefined behaviour. With [`Trust::Untrusted`](crate::Trust::Untrusted)
    /// the second condition holds whatever the peer does.
    pub unsafe fn get_unchecked<T: Archive>(&self) -> Result<&T::Archived, AccessError>
    where
        T::Archived: Portable,
    {
        check_type::<T>(self.meta)?;
        let bytes = self.bytes();
        if bytes.len() < core::mem::size_of::<T::Archived>() {
            return Err(AccessError::TooShort);
        }
        // SAFETY: the caller promises `bytes` is a valid archive of `T` that
        // nobody changes while borrowed; its length covers the root (checked
        // above), and the payload is 16-byte aligned (ring records start at
        // 32 bytes into a 64-byte aligned slot, out-of-line payloads and
        // private copies at page or 16-byte boundaries).
        Ok(unsafe { rkyv::access_unchecked::<T::Archived>(bytes) })
    }

    /// Validate and deserialize into an owned `T` (a copy).
    pub fn deserialize<T>(&self) -> Result<T, AccessError>
    where
        T: Receivable,
        T::Archived: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        deserialize_archived(self.get::<T>()?)
    }

    /// Copy the message out of the ring (its bytes, aligned for typed
    /// access) with its ports taken, releasing the ring space at once. This
    /// is what a [`Stream`](crate::many::aio::MessageStream) yields: an owned value
    /// that borrows nothing.
    pub fn to_owned_message(mut self) -> OwnedMessage {
        let mut bytes = rkyv::util::AlignedVec::<16>::with_capacity(self.body.len);
        bytes.extend_from_slice(self.bytes());
        let (ports, port_error) = match self.take_ports() {
            Ok(p) => (p, None),
            Err(e) => (e.ports, Some(e.error)),
        };
        OwnedMessage {
            meta: self.meta,
            bytes,
            ports,
            port_error,
        }
    }
}

impl<'p> Message<'p> {
    /// The payload of a message from outside the ring (a pool block, or an
    /// out-of-line memfd) as an owned, zero-copy handle, made copy-on-write
    /// (a write through [`SharedBytes::as_mut_ptr`] changes this process's
    /// copy of that page only): the ring record is released now, and the
    /// bytes stay valid until the [`SharedBytes`] drops, independent of the
    /// port (which can be closed or moved meanwhile), on any thread. For a
    /// language binding handing the bytes to a garbage collector as
    /// external memory. A pool block goes back to the sender when the
    /// `SharedBytes` drops (until then the sender's pool counts it as in
    /// flight, as it does a held message); if the port has moved to
    /// another process by then, the block is not given back.
    ///
    /// Given back unchanged if the payload lies in the ring, or was copied
    /// in untrusted mode. Ports not taken before are closed, as when the
    /// message drops.
    // The message comes back as it was, like `TransferError`'s ports; a box
    // would cost an allocation on the in-ring path, the common one.
    #[allow(clippy::result_large_err)]
    pub fn into_shared_bytes(mut self) -> Result<SharedBytes, Message<'p>> {
        let memory = match std::mem::replace(&mut self.body.holder, Holder::Ring) {
            Holder::Mapped(map) if map.make_copy_on_write().is_ok() => SharedMemory::Mapped(map),
            Holder::Block(key)
                if self.port.pool_for(key).is_some_and(|p| {
                    p.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .open_block(key)
                        .is_ok()
                }) =>
            {
                SharedMemory::Block {
                    pool: self.port.pool_for(key).expect("looked up just above"),
                    core: Arc::downgrade(&self.port.shared),
                    key,
                }
            }
            other => {
                self.body.holder = other;
                return Err(self);
            }
        };
        Ok(SharedBytes {
            ptr: self.body.ptr,
            len: self.body.len,
            memory,
        })
    }
}

/// A payload kept after its message was released
/// ([`Message::into_shared_bytes`]): an out-of-line payload's mapping, or a
/// block of the peer's pool (given back to the sender when this drops, from
/// any thread). Zero copy.
pub struct SharedBytes {
    ptr: NonNull<u8>,
    len: usize,
    memory: SharedMemory,
}

/// What keeps a [`SharedBytes`]'s bytes.
enum SharedMemory {
    /// An out-of-line memfd mapped for this value, unmapped on drop.
    Mapped(
        // Never read through: it owns the mapping `ptr` points into.
        #[allow(dead_code)] Mapping,
    ),
    /// A pool block made copy-on-write for this value; the reader keeps
    /// its buffer mapped, and takes the block back on drop.
    Block {
        pool: Arc<Mutex<PoolReader>>,
        /// The port's core, to wake a sender that waits for the block (if
        /// the port still exists; if not, nobody waits on it).
        core: Weak<Shared>,
        key: u64,
    },
}

impl SharedBytes {
    /// The payload bytes (typed messages: the archive).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr/len` lie inside the mapping `memory` keeps (checked
        // when the message was received): an out-of-line memfd's private
        // mapping owned by this value, or a pool buffer's private mapping
        // that the reader in the `Arc` keeps until every holder is gone,
        // whose block the sender does not reuse before this value gives it
        // back on drop. Both files are sealed against resizes (no SIGBUS).
        // Writes through `as_mut_ptr` are the caller's, as with any raw
        // pointer, and stay in this process (copy-on-write).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The payload's start, writable (copy-on-write, this process only),
    /// for handing the memory to a runtime that may write it; valid for
    /// `bytes().len()` bytes while this value lives.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        if let SharedMemory::Block { pool, core, key } = &self.memory {
            let back = pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .close_block(*key);
            match (back, core.upgrade()) {
                (Ok(true), Some(core)) => {
                    let _ = core.wake_peer(1);
                }
                (Err(c), Some(core)) => {
                    core.corrupt(c);
                }
                _ => {}
            }
        }
    }
}

// SAFETY: the bytes are shared memory owned through `memory` (a Mapping,
// Send and Sync; or an Arc of a Mutex and a Weak, Send and Sync); nothing in
// the value is tied to a thread.
unsafe impl Send for SharedBytes {}
// SAFETY: as above: only shared reads are handed out by reference.
unsafe impl Sync for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len)
            .finish()
    }
}

/// Checks shared by [`Message::get`] and [`OwnedMessage::get`]: a typed
/// message of `T`'s fingerprint whose bytes validate as `T`'s archive.
fn access<T: Receivable>(meta: RecordMeta, bytes: &[u8]) -> Result<&T::Archived, AccessError> {
    check_type::<T>(meta)?;
    rkyv::access::<T::Archived, rancor::Error>(bytes).map_err(AccessError::Invalid)
}

/// An owned `T` from its validated archive.
fn deserialize_archived<T>(archived: &T::Archived) -> Result<T, AccessError>
where
    T: Receivable,
    T::Archived: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(AccessError::Invalid)
}

/// Is the message a typed `T`?
fn check_type<T: Archive>(meta: RecordMeta) -> Result<(), AccessError> {
    if meta.kind != Kind::Typed {
        return Err(AccessError::NotTyped);
    }
    let expected = fingerprint::<T>();
    if meta.fingerprint != expected {
        return Err(AccessError::TypeMismatch {
            expected,
            found: meta.fingerprint,
        });
    }
    Ok(())
}

/// A message copied out of the ring ([`Message::to_owned_message`]): it
/// owns its bytes and its ports, so it can outlive the port, cross threads
/// and `.await` points. One copy of the payload; [`Message`] is the zero-copy
/// form.
pub struct OwnedMessage {
    meta: RecordMeta,
    bytes: rkyv::util::AlignedVec<16>,
    ports: Vec<MessagePort>,
    port_error: Option<crate::shm::segment::OpenError>,
}

impl OwnedMessage {
    /// The payload bytes (16-byte aligned).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Was it posted as a typed value?
    pub fn is_typed(&self) -> bool {
        self.meta.kind == Kind::Typed
    }

    /// The archived value, validated (as [`Message::get`]).
    pub fn get<T: Receivable>(&self) -> Result<&T::Archived, AccessError> {
        access::<T>(self.meta, &self.bytes)
    }

    /// Validate and deserialize into an owned `T`.
    pub fn deserialize<T>(&self) -> Result<T, AccessError>
    where
        T: Receivable,
        T::Archived: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        deserialize_archived(self.get::<T>()?)
    }

    /// The ports that came with the message, in order. If one was not
    /// valid it was closed, and the others are here; the error says why
    /// ([`OwnedMessage::port_error`]).
    pub fn take_ports(&mut self) -> Vec<MessagePort> {
        std::mem::take(&mut self.ports)
    }

    /// Why a port that came with the message could not be opened, if one
    /// could not.
    pub fn port_error(&self) -> Option<&crate::shm::segment::OpenError> {
        self.port_error.as_ref()
    }
}

impl std::fmt::Debug for OwnedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("len", &self.bytes.len())
            .field("typed", &self.is_typed())
            .field("ports", &self.ports.len())
            .finish()
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        // Most messages carry no ports: skip building a drain for nothing.
        if !self.ports.is_empty() {
            for p in std::mem::take(&mut self.ports) {
                if let Arrived::Parts(p) = p {
                    super::parts::discard(p);
                }
            }
        }
        if self.holds_ring {
            self.port.release(self.pos, self.end);
        }
        if let Holder::Block(key) = self.body.holder {
            self.port.release_block(key);
        }
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("typed", &self.is_typed())
            .field("len", &self.bytes().len())
            .field("out_of_line", &self.is_out_of_line())
            .field("pooled", &self.is_pooled())
            .finish()
    }
}

/// Some ports that came with a message could not be opened
/// ([`Message::take_ports`](crate::Message::take_ports)); those were closed.
#[derive(Debug)]
pub struct TakePortsError {
    /// Why the first invalid port could not be opened.
    pub error: OpenError,
    /// The ports that were valid, in the order they were posted.
    pub ports: Vec<crate::MessagePort>,
}

impl fmt::Display for TakePortsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a received port is not valid: {} ({} valid ports handed over)",
            self.error,
            self.ports.len()
        )
    }
}

impl std::error::Error for TakePortsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A port that came with a message: its parts (descriptors, to put
/// together), or built already (a kit in a link's arena).
pub(crate) enum Arrived {
    Parts(PortParts),
    Built(Box<MessagePort>),
}
