//! Links: one socket pair and a few arenas between two processes, holding
//! the channels made for them (a channel per request) with no descriptor
//! per channel.
//!
//! A link is made by the first port of a fresh channel posted over a port
//! whose channel has its own memfd and socket (the *carrier*): the far end
//! of the link's socket goes over the carrier first, then the channel's
//! reference. The link then holds:
//! - **arenas**: memfds of either side's, each announced once on the
//!   link's socket and closed after mapping; a channel is a segment at an
//!   offset in one of its creator's arenas ([`crate::shm::arena`]), kept for
//!   the next channel when it closes cleanly (a kit, `crate::port::kit`);
//! - **doorbells** ([`bell`]): a sleeper on any channel of the link names
//!   its thread's doorbell in the ring's sleep word, and the peer writes a
//!   token to it; the peer's death hangs every doorbell up;
//! - **announcements** on its socket ([`control`]): arenas, doorbells, and
//!   the new segment and socket of a channel that moved off the link.
//!
//! Nothing here is trusted: arenas are checked (sealed, sized within the
//! link's quota), references into them are checked against what the peer
//! announced and what this side holds, and a bad announcement breaks the
//! link ([`ArenaLink::broken`]): every channel on it then reports
//! `ProtocolError`.

pub(crate) mod bell;
pub(crate) mod control;
pub(crate) mod pool;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bell::{Bell, Bells, PeerBells};
use control::{Control, Got};

use crate::shm::arena::{Arena, MAX_ARENA, MIN_ARENA};
use crate::shm::kit::KitWords;
use crate::shm::layout::segment_size;
use crate::shm::ring::Corrupt;
use crate::shm::segment::{Segment, Side};
use crate::sys::{self, socket::Incoming};

/// Ends of links and kit carriers alive in this process (`crate::port`
/// keeps a few unused channel kits only while some are).
static CARRIERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What to do when the last carrier goes (set by `crate::port`).
static ON_LAST: OnceLock<fn()> = OnceLock::new();

/// A link end, or a kit carrier, was made.
pub(crate) fn carrier_made() {
    // Relaxed: a count; what it guards has its own lock.
    CARRIERS.fetch_add(1, Ordering::Relaxed);
}

/// One is gone; the last one runs the hook set by [`on_last_carrier`].
pub(crate) fn carrier_gone() {
    if CARRIERS.fetch_sub(1, Ordering::Relaxed) == 1 {
        if let Some(f) = ON_LAST.get() {
            f();
        }
    }
}

/// Are any alive?
pub(crate) fn carriers_alive() -> bool {
    CARRIERS.load(Ordering::Relaxed) > 0
}

/// Run `f` when the last carrier goes.
pub(crate) fn on_last_carrier(f: fn()) {
    let _ = ON_LAST.set(f);
}

/// The largest ring of a channel in a link: a message too large for it
/// goes into the link's pool of its sender's side ([`pool`]), where a
/// block serves one channel after another. Small rings keep a link's
/// memory (and the page tables a killed peer's kernel tears down before
/// its socket hangs up) small with thousands of channels.
pub(crate) const MAX_LINK_RING: usize = 64 << 10;

/// The ring capacity of a channel built with `capacity`, in a link.
pub(crate) fn ring_capacity(capacity: usize) -> usize {
    capacity.min(MAX_LINK_RING)
}

/// The most arena bytes a peer may announce on one link.
pub(crate) const PEER_ARENA_QUOTA: usize = 64 << 30;
/// The most arenas a peer may announce on one link.
pub(crate) const PEER_ARENAS: usize = 64;

/// One side's end of a link.
pub(crate) struct ArenaLink {
    /// The link's number (random, chosen by its creator): records name the
    /// link their kits are in.
    id: u64,
    /// Side A made the link (and sent the other end).
    side: Side,
    sock: OwnedFd,
    hung_up: AtomicBool,
    broken: OnceLock<Corrupt>,
    state: Mutex<State>,
    bells: Mutex<Bells>,
    /// The large-message pools of its two directions ([`pool`]).
    pools: pool::Pools,
    /// When [`ArenaLink::gone`] last looked at the socket.
    looked: Mutex<Option<std::time::Instant>>,
}

/// A channel's segment in an arena of the link, at one side.
pub(crate) struct ArenaKit {
    /// Arena number << 32 | offset / 4096: the same at both sides.
    pub(crate) id: u64,
    pub(crate) seg: Arc<Segment>,
    pub(crate) side: Side,
}

#[derive(Default)]
struct State {
    /// This side's arenas, the last one being carved.
    mine: Vec<Arc<Arena>>,
    /// Where the next segment goes in the last of `mine`.
    carve_at: usize,
    /// The peer's arenas, by number, and their bytes.
    peer: HashMap<u32, Arc<Arena>>,
    peer_bytes: usize,
    peer_bells: PeerBells,
    /// New segments and sockets of channels that moved, by (kit, generation).
    moved: HashMap<(u64, u32), (OwnedFd, OwnedFd)>,
    /// Kits made here whose port here closed: most recent last.
    made: Vec<ArenaKit>,
    /// Kits of the peer's whose port here closed, by number.
    held: HashMap<u64, ArenaKit>,
    /// Kits of the peer's with a port here now.
    live: HashSet<u64>,
}

impl ArenaLink {
    /// A new link: this side's end, and the far end's socket to send over
    /// the carrier.
    pub(crate) fn create() -> io::Result<(Arc<ArenaLink>, OwnedFd)> {
        let (mine, theirs) = sys::socket::pair()?;
        let id = RandomState::new().hash_one(std::process::id()) | 1;
        Ok((Self::new(id, Side::A, mine), theirs))
    }

    /// The far end of link `id`, its socket received over a carrier.
    pub(crate) fn adopt(id: u64, sock: OwnedFd) -> Result<Arc<ArenaLink>, Corrupt> {
        if id == 0 || !sys::socket::is_seqpacket(&sock) {
            return Err(Corrupt("a link that is not one"));
        }
        Ok(Self::new(id, Side::B, sock))
    }

    fn new(id: u64, side: Side, sock: OwnedFd) -> Arc<ArenaLink> {
        carrier_made();
        Arc::new(ArenaLink {
            id,
            side,
            sock,
            hung_up: AtomicBool::new(false),
            broken: OnceLock::new(),
            state: Mutex::new(State::default()),
            bells: Mutex::new(Bells::default()),
            pools: pool::Pools::default(),
            looked: Mutex::new(None),
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is whole before the next lock: a panic leaves a
        // consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bells(&self) -> MutexGuard<'_, Bells> {
        self.bells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer's end is gone (its socket hung up, or a doorbell did).
    pub(crate) fn hung_up(&self) -> bool {
        // Acquire: pairs with the Release store where it is noted.
        self.hung_up.load(Ordering::Acquire)
    }

    pub(crate) fn note_hung_up(&self) {
        self.hung_up.store(true, Ordering::Release);
    }

    /// The peer broke the link's protocol.
    pub(crate) fn broken(&self) -> Option<Corrupt> {
        self.broken.get().copied()
    }

    fn corrupt(&self, c: Corrupt) -> Corrupt {
        let _ = self.broken.set(c);
        c
    }

    /// Look at the link's socket without waiting: take in every
    /// announcement queued, and note a hang-up.
    pub(crate) fn take_in(&self) {
        let mut st = self.state();
        self.take_in_locked(&mut st);
    }

    fn take_in_locked(&self, st: &mut State) {
        while self.broken.get().is_none() {
            let got = match sys::socket::recv(&self.sock, false) {
                Ok(got) => got,
                Err(_) => return,
            };
            if matches!(got, Incoming::Reset) {
                // What the peer sent before its end went may still be
                // queued: keep reading.
                self.note_hung_up();
                continue;
            }
            match Control::decode(got) {
                Ok(None) => return,
                Ok(Some(c)) => {
                    if let Err(c) = self.accept(st, c) {
                        self.corrupt(c);
                    }
                }
                Err(Got::HungUp) => {
                    self.note_hung_up();
                    return;
                }
                Err(Got::Garbage) => {
                    self.corrupt(Corrupt("garbage on a link's socket"));
                }
            }
        }
    }

    fn accept(&self, st: &mut State, c: Control) -> Result<(), Corrupt> {
        match c {
            Control::Arena { id, fd } => {
                if st.peer.contains_key(&id) || st.peer.len() >= PEER_ARENAS {
                    return Err(Corrupt("an arena announced twice, or too many"));
                }
                let room = PEER_ARENA_QUOTA - st.peer_bytes;
                let arena = Arena::open(id, &fd, room.min(MAX_ARENA))
                    .map_err(|_| Corrupt("an arena that cannot be mapped"))?;
                st.peer_bytes += arena.len();
                st.peer.insert(id, Arc::new(arena));
            }
            Control::Doorbell { index, fd } => st.peer_bells.add(index, fd).map_err(Corrupt)?,
            Control::Moved {
                id,
                generation,
                seg,
                sock,
            } => {
                // A channel whose port here closed (and kept its kit) at
                // that generation will not follow its move: nothing to keep
                // (the mover saw the close). A kit not taken up yet may
                // still be: its record may be unread.
                let closed_here = match self.side {
                    Side::B => st
                        .held
                        .get(&id)
                        .is_some_and(|k| k.seg.kit_gen() == generation),
                    Side::A => st
                        .made
                        .iter()
                        .any(|k| k.id == id && k.seg.kit_gen() == generation),
                };
                if closed_here {
                    return Ok(());
                }
                if st.moved.len() > st.live.len() + st.made.len() + 64 {
                    return Err(Corrupt("more moved channels than the link holds"));
                }
                st.moved.insert((id, generation), (seg, sock));
            }
            Control::PoolBuffer { queue, info, fd } => {
                self.accept_pool_buffer(st, queue, info, fd)?;
            }
        }
        Ok(())
    }

    /// Send an announcement; a hung-up peer is noted, and is not an error
    /// (the channels see it).
    fn announce(&self, c: &Control) -> io::Result<()> {
        match c.send(&self.sock) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.note_hung_up();
                Ok(())
            }
            r => r,
        }
    }

    /// A new kit with rings of `capacity` bytes, carved from this side's
    /// arenas (a new arena is made and announced when the last is full).
    pub(crate) fn make_kit(&self, capacity: usize) -> io::Result<ArenaKit> {
        let size = segment_size(capacity);
        let mut st = self.state();
        let fits = st
            .mine
            .last()
            .is_some_and(|a| st.carve_at.checked_add(size).is_some_and(|e| e <= a.len()));
        if !fits {
            let last = st.mine.last().map_or(0, |a| a.len());
            let len = (last * 2).clamp(MIN_ARENA, MAX_ARENA).max(size);
            let number = st.mine.len() as u32 * 2 + self.side as u32;
            let (arena, fd) = Arena::create(number, len)?;
            self.announce(&Control::Arena { id: number, fd })?;
            st.mine.push(Arc::new(arena));
            st.carve_at = 0;
        }
        let arena = st.mine.last().expect("an arena was just made").clone();
        let offset = st.carve_at;
        st.carve_at += size;
        drop(st);
        let id = (arena.id() as u64) << 32 | (offset / 4096) as u64;
        let seg = Segment::in_arena(arena, offset, capacity);
        seg.make_kit(id);
        Ok(ArenaKit {
            id,
            seg,
            side: Side::A,
        })
    }

    /// A kit made here, idle at both ends, with rings of `capacity`, and
    /// its next generation (the caller renews it before naming it). A kit
    /// whose rings hold records never read is settled first
    /// ([`settle_unread`](Self::settle_unread)).
    pub(crate) fn reuse_kit(&self, capacity: usize) -> Option<(ArenaKit, u32)> {
        let mut st = self.state();
        let n = st.made.len();
        for i in (n.saturating_sub(8)..n).rev() {
            let kit = &st.made[i];
            if kit.seg.capacity() != capacity || !idle_at_far_end(kit) {
                continue;
            }
            let settled = kit.seg.kit_drained() || kit.seg.kit_moved();
            let kit = st.made.remove(i);
            if !settled {
                drop(st);
                if let Err(c) = self.settle_unread(&kit) {
                    // The peer wrote over the kit: it is not used again.
                    self.corrupt(c);
                    return None;
                }
            }
            let next = kit.seg.kit_gen().wrapping_add(1).max(1);
            return Some((kit, next));
        }
        None
    }

    /// Kits taken by [`reuse_kit`](Self::reuse_kit) and not named after all.
    pub(crate) fn put_back(&self, kits: impl Iterator<Item = ArenaKit>) {
        self.state().made.extend(kits);
    }

    /// This side's port on a kit closed cleanly: keep the kit.
    pub(crate) fn keep(&self, kit: ArenaKit, generation: u32) {
        let (seg, side) = (kit.seg.clone(), kit.side);
        if kit.side == Side::A {
            // The far end closed first, leaving records unread here (or
            // there): their pool blocks go back now rather than at the
            // kit's next use, which may be far off.
            if idle_at_far_end(&kit) && !seg.kit_drained() && !seg.kit_moved() {
                if let Err(c) = self.settle_unread(&kit) {
                    self.corrupt(c);
                    return;
                }
            }
            self.state().made.push(kit);
            return;
        }
        let mut st = self.state();
        st.live.remove(&kit.id);
        st.held.insert(kit.id, kit);
        drop(st);
        // After the insert: once the creator sees the mark it may name the
        // kit again, and the kit must be found here.
        seg.set_kit_idle(side, generation);
    }

    /// This side's port on a kit of the peer's closed without keeping it.
    pub(crate) fn forget(&self, id: u64) {
        self.state().live.remove(&id);
    }

    /// The peer names kit `id` at `generation` for a new channel: this
    /// side's end (side B), from what it holds (`new`: from the peer's
    /// arena, a kit not held here).
    pub(crate) fn take_up(&self, id: u64, generation: u32, new: bool) -> Result<ArenaKit, Corrupt> {
        let mut st = self.state();
        if st.live.contains(&id) {
            return Err(self.corrupt(Corrupt("a record names a kit in use here")));
        }
        let kit = if new {
            if st.held.contains_key(&id) {
                return Err(self.corrupt(Corrupt("a new kit under a number held here")));
            }
            if !st.peer.contains_key(&((id >> 32) as u32)) {
                // Announced before the record: it is queued, or corrupt.
                self.take_in_locked(&mut st);
            }
            let seg = peer_segment(&st, id).map_err(|c| self.corrupt(c))?;
            ArenaKit {
                id,
                seg,
                side: Side::B,
            }
        } else {
            st.held
                .remove(&id)
                .ok_or_else(|| self.corrupt(Corrupt("a record names a kit not held here")))?
        };
        if kit.seg.kit_gen() != generation {
            return Err(self.corrupt(Corrupt("a record names a kit at another generation")));
        }
        st.live.insert(id);
        Ok(kit)
    }

    /// The calling thread's doorbell on this link, made and announced the
    /// first time.
    pub(crate) fn thread_bell(self: &Arc<Self>) -> io::Result<Arc<Bell>> {
        if let Some(b) = self.bells().of_thread() {
            return Ok(b);
        }
        let bell = Arc::new(self.new_bell()?);
        self.bells().keep_for_thread(bell.clone());
        THREAD_LINKS.with(|t| t.borrow_mut().push(Arc::downgrade(self)));
        Ok(bell)
    }

    /// A new doorbell, announced to the peer.
    pub(crate) fn new_bell(&self) -> io::Result<Bell> {
        let (bell, theirs) = self.bells().make()?;
        if let Err(e) = self.announce(&Control::Doorbell {
            index: bell.index,
            fd: theirs,
        }) {
            self.bells().give_back(bell.index);
            return Err(e);
        }
        Ok(bell)
    }

    /// Wake the peer's sleeper that the sleep word `word` names.
    pub(crate) fn ring(&self, word: u32) {
        let mut st = self.state();
        for _ in 0..2 {
            match st.peer_bells.ring(word) {
                Some(true) => return,
                // Not announced yet (it is queued), or its thread ended and
                // the number came back with a new doorbell: look again.
                Some(false) | None => self.take_in_locked(&mut st),
            }
        }
    }

    /// Sleep on `bell` until a token, the peer's death, or `timeout`; then
    /// take in the tokens (with a timeout: all of them, and what the link's
    /// socket holds).
    pub(crate) fn sleep(&self, bell: &Bell, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_none() {
            // One blocking receive on the doorbell: a token, or its
            // hang-up (the peer's death closes its end, announced or still
            // in flight). Tokens left over wake a later sleep for nothing;
            // announcements on the link's socket are taken in when needed.
            if let Incoming::HungUp | Incoming::Reset = sys::socket::recv(bell.as_fd(), true)? {
                self.note_hung_up();
            }
            return Ok(());
        }
        let r = sys::socket::wait_or(&self.sock, Some(bell.as_fd()), false, timeout)?;
        if r.hung_up || bell.clear() {
            self.note_hung_up();
        }
        if r.readable {
            self.take_in();
        }
        Ok(())
    }

    /// Is the peer's end gone? Looks at the socket (one `poll`) at most
    /// once a millisecond: a far end never installed (its receiver was out
    /// of descriptors) is seen within that.
    pub(crate) fn gone(&self) -> bool {
        if self.hung_up() {
            return true;
        }
        let now = std::time::Instant::now();
        let mut last = self.looked.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(1)) {
            return false;
        }
        *last = Some(now);
        drop(last);
        self.look_for_hang_up()
    }

    /// Has the peer hung up? One look at the socket, without waiting.
    pub(crate) fn look_for_hang_up(&self) -> bool {
        if !self.hung_up() && sys::socket::hung_up(&[self.sock.as_fd()])[0] {
            self.note_hung_up();
        }
        self.hung_up()
    }

    /// The new segment and socket of the channel on kit `id` at
    /// `generation`, once its peer moved it: taken from what was
    /// announced; `None` if not yet.
    pub(crate) fn take_moved(&self, id: u64, generation: u32) -> Option<(OwnedFd, OwnedFd)> {
        let mut st = self.state();
        if let Some(m) = st.moved.remove(&(id, generation)) {
            return Some(m);
        }
        self.take_in_locked(&mut st);
        st.moved.remove(&(id, generation))
    }

    /// Tell the peer that the channel on kit `id` at `generation` moved to
    /// `seg`, with `sock` its end of the new socket pair.
    pub(crate) fn announce_moved(
        &self,
        id: u64,
        generation: u32,
        seg: OwnedFd,
        sock: OwnedFd,
    ) -> io::Result<()> {
        self.announce(&Control::Moved {
            id,
            generation,
            seg,
            sock,
        })
    }

    /// Kits kept (made idle, held), for tests and statistics.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.state();
        (st.made.len(), st.held.len())
    }

    /// The link's socket (for waits that also watch the link).
    pub(crate) fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for ArenaLink {
    fn drop(&mut self) {
        carrier_gone();
    }
}

/// The segment at kit number `id` (arena << 32 | offset / 4096) in the
/// peer's arenas, checked: the arena announced, a segment there, its
/// number its own.
fn peer_segment(st: &State, id: u64) -> Result<Arc<Segment>, Corrupt> {
    let arena = st
        .peer
        .get(&((id >> 32) as u32))
        .cloned()
        .ok_or(Corrupt("a kit in an arena never announced"))?;
    let offset = ((id & 0xffff_ffff) as usize).saturating_mul(4096);
    let seg = Segment::open_in_arena(arena, offset)
        .map_err(|_| Corrupt("a kit that is not a segment"))?;
    if seg.kit_id() != id {
        return Err(Corrupt("a kit whose number is not its own"));
    }
    Ok(seg)
}

/// Is the kit's far end idle at the current generation (its last
/// positions published)?
fn idle_at_far_end(kit: &ArenaKit) -> bool {
    kit.seg.kit_idle(kit.side.other()) == kit.seg.kit_gen()
}

/// The links this thread has a doorbell on: when it ends, their numbers
/// go back.
struct ThreadLinks {
    me: Option<std::thread::ThreadId>,
    links: Vec<Weak<ArenaLink>>,
}

impl ThreadLinks {
    fn push(&mut self, link: Weak<ArenaLink>) {
        self.me.get_or_insert_with(|| std::thread::current().id());
        self.links.retain(|l| l.strong_count() > 0);
        self.links.push(link);
    }
}

impl Drop for ThreadLinks {
    fn drop(&mut self) {
        let Some(me) = self.me else { return };
        for link in self.links.drain(..).filter_map(|l| l.upgrade()) {
            link.bells().thread_ended(me);
        }
    }
}

thread_local! {
    static THREAD_LINKS: std::cell::RefCell<ThreadLinks> =
        const { std::cell::RefCell::new(ThreadLinks { me: None, links: Vec::new() }) };
}

#[cfg(test)]
mod tests;
