//! Following a move of a channel the peer made (`promote.rs`): taking up
//! its new segment and socket (from the link's announcement, or from the
//! old socket for a re-homed carrier), then each half going there at its
//! own pace — the sending half re-posting the record whose commit saw the
//! move if the mover did not take it, the receiving half once it read the
//! old ring to its end, carrying over what it had not read.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::parts::rewind_min;
use super::promote::LOOK_FOR_MOVE;
use super::{PortReceiver, PortSender};
use crate::error::CloseReason;
use crate::shm::layout::CLOSED_MOVED;
use crate::shm::layout::{OOL_DESCRIPTOR, OolDescriptor};
use crate::shm::pool::reader::PoolReader;
use crate::shm::pool::writer::PoolWriter;
use crate::shm::ring::process_barriers;
use crate::shm::ring::{Consumer, Corrupt, Producer, Record, RecordMeta};
use crate::shm::segment::{Segment, SegmentRelease, SegmentRing};
use crate::sys;
use crate::wire::attachment::Attachment;
use crate::wire::writer::RecordWriter;

/// How long a closing half waits for the announcement of a move its peer
/// marked (an honest mover sends it within its own call): a peer that
/// never sends it does not hold up the close for longer, and gets no
/// close in a segment it never named.
const FOLLOW_TO_CLOSE: Duration = Duration::from_secs(1);

impl super::Shared {
    /// The new segment and socket the peer announced for this port's
    /// channel, waiting for the announcement if need be (the peer sends it
    /// within the call that moves the channel).
    /// `from`: the segment of the ring that showed the move; if the port
    /// is past it already (its other half took the move up), nothing to do.
    pub(super) fn take_up_move(&self, from: &Arc<Segment>) -> Result<(), CloseReason> {
        self.take_up_move_by(from, None)
    }

    /// [`take_up_move`](Self::take_up_move), waiting for the announcement
    /// until `deadline` at most (a closing half: a peer that marks a move
    /// and never announces it must not hold up a drop for ever).
    pub(super) fn take_up_move_by(
        &self,
        from: &Arc<Segment>,
        deadline: Option<Instant>,
    ) -> Result<(), CloseReason> {
        if !Arc::ptr_eq(self.seg(), from) {
            return Ok(());
        }
        let late = || deadline.is_some_and(|d| Instant::now() >= d);
        let Some(on) = self.link_only() else {
            // Off a link, only a carrier's peer re-homes, and only after
            // adopting a link this end made over it: elsewhere a move mark
            // is a lie (it would hold this port up waiting for ever).
            if self.made_link_now().is_none() {
                return Err(self.corrupt(Corrupt("a move the peer could not make")));
            }
            return self.take_up_rehome(deadline);
        };
        let (seg, sock) = loop {
            if let Some(m) = on.link.take_moved(on.kit, on.generation) {
                break m;
            }
            if late() {
                return Err(CloseReason::ProtocolError);
            }
            if let Some(c) = on.link.broken() {
                return Err(self.corrupt(c));
            }
            if on.link.hung_up() {
                self.hung_up.store(true, Ordering::Release);
                return Err(CloseReason::PeerDied);
            }
            let _ = sys::socket::wait(on.link.sock(), false, Some(LOOK_FOR_MOVE));
        };
        let s =
            Segment::open(seg).map_err(|_| self.corrupt(Corrupt("a moved channel's segment")))?;
        if s.capacity() != self.seg.capacity() || !sys::socket::is_seqpacket(&sock) {
            return Err(self.corrupt(Corrupt("a moved channel of another size")));
        }
        self.push_move(s, sock);
        Ok(())
    }
}

impl super::Shared {
    /// The peer re-homed this port's channel (its end travels on): the
    /// new segment and socket came on this port's socket, before anything
    /// there that follows.
    fn take_up_rehome(&self, deadline: Option<Instant>) -> Result<(), CloseReason> {
        let offer = || {
            self.moved_offer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        };
        let (seg, sock) = loop {
            if let Some(m) = offer() {
                break m;
            }
            let _ = self.drain_socket(super::Half::Receiver, false);
            if let Some(m) = offer() {
                break m;
            }
            if self.broken() {
                return Err(CloseReason::ProtocolError);
            }
            if self.eof() {
                return Err(CloseReason::PeerDied);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(CloseReason::ProtocolError);
            }
            let _ = sys::socket::wait(self.sock(), false, Some(LOOK_FOR_MOVE));
        };
        let s =
            Segment::open(seg).map_err(|_| self.corrupt(Corrupt("a moved channel's segment")))?;
        if s.capacity() != self.seg().capacity() || !sys::socket::is_seqpacket(&sock) {
            return Err(self.corrupt(Corrupt("a moved channel of another size")));
        }
        self.push_move(s, sock);
        // The old socket's hang-up was the old end's going, not the peer's.
        self.hung_up.store(false, Ordering::Release);
        self.eof.store(false, Ordering::Release);
        // The peer's end is with another process now: the next channel
        // carried makes a link with it.
        *self.made_link.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

impl PortSender {
    /// Closing, this half found its peer moving the channel: take up the
    /// move and go to the new segment, to close there.
    pub(super) fn follow_to_close(&self) -> Result<(), CloseReason> {
        let from = self.tx.borrow().memory().segment().clone();
        self.shared
            .take_up_move_by(&from, Some(Instant::now() + FOLLOW_TO_CLOSE))?;
        self.follow()
    }

    /// Go on writing in the moved channel's segment: re-post there the
    /// record whose commit saw the move, if the mover did not take it.
    pub(super) fn follow(&self) -> Result<(), CloseReason> {
        let sh = &self.shared;
        let s = sh.seg();
        let mut p = self.tx.borrow_mut();
        if Arc::ptr_eq(p.memory().segment(), s) {
            return Ok(());
        }
        let (out, _) = sh.side.rings();
        let barriers = process_barriers();
        let mut late = None;
        if let Some(pos) = p.moved_record() {
            let at = loop {
                match p.moved_at() {
                    Ok(Some(at)) => break at,
                    Ok(None) => std::hint::spin_loop(),
                    Err(c) => return Err(sh.corrupt(c)),
                }
            };
            if pos >= at {
                let old = p.memory().clone();
                let mut reader = Consumer::reading_between(old, pos, u64::MAX, barriers);
                let rec = reader
                    .take()
                    .map_err(|c| sh.corrupt(c))?
                    .ok_or_else(|| sh.corrupt(Corrupt("the record to re-post is gone")))?;
                let (meta, bytes) = match rec.meta.pool {
                    // A block of the link's pool: nobody read it; its bytes
                    // go on, the block back to the pool.
                    true => (
                        RecordMeta {
                            pool: false,
                            ..rec.meta
                        },
                        self.take_back_late_block(&rec).map_err(|c| sh.corrupt(c))?,
                    ),
                    // SAFETY: a taken record's payload is `len` bytes
                    // inside the old ring, which this process maps as long
                    // as the link lives; only this side wrote it.
                    false => (
                        rec.meta,
                        unsafe { core::slice::from_raw_parts(rec.payload.as_ptr(), rec.len) }
                            .to_vec(),
                    ),
                };
                late = Some((meta, bytes));
            }
        }
        let mut fresh =
            Producer::new(SegmentRing::new(s.clone(), out), barriers).map_err(|c| sh.corrupt(c))?;
        fresh.rewind_from(rewind_min(s.capacity()));
        // The old ring's last position, for the kit's next channel: it
        // starts there (`KitWords::renew_kit`), past every record.
        p.publish_tail();
        *p = fresh;
        drop(p);
        *self.pool.borrow_mut() = PoolWriter::new(SegmentRelease::new(s.clone(), out), barriers);
        if let Some((meta, bytes)) = late {
            if meta.kits || meta.nports != 0 || meta.out_of_line {
                // Ports never go on a channel whose move has begun (the
                // mover's claim keeps them out), nor descriptors on a link.
                return Err(sh.corrupt(Corrupt("a late record that cannot move")));
            }
            let fill = |w: &mut crate::wire::writer::RecordWriter| w.put(&bytes);
            self.send_record(
                meta,
                bytes.len(),
                super::Wait::Forever,
                fill,
                Vec::new(),
                None,
            )
            .map_err(|(e, _)| match e {
                crate::error::PostError::Closed(r) => r,
                _ => CloseReason::ProtocolError,
            })?;
        }
        Ok(())
    }
}

impl PortSender {
    /// The late record `rec` names a block of this side's pool on the link
    /// the channel moved off: its bytes (a copy), and the block back to
    /// the pool (nobody read the record).
    fn take_back_late_block(&self, rec: &Record) -> Result<Vec<u8>, Corrupt> {
        let on = self.shared.on_link.as_ref();
        let pool = on.and_then(|on| on.link.pool_out().ok());
        let (Some((_, pool)), Some((buffer, block, len))) =
            (pool, crate::shm::pool::reference(rec))
        else {
            return Err(Corrupt("a late pooled record off a link"));
        };
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = pool
            .lent_bytes(crate::shm::pool::key(buffer, block), len)
            .ok_or(Corrupt("a late pooled record names no block in flight"))?
            .to_vec();
        pool.reclaim(crate::shm::pool::key(buffer, block))?;
        Ok(bytes)
    }
}

impl PortReceiver {
    /// Before the port travels: the records its ring still holds that name
    /// blocks of the link's pool the channel moved off (carried over when
    /// this half followed the move) are restated as out of line: their
    /// bytes copied into sealed memfds, whose attachments go first in the
    /// inbox (no record still queued has one: a link carries none), and
    /// their blocks given back. The next holder has no view of that pool.
    pub(super) fn restate_link_records(&self) -> io::Result<()> {
        let Some(on) = self.shared.on_link.as_ref() else {
            return Ok(());
        };
        let (mem, head) = {
            let c = self.rx.borrow();
            (c.memory().clone(), c.head())
        };
        let mut reader = Consumer::reading_between(mem, head, u64::MAX, process_barriers());
        let mut restated = Vec::new();
        let done = self.restate_each(on, &mut reader, &mut restated);
        // Those restated go in whatever stopped the rest (a record still
        // naming the link's pool fails only where it is read).
        let mut inbox = self.shared.inbox();
        for att in restated.into_iter().rev() {
            inbox.push_front(att);
        }
        done
    }

    fn restate_each(
        &self,
        on: &super::shared::OnLink,
        reader: &mut Consumer<SegmentRing>,
        restated: &mut Vec<Attachment>,
    ) -> io::Result<()> {
        while let Ok(Some(rec)) = reader.take() {
            let Some((buffer, block, len)) =
                crate::shm::pool::reference(&rec).filter(|_| rec.meta.pool)
            else {
                continue;
            };
            if !crate::shm::pool::in_link_pool(buffer) {
                continue;
            }
            let bytes = on
                .link
                .copy_out_block(buffer, block, len)
                .map_err(|c| io::Error::new(io::ErrorKind::InvalidData, c.0))?;
            let len = bytes.len();
            let mut w = RecordWriter::memfd(len)?;
            w.put(&bytes).map_err(io::Error::other)?;
            let fd = w.finish_memfd()?;
            let meta = RecordMeta {
                pool: false,
                announce: false,
                out_of_line: true,
                ..rec.meta
            };
            let c = self.rx.borrow();
            if !c.restate(rec.pos, rec.end, OOL_DESCRIPTOR, meta) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a record of a link's pool",
                ));
            }
            // SAFETY: the payload holds POOL_REF >= OOL_DESCRIPTOR bytes,
            // 32-byte aligned; the descriptor is only atomics.
            let d = unsafe { rec.payload.cast::<OolDescriptor>().as_ref() };
            // Relaxed: the next holder reads it after the port's transfer.
            d.len.store(len as u64, Ordering::Relaxed);
            restated.push(Attachment {
                ool: Some(fd),
                pool: None,
                ports: Vec::new(),
                lost: false,
            });
        }
        Ok(())
    }

    /// Go on reading in the moved channel's segment: the records not taken
    /// yet are carried over to the same places there (the mover closed the
    /// old ring with [`CLOSED_MOVED`] and writes on after them).
    pub(super) fn follow(&self) -> Result<(), CloseReason> {
        let sh = &self.shared;
        let s = sh.seg();
        let mut c = self.rx.borrow_mut();
        if Arc::ptr_eq(c.memory().segment(), s) {
            return Ok(());
        }
        if c.producer_close_code() != CLOSED_MOVED {
            // The mover closes its ring before it announces the move.
            return Err(sh.corrupt(Corrupt("a move announced before its ring closed")));
        }
        let (_, inn) = sh.side.rings();
        let tail = c.memory().segment().published_tail(inn);
        c.carry_over(SegmentRing::new(s.clone(), inn), tail)
            .map_err(|e| sh.corrupt(e))?;
        drop(c);
        let barriers = process_barriers();
        *self.pool_reader() = PoolReader::new(SegmentRelease::new(s.clone(), inn), barriers);
        Ok(())
    }

    /// Closing, this half found its peer moving the channel: take up the
    /// move and go to the new segment, to close there.
    pub(super) fn follow_to_close(&self) -> Result<(), CloseReason> {
        let from = self.rx.borrow().memory().segment().clone();
        self.shared
            .take_up_move_by(&from, Some(Instant::now() + FOLLOW_TO_CLOSE))?;
        self.follow()
    }

    /// The ring is read to a close: a move to follow rather than a close
    /// event? Follows it (`true`: read on).
    pub(super) fn moved_on(&self) -> Result<bool, CloseReason> {
        if self.rx.borrow().producer_close_code() != CLOSED_MOVED {
            return Ok(false);
        }
        let from = self.rx.borrow().memory().segment().clone();
        self.shared.take_up_move(&from)?;
        self.follow()?;
        Ok(true)
    }
}
