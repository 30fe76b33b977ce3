//! Entry points for the fuzzers (`fuzz/`) and the hostile-peer tests
//! (`tests/hostile*.rs`). Not part of the API: hidden from the docs, and may
//! change with any release.
//!
//! - [`victim_and_raw_peer`]: a real port (the victim) whose other end is
//!   not a port but a [`RawPeer`]: the segment and the socket, raw, so a
//!   test or fuzzer can write any value into the shared memory and any
//!   message onto the socket, as a broken or hostile process would.
//! - [`decode_attachment`]: the parser of what arrives on a port's socket
//!   with descriptors, and the opening of the ports it carries.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::port::MessagePort;
use crate::shm::layout::{HEADER_AREA, POOL_REF, PoolRef, RELEASE_HEADER, ring_data, segment_size};
use crate::shm::release::{Pushed, Releaser};
use crate::shm::ring::{Barriers, Consumer, Producer, RecordMeta, RingMemory};
use crate::shm::segment::OpenError;
use crate::shm::segment::Side;
use crate::shm::segment::{Segment, SegmentRelease, SegmentRing};
use crate::sys;
use crate::wire::attachment::Attachment;

/// The far end of a victim port, without a port: what a hostile process
/// holds. It owns the segment and the socket end, and plays both ring
/// roles of side A (producer of ring 0, which the victim reads; consumer of
/// ring 1, which the victim writes) through the ring code, or not at all:
/// [`RawPeer::store`] writes any word anywhere in the segment.
pub struct RawPeer {
    seg: Arc<Segment>,
    /// Start of the segment mapping (kept alive by `seg`).
    base: NonNull<u8>,
    sock: OwnedFd,
    producer: Producer<SegmentRing>,
    consumer: Consumer<SegmentRing>,
    /// Gives blocks of the victim's pool back (the victim's pool is ring
    /// 1's: the ring the victim writes).
    releaser: Releaser<SegmentRelease>,
}

// SAFETY: `base` points into the mapping owned by `seg` (an `Arc`, which is
// Send); the mapping is only accessed through atomics, like every segment.
unsafe impl Send for RawPeer {}

/// A victim port (side B of a fresh segment with rings of `capacity` bytes,
/// spin time zero) and the raw peer at its other end.
pub fn victim_and_raw_peer(capacity: usize) -> io::Result<(MessagePort, RawPeer)> {
    let seg = Segment::create(capacity)?;
    let (mine, theirs) = sys::socket::pair()?;
    let victim = MessagePort::from_parts(seg.clone(), Side::B, theirs, Duration::ZERO)
        .map_err(io::Error::other)?;
    let producer = Producer::new(SegmentRing::new(seg.clone(), 0), Barriers::FENCES)
        .map_err(io::Error::other)?;
    let consumer = Consumer::new(SegmentRing::new(seg.clone(), 1), Barriers::FENCES)
        .map_err(io::Error::other)?;
    let releaser = Releaser::new(SegmentRelease::new(seg.clone(), 1), Barriers::FENCES)
        .map_err(io::Error::other)?;
    // Ring 0's data area starts HEADER_AREA bytes into the mapping.
    let base = producer.memory().data();
    // SAFETY: ring 0's data area lies HEADER_AREA bytes after the start of
    // the segment mapping, so stepping back stays inside it.
    let base = unsafe { base.sub(HEADER_AREA) };
    Ok((
        victim,
        RawPeer {
            seg,
            base,
            sock: mine,
            producer,
            consumer,
            releaser,
        },
    ))
}

impl RawPeer {
    /// Bytes in each ring.
    pub fn capacity(&self) -> usize {
        self.seg.capacity()
    }

    /// Size of the whole segment.
    pub fn segment_len(&self) -> usize {
        segment_size(self.seg.capacity())
    }

    /// Offset in the segment of ring 0's data area (the ring the victim
    /// reads).
    pub fn victim_ring_data(&self) -> usize {
        ring_data(0, self.seg.capacity())
    }

    /// The socket end that the victim's socket is connected to.
    pub fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The segment's memfd.
    pub fn segment_fd(&self) -> BorrowedFd<'_> {
        self.seg.as_fd()
    }

    /// Store `value` in the 8-byte word at `offset` of the segment (Release,
    /// as a producer publishing would). `offset` is rounded down to a
    /// multiple of 8 and taken modulo the segment size, so any number names
    /// some word of the segment.
    pub fn store(&self, offset: usize, value: u64) {
        let len = self.segment_len();
        let offset = (offset % len) & !7;
        self.word(offset).store(value, Ordering::Release);
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.segment_len());
        // SAFETY: `offset` is 8-aligned and the word lies inside the
        // segment mapping (the callers reduce it modulo the segment's
        // length, a multiple of 8), which `self.seg` keeps mapped for as
        // long as the returned borrow of `self`; the mapping is page
        // aligned, so the word is aligned for an AtomicU64; the shared bytes
        // are only ever accessed through atomics and raw pointers, never
        // through references to plain data, so this view aliases nothing.
        unsafe { self.base.add(offset).cast::<AtomicU64>().as_ref() }
    }

    /// Write one record into the ring the victim reads, through the ring
    /// code (so its position and commit word are right), with whatever
    /// header fields `meta` states. Returns the record's position (its
    /// header is at segment offset `victim_ring_data() + pos % capacity()`),
    /// or `None` when the ring has no room, the payload is longer than a
    /// record may be, or the victim's published head is corrupt.
    pub fn commit(&mut self, meta: RecordMeta, payload: &[u8]) -> Option<u64> {
        let slot = self.producer.reserve(payload.len()).ok()??;
        let pos = slot.pos;
        // SAFETY: the reserved slot has `room >= payload.len()` writable
        // bytes at `payload`, inside the data area, which the victim does
        // not read until the commit below.
        unsafe {
            core::ptr::copy_nonoverlapping(payload.as_ptr(), slot.payload.as_ptr(), payload.len())
        };
        if self.producer.commit(slot, payload.len(), meta) {
            let _ = sys::socket::send_wake(&self.sock);
        }
        Some(pos)
    }

    /// Take and release everything the victim posted (so its posts find
    /// room); returns how many records were taken. Stops at the first
    /// record the ring code refuses (the victim is not hostile, so that
    /// would be a bug).
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Ok(Some(r)) = self.consumer.take() {
            self.consumer.release(r.pos, r.end);
            n += 1;
        }
        if self.consumer.unpublished() && self.consumer.publish_head() {
            let _ = sys::socket::send_wake(&self.sock);
        }
        n
    }

    /// Take the next record the victim posted and release its ring space;
    /// for a pooled record, the reference it carries (buffer, block,
    /// length), which the block stays lent under until
    /// [`give_back`](Self::give_back). `None` when no record is there (or
    /// it is not pooled).
    pub fn take_pooled(&mut self) -> Option<(u32, u32, u64)> {
        let r = self.consumer.take().ok()??;
        let found = (r.meta.pool && r.len == POOL_REF).then(|| {
            // SAFETY: the record's payload holds POOL_REF bytes inside the
            // ring, 32-byte aligned; the reference is only atomics.
            let p = unsafe { r.payload.cast::<PoolRef>().as_ref() };
            (
                p.buffer.load(Ordering::Relaxed),
                p.block.load(Ordering::Relaxed),
                p.len.load(Ordering::Relaxed),
            )
        });
        self.consumer.release(r.pos, r.end);
        if self.consumer.publish_head() {
            let _ = sys::socket::send_wake(&self.sock);
        }
        found
    }

    /// Give the victim's pool the key of block `block` of buffer `buffer`
    /// back, as a receiver does (whether it was lent or not); `false` when
    /// the release queue is full or corrupt.
    pub fn give_back(&mut self, buffer: u32, block: u32) -> bool {
        match self.releaser.push(crate::shm::pool::key(buffer, block)) {
            Ok(Pushed::Queued { wake }) => {
                if wake {
                    let _ = sys::socket::send_wake(&self.sock);
                }
                true
            }
            _ => false,
        }
    }

    /// Offset in the segment of the release header of the victim's pool.
    pub fn victim_release_header(&self) -> usize {
        RELEASE_HEADER[1]
    }

    /// Wake the victim if it sleeps (a hostile peer may also send tokens at
    /// any time: they cost nothing).
    pub fn wake(&self) {
        let _ = sys::socket::send_wake(&self.sock);
    }
}

/// Largest payload one record in a ring of `capacity` bytes carries.
pub fn max_payload(capacity: usize) -> usize {
    crate::shm::ring::max_payload(capacity)
}

/// What [`decode_attachment`] made of an attachment.
pub struct DecodedAttachment {
    /// It carried an out-of-line memfd.
    pub out_of_line: bool,
    /// It announced a pool buffer: (id, log2 of the block size, blocks)
    /// and its memfd.
    pub pool: Option<((u32, u8, u32), OwnedFd)>,
    /// It was the placeholder for descriptors lost on receipt.
    pub lost: bool,
    /// Each port it carried, opened (or why it could not be).
    pub ports: Vec<Result<MessagePort, OpenError>>,
}

/// Decode an attachment body (the bytes after the tag) with its received
/// descriptors, as a port does with what arrives on its socket, then open
/// every port it carries, as [`Message::take_ports`](crate::Message::take_ports)
/// does. A refused attachment names the check that failed.
pub fn decode_attachment(
    body: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<DecodedAttachment, &'static str> {
    let att = Attachment::decode(body, fds).map_err(|c| c.0)?;
    Ok(DecodedAttachment {
        out_of_line: att.ool.is_some(),
        pool: att.pool.map(|(i, fd)| ((i.id, i.log2, i.blocks), fd)),
        lost: att.lost,
        ports: att.ports.into_iter().map(|p| p.assemble()).collect(),
    })
}
