//! The core both halves of a port share: the segment, the socket, the
//! inbox of attachments taken in, and the close state; taking in what the
//! socket delivers, and sleeping on it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::kit::{KitHome, Link};
use super::{Half, Wait};
use crate::error::CloseReason;
use crate::fault;
use crate::link::{ArenaKit, ArenaLink};
use crate::shm::layout::{CLOSED_PEER_DIED, CLOSED_PROTOCOL_ERROR};
use crate::shm::ring::Corrupt;
use crate::shm::segment::{Segment, Side};
use crate::sys::{self, kick::Kick, socket::Incoming};
use crate::wire::attachment::{Attachment, MAX_INVITATIONS, Partial};

/// What both halves of a port use. The socket closes when the last half
/// drops, after both published their closed flags.
pub(crate) struct Shared {
    /// The segment the port was built on: its own memfd's, or a kit in a
    /// link's arena (then, once the port moved off the link, `moved` is
    /// its segment now).
    pub(super) seg: Arc<Segment>,
    /// The moves of the channel, oldest first: each to a new segment and
    /// socket pair (`promote.rs`). The last is where the port is now.
    pub(super) moves: OnceLock<Box<Move>>,
    /// The port's socket: from the start for a port of its own, from its
    /// move for a port that was on a link. Closed, or kept with the kit,
    /// when the core drops (see `Drop`); taken out when the port travels.
    pub(super) sock: OnceLock<OwnedFd>,
    /// A move of the channel the peer announced on the socket, not yet
    /// followed: the new segment and this side's new socket.
    pub(super) moved_offer: Mutex<Option<(OwnedFd, OwnedFd)>>,
    /// Links whose invitation arrived without its descriptor (this process
    /// was out of descriptors): records naming them fail alone.
    pub(super) lost_links: Mutex<Vec<u64>>,
    /// Invitations to links the peer's end made (number, socket), taken in
    /// from the socket and not yet named by a record this port read. One
    /// is adopted (moved to `arena_links`) when a record names it; until
    /// then the port travels with it, unchanged ([`Shared::adopt_link`]).
    pub(super) invitations: Mutex<Vec<(u64, OwnedFd)>>,
    /// The link the port's channel was made on, if any: its kit's number
    /// and generation. Until the port moves off it, wake-ups go through
    /// the link's doorbells and its death is the link's.
    pub(super) on_link: Option<OnLink>,
    pub(super) side: Side,
    /// The port is on a kit (`super::kit`): where its end goes if it
    /// closes cleanly.
    pub(super) kit: OnceLock<KitHome>,
    /// The kits of the channels this port carries (made lazily).
    pub(super) link: OnceLock<Arc<Link>>,
    /// Links for the channels this port carries: the one this end made
    /// (first), and those the peer's end made, received on the socket.
    pub(super) arena_links: Mutex<Vec<Arc<ArenaLink>>>,
    /// The link this end made for the channels it carries (its far end
    /// sent over this port's socket).
    pub(super) made_link: Mutex<Option<Arc<ArenaLink>>>,
    /// A descriptor travelled on the socket (either way): the socket may
    /// hold some still, so its kit, if any, is not reused.
    pub(super) descriptors_seen: AtomicBool,
    /// Attachments received on the socket, waiting for the records that
    /// refer to them (in order). Either half may take them in; only the
    /// receiving half takes them out.
    pub(super) inbox: Mutex<VecDeque<Attachment>>,
    /// Held from a receive on the socket until what it returned is in the
    /// inbox (or noted). Once split, both halves read the socket: without
    /// it, an attachment one half has taken off the socket and not yet
    /// queued is in neither place for the other half, which then finds its
    /// record's attachment missing, or pairs the record with the next one
    /// (ARCHITECTURE.md, failure model, "Split halves"). It holds the parts
    /// of an attachment that comes in several socket messages, gathered
    /// until the last (`crate::wire::attachment`): the inbox gets whole ones only.
    /// Lock order: `taking_in`, then `inbox`.
    pub(super) taking_in: Mutex<Partial>,
    /// The socket reported hang-up (or reset): the peer port is gone.
    pub(super) hung_up: AtomicBool,
    /// A receive returned end-of-file: nothing more is queued on the socket.
    pub(super) eof: AtomicBool,
    /// The peer broke the protocol; the port no longer reads or writes.
    pub(super) broken: OnceLock<Corrupt>,
    pub(super) spin_ns: AtomicU64,
    /// The port was taken apart to travel: dropping its halves must not
    /// close it.
    pub(super) transferred: AtomicBool,
    /// Once split: one kick per half ([`Half`] order). A half that takes in
    /// something from the socket kicks the other, which may be waiting for
    /// exactly that.
    pub(super) kicks: OnceLock<[Kick; 2]>,
}

/// One move of a port's channel: the segment and socket it moved to.
pub(crate) struct Move {
    pub(super) seg: Arc<Segment>,
    /// Taken when the port travels (`take_sock`).
    pub(super) sock: Option<OwnedFd>,
    pub(super) next: OnceLock<Box<Move>>,
}

/// Where a port on a link lives.
pub(crate) struct OnLink {
    pub(crate) link: Arc<ArenaLink>,
    pub(crate) kit: u64,
    pub(crate) generation: u32,
}

// The flags below are plain state bits. The Release stores / Acquire loads
// order them with what the setter did before (the inbox push, the socket
// read), for the other half on another thread.
impl Shared {
    pub(super) fn broken(&self) -> bool {
        if self.broken.get().is_some() {
            return true;
        }
        match self.link_only().and_then(|l| l.link.broken()) {
            Some(c) => {
                let _ = self.broken.set(c);
                true
            }
            None => false,
        }
    }

    pub(super) fn hung_up(&self) -> bool {
        self.hung_up.load(Ordering::Acquire) || self.link_only().is_some_and(|l| l.link.hung_up())
    }

    /// The segment the port uses now.
    pub(super) fn seg(&self) -> &Arc<Segment> {
        self.last_move().map_or(&self.seg, |m| &m.seg)
    }

    /// The last move of the channel, if it moved.
    pub(super) fn last_move(&self) -> Option<&Move> {
        let mut m = self.moves.get()?;
        while let Some(next) = m.next.get() {
            m = next;
        }
        Some(m)
    }

    /// The channel moved to `seg`, with `sock` this side's socket there.
    /// Only the port's own calls move it (one at a time).
    pub(super) fn push_move(&self, seg: Arc<Segment>, sock: OwnedFd) {
        let m = Box::new(Move {
            seg,
            sock: Some(sock),
            next: OnceLock::new(),
        });
        let slot = match self.last_move() {
            Some(last) => &last.next,
            None => &self.moves,
        };
        let _ = slot.set(m);
    }

    /// Has the channel moved (off its link, or re-homed)?
    pub(super) fn has_moved(&self) -> bool {
        self.moves.get().is_some()
    }

    /// The link, while the port is on it (it has no socket of its own).
    pub(super) fn link_only(&self) -> Option<&OnLink> {
        if self.sock.get().is_some() || self.has_moved() {
            return None;
        }
        self.on_link.as_ref()
    }

    /// The port's socket. A port on a link has none: its callers move it
    /// off the link first.
    pub(super) fn sock(&self) -> BorrowedFd<'_> {
        match self
            .last_move()
            .map_or(self.sock.get(), |m| m.sock.as_ref())
        {
            Some(s) => s.as_fd(),
            None => self
                .on_link
                .as_ref()
                .expect("a port has a socket or a link")
                .link
                .sock(),
        }
    }

    /// The word a sleep announcement stores: 1 for the port's socket; on
    /// a link, the calling thread's doorbell (made the first time).
    pub(super) fn bell_word(&self) -> io::Result<u32> {
        match self.link_only() {
            None => Ok(1),
            Some(l) => Ok(l.link.thread_bell()?.word()),
        }
    }

    pub(super) fn eof(&self) -> bool {
        self.eof.load(Ordering::Acquire)
    }

    /// The close reason once the peer is gone: a protocol error if it broke
    /// the protocol; else what the closed flag this half reads says
    /// (`closed`: `Closed`, or the reason a relay passed on); else, the
    /// flag never set, it died.
    pub(super) fn gone_reason(&self, closed: u32) -> CloseReason {
        if self.broken() {
            return CloseReason::ProtocolError;
        }
        match closed {
            0 | CLOSED_PEER_DIED => CloseReason::PeerDied,
            CLOSED_PROTOCOL_ERROR => CloseReason::ProtocolError,
            _ => CloseReason::Closed,
        }
    }

    pub(super) fn corrupt(&self, c: Corrupt) -> CloseReason {
        let _ = self.broken.set(c);
        CloseReason::ProtocolError
    }

    /// The link this end makes the channels it carries in: made, and its
    /// far end sent over the socket, the first time. `None` for a port
    /// with no socket of its own, or if the link cannot be made.
    pub(super) fn made_link(&self) -> Option<Arc<ArenaLink>> {
        if self.link_only().is_some() {
            return None;
        }
        let mut made = self.made_link.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = made.as_ref().filter(|l| !l.gone()) {
            return Some(l.clone());
        }
        // None yet, or its far end is gone (never installed, or closed):
        // a new one.
        let (link, far) = ArenaLink::create().ok()?;
        sys::socket::send_link(self.sock(), link.id(), far.as_fd()).ok()?;
        self.descriptors_seen.store(true, Ordering::Relaxed);
        *made = Some(link.clone());
        Some(link)
    }

    /// Did link `id`'s invitation arrive without its descriptor?
    pub(super) fn link_lost(&self, id: u64) -> bool {
        self.lost_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// Keep an invitation to link `id` for the records that will name it.
    pub(super) fn invited(&self, id: u64, sock: OwnedFd) -> Result<(), Corrupt> {
        if id == 0 || !sys::socket::is_seqpacket(&sock) {
            return Err(Corrupt("a link that is not one"));
        }
        let mut inv = self.invitations();
        if inv.len() >= MAX_INVITATIONS {
            return Err(Corrupt("more link invitations than a port holds"));
        }
        inv.push((id, sock));
        Ok(())
    }

    /// Link invitations not yet adopted.
    pub(super) fn invitations(&self) -> MutexGuard<'_, Vec<(u64, OwnedFd)>> {
        self.invitations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The link named `id` among those adopted, or adopted now from its
    /// invitation (a record names it: kits in it are to be taken up).
    pub(super) fn adopt_link(&self, id: u64) -> Option<Result<Arc<ArenaLink>, Corrupt>> {
        if let Some(l) = self.links().iter().find(|l| l.id() == id) {
            return Some(Ok(l.clone()));
        }
        let sock = {
            let mut inv = self.invitations();
            let i = inv.iter().position(|(i, _)| *i == id)?;
            inv.swap_remove(i).1
        };
        Some(ArenaLink::adopt(id, sock).inspect(|l| self.links().push(l.clone())))
    }

    /// The link this end made, if any.
    pub(super) fn made_link_now(&self) -> Option<Arc<ArenaLink>> {
        self.made_link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The links of the channels this port carries.
    pub(super) fn links(&self) -> MutexGuard<'_, Vec<Arc<ArenaLink>>> {
        self.arena_links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kits of the channels this port carries.
    pub(super) fn link(&self) -> &Arc<Link> {
        self.link.get_or_init(Link::new)
    }

    /// Can this port's kit end be kept: nothing travelled on its socket,
    /// nothing broke, the peer did not hang up, the port did not travel.
    fn kit_clean(&self) -> bool {
        !self.descriptors_seen.load(Ordering::Relaxed)
            && !self.broken()
            && !self.hung_up()
            && !self.eof()
            && !self.transferred.load(Ordering::Relaxed)
    }

    /// Take the socket out to travel with the port's parts (a port on a
    /// link moves off it before it travels).
    pub(super) fn take_sock(&mut self) -> OwnedFd {
        fn last_sock(m: &mut Move) -> Option<OwnedFd> {
            match m.next.get_mut() {
                Some(next) => last_sock(next),
                None => m.sock.take(),
            }
        }
        self.moves
            .get_mut()
            .and_then(|m| last_sock(m))
            .or_else(|| self.sock.take())
            .expect("a travelling port has a socket of its own")
    }

    pub(super) fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    pub(super) fn inbox(&self) -> MutexGuard<'_, VecDeque<Attachment>> {
        // A panic while holding the lock leaves a consistent queue.
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parts of an attachment taken in so far (holding `taking_in`).
    pub(super) fn partial(&self) -> MutexGuard<'_, Partial> {
        self.taking_in.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send a wake token to the sleeper whose announcement was `word`; a
    /// hung-up peer is reported as `Err`.
    pub(super) fn wake_peer(&self, word: u32) -> Result<(), ()> {
        if let Some(l) = self.link_only() {
            l.link.ring(word);
            return if l.link.hung_up() { Err(()) } else { Ok(()) };
        }
        match sys::socket::send_wake(self.sock()) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.hung_up.store(true, Ordering::Release);
                Err(())
            }
        }
    }

    /// Sleep on the socket until a token, a hang-up, the deadline, or (once
    /// split) a kick from the other half; then take in what the socket
    /// holds. `writable`: also return when the socket can take a message.
    pub(super) fn sleep(&self, me: Half, wait: Wait, writable: bool) -> io::Result<()> {
        if let Some(l) = self.link_only() {
            let bell = l.link.thread_bell()?;
            return l.link.sleep(&bell, wait.remaining());
        }
        match self.kicks.get() {
            None if wait.remaining().is_none() && !writable => {
                // One blocking receive: a token (or descriptors, or the
                // hang-up) is what we waited for. Anything else queued is
                // taken in later, when it is needed.
                // Unsplit: nobody else takes the lock.
                let mut partial = self.partial();
                let got = sys::socket::recv(self.sock(), true)?;
                self.note(got, &mut partial);
                Ok(())
            }
            None => {
                sys::socket::wait(self.sock(), writable, wait.remaining())?;
                self.drain_socket(me, false)
            }
            Some(kicks) => {
                let mine = &kicks[me as usize];
                sys::socket::wait_or(self.sock(), Some(mine.as_fd()), writable, wait.remaining())?;
                mine.clear();
                self.drain_socket(me, false)
            }
        }
    }

    /// Take in one thing the socket delivered; `partial` is what
    /// `taking_in` holds. Returns `true` when a whole attachment was queued.
    pub(super) fn note(&self, got: Incoming, partial: &mut Partial) -> bool {
        match got {
            Incoming::HungUp => {
                self.hung_up.store(true, Ordering::Release);
                self.eof.store(true, Ordering::Release);
            }
            // The peer is gone, but what it sent before may still be queued
            // (records' attachments): not the end of the socket yet.
            Incoming::Reset => self.hung_up.store(true, Ordering::Release),
            Incoming::Garbage => {
                let _ = self.broken.set(Corrupt("garbage on the port's socket"));
            }
            Incoming::Attachment(body, fds) => {
                self.descriptors_seen.store(true, Ordering::Relaxed);
                return self.queue(partial.take(&body, Some(fds), true));
            }
            Incoming::Part(body, fds) => {
                self.descriptors_seen.store(true, Ordering::Relaxed);
                return self.queue(partial.take(&body, Some(fds), false));
            }
            Incoming::Lost => return self.queue(partial.take(&[], None, true)),
            Incoming::LostPart => return self.queue(partial.take(&[], None, false)),
            Incoming::Link(id, sock) => {
                self.descriptors_seen.store(true, Ordering::Relaxed);
                if let Err(c) = self.invited(id, sock) {
                    let _ = self.broken.set(c);
                }
            }
            Incoming::LinkLost(id) => {
                self.lost_links
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id);
            }
            Incoming::Moved(seg, sock) => {
                self.descriptors_seen.store(true, Ordering::Relaxed);
                *self.moved_offer.lock().unwrap_or_else(|e| e.into_inner()) = Some((seg, sock));
            }
            Incoming::Empty | Incoming::Wake => {}
        }
        false
    }

    /// Queue a whole attachment ([`Partial::take`]); `true` if there was one.
    pub(super) fn queue(&self, got: Result<Option<Attachment>, Corrupt>) -> bool {
        match got {
            Ok(Some(a)) => {
                self.inbox().push_back(a);
                true
            }
            Ok(None) => false,
            Err(c) => {
                let _ = self.broken.set(c);
                false
            }
        }
    }

    /// Take in everything queued on the socket without blocking (or until
    /// one attachment arrived, when `until_attachment`). Once split, kick
    /// the other half if anything came: it may be what it waits for.
    pub(super) fn drain_socket(&self, me: Half, until_attachment: bool) -> io::Result<()> {
        if let Some(l) = self.link_only() {
            // No attachment travels on a link's channel: only the link's
            // hang-up matters.
            l.link.take_in();
            l.link.look_for_hang_up();
            return Ok(());
        }
        let mut took = false;
        // Each receive and its queuing are one step for the other half. A
        // panic while holding the lock leaves nothing half done.
        let mut taking_in = self.taking_in.lock().unwrap_or_else(|e| e.into_inner());
        let r = loop {
            if self.eof() || self.broken() {
                break Ok(());
            }
            // The other half may have queued the attachment we look for
            // while we waited for the lock.
            if until_attachment && !self.inbox().is_empty() {
                break Ok(());
            }
            let got = match sys::socket::recv(self.sock(), false) {
                Ok(g) => g,
                Err(e) => break Err(e),
            };
            if matches!(got, Incoming::Attachment(..)) {
                fault::reach(fault::Point::TakenIn);
            }
            let empty = matches!(got, Incoming::Empty);
            took |= !empty;
            if self.note(got, &mut taking_in) && until_attachment || empty {
                break Ok(());
            }
        };
        drop(taking_in);
        if took {
            if let Some(kicks) = self.kicks.get() {
                let other = match me {
                    Half::Sender => Half::Receiver,
                    Half::Receiver => Half::Sender,
                };
                kicks[other as usize].kick();
            }
        }
        r
    }
}

impl Drop for Shared {
    /// The last half is gone. A clean port on a kit keeps its end for the
    /// next channel; otherwise the socket closes (the peer's hang-up).
    fn drop(&mut self) {
        let clean = self.kit_clean();
        if self.has_moved() {
            // Moved: the sockets close with the moves (the last one is the
            // port's; the old ones' peers moved on). The kit the channel
            // left is this side's no more (whatever this port became, it
            // is done with it): kept for a next channel, which starts past
            // the old records once both sides left (`renew_kit`).
            drop(self.sock.take());
            if let Some(l) = self.on_link.take() {
                let keep = l.link.broken().is_none();
                self.leave_kit(l, keep);
            }
            return;
        }
        let Some(sock) = self.sock.take() else {
            // On a link (or travelled): a clean end of the kit is kept.
            if let Some(l) = self.on_link.take() {
                if !self.transferred.load(Ordering::Relaxed) {
                    self.leave_kit(l, clean);
                }
            }
            return;
        };
        // A socket of its own from the start (`Home::Socket`): never on a
        // link, never moved (both returned above).
        match self.kit.take() {
            Some(home) if clean => home.keep(self.seg.clone(), sock, self.side),
            _ => drop(sock),
        }
    }
}

impl Shared {
    /// This side is done with its kit in a link's arena: kept for a next
    /// channel if `keep` and the link lives, otherwise forgotten.
    fn leave_kit(&self, l: OnLink, keep: bool) {
        if keep && !l.link.hung_up() {
            let kit = ArenaKit {
                id: l.kit,
                seg: self.seg.clone(),
                side: self.side,
            };
            l.link.keep(kit, l.generation);
        } else if self.side == Side::B {
            l.link.forget(l.kit);
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePort")
            .field("capacity", &self.seg().capacity())
            .field("hung_up", &self.hung_up())
            .field("broken", &self.broken.get())
            .finish_non_exhaustive()
    }
}
