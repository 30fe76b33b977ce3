//! Moving a channel off its link to a segment and socket pair of its own
//! (`crate::link`): before one of its ports travels, sends descriptors, is
//! split, or is waited on by a foreign event loop. The port that moves it
//! (the *mover*) does it all inside its own call; its peer follows the
//! next time it looks, whatever it was doing.
//!
//! The mover, holding the channel's kit claim (`KitWords::claim_move`):
//! 1. makes the new segment `S` and socket pair;
//! 2. closes the ring it writes with [`CLOSED_MOVED`] (the peer reads the
//!    rest there, then goes on in `S` at the same position) and writes on
//!    in `S` from there;
//! 3. seals the ring it reads ([`Consumer::seal`]): the records committed
//!    before the seal are its residue, the peer re-posts in `S` a record
//!    it committed after;
//! 4. posts the residue into `S`'s ring through a port of `S`'s other side
//!    (ports inside go as ports of their own: they move off the link in
//!    turn), publishes where the seal was, and reads on in `S` from where
//!    it was;
//! 5. announces `S` and the peer's socket on the link.
//!
//! Every record reaches its reader once and in order: the seal is the
//! sleep handshake's Dekker pair (`shm::ring::move_model` checks it); the
//! peer's record after the seal is re-posted after the residue.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::parts::rewind_min;
use super::{MessagePort, PortReceiver, PortSender};
use crate::error::CloseReason;
use crate::link::ArenaLink;
use crate::shm::kit::{Claim, KitWords};
use crate::shm::layout::{CLOSED_MOVED, KIT_NEW, KITS_IN_ARENAS, KitRef, KitRefs, kit_refs_size};
use crate::shm::pool::reader::PoolReader;
use crate::shm::pool::writer::PoolWriter;
use crate::shm::ring::process_barriers;
use crate::shm::ring::{Barriers, Consumer, Corrupt, Kind, Producer, Record};
use crate::shm::segment::{Segment, SegmentRelease, SegmentRing, Side};
use crate::sys;
use crate::wire::attachment::MAX_RECEIVED_SPIN;

/// How long a follower waits on the link's socket between two looks for
/// its mover's announcement (the mover sends it within its own call).
pub(super) const LOOK_FOR_MOVE: Duration = Duration::from_millis(1);

impl MessagePort {
    /// Give the port a socket of its own if it is on a link (its
    /// descriptor is asked for). If that fails (out of descriptors), the
    /// port is broken: its calls report [`CloseReason::ProtocolError`].
    pub(crate) fn own_socket(&self) {
        if self.leave_link_or_gone().is_err() {
            let _ = self
                .tx()
                .shared
                .broken
                .set(Corrupt("the port could not move off its link"));
        }
    }
}

/// Why a port did not leave its link.
pub(super) enum Leave {
    /// Its peer is gone or broke the link.
    Closed(CloseReason),
    /// The new segment or socket could not be made; the port is unchanged.
    Io(io::Error),
}

/// Move a whole port's channel off its link (or follow its peer's move),
/// telling a move that could not be made (the port stays on its link,
/// whole) from a peer that is gone.
pub(super) fn leave_link_or_io(tx: &PortSender, rx: &PortReceiver) -> Result<(), Leave> {
    let sh = &tx.shared;
    let Some(on) = sh.link_only() else {
        return Ok(());
    };
    if sh.broken() {
        return Err(Leave::Closed(CloseReason::ProtocolError));
    }
    // Made before the claim: once claimed, the peer waits for the
    // announcement, so nothing may fail for want of a descriptor.
    let home = NewHome::make(sh.seg.capacity()).map_err(Leave::Io)?;
    loop {
        match sh.seg.claim_move(sh.side) {
            Claim::Mine => break,
            Claim::Theirs => return follow_move(tx, rx).map_err(Leave::Closed),
            // Only a carrier's peer posts under a claim; never on a link.
            Claim::Busy => std::hint::spin_loop(),
        }
    }
    let link = on.link.clone();
    let (kit, generation) = (on.kit, on.generation);
    move_off(tx, rx, &link, kit, generation, home).map_err(|e| {
        Leave::Closed(match e {
            Moving::Corrupt(c) => tx.corrupt(c),
            Moving::Io => tx.corrupt(Corrupt("a move of the channel could not be finished")),
        })
    })
}

/// What a channel moves to: a new segment (and a second descriptor of
/// its memfd, for the announcement) and a socket pair.
struct NewHome {
    seg: Arc<Segment>,
    fd: OwnedFd,
    mine: OwnedFd,
    theirs: OwnedFd,
}

impl NewHome {
    fn make(capacity: usize) -> io::Result<NewHome> {
        let seg = Segment::create(capacity)?;
        let fd = seg
            .fd()
            .expect("a segment made with its own memfd")
            .try_clone()?;
        let (mine, theirs) = sys::socket::pair()?;
        Ok(NewHome {
            seg,
            fd,
            mine,
            theirs,
        })
    }
}

impl MessagePort {
    /// Give the port a home of its own if it is on a link: its channel
    /// moves off the link (or follows its peer's move). `Err` only when
    /// the move could not be made (out of descriptors): the port is
    /// unchanged, on its link. If its peer is gone (or broke the link),
    /// the port gets a home whose peer is gone (a new segment, and a
    /// socket whose other end is closed): it reports its peer gone.
    pub(crate) fn leave_link_or_gone(&self) -> io::Result<()> {
        match leave_link_or_io(self.tx(), self.rx()) {
            Ok(()) => Ok(()),
            Err(Leave::Io(e)) => Err(e),
            Err(Leave::Closed(_)) => {
                let sh = &self.tx().shared;
                if sh.link_only().is_some() {
                    let home = NewHome::make(sh.seg.capacity())?;
                    drop(home.theirs);
                    sh.push_move(home.seg, home.mine);
                }
                Ok(())
            }
        }
    }

    /// Before the port travels: a port on a link leaves it
    /// ([`leave_link_or_gone`](Self::leave_link_or_gone)), and a port whose
    /// end holds links its peer made re-homes its channel ([`rehome`]).
    /// `Err` only for want of descriptors: the port is unchanged.
    pub(crate) fn ready_to_travel(&self) -> io::Result<()> {
        self.leave_link_or_gone()?;
        self.rx().restate_link_records()?;
        if self.tx().shared.links().is_empty() {
            return Ok(());
        }
        // Records here may name kits of links the peer made with this end:
        // the channel moves so that they travel as ordinary ones. A peer
        // gone meanwhile: the port travels as it is.
        match rehome(self.tx(), self.rx()) {
            Err(Leave::Io(e)) => Err(e),
            Ok(()) | Err(Leave::Closed(_)) => Ok(()),
        }
    }
}

/// Before a port travels whose end holds links the peer made (records on
/// it, queued or to come, name kits in them, which the port's next holder
/// cannot reach): move its channel to a new segment and socket first, so
/// that the peer knows its end moved (it makes a new link for the next
/// holder) and the records queued here travel as ordinary ones.
pub(super) fn rehome(tx: &PortSender, rx: &PortReceiver) -> Result<(), Leave> {
    let sh = &tx.shared;
    // Made before the claim, as for a move off a link.
    let home = NewHome::make(sh.seg().capacity()).map_err(Leave::Io)?;
    loop {
        match sh.seg().claim_move(sh.side) {
            Claim::Mine => break,
            Claim::Theirs => return follow_move(tx, rx).map_err(Leave::Closed),
            Claim::Busy => {
                // The peer posts with descriptors: take them in, so that it
                // is not held up, and let it commit.
                let _ = sh.drain_socket(super::Half::Receiver, false);
                if sh.hung_up() {
                    return Err(Leave::Closed(CloseReason::PeerDied));
                }
                std::thread::yield_now();
            }
        }
    }
    rehome_claimed(tx, rx, home).map_err(|e| {
        Leave::Closed(match e {
            Moving::Corrupt(c) => tx.corrupt(c),
            Moving::Io => tx.corrupt(Corrupt("a move of the channel could not be finished")),
        })
    })
}

fn rehome_claimed(tx: &PortSender, rx: &PortReceiver, home: NewHome) -> Result<(), Moving> {
    let sh = &tx.shared;
    let seg = sh.seg().clone();
    let (out, inn) = sh.side.rings();
    let barriers = process_barriers();
    let NewHome {
        seg: s,
        fd,
        mine,
        theirs,
    } = home;
    let tail = {
        let p = tx.tx.borrow();
        if p.close_with(CLOSED_MOVED) {
            let _ = sys::socket::send_wake(sh.sock());
        }
        p.tail()
    };
    write_on_in(tx, &s, seg.published_head(out), tail, barriers)?;
    let sealed_at = rx.rx.borrow_mut().seal()?;
    // The residue, received the ordinary way (attachments, pool blocks,
    // kits of links) and posted into S the ordinary way.
    let mut residue = Vec::new();
    loop {
        match rx.take() {
            Ok(Some(mut m)) => {
                let ports = m
                    .take_ports()
                    .map_err(|_| Corrupt("a queued port that cannot be opened"))?;
                residue.push((m.fingerprint(), m.bytes().to_vec(), ports));
            }
            Ok(None) => break,
            Err(_) => return Err(Corrupt("a queued record that cannot be read").into()),
        }
    }
    rx.flush_releases();
    let (head, released) = {
        let c = rx.rx.borrow();
        (c.head(), c.released())
    };
    s.start_ring(inn, released, head)?;
    let theirs = post_residue(&s, sh.side, theirs, sh.spin(), residue)?
        .into_parts()
        .sock;
    let wake = read_on_in(rx, &s, sealed_at, barriers)?;
    if wake {
        let _ = sys::socket::send_wake(sh.sock());
    }
    sys::socket::send_moved(sh.sock(), fd.as_fd(), theirs.as_fd())?;
    sh.push_move(s, mine);
    // The peer makes a new link for the end's next holder; the residue's
    // records named (and adopted) what they needed of these.
    sh.links().clear();
    sh.invitations().clear();
    Ok(())
}

/// [`MessagePort::follow_move`], over a whole port's two halves.
pub(super) fn follow_move(tx: &PortSender, rx: &PortReceiver) -> Result<(), CloseReason> {
    let from = tx.tx.borrow().memory().segment().clone();
    tx.shared.take_up_move(&from)?;
    tx.follow()?;
    rx.follow()
}

fn move_off(
    tx: &PortSender,
    rx: &PortReceiver,
    link: &Arc<ArenaLink>,
    kit: u64,
    generation: u32,
    home: NewHome,
) -> Result<(), Moving> {
    {
        let sh = &tx.shared;
        let side = sh.side;
        let (out, inn) = side.rings();
        let barriers = process_barriers();
        let NewHome {
            seg: s,
            fd,
            mine,
            theirs,
        } = home;

        // The ring this side writes: closed here, continued in S. If the
        // peer's receiving half closed already, it will not follow: S's
        // ring says so too (this side's posts see the close).
        let (tail, peer_stopped_reading) = {
            let p = tx.tx.borrow();
            if p.close_with(CLOSED_MOVED) {
                link.ring(p.woke());
            }
            // SeqCst: a Dekker pair with the peer receiver's close
            // (`PortReceiver::drop`: its flag, a fence, then our code):
            // either we see its flag here, or it sees CLOSED_MOVED and
            // follows the move before it closes.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            (p.tail(), p.consumer_close_code())
        };
        write_on_in(tx, &s, sh.seg.published_head(out), tail, barriers)?;

        // The ring this side reads: sealed, its residue posted into S. If
        // the peer's sending half closed already, it will not follow: its
        // close goes into S after the residue. (The seal's barrier and the
        // producer's look after its close are a Dekker pair: either the
        // close is seen here, or the producer sees the move and follows it
        // before it closes.)
        let (sealed_at, head, residue, peer_stopped_writing) = {
            let mut c = rx.rx.borrow_mut();
            let sealed_at = c.seal()?;
            let stopped = c.producer_close_code();
            let (head, released) = (c.head(), c.released());
            s.start_ring(inn, released, head)?;
            let reader = Consumer::reading_between(
                SegmentRing::new(sh.seg.clone(), inn),
                head,
                sealed_at,
                barriers,
            );
            (sealed_at, head, read_residue(link, reader)?, stopped)
        };
        let stand_in = post_residue(&s, side, theirs, sh.spin(), residue)?;
        debug_assert!(head <= sealed_at);
        // The stand-in wakes nobody: this side reads S only after the move.
        if peer_stopped_writing != 0 {
            let _ = stand_in.tx().tx.borrow().close_with(peer_stopped_writing);
        }
        if peer_stopped_reading != 0 {
            let _ = stand_in
                .rx()
                .rx
                .borrow_mut()
                .close_with(peer_stopped_reading);
        }
        let theirs = stand_in.into_parts().sock;
        if read_on_in(rx, &s, sealed_at, barriers)? {
            link.ring(rx.rx.borrow().woke());
        }

        crate::fault::reach(crate::fault::Point::MoveSealed);
        link.announce_moved(kit, generation, fd, theirs)?;
        crate::fault::reach(crate::fault::Point::MoveAnnounced);
        sh.push_move(s, mine);
        Ok(())
    }
}

/// The ring this side writes, closed to the old segment (with its last
/// position `tail`), goes on in `s` from there: its producer and the pool
/// it owns for sending are `s`'s from now on. `head`: where the peer's
/// reading of the old ring stands.
fn write_on_in(
    tx: &PortSender,
    s: &Arc<Segment>,
    head: u64,
    tail: u64,
    barriers: Barriers,
) -> Result<(), Moving> {
    let (out, _) = tx.shared.side.rings();
    s.start_ring(out, head, tail)?;
    let mut fresh = Producer::new(SegmentRing::new(s.clone(), out), barriers)?;
    fresh.rewind_from(rewind_min(s.capacity()));
    *tx.tx.borrow_mut() = fresh;
    *tx.pool.borrow_mut() = PoolWriter::new(SegmentRelease::new(s.clone(), out), barriers);
    Ok(())
}

/// Post the residue of the sealed ring into `s`'s ring this side reads,
/// through a stand-in port of `s`'s other side on `theirs` (the socket
/// end the peer takes over). Returned for the caller to take apart.
fn post_residue(
    s: &Arc<Segment>,
    side: Side,
    theirs: OwnedFd,
    spin: Duration,
    residue: Residue,
) -> Result<MessagePort, Moving> {
    let stand_in = MessagePort::from_parts(s.clone(), side.other(), theirs, spin)?;
    // Its pool would be unknown to the peer that takes its side over:
    // messages too large for the ring go out of line, each in its memfd.
    stand_in.set_pool_limit(Some(0));
    for (fingerprint, bytes, ports) in residue {
        stand_in
            .try_post_forwarded(&bytes, fingerprint, ports)
            .map_err(|e| io::Error::other(e.error.to_string()))?;
    }
    Ok(stand_in)
}

/// The ring this side reads, sealed at `sealed_at`, goes on in `s`: the
/// position published for the peer's producer, the consumer and the
/// peer's pool reader `s`'s from now on. `true`: the peer's producer
/// waits for room and must be woken (it then sees the move).
fn read_on_in(
    rx: &PortReceiver,
    s: &Arc<Segment>,
    sealed_at: u64,
    barriers: Barriers,
) -> Result<bool, Moving> {
    let (_, inn) = rx.shared.side.rings();
    let wake = {
        let mut c = rx.rx.borrow_mut();
        c.publish_moved_at(sealed_at);
        let wake = c.wake_waiting_producer();
        c.switch_memory(SegmentRing::new(s.clone(), inn))?;
        wake
    };
    *rx.pool_reader() = PoolReader::new(SegmentRelease::new(s.clone(), inn), barriers);
    Ok(wake)
}

/// Why a move failed.
enum Moving {
    Corrupt(Corrupt),
    /// A system call failed after the claim (the port is then broken).
    Io,
}

impl From<Corrupt> for Moving {
    fn from(c: Corrupt) -> Self {
        Moving::Corrupt(c)
    }
}

impl From<io::Error> for Moving {
    fn from(_: io::Error) -> Self {
        Moving::Io
    }
}

impl PortReceiver {
    /// This half closes with records unread: the ports they name as kits
    /// in a link's arenas are taken up and closed, so that their peers see
    /// `Closed` (as ports in unread attachments are).
    pub(super) fn close_unread_kits(&self) {
        let (mem, head) = {
            let c = self.rx.borrow();
            (c.memory().clone(), c.head())
        };
        let mut reader = Consumer::reading_between(mem, head, u64::MAX, process_barriers());
        while let Ok(Some(rec)) = reader.take() {
            if !rec.meta.kits {
                continue;
            }
            if rec.len < size_of::<KitRefs>() {
                continue;
            }
            // SAFETY: the payload holds at least a `KitRefs` (checked just
            // above) inside the ring, 32-byte aligned; its fields are
            // atomics, so a peer writing them races with atomics only.
            let refs = unsafe { rec.payload.cast::<KitRefs>().as_ref() };
            // Relaxed: ordered after the Acquire load of the commit word.
            let link_id = refs.link.load(Ordering::Relaxed);
            if let Ok(link) = self.link_of_kits(link_id) {
                drop(arena_ports(&link, &rec));
            }
        }
    }
}

/// The residue's records: fingerprint (0 for raw bytes), bytes, ports.
type Residue = Vec<(u64, Vec<u8>, Vec<MessagePort>)>;

/// Read the records `reader` holds (a sealed ring's residue): inline
/// records only, their ports kits of `link`.
fn read_residue(
    link: &Arc<ArenaLink>,
    mut reader: Consumer<SegmentRing>,
) -> Result<Residue, Moving> {
    let mut out = Vec::new();
    while let Some(rec) = reader.take()? {
        if rec.meta.pool {
            // A block of the link's pool: its bytes go on, the block back.
            out.push(read_pooled_residue(link, &rec)?);
            continue;
        }
        if rec.meta.out_of_line || (rec.meta.nports != 0 && !rec.meta.kits) {
            return Err(Corrupt("a record with descriptors on a link's channel").into());
        }
        let (ports, prefix) = if rec.meta.kits {
            arena_ports(link, &rec)?
        } else {
            (Vec::new(), 0)
        };
        // SAFETY: the record's payload is `len >= prefix` bytes inside the
        // ring, which stays mapped (the link's arena) while we copy it.
        let bytes = unsafe {
            core::slice::from_raw_parts(rec.payload.as_ptr().add(prefix), rec.len - prefix)
        };
        let fingerprint = match rec.meta.kind {
            Kind::Typed => rec.meta.fingerprint,
            Kind::Raw => 0,
        };
        out.push((fingerprint, bytes.to_vec(), ports));
    }
    Ok(out)
}

/// A residue record naming a block of the peer's pool on `link`: a copy
/// of its bytes, and the block given back.
fn read_pooled_residue(
    link: &Arc<ArenaLink>,
    rec: &Record,
) -> Result<(u64, Vec<u8>, Vec<MessagePort>), Moving> {
    let bad = || {
        Moving::Corrupt(Corrupt(
            "a pooled record on a link's channel names no block",
        ))
    };
    let Some((buffer, block, len)) = crate::shm::pool::reference(rec)
        .filter(|&(buffer, _, _)| crate::shm::pool::in_link_pool(buffer))
        .filter(|_| rec.meta.nports == 0 && !rec.meta.announce)
    else {
        return Err(bad());
    };
    let bytes = link.copy_out_block(buffer, block, len)?;
    let fingerprint = match rec.meta.kind {
        Kind::Typed => rec.meta.fingerprint,
        Kind::Raw => 0,
    };
    Ok((fingerprint, bytes, Vec::new()))
}

/// The ports a record names as kits in `link`'s arenas, built here, and
/// the length of the references before the message.
pub(super) fn arena_ports(
    link: &Arc<ArenaLink>,
    rec: &Record,
) -> Result<(Vec<MessagePort>, usize), Corrupt> {
    let n = rec.meta.nports as usize;
    let prefix = kit_refs_size(n);
    if n == 0 || n > super::MAX_PORTS || prefix > rec.len {
        return Err(Corrupt("kit references do not fit their record"));
    }
    // SAFETY: the payload holds `rec.len >= prefix` bytes inside the ring,
    // 32-byte aligned; the references are atomics only.
    let head = unsafe { rec.payload.cast::<KitRefs>().as_ref() };
    // Relaxed: ordered after the Acquire load of the commit word; each
    // field is read once, only the copies are used.
    if head.count.load(Ordering::Relaxed) as usize != n
        || head.flags.load(Ordering::Relaxed) != KITS_IN_ARENAS
        || head.link.load(Ordering::Relaxed) != link.id()
    {
        return Err(Corrupt("kit references disagree with their record"));
    }
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: entry `i` lies inside the prefix.
        let r = unsafe {
            rec.payload
                .add(size_of::<KitRefs>() + i * size_of::<KitRef>())
                .cast::<KitRef>()
                .as_ref()
        };
        let id = r.id.load(Ordering::Relaxed);
        let generation = r.generation.load(Ordering::Relaxed);
        let new = r.reserved.load(Ordering::Relaxed) == KIT_NEW;
        let spin = Duration::from_nanos(r.spin_ns.load(Ordering::Relaxed)).min(MAX_RECEIVED_SPIN);
        let kit = link.take_up(id, generation, new)?;
        ports.push(MessagePort::on_kit(kit, link.clone(), generation, spin));
    }
    Ok((ports, prefix))
}
