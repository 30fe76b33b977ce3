//! Posting ports of channels made here and not used yet as kits of the
//! channel they travel on (`kit.rs`): named inside the record when this
//! end of the channel has idle kits for all of them, else each as the far
//! end of a new kit, sent as an ordinary port.

use core::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rkyv::rancor;

use super::fresh::{self, Fresh};
use super::kit::Kit;
use super::send::check_size;
use super::{MAX_PORTS, MessagePort, PortReceiver, PortSender, Wait};
use crate::error::PostError;
use crate::link::{ArenaKit, ArenaLink};
use crate::shm::kit::KitWords;
use crate::shm::layout::{KIT_NEW, KITS_IN_ARENAS, KitRef, KitRefs, kit_refs_size};
use crate::shm::ring::{Kind, RecordMeta};
use crate::shm::segment::Side;
use crate::wire::attachment::{Partial, PortParts, SegmentRef};
use crate::wire::writer::RecordWriter;

/// What [`PortSender::post_as_kits`] did: `Ok(None)` the message was
/// posted; `Ok(Some(ports))` it was not, and the ports come back to go the
/// ordinary way; `Err` the post failed, the ports come back.
type KitPost = Result<Option<Vec<MessagePort>>, (PostError, Vec<MessagePort>)>;

impl MessagePort {
    /// A port of a channel made here that neither port has used yet (a
    /// hint; the post decides under the channel's lock).
    pub(super) fn is_unused(&self) -> bool {
        self.halves.get().is_none() && self.fresh.as_ref().is_some_and(|(f, _)| f.is_unused())
    }

    /// The kits this port keeps for the channels it carries: (made here
    /// and idle, held for the peer).
    pub(crate) fn kits_kept(&self) -> (usize, usize) {
        let sh = &self.tx().shared;
        let (mut made, mut held) = match sh.link.get() {
            Some(link) => link.counts(),
            None => (0, 0),
        };
        let links = sh.links().clone();
        for l in sh.made_link_now().iter().chain(links.iter()) {
            let (m, h) = l.counts();
            made += m;
            held += h;
        }
        (made, held)
    }

    /// Bytes of this side's large-message pools on the links of the
    /// channels this port carries, and whether the port itself still lives
    /// on a link (for `crate::testing`).
    pub(crate) fn link_pools(&self) -> (usize, bool) {
        let sh = &self.tx().shared;
        let links = sh.links().clone();
        let bytes = sh
            .made_link_now()
            .iter()
            .chain(links.iter())
            .map(|l| l.pool_bytes())
            .sum();
        (bytes, sh.link_only().is_some())
    }
}

impl PortSender {
    /// Post a message whose ports are all unused ports of channels made
    /// here, each as an idle kit of this channel named in the record: no
    /// descriptor travels. Only when there is such a kit for every one and
    /// the message fits in the ring after their references.
    pub(super) fn post_as_kits(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        ports: Vec<MessagePort>,
        fill: &mut dyn FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        rx: Option<&PortReceiver>,
    ) -> KitPost {
        let n = ports.len();
        let prefix = kit_refs_size(n);
        let max = self.max_inline_payload().min(self.inline_limit.get());
        if n == 0 || n > MAX_PORTS || size_hint.saturating_add(prefix) > max {
            return Ok(Some(ports));
        }
        if !ports.iter().all(MessagePort::is_unused) || shares_a_channel(&ports) {
            return Ok(Some(ports));
        }
        // Lock every channel (its other port cannot be built meanwhile),
        // and take an idle kit for each.
        let fresh: Vec<(Arc<Fresh>, usize)> =
            ports.iter().filter_map(|p| p.fresh.clone()).collect();
        let mut states = Vec::with_capacity(n);
        for (f, _) in &fresh {
            match f.unused_lock() {
                Some(s) => states.push(s),
                None => return Ok(Some(ports)),
            }
        }
        // Channels whose ports keep a socket of their own go as memfd kits.
        let own = fresh.iter().any(|(f, _)| f.settings().own_sockets);
        if let Some(link) = (!own).then(|| self.shared.made_link()).flatten() {
            return self.post_on_link(
                &link, meta, size_hint, wait, ports, fill, rx, states, &fresh,
            );
        }
        let link = self.shared.link().clone();
        let mut kits: Vec<(Kit, u32)> = Vec::with_capacity(n);
        for (f, _) in &fresh {
            match link.reuse(f.settings().capacity) {
                Some(k) => kits.push(k),
                None => {
                    link.put_back(kits.into_iter().map(|(k, _)| k));
                    return Ok(Some(ports));
                }
            }
        }
        let posted =
            self.write_with_kits(&mut meta, size_hint, n, max, wait, fill, rx, |payload| {
                write_refs(payload, &kits, &fresh);
                true
            });
        match posted {
            Ok(true) => {}
            Ok(false) => {
                link.put_back(kits.into_iter().map(|(k, _)| k));
                return Ok(Some(ports));
            }
            Err(e) => {
                link.put_back(kits.into_iter().map(|(k, _)| k));
                drop(states);
                return Err((e, ports));
            }
        }
        for ((state, (kit, generation)), (_, index)) in states.iter_mut().zip(kits).zip(&fresh) {
            let home = link.home(kit.id, generation, true);
            fresh::bind(state, 1 - index, kit, home);
        }
        drop(states);
        Ok(None)
    }

    /// [`post_as_kits`](Self::post_as_kits) in `link`'s arenas: a kit made
    /// or reused for each port, named in the record.
    #[allow(clippy::too_many_arguments)]
    fn post_on_link(
        &self,
        link: &Arc<ArenaLink>,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        ports: Vec<MessagePort>,
        fill: &mut dyn FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        rx: Option<&PortReceiver>,
        mut states: Vec<std::sync::MutexGuard<'_, fresh::State>>,
        fresh: &[(Arc<Fresh>, usize)],
    ) -> KitPost {
        let n = ports.len();
        let max = self.max_inline_payload().min(self.inline_limit.get());
        let mut kits: Vec<(ArenaKit, u32, bool)> = Vec::with_capacity(n);
        for (f, _) in fresh {
            let cap = crate::link::ring_capacity(f.settings().capacity);
            let kit = match link.reuse_kit(cap) {
                Some((k, g)) => (k, g, false),
                None => match link.make_kit(cap) {
                    Ok(k) => (k, 1, true),
                    Err(_) => {
                        link.put_back(kits.into_iter().map(|(k, _, _)| k));
                        return Ok(Some(ports));
                    }
                },
            };
            kits.push(kit);
        }
        let posted =
            self.write_with_kits(&mut meta, size_hint, n, max, wait, fill, rx, |payload| {
                // The peer's end may be moving away (re-homing the carrier):
                // then these go the ordinary way, after the move. Waiting
                // for room may have followed such a move already: the link
                // is then no longer this end's, and nothing is claimed.
                let still = self
                    .shared
                    .made_link_now()
                    .is_some_and(|l| Arc::ptr_eq(&l, link));
                if !still || self.claim_posting().is_err() {
                    return false;
                }
                write_arena_refs(payload, link.id(), &kits, fresh);
                true
            });
        match posted {
            Ok(true) => {}
            Ok(false) => {
                link.put_back(kits.into_iter().map(|(k, _, _)| k));
                return Ok(Some(ports));
            }
            Err(e) => {
                link.put_back(kits.into_iter().map(|(k, _, _)| k));
                drop(states);
                return Err((e, ports));
            }
        }
        for ((state, (kit, generation, _)), (_, index)) in states.iter_mut().zip(kits).zip(fresh) {
            fresh::bind_on_link(state, 1 - index, kit, link.clone(), generation);
        }
        drop(states);
        Ok(None)
    }

    /// Reserve a slot for the references and the message, serialize the
    /// message after the references' room, and if it fit inside the ring:
    /// `refs` writes the references (and renews their kits), then the
    /// record commits. `Ok(false)`: too large for the ring, nothing done.
    #[allow(clippy::too_many_arguments)]
    fn write_with_kits(
        &self,
        meta: &mut RecordMeta,
        size_hint: usize,
        nports: usize,
        max: usize,
        wait: Wait,
        fill: &mut dyn FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        rx: Option<&PortReceiver>,
        refs: impl FnOnce(NonNull<u8>) -> bool,
    ) -> Result<bool, PostError> {
        let prefix = kit_refs_size(nports);
        check_size(size_hint)?;
        self.check_not_reserved()?;
        self.check_postable()?;
        match self.fill_slot(size_hint + prefix, prefix, max, wait, rx, fill)? {
            Ok((slot, len)) => {
                if !refs(slot.payload) {
                    // Not to commit after all: the slot stays free.
                    return Ok(false);
                }
                meta.kits = true;
                meta.nports = nports as u16;
                self.commit(slot, len, *meta);
                if meta.kind == Kind::Typed {
                    self.large_hint.set(0);
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// A port to travel: an unused port of a channel made here goes as the
    /// far end of a new kit of this channel (the port that stays uses its
    /// near end); any other port is taken apart as it is.
    pub(super) fn travel_parts(&self, port: MessagePort) -> PortParts {
        let Some((f, index)) = port.fresh.as_ref().filter(|_| port.halves.get().is_none()) else {
            return port.into_parts();
        };
        let Some(mut state) = f.unused_lock() else {
            return port.into_parts();
        };
        let link = self.shared.link().clone();
        let Ok((near, far, generation)) = link.make(f.settings().capacity) else {
            // Out of descriptors or memory: the channel's own segment goes.
            drop(state);
            return port.into_parts();
        };
        let parts = PortParts {
            seg: SegmentRef::Mapped(near.seg.clone()),
            sock: far,
            side: Side::B,
            spin: f.settings().spin,
            inbox: Default::default(),
            partial: Partial::default(),
            pool: Vec::new(),
            kit: true,
            held: Vec::new(),
            links: Vec::new(),
        };
        let home = link.home(near.id, generation, true);
        fresh::bind(&mut state, 1 - index, near, home);
        parts
    }
}

/// Are two of these ports the two ends of one channel?
fn shares_a_channel(ports: &[MessagePort]) -> bool {
    ports.iter().enumerate().any(|(i, p)| {
        ports[i + 1..].iter().any(|q| match (&p.fresh, &q.fresh) {
            (Some((a, _)), Some((b, _))) => Arc::ptr_eq(a, b),
            _ => false,
        })
    })
}

/// Renew each kit at its next generation, then write the references at
/// the start of the record's payload.
fn write_refs(payload: NonNull<u8>, kits: &[(Kit, u32)], fresh: &[(Arc<Fresh>, usize)]) {
    // SAFETY: the payload area holds `kit_refs_size(kits.len())` bytes at
    // least, 32-byte aligned, written only by this producer until commit;
    // KitRefs and KitRef hold only atomics.
    let head = unsafe { payload.cast::<KitRefs>().as_ref() };
    // Relaxed: published by the commit's Release store, like the kits'
    // renewed words.
    head.count.store(kits.len() as u32, Ordering::Relaxed);
    head.flags.store(0, Ordering::Relaxed);
    head.link.store(0, Ordering::Relaxed);
    for (i, ((kit, generation), (f, _))) in kits.iter().zip(fresh).enumerate() {
        kit.seg.renew_kit(*generation);
        // SAFETY: entry `i` lies inside the prefix (see above).
        let r = unsafe {
            payload
                .add(size_of::<KitRefs>() + i * size_of::<KitRef>())
                .cast::<KitRef>()
                .as_ref()
        };
        r.id.store(kit.id, Ordering::Relaxed);
        r.generation.store(*generation, Ordering::Relaxed);
        r.reserved.store(0, Ordering::Relaxed);
        let spin = f.settings().spin.as_nanos().min(u64::MAX as u128) as u64;
        r.spin_ns.store(spin, Ordering::Relaxed);
    }
}

/// Renew each reused kit at its next generation, then write references to
/// kits in `link`'s arenas at the start of the record's payload.
fn write_arena_refs(
    payload: NonNull<u8>,
    link: u64,
    kits: &[(ArenaKit, u32, bool)],
    fresh: &[(Arc<Fresh>, usize)],
) {
    // SAFETY: as in `write_refs`: the prefix is ours until the commit.
    let head = unsafe { payload.cast::<KitRefs>().as_ref() };
    // Relaxed: published by the commit's Release store.
    head.count.store(kits.len() as u32, Ordering::Relaxed);
    head.flags.store(KITS_IN_ARENAS, Ordering::Relaxed);
    head.link.store(link, Ordering::Relaxed);
    for (i, ((kit, generation, new), (f, _))) in kits.iter().zip(fresh).enumerate() {
        if !new {
            kit.seg.renew_kit(*generation);
        }
        // SAFETY: entry `i` lies inside the prefix.
        let r = unsafe {
            payload
                .add(size_of::<KitRefs>() + i * size_of::<KitRef>())
                .cast::<KitRef>()
                .as_ref()
        };
        r.id.store(kit.id, Ordering::Relaxed);
        r.generation.store(*generation, Ordering::Relaxed);
        r.reserved
            .store(if *new { KIT_NEW } else { 0 }, Ordering::Relaxed);
        let spin = f.settings().spin.as_nanos().min(u64::MAX as u128) as u64;
        r.spin_ns.store(spin, Ordering::Relaxed);
    }
}
