//! A channel made in this process whose ports are built when first used.
//!
//! [`MessageChannel::new`](crate::MessageChannel::new) hands out two ports
//! whose halves do not exist yet, over a segment and socket pair of their
//! own (a "local kit", taken from a few kept unused in this process, or
//! made). The first use of either port builds both over it. But if one of
//! them is posted over another port before either was used, it travels as
//! a kit of that port's channel (`kit.rs`, `bind.rs`): the port left here
//! is then built over the kit's near end, and the local kit, never used,
//! goes back for the next channel. A channel per request then costs no
//! system call once kits are reused.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::kit::{Kit, KitHome};
use super::{Halves, MessagePort, Trust};
use crate::link::{ArenaKit, ArenaLink};
use crate::shm::segment::{Segment, Side};
use crate::sys;

/// Unused local kits kept in this process for the next channels.
const KEEP_UNUSED: usize = 8;

/// Unused local kits, kept only while some port carries kits (a
/// [`Link`](super::kit::Link) lives): when the last goes, so do they, and
/// a process that closed all its ports holds no descriptor of shmport's.
static UNUSED: Mutex<Vec<LocalKit>> = Mutex::new(Vec::new());

/// The last link (or kit carrier) is gone: the unused local kits go with
/// it.
fn drop_unused() {
    let kept = std::mem::take(&mut *unused());
    drop(kept);
}

fn unused() -> MutexGuard<'static, Vec<LocalKit>> {
    // Pushes and removes only: a panic leaves a whole list.
    UNUSED.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a channel's ports are made with (`ChannelBuilder`'s settings).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Bytes per ring (already rounded and checked).
    pub capacity: usize,
    pub spin: Duration,
    pub trust: Trust,
    pub max_message: usize,
    pub pool_limit: Option<usize>,
    /// Its ports never go on a link ([`crate::ChannelBuilder::own_sockets`]).
    pub own_sockets: bool,
}

impl Settings {
    /// Apply the per-process settings to a port just built.
    pub(crate) fn configure(&self, port: &MessagePort) {
        port.set_trust(self.trust);
        port.set_max_message_size(self.max_message);
        port.set_pool_limit(self.pool_limit);
    }
}

/// A segment and socket pair no port has used.
pub(crate) struct LocalKit {
    seg: Arc<Segment>,
    socks: [OwnedFd; 2],
}

impl LocalKit {
    fn take(capacity: usize) -> io::Result<LocalKit> {
        let mut kept = unused();
        if let Some(i) = kept.iter().position(|k| k.seg.capacity() == capacity) {
            return Ok(kept.swap_remove(i));
        }
        drop(kept);
        let seg = Segment::create(capacity)?;
        let (a, b) = sys::socket::pair()?;
        Ok(LocalKit { seg, socks: [a, b] })
    }

    fn keep(self) {
        let mut kept = unused();
        crate::link::on_last_carrier(drop_unused);
        if kept.len() < KEEP_UNUSED && crate::link::carriers_alive() {
            kept.push(self);
        }
    }
}

/// The shared state of a channel made here until both ports are built.
pub(crate) struct Fresh {
    settings: Settings,
    state: Mutex<State>,
}

pub(crate) enum State {
    /// Neither port used: the local kit waits.
    Unused(LocalKit),
    /// Built over the local kit: the halves not claimed yet, by index.
    Built(Box<[Option<Halves>; 2]>),
    /// The other port travelled as a kit; port `staying` is built over the
    /// kit's near end when first used.
    Bound {
        staying: usize,
        kit: Kit,
        home: KitHome,
    },
    /// The other port travelled as a kit in a link's arena; port
    /// `staying` is built over the kit's near end when first used.
    OnLink {
        staying: usize,
        kit: ArenaKit,
        link: Arc<ArenaLink>,
        generation: u32,
    },
    /// Both claimed.
    Done,
}

impl Fresh {
    /// Two ports of a new channel, built when first used.
    pub(crate) fn pair(settings: Settings) -> io::Result<(MessagePort, MessagePort)> {
        let local = LocalKit::take(settings.capacity)?;
        let fresh = Arc::new(Fresh {
            settings,
            state: Mutex::new(State::Unused(local)),
        });
        Ok((
            MessagePort::unused(fresh.clone(), 0),
            MessagePort::unused(fresh, 1),
        ))
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is one assignment: a panic leaves a whole state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Is neither port used yet? (A hint: `unused_lock` decides.)
    pub(crate) fn is_unused(&self) -> bool {
        matches!(*self.state(), State::Unused(_))
    }

    /// The state, locked, if neither port was used: to post one as a kit.
    pub(crate) fn unused_lock(&self) -> Option<MutexGuard<'_, State>> {
        let state = self.state();
        matches!(*state, State::Unused(_)).then_some(state)
    }

    /// Port `index` is used for the first time: its halves.
    pub(crate) fn claim(&self, index: usize) -> Halves {
        self.take(index)
            .unwrap_or_else(|| unreachable!("a port of a new channel claimed twice"))
    }

    /// Port `index` is dropped unused: close it (building it if need be),
    /// so its peer sees it closed. Nothing to do if it was built and
    /// claimed, or travelled.
    pub(crate) fn release(&self, index: usize) {
        drop(self.take(index));
    }

    /// The halves of port `index`, built if need be, taken out of the
    /// channel's state; `None` if they were taken before or travelled.
    fn take(&self, index: usize) -> Option<Halves> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, State::Done) {
            State::Unused(local) => {
                let LocalKit { seg, socks: [a, b] } = local;
                let mut built = Box::new([
                    Some(self.build(seg.clone(), Side::A, a, None)),
                    Some(self.build(seg, Side::B, b, None)),
                ]);
                let mine = built[index].take();
                *state = State::Built(built);
                mine
            }
            State::Built(mut built) => {
                let mine = built[index].take();
                if built.iter().any(Option::is_some) {
                    *state = State::Built(built);
                }
                mine
            }
            State::Bound { staying, kit, home } if staying == index => {
                Some(self.build(kit.seg, kit.side, kit.sock, Some(home)))
            }
            State::OnLink {
                staying,
                kit,
                link,
                generation,
            } if staying == index => Some(self.build_on_link(kit, link, generation)),
            other => {
                *state = other;
                None
            }
        }
    }

    fn build_on_link(&self, kit: ArenaKit, link: Arc<ArenaLink>, generation: u32) -> Halves {
        let port = MessagePort::on_kit(kit, link, generation, self.settings.spin);
        self.settings.configure(&port);
        port.into_halves()
    }

    fn build(&self, seg: Arc<Segment>, side: Side, sock: OwnedFd, home: Option<KitHome>) -> Halves {
        // A kit's positions were written by its peer too: a broken port
        // comes back rather than none (its calls report ProtocolError).
        let port = MessagePort::rebuild(seg, side, sock, self.settings.spin);
        if let Some(home) = home {
            port.keep_kit(home);
        }
        self.settings.configure(&port);
        port.into_halves()
    }
}

/// Port `staying` stays; the other travelled as the far end of `kit` in
/// `link`'s arenas. The local kit, never used, is kept for the next channel.
pub(crate) fn bind_on_link(
    state: &mut State,
    staying: usize,
    kit: ArenaKit,
    link: Arc<ArenaLink>,
    generation: u32,
) {
    let bound = State::OnLink {
        staying,
        kit,
        link,
        generation,
    };
    if let State::Unused(local) = std::mem::replace(state, bound) {
        local.keep();
    }
}

/// Port `staying` stays; the other travelled as `kit`'s far end. The local
/// kit, never used, is kept for the next channel.
pub(crate) fn bind(state: &mut State, staying: usize, kit: Kit, home: KitHome) {
    if let State::Unused(local) = std::mem::replace(state, State::Bound { staying, kit, home }) {
        local.keep();
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        match std::mem::replace(&mut *self.state(), State::Done) {
            State::Unused(local) => local.keep(),
            // The port that stayed was dropped unused: close it properly, so
            // its peer sees Closed (and the kit is kept).
            State::Bound { kit, home, .. } => {
                drop(self.build(kit.seg, kit.side, kit.sock, Some(home)));
            }
            State::OnLink {
                kit,
                link,
                generation,
                ..
            } => drop(self.build_on_link(kit, link, generation)),
            State::Built(_) | State::Done => {}
        }
    }
}
