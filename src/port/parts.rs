//! A port taken apart and put back together: building one from a segment
//! and a socket, taking it apart to travel in a message, rebuilding it
//! when the transfer fails, and assembling one that arrived.

use core::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::kit::{Kit, KitHome};
use super::shared::OnLink;
use super::{DEFAULT_MAX_MESSAGE_SIZE, MessagePort, PortReceiver, PortSender, Shared, Trust};
use crate::error::PostError;
use crate::link::{ArenaKit, ArenaLink};
use crate::shm::pool::BufferInfo;
use crate::shm::pool::reader::{AddError, PoolReader};
use crate::shm::pool::writer::PoolWriter;
use crate::shm::ring::process_barriers;
use crate::shm::ring::{Consumer, Corrupt, Producer, REWIND_MIN, RingMemory};
use crate::shm::segment::OpenError;
use crate::shm::segment::{Segment, SegmentRelease, SegmentRing, Side};
use crate::sys::{self};
use crate::wire::attachment::{Attachment, KitParts, Partial, PortParts, SegmentRef};

/// Where a port being built lives: its own socket, or a link.
pub(crate) enum Home {
    Socket(OwnedFd),
    Link(OnLink),
}

/// A port's two rings in `seg`, resuming at the published positions.
pub(super) fn open_rings(
    seg: &Arc<Segment>,
    side: Side,
) -> Result<(Producer<SegmentRing>, Consumer<SegmentRing>), Corrupt> {
    let barriers = process_barriers();
    let (tx, rx) = side.rings();
    let tx = Producer::new(SegmentRing::new(seg.clone(), tx), barriers)?;
    let rx = Consumer::new(SegmentRing::new(seg.clone(), rx), barriers)?;
    Ok((tx, rx))
}

/// The smallest payload a ring of `cap` bytes rewinds for
/// ([`Producer::rewind_from`]): [`REWIND_MIN`] when a channel's two rings
/// take more than half of the last-level cache, never otherwise. While a
/// channel's rings stay in the cache, moving on through them is faster:
/// the bytes a record overwrites have left the peer core's own cache by
/// then, where rewritten bytes just read by the peer must be taken back
/// from it line by line. Measured on this project's VM (32 MiB L3):
/// rewinding made 64 KiB and 1 MiB round trips in 1 and 4 MiB rings about
/// 2x slower, and 4 MiB round trips in a 16 MiB ring about 2x faster
/// (ARCHITECTURE.md).
pub(super) fn rewind_min(cap: usize) -> usize {
    if cap.saturating_mul(4) > sys::cache::last_level_bytes() {
        REWIND_MIN
    } else {
        usize::MAX
    }
}

impl MessagePort {
    /// Two entangled ports over a new segment with rings of `capacity`
    /// bytes (already checked) and a new socket pair, built at once.
    #[cfg(test)]
    pub(crate) fn pair(capacity: usize, spin: Duration) -> io::Result<(MessagePort, MessagePort)> {
        let seg = Segment::create(capacity)?;
        let (sa, sb) = sys::socket::pair()?;
        // A segment this process just zeroed cannot be corrupt.
        let fresh = |c: Corrupt| io::Error::other(c);
        let a = MessagePort::from_parts(seg.clone(), Side::A, sa, spin).map_err(fresh)?;
        let b = MessagePort::from_parts(seg, Side::B, sb, spin).map_err(fresh)?;
        Ok((a, b))
    }

    pub(crate) fn from_parts(
        seg: Arc<Segment>,
        side: Side,
        sock: OwnedFd,
        spin: Duration,
    ) -> Result<MessagePort, Corrupt> {
        let (tx, rx) = open_rings(&seg, side)?;
        Ok(Self::from_rings(
            seg,
            side,
            Home::Socket(sock),
            spin,
            tx,
            rx,
            None,
        ))
    }

    /// Rebuild a port of this process that was taken apart for a transfer
    /// that failed. If its peer corrupted the ring positions meanwhile, the
    /// port comes back broken (its receives and posts report
    /// [`CloseReason::ProtocolError`]) rather than not at all.
    pub(crate) fn rebuild(seg: Arc<Segment>, side: Side, sock: OwnedFd, spin: Duration) -> Self {
        match open_rings(&seg, side) {
            Ok((tx, rx)) => Self::from_rings(seg, side, Home::Socket(sock), spin, tx, rx, None),
            Err(c) => {
                let (tx, rx) = side.rings();
                let barriers = process_barriers();
                let tx = Producer::broken(SegmentRing::new(seg.clone(), tx), barriers);
                let rx = Consumer::broken(SegmentRing::new(seg.clone(), rx), barriers);
                Self::from_rings(seg, side, Home::Socket(sock), spin, tx, rx, Some(c))
            }
        }
    }

    /// A port on kit `kit` of `link` (at `generation`): a channel made for
    /// the link, whose wake-ups go through its doorbells. If the peer
    /// corrupted the kit's positions, the port comes back broken.
    pub(crate) fn on_kit(
        kit: ArenaKit,
        link: Arc<ArenaLink>,
        generation: u32,
        spin: Duration,
    ) -> MessagePort {
        let on = OnLink {
            link,
            kit: kit.id,
            generation,
        };
        let (seg, side) = (kit.seg, kit.side);
        match open_rings(&seg, side) {
            Ok((tx, rx)) => Self::from_rings(seg, side, Home::Link(on), spin, tx, rx, None),
            Err(c) => {
                let (tx, rx) = side.rings();
                let barriers = process_barriers();
                let tx = Producer::broken(SegmentRing::new(seg.clone(), tx), barriers);
                let rx = Consumer::broken(SegmentRing::new(seg.clone(), rx), barriers);
                Self::from_rings(seg, side, Home::Link(on), spin, tx, rx, Some(c))
            }
        }
    }

    pub(super) fn from_rings(
        seg: Arc<Segment>,
        side: Side,
        home: Home,
        spin: Duration,
        tx: Producer<SegmentRing>,
        rx: Consumer<SegmentRing>,
        broken: Option<Corrupt>,
    ) -> MessagePort {
        let mut tx = tx;
        tx.rewind_from(rewind_min(tx.memory().capacity()));
        let barriers = process_barriers();
        let (tx_ring, rx_ring) = side.rings();
        let pool_writer = PoolWriter::new(SegmentRelease::new(seg.clone(), tx_ring), barriers);
        let pool_reader = PoolReader::new(SegmentRelease::new(seg.clone(), rx_ring), barriers);
        let (sock, on_link) = match home {
            Home::Socket(s) => (OnceLock::from(s), None),
            Home::Link(l) => (OnceLock::new(), Some(l)),
        };
        let shared = Arc::new(Shared {
            seg,
            moves: OnceLock::new(),
            sock,
            moved_offer: Mutex::new(None),
            lost_links: Mutex::new(Vec::new()),
            invitations: Mutex::new(Vec::new()),
            on_link,
            side,
            kit: OnceLock::new(),
            link: OnceLock::new(),
            arena_links: Mutex::new(Vec::new()),
            made_link: Mutex::new(None),
            descriptors_seen: AtomicBool::new(false),
            inbox: Mutex::new(VecDeque::new()),
            taking_in: Mutex::new(Partial::default()),
            hung_up: AtomicBool::new(false),
            eof: AtomicBool::new(false),
            broken: broken.map(OnceLock::from).unwrap_or_default(),
            spin_ns: AtomicU64::new(spin.as_nanos().min(u64::MAX as u128) as u64),
            transferred: AtomicBool::new(false),
            kicks: OnceLock::new(),
        });
        MessagePort::from_halves(
            PortSender {
                shared: shared.clone(),
                tx: RefCell::new(tx),
                reserving: Cell::new(false),
                posting: Cell::new(false),
                wanted_room: Cell::new(0),
                inline_limit: Cell::new(usize::MAX),
                large_hint: Cell::new(0),
                arena: RefCell::new(None),
                pool: RefCell::new(pool_writer),
            },
            PortReceiver {
                shared,
                rx: RefCell::new(rx),
                trust: Cell::new(Trust::default()),
                max_message: Cell::new(DEFAULT_MAX_MESSAGE_SIZE),
                pool: Arc::new(Mutex::new(pool_reader)),
            },
        )
    }

    /// The port is on a kit: keep its end at `home` if it closes cleanly.
    pub(crate) fn keep_kit(&self, home: KitHome) {
        let _ = self.tx().shared.kit.set(home);
    }

    /// A rebuilt port gets back the attachments it had already received,
    /// and the parts of one still arriving.
    pub(crate) fn with_inbox(self, inbox: VecDeque<Attachment>, partial: Partial) -> Self {
        *self.rx().shared.inbox() = inbox;
        *self.rx().shared.partial() = partial;
        self
    }

    /// The buffers of the peer's pool that records queued on a port it
    /// came with may name (a received port, or one whose transfer failed).
    /// A buffer that is not valid closes the port with `ProtocolError`.
    pub(crate) fn with_pool(self, buffers: Vec<(BufferInfo, OwnedFd)>) -> Self {
        let mut pool = self.rx().pool_reader();
        for (info, fd) in buffers {
            if let Err(e) = pool.add(info, fd) {
                let c = match e {
                    AddError::Corrupt(c) => c,
                    AddError::Io(_) => Corrupt("a pool buffer could not be mapped"),
                };
                let _ = self.rx().shared.broken.set(c);
            }
        }
        drop(pool);
        self
    }

    /// Take the port apart to send it: publish both positions, hand over
    /// the socket, the inbox and the peer's pool buffers (its own pool
    /// stays: see [`PoolWriter`]). The peer notices nothing.
    /// A port on a link must have left it, and a port holding links its
    /// peer made re-homed, first ([`MessagePort::ready_to_travel`]).
    pub(crate) fn into_parts(self) -> PortParts {
        debug_assert!(
            self.tx().shared.link_only().is_none(),
            "a port travels from its link"
        );
        self.tx().tx.borrow().publish_tail();
        self.rx().flush_releases();
        // Blocks still shared here (`SharedBytes`) keep the reader: its
        // buffers travel as copies of their descriptors.
        let pool = self.rx().pool_reader().export();
        let shared = self.tx().shared.clone();
        shared.transferred.store(true, Ordering::Relaxed);
        // The halves' drops see `transferred` and close nothing.
        drop(self);
        let spin = shared.spin();
        match Arc::try_unwrap(shared) {
            Ok(mut s) => {
                let held = match s.link.take() {
                    Some(link) => link
                        .export_held()
                        .into_iter()
                        .map(|k| KitParts {
                            id: k.id,
                            seg: SegmentRef::Mapped(k.seg),
                            sock: k.sock,
                            side: k.side,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let inbox = std::mem::take(s.inbox.get_mut().unwrap_or_else(|e| e.into_inner()));
                let partial =
                    std::mem::take(s.taking_in.get_mut().unwrap_or_else(|e| e.into_inner()));
                let links =
                    std::mem::take(s.invitations.get_mut().unwrap_or_else(|e| e.into_inner()));
                PortParts {
                    seg: SegmentRef::Mapped(s.seg().clone()),
                    sock: s.take_sock(),
                    side: s.side,
                    spin,
                    inbox,
                    partial,
                    pool,
                    kit: false,
                    held,
                    links,
                }
            }
            // Nothing else holds the core of a whole port (messages and
            // reservations borrow the port, which is consumed here).
            Err(_) => unreachable!("a port's core outlived its halves"),
        }
    }

    /// For [`into_fds`](Self::into_fds): a copy of the segment's
    /// descriptor if this port is a child's end (side B) that holds no
    /// received attachments; `None` otherwise.
    pub(crate) fn child_end_segment(&self) -> Option<io::Result<OwnedFd>> {
        let sh = &self.tx().shared;
        if sh.side != Side::B || !sh.inbox().is_empty() || !sh.partial().is_empty() {
            return None;
        }
        Some(sh.seg().fd()?.try_clone())
    }

    /// Is this port the entangled peer of the port whose core is `other`?
    pub(super) fn is_peer_of(&self, other: &Shared) -> bool {
        if self.is_unused() {
            // Neither port of its channel was built: `other` is not one.
            return false;
        }
        let me = &self.tx().shared;
        other.side != me.side && (me.seg.same(&other.seg) || me.seg().same(other.seg()))
    }

    /// What this port's inbox holds, for a transfer of it over the port
    /// whose core is `sender`: nesting depth, and whether `sender`'s peer
    /// is in it.
    pub(super) fn scan_inbox(&self, sender: &Shared) -> crate::wire::attachment::Scan {
        let inbox = self.rx().shared.inbox();
        let segs = [&sender.seg, sender.seg()];
        let mut scan = crate::wire::attachment::scan(&inbox, &segs, sender.side);
        // Ports also travel as kit references in records: the sender's
        // peer may be one (a port of a channel made for a link), in this
        // port's ring or in the ring of a port in its inbox; and a record
        // of kits is one more level of ports for the receiver, like an
        // attachment (their ports are unused: nothing below them).
        let kit = sender.on_link.as_ref().map(|on| (on.link.id(), on.kit));
        let queued = {
            let c = self.rx().rx.borrow();
            queued_kits(c.memory().clone(), c.head(), kit)
        };
        if queued.any {
            scan.depth = scan.depth.max(1);
        }
        scan.holds_peer |= queued.names_kit;
        inbox_rings(&inbox, kit, 1, &mut scan);
        scan
    }
}

/// What the records queued in a ring say of kits.
struct QueuedKits {
    /// Some record holds kit references.
    any: bool,
    /// Some record names the kit looked for.
    names_kit: bool,
}

/// Look at the records committed in the ring of `mem` from `head` on: do
/// any hold kit references, and does one name kit `kit` (link number, kit
/// number)? Reads what the peer wrote: every length is checked, and no
/// more than a ring of records is looked at.
fn queued_kits(mem: SegmentRing, head: u64, kit: Option<(u64, u64)>) -> QueuedKits {
    let mut out = QueuedKits {
        any: false,
        names_kit: false,
    };
    let mut reader = Consumer::reading_between(mem, head, u64::MAX, process_barriers());
    while let Ok(Some(rec)) = reader.take() {
        if rec.meta.kits {
            out.any = true;
            out.names_kit |= kit.is_some_and(|k| record_names_kit(&rec, k));
            if out.names_kit || kit.is_none() {
                break;
            }
        }
    }
    out
}

/// Does a kits record name kit `kit` in link `kit.0`'s arenas?
fn record_names_kit(rec: &crate::shm::ring::Record, (link, id): (u64, u64)) -> bool {
    use crate::shm::layout::{KITS_IN_ARENAS, KitRef, KitRefs, kit_refs_size};
    let n = rec.meta.nports as usize;
    if n == 0 || n > super::MAX_PORTS || kit_refs_size(n) > rec.len {
        return false;
    }
    // SAFETY: the payload holds `rec.len >= kit_refs_size(n)` bytes inside
    // the ring, 32-byte aligned; the references are atomics only.
    let head = unsafe { rec.payload.cast::<KitRefs>().as_ref() };
    // Relaxed: ordered after the Acquire load of the commit word.
    if head.flags.load(Ordering::Relaxed) != KITS_IN_ARENAS
        || head.link.load(Ordering::Relaxed) != link
    {
        return false;
    }
    (0..n).any(|i| {
        // SAFETY: entry `i` lies inside the references (checked above).
        let r = unsafe {
            rec.payload
                .add(size_of::<KitRefs>() + i * size_of::<KitRef>())
                .cast::<KitRef>()
                .as_ref()
        };
        r.id.load(Ordering::Relaxed) == id
    })
}

/// The rings of the ports in `inbox` (at `level`: 1 for the inbox of the
/// port that travels), and of ports in their inboxes: a record of kits in
/// one is a level below it; one naming `kit` holds the sender's peer.
fn inbox_rings(
    inbox: &VecDeque<Attachment>,
    kit: Option<(u64, u64)>,
    level: usize,
    scan: &mut crate::wire::attachment::Scan,
) {
    if level > crate::wire::attachment::MAX_DEPTH {
        return;
    }
    for p in inbox.iter().flat_map(|a| &a.ports) {
        let seg = match &p.seg {
            SegmentRef::Mapped(s) => Some(s.clone()),
            SegmentRef::Unopened(fd) => fd.try_clone().ok().and_then(|fd| Segment::open(fd).ok()),
        };
        if let Some(seg) = seg {
            let (_, rx) = p.side.rings();
            let head = seg.published_head(rx);
            let queued = queued_kits(SegmentRing::new(seg, rx), head, kit);
            if queued.any {
                scan.depth = scan.depth.max(level + 1);
            }
            scan.holds_peer |= queued.names_kit;
        }
        inbox_rings(&p.inbox, kit, level + 1, scan);
    }
}

/// Posting with ports failed: nothing was sent, and every port is handed
/// back, working, in `ports` (same order).
#[derive(Debug)]
pub struct TransferError {
    /// Why.
    pub error: PostError,
    /// The ports that were to travel.
    pub ports: Vec<crate::MessagePort>,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} ports handed back)", self.error, self.ports.len())
    }
}

impl std::error::Error for TransferError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl PortParts {
    /// Put the port back together (checking a received segment).
    pub fn assemble(self) -> Result<MessagePort, OpenError> {
        let seg = match self.seg {
            SegmentRef::Mapped(s) => s,
            SegmentRef::Unopened(fd) => open_received(fd, &self.sock)?,
        };
        let (inbox, partial, pool, held, links) =
            (self.inbox, self.partial, self.pool, self.held, self.links);
        MessagePort::from_parts(seg, self.side, self.sock, self.spin)
            .map(|p| {
                p.with_inbox(inbox, partial)
                    .with_pool(pool)
                    .with_held(held)
                    .with_invitations(links)
            })
            .map_err(|c| OpenError::Corrupt(c.0))
    }

    /// Put back together a port of this process whose transfer failed: it
    /// always comes back, broken if its peer corrupted the positions
    /// meanwhile ([`MessagePort::rebuild`]). `None` only for parts that
    /// were received, never this process's own.
    pub(crate) fn rebuild(self) -> Option<MessagePort> {
        match self.seg {
            SegmentRef::Mapped(seg) => Some(
                MessagePort::rebuild(seg, self.side, self.sock, self.spin)
                    .with_inbox(self.inbox, self.partial)
                    .with_pool(self.pool)
                    .with_held(self.held)
                    .with_invitations(self.links),
            ),
            SegmentRef::Unopened(_) => None,
        }
    }
}

/// Check and map a received segment, after checking the socket that came
/// with it is a port's.
fn open_received(fd: OwnedFd, sock: &OwnedFd) -> Result<Arc<Segment>, OpenError> {
    // A received descriptor claimed to be a port's socket.
    if !crate::sys::socket::is_seqpacket(sock) {
        return Err(OpenError::BadDescriptor(
            "a received port's socket is not a SOCK_SEQPACKET socket".into(),
        ));
    }
    Segment::open(fd)
}

impl MessagePort {
    /// The idle kits the port held for the channels it carries, come with
    /// it: this end keeps them for its peer to name. One that does not
    /// open is closed (a record naming it later is a protocol error).
    fn with_held(self, held: Vec<KitParts>) -> Self {
        if held.is_empty() {
            return self;
        }
        let kits = held.into_iter().filter_map(|k| {
            let seg = match k.seg {
                SegmentRef::Mapped(s) => s,
                SegmentRef::Unopened(fd) => open_received(fd, &k.sock).ok()?,
            };
            Some(Kit {
                id: k.id,
                seg,
                sock: k.sock,
                side: k.side,
            })
        });
        self.tx().shared.link().import_held(kits.collect());
        self
    }

    /// The link invitations the port had not used come with it; a record
    /// naming one adopts it here.
    fn with_invitations(self, links: Vec<(u64, OwnedFd)>) -> Self {
        for (id, sock) in links {
            if let Err(c) = self.tx().shared.invited(id, sock) {
                let _ = self.tx().shared.broken.set(c);
            }
        }
        self
    }
}

/// A port that arrived in a message and was never taken out: close it
/// properly, so its peer sees `Closed` rather than a death.
pub(crate) fn discard(parts: PortParts) {
    // If the segment cannot be opened, dropping the descriptors still hangs
    // up the socket: the peer sees the port gone.
    let _ = parts.assemble();
}
