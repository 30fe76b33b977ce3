//! Kits: a channel's memfd and socket pair, kept by the two processes that
//! used it when the channel closes cleanly, and taken up again for the
//! next channel between them, with no system call.
//!
//! A channel made in this process ([`MessageChannel::new`](crate::MessageChannel::new))
//! whose port is posted, unused, over a port `x` does not send its own
//! memfd and socket: the post takes a kit from `x`'s [`Link`] instead.
//!
//! - If one of the kits this end of `x` made is idle at both ends (the
//!   peer's end marked idle at the current generation, both rings read to
//!   the end), the post renews it (next generation) and names it inside
//!   the record ([`KitRefs`](crate::shm::layout::KitRefs)): no descriptor
//!   travels. The receiver takes its idle end of that kit out of its own
//!   end of `x`'s link.
//! - Otherwise the post makes a new kit (today's memfd and socket pair) and
//!   sends its far end as an ordinary port, tagged with the kit's number,
//!   so that the receiver keeps it when its port closes.
//!
//! The port left behind uses the kit's near end. When a port on a kit
//! closes cleanly (no descriptor ever travelled on it, nothing broke, its
//! peer did not hang up), its end is kept: the creator's in its link's
//! list of made kits, the other side's in its link's held kits, marked
//! idle in the segment (`src/shm/kit.rs`). A kit that does not close
//! cleanly is closed as any channel is. A port of a kit that travels on
//! (posted again, to anyone) takes the kit's descriptors with it: that kit
//! leaves the link for good.
//!
//! The held kits travel with their end of `x` when that end is posted to
//! another process, so the peer can keep naming them. The made ones are
//! closed then (their held ends are dropped by the peer once it sees them
//! hung up). Each end prunes what it keeps: held kits whose creator hung
//! up, and made kits beyond [`MAX_IDLE`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::shm::kit::KitWords;
use crate::shm::ring::Corrupt;
use crate::shm::segment::{Segment, Side};
use crate::sys;

/// Made kits kept idle per link end; the oldest beyond are closed.
pub(crate) const MAX_IDLE: usize = 256;
/// Made kits looked at (most recently closed first) for one that is idle.
const SCAN: usize = 8;
/// How long a post waits for a kit whose peer has closed its port but not
/// yet marked its end idle (it is in the middle of its close).
const PEER_CLOSING: Duration = Duration::from_micros(20);

/// One end of a kit: the memfd (mapped) and this side's socket.
pub(crate) struct Kit {
    pub(crate) id: u64,
    pub(crate) seg: Arc<Segment>,
    pub(crate) sock: OwnedFd,
    pub(crate) side: Side,
}

/// Where a port's kit end goes when the port closes cleanly.
#[derive(Clone)]
pub(crate) struct KitHome {
    link: Weak<Link>,
    id: u64,
    generation: u32,
    made_here: bool,
}

impl KitHome {
    /// Keep the end (`seg`, `sock`, `side`) for the next channel, if the
    /// link end it belongs to is still here; otherwise it closes.
    pub(crate) fn keep(self, seg: Arc<Segment>, sock: OwnedFd, side: Side) {
        let Some(link) = self.link.upgrade() else {
            return;
        };
        let kit = Kit {
            id: self.id,
            seg,
            sock,
            side,
        };
        if self.made_here {
            link.keep_made(kit);
        } else {
            link.keep_held(kit, self.generation);
        }
    }
}

/// What one end of a channel keeps of the kits for channels it carries.
pub(crate) struct Link {
    made: Mutex<Made>,
    held: Mutex<Held>,
}

struct Made {
    /// Prune kits whose peer hung up when there are more than this.
    prune_at: usize,
    /// Kit numbers: a random high half per link end, so that numbers of
    /// this end and of an earlier holder of it never meet in the peer's
    /// held kits; a counter below.
    next_id: u64,
    /// Kits made here whose port here closed: most recent last.
    idle: Vec<Kit>,
}

struct Held {
    kits: HashMap<u64, Kit>,
    /// Prune hung-up kits when there are more than this.
    prune_at: usize,
}

impl Link {
    pub(crate) fn new() -> Arc<Link> {
        crate::link::carrier_made();
        let random = RandomState::new().hash_one(std::process::id());
        Arc::new(Link {
            made: Mutex::new(Made {
                prune_at: 16,
                next_id: (random << 32) | 1,
                idle: Vec::new(),
            }),
            held: Mutex::new(Held {
                kits: HashMap::new(),
                prune_at: 64,
            }),
        })
    }

    fn made(&self) -> MutexGuard<'_, Made> {
        // No invariant spans a panic inside (pushes and removes only).
        self.made.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kit made here, idle at both ends, with rings of `capacity`, and
    /// its next generation: the caller renews it (`Segment::renew_kit`)
    /// just before the record that names it commits, or puts it back.
    pub(crate) fn reuse(&self, capacity: usize) -> Option<(Kit, u32)> {
        let mut made = self.made();
        let n = made.idle.len();
        for i in (n.saturating_sub(SCAN)..n).rev() {
            let kit = &made.idle[i];
            if kit.seg.capacity() != capacity || !reusable(kit) {
                continue;
            }
            let kit = made.idle.remove(i);
            let next = next_generation(kit.seg.kit_gen());
            return Some((kit, next));
        }
        None
    }

    /// A new kit with rings of `capacity`: this side's end (side A), the
    /// peer's socket, and the generation (1).
    pub(crate) fn make(&self, capacity: usize) -> io::Result<(Kit, OwnedFd, u32)> {
        let seg = Segment::create(capacity)?;
        let (sa, sb) = sys::socket::pair()?;
        let id = {
            let mut made = self.made();
            let id = made.next_id.max(1);
            made.next_id = id.wrapping_add(1);
            id
        };
        seg.make_kit(id);
        let kit = Kit {
            id,
            seg,
            sock: sa,
            side: Side::A,
        };
        Ok((kit, sb, 1))
    }

    /// Where a port on kit `id` (generation `generation`) made or held by
    /// this link end goes when it closes.
    pub(crate) fn home(self: &Arc<Self>, id: u64, generation: u32, made_here: bool) -> KitHome {
        KitHome {
            link: Arc::downgrade(self),
            id,
            generation,
            made_here,
        }
    }

    /// Kits taken by [`reuse`](Self::reuse) and not renewed: idle again.
    pub(crate) fn put_back(&self, kits: impl Iterator<Item = Kit>) {
        self.made().idle.extend(kits);
    }

    fn keep_made(&self, kit: Kit) {
        let mut made = self.made();
        made.idle.push(kit);
        if made.idle.len() > made.prune_at {
            // Drop the kits whose peer end is gone (their port went on to a
            // third process, or closed uncleanly), then the oldest.
            let gone = hung_up(made.idle.iter().map(|k| &k.sock));
            let mut gone = gone.into_iter();
            made.idle.retain(|_| !gone.next().unwrap_or(false));
            let excess = made.idle.len().saturating_sub(MAX_IDLE);
            made.idle.drain(..excess);
            made.prune_at = (made.idle.len() * 2).clamp(16, MAX_IDLE);
        }
    }

    fn keep_held(&self, kit: Kit, generation: u32) {
        let (seg, side) = (kit.seg.clone(), kit.side);
        let mut held = self.held();
        held.kits.insert(kit.id, kit);
        if held.kits.len() > held.prune_at {
            let ids: Vec<u64> = held.kits.keys().copied().collect();
            let gone = sys::socket::hung_up(
                &ids.iter()
                    .map(|id| held.kits[id].sock.as_fd())
                    .collect::<Vec<_>>(),
            );
            for (id, gone) in ids.iter().zip(gone) {
                if gone {
                    held.kits.remove(id);
                }
            }
            held.prune_at = (held.kits.len() * 2).max(64);
        }
        drop(held);
        // After the insert: once the creator sees the mark, it may name the
        // kit in a record, and the kit must be found here.
        seg.set_kit_idle(side, generation);
    }

    /// Take up the held kit `id` for its next channel, at `generation`.
    pub(crate) fn take_held(&self, id: u64, generation: u32) -> Result<Kit, Corrupt> {
        let kit = self
            .held()
            .kits
            .remove(&id)
            .ok_or(Corrupt("a record names a kit this port does not hold"))?;
        if kit.seg.kit_gen() != generation {
            return Err(Corrupt("a record names a kit at another generation"));
        }
        Ok(kit)
    }

    /// A far end made by the peer arrived (tagged `id`): nothing to keep
    /// yet; a kit held under the same number is stale (it cannot be named
    /// again) and goes.
    pub(crate) fn forget_held(&self, id: u64) {
        self.held().kits.remove(&id);
    }

    /// Everything held, for this link end's port travelling elsewhere.
    pub(crate) fn export_held(&self) -> Vec<Kit> {
        self.held().kits.drain().map(|(_, k)| k).collect()
    }

    /// Held kits that came with this port (from its previous holder).
    pub(crate) fn import_held(&self, kits: Vec<Kit>) {
        let mut held = self.held();
        for kit in kits {
            held.kits.insert(kit.id, kit);
        }
    }

    /// Kits kept (made idle, held), for tests and statistics.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.made().idle.len(), self.held().kits.len())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        crate::link::carrier_gone();
    }
}

/// Can the kit carry a new channel: the peer's end idle at the current
/// generation and both rings read to the end? A peer whose closed flags
/// are set is finishing its close: wait for its mark a little.
fn reusable(kit: &Kit) -> bool {
    let generation = kit.seg.kit_gen();
    let peer = kit.side.other();
    let mut waited: Option<Instant> = None;
    loop {
        if kit.seg.kit_idle(peer) == generation {
            return kit.seg.kit_drained();
        }
        if !kit.seg.kit_closed() {
            return false;
        }
        let start = *waited.get_or_insert_with(Instant::now);
        if start.elapsed() > PEER_CLOSING {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// Which of these sockets' peers hung up (one `poll`).
fn hung_up<'a>(socks: impl Iterator<Item = &'a OwnedFd>) -> Vec<bool> {
    sys::socket::hung_up(&socks.map(|s| s.as_fd()).collect::<Vec<_>>())
}

/// The generation after `g` (never 0, which marks an end in use).
fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}
