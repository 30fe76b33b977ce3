//! `shmport.Port`: one end of a channel, used from Python threads.
//!
//! The Rust port is split into its sending and receiving halves at its
//! first use (a post on it, a receive, `fileno()`, a setting read...), so
//! that one Python thread may receive (blocked, the GIL released) while
//! another posts. Each half sits behind its own lock, taken with `try_lock`
//! only: a second thread that uses a half already in use gets `BusyError`,
//! never a wait and never a data race.
//!
//! Until then the port stays whole and untouched (`Port::whole`): a port
//! of a channel made here and posted, unused, over another port travels as
//! a kit of that port's channel (`src/port/fresh.rs`), with no system call
//! once kits are reused. The split happens once, under `whole`'s lock (two
//! threads using a new port at once: one splits, the other finds it
//! split); if it fails (it needs two eventfds), the port stays whole, the
//! use raises `OSError`, and the next use tries again. A port whose
//! transfer failed comes back whole too.
//!
//! Messages borrow the receiving half (`shmport::Message<'p>`). Here the
//! half lives in an [`RxCore`] shared (`Arc`) by the port and every message
//! received from it; the half is heap-allocated and never moves, and it is
//! freed only when no message refers to it (`live` is 0) — so a message,
//! and every view of it, stays valid after the port is closed. Closing
//! sends the close event to the peer at once (the sending half is dropped);
//! the receiving half follows when the last message from it is released.
//!
//! A message dropped on another thread while the port's owner is blocked
//! in `recv` cannot take the lock: it is queued (`pending`) and dropped by
//! the lock's holder, between two of its waiting slices or when it lets go.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use shmport::{MessagePort, PortReceiver, PortSender, PostError, RecvError, TransferError};

use crate::buffer::Borrowed;
use crate::errors;
use crate::frame::Frame;
use crate::message::{Held, Message};
use crate::waiting::{LoopFd, spin_until};

/// How long one blocking wait lasts with the GIL released before the
/// thread looks at signals (Ctrl-C), a close from another thread, and
/// messages released on other threads.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// Posts larger than the ring's capacity divided by this go to the pool.
const INLINE_FRACTION: usize = 8;

/// A posted `bytes` object this large goes out of band (`_pickle.py`;
/// the same figure as its `BYTES_OUT_OF_BAND`).
const BYTES_OUT_OF_BAND: usize = 64 * 1024;

/// A value whose use stays on the current thread, carried into
/// `Python::detach` (which runs its closure on the calling thread).
pub(crate) struct Here<T>(T);

// SAFETY: `detach` runs the closure on the calling thread, synchronously;
// the wrapped value never reaches another thread.
unsafe impl<T> Send for Here<T> {}

impl<T> Here<T> {
    pub(crate) fn new(t: T) -> Here<T> {
        Here(t)
    }
    pub(crate) fn get(self) -> T {
        self.0
    }
}

fn relock<'a, T>(
    r: Result<MutexGuard<'a, T>, TryLockError<MutexGuard<'a, T>>>,
) -> Option<MutexGuard<'a, T>> {
    match r {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- receiving

/// The receiving half and the messages that borrow it.
pub(crate) struct RxCore {
    slot: Mutex<RxSlot>,
    /// Messages dropped while the lock was held elsewhere.
    pending: Mutex<Vec<Held>>,
    /// `close()` was called while the lock was held elsewhere.
    close_requested: AtomicBool,
    /// Reservation buffers alive: the half (and the ring mapping) must stay.
    pins: AtomicUsize,
}

struct RxSlot {
    /// The half (`RxCore::install`); `None` before the port is split, and
    /// once closed or transferred.
    rx: Option<NonNull<PortReceiver>>,
    /// Messages that borrow the half (alive or pending).
    live: usize,
    /// Free the half when `live` drops to 0.
    close_when_idle: bool,
}

// SAFETY: the slot owns the half (a `PortReceiver` is `Send`); the mutex
// around it serialises every use.
unsafe impl Send for RxSlot {}

impl RxSlot {
    /// Drop `held` messages (they borrow the half, which is still there).
    fn drop_messages(&mut self, held: Vec<Held>, pins: usize) {
        for m in held {
            drop(m);
            self.live -= 1;
        }
        self.free_if_idle(pins);
    }

    fn free_if_idle(&mut self, pins: usize) {
        if self.close_when_idle && self.live == 0 && pins == 0 {
            if let Some(rx) = self.rx.take() {
                // SAFETY: made by Box::leak in `RxCore::install`; no message
                // borrows it any more (`live` is 0) and the caller holds the
                // lock, so nothing else uses it.
                drop(unsafe { Box::from_raw(rx.as_ptr()) });
            }
        }
    }

    /// Close: now if no message borrows the half; else the peer's posts
    /// fail from now on, and the half goes with the last message.
    fn close(&mut self, pins: usize) {
        if self.close_when_idle {
            return;
        }
        self.close_when_idle = true;
        if self.live != 0 || pins != 0 {
            if let Some(rx) = self.rx {
                // SAFETY: the half is alive (freed only with `live` at 0)
                // and the caller holds the lock.
                unsafe { rx.as_ref() }.close_receiving();
            }
        }
        self.free_if_idle(pins);
    }
}

impl RxCore {
    /// A core with no half yet (`install` puts it in).
    fn empty() -> Arc<RxCore> {
        Arc::new(RxCore {
            slot: Mutex::new(RxSlot {
                rx: None,
                live: 0,
                close_when_idle: false,
            }),
            pending: Mutex::new(Vec::new()),
            close_requested: AtomicBool::new(false),
            pins: AtomicUsize::new(0),
        })
    }

    /// The port was split: its receiving half goes in the slot.
    fn install(&self, rx: PortReceiver) {
        lock(&self.slot).rx = Some(NonNull::from(Box::leak(Box::new(rx))));
    }

    /// Take the lock, or `BusyError`.
    fn enter(&self) -> PyResult<RxGuard<'_>> {
        match relock(self.slot.try_lock()) {
            Some(g) => Ok(RxGuard {
                core: self,
                slot: Some(g),
            }),
            None => Err(errors::busy(
                "another thread is receiving on this port (one receiver at a time)",
            )),
        }
    }

    /// Drop a message that borrows the half: under the lock, or queued for
    /// whoever holds it.
    pub(crate) fn dispose(&self, held: Held) {
        if let Some(mut g) = relock(self.slot.try_lock()) {
            let mut all = std::mem::take(&mut *lock(&self.pending));
            all.push(held);
            g.drop_messages(all, self.pins());
            return;
        }
        lock(&self.pending).push(held);
        // The holder may have let go meanwhile, without seeing it.
        self.settle();
    }

    /// If the lock is free: drop queued messages, honour a close request.
    fn settle(&self) {
        if let Some(mut g) = relock(self.slot.try_lock()) {
            let all = std::mem::take(&mut *lock(&self.pending));
            g.drop_messages(all, self.pins());
            if self.close_requested.load(Ordering::Acquire) {
                g.close(self.pins());
            }
        }
    }

    fn pins(&self) -> usize {
        self.pins.load(Ordering::Acquire)
    }

    /// A reservation buffer keeps the half (and so the ring) mapped.
    pub(crate) fn pin(&self) {
        self.pins.fetch_add(1, Ordering::AcqRel);
    }

    /// The buffer is gone; free the half if it was waiting for that.
    pub(crate) fn unpin(&self) {
        self.pins.fetch_sub(1, Ordering::AcqRel);
        self.settle();
    }

    fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        self.settle();
    }
}

impl Drop for RxCore {
    fn drop(&mut self) {
        // Nothing refers to the core: no message is alive, none is pending.
        let slot = self.slot.get_mut().unwrap_or_else(PoisonError::into_inner);
        let all = std::mem::take(
            self.pending
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        slot.drop_messages(all, 0);
        slot.close_when_idle = true;
        slot.free_if_idle(0);
    }
}

/// The receiving half's lock, held.
struct RxGuard<'a> {
    core: &'a RxCore,
    slot: Option<MutexGuard<'a, RxSlot>>,
}

impl RxGuard<'_> {
    fn slot(&mut self) -> &mut RxSlot {
        self.slot.as_mut().expect("held until drop")
    }

    /// The half, for as long as the lock is held or a message (counted in
    /// `live`) borrows it.
    fn receiver(&mut self) -> Option<&'static PortReceiver> {
        // SAFETY: the half is freed only under the lock with `live` at 0;
        // callers use the reference while holding the lock, and messages
        // made from it are counted in `live` (`message_taken`) and hold the
        // core, so it outlives them. Only shared references are made.
        self.slot().rx.map(|p| unsafe { &*p.as_ptr() })
    }

    fn message_taken(&mut self) {
        self.slot().live += 1;
    }

    /// Drop queued messages now.
    fn drain(&mut self) {
        let all = std::mem::take(&mut *lock(&self.core.pending));
        if !all.is_empty() {
            let pins = self.core.pins();
            self.slot().drop_messages(all, pins);
        }
    }
}

impl Drop for RxGuard<'_> {
    fn drop(&mut self) {
        self.drain();
        if self.core.close_requested.load(Ordering::Acquire) {
            let pins = self.core.pins();
            self.slot().close(pins);
        }
        drop(self.slot.take());
        // A message queued, or a close requested, after the look above.
        if !lock(&self.core.pending).is_empty() || self.core.close_requested.load(Ordering::Acquire)
        {
            self.core.settle();
        }
    }
}

// ------------------------------------------------------------------ sending

struct TxSlot {
    /// The half (`TxSlot::install`); `None` before the port is split, and
    /// once closed or transferred.
    tx: Option<NonNull<PortSender>>,
    /// A loan (`port.reserve(n)`): it borrows the half.
    reservation: Option<shmport::Reservation<'static>>,
}

// SAFETY: the slot owns the half (a `PortSender` is `Send`); the mutex
// around it serialises every use.
unsafe impl Send for TxSlot {}

impl TxSlot {
    /// The port was split: its sending half goes in the slot.
    fn install(&mut self, tx: PortSender) {
        self.tx = Some(NonNull::from(Box::leak(Box::new(tx))));
    }

    fn sender(&self) -> Option<&'static PortSender> {
        // SAFETY: freed only under the lock (`close`, `take`), and callers
        // use the reference only while they hold it.
        self.tx.map(|p| unsafe { &*p.as_ptr() })
    }

    fn take(&mut self) -> Option<PortSender> {
        debug_assert!(self.reservation.is_none());
        // SAFETY: made by Box::leak in `install`; the caller holds the lock and no
        // reference to it is in use.
        self.tx
            .take()
            .map(|p| *unsafe { Box::from_raw(p.as_ptr()) })
    }

    fn close(&mut self) {
        // The reservation borrows the half: abandoned first.
        drop(self.reservation.take());
        drop(self.take());
    }
}

const OPEN: u8 = 0;
/// Carried by a post on another port (`ports=[...]`), not sent yet.
const IN_TRANSIT: u8 = 1;
const TRANSFERRED: u8 = 2;
const CLOSED: u8 = 3;
/// Closed while in transit: the post stops (unless it already delivered
/// the port) and closes it.
const CLOSING: u8 = 4;

/// This thread, as a number no other living thread has.
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// What a port tells of itself, read at its first split.
#[derive(Clone, Copy)]
struct Facts {
    capacity: usize,
    spin: Duration,
}

/// One end of a channel.
#[pyclass(frozen, module = "shmport", name = "Port")]
pub(crate) struct Port {
    /// The port before its first use (and after a failed transfer), whole
    /// and untouched; `None` once split, transferred or closed. Whenever it
    /// holds the port, both half slots are empty.
    whole: Mutex<Option<MessagePort>>,
    tx: Mutex<TxSlot>,
    tx_close_requested: AtomicBool,
    rx: Arc<RxCore>,
    state: AtomicU8,
    /// While in transit: the posting thread (`thread_token`).
    poster: AtomicUsize,
    /// What `fileno()` gives event loops (made at its first call).
    loop_fd: Mutex<Option<LoopFd>>,
    /// The port's socket, for `repr` (-1 before the first split).
    fd: AtomicI32,
    facts: OnceLock<Facts>,
    /// The close event seen (`"closed"`, `"peer_died"`, ...).
    close_reason: Mutex<Option<&'static str>>,
}

/// How long a post or receive may wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Until(Option<Instant>),
}

impl Wait {
    fn from_timeout(timeout: Option<f64>) -> PyResult<Wait> {
        match timeout {
            None => Ok(Wait::Until(None)),
            Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(
                "timeout must be a non-negative number of seconds",
            )),
            Some(0.0) => Ok(Wait::No),
            Some(t) => Ok(Wait::Until(
                Duration::try_from_secs_f64(t)
                    .ok()
                    .and_then(|d| Instant::now().checked_add(d)),
            )),
        }
    }

    /// The next slice to wait for; `None` when the deadline passed.
    fn slice(self) -> Option<Duration> {
        match self {
            Wait::No => Some(Duration::ZERO),
            Wait::Until(None) => Some(SLICE),
            Wait::Until(Some(t)) => {
                let left = t.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| left.min(SLICE))
            }
        }
    }
}

/// What a post carries.
enum Payload<'a> {
    Frame(Frame<'a>),
    Bytes(&'a [u8]),
}

impl Port {
    /// A Python port for `port`, kept whole until its first use.
    pub(crate) fn wrap(py: Python<'_>, port: MessagePort) -> PyResult<Bound<'_, Port>> {
        Bound::new(py, Port::new(port))
    }

    fn new(port: MessagePort) -> Port {
        Port {
            whole: Mutex::new(Some(port)),
            tx: Mutex::new(TxSlot {
                tx: None,
                reservation: None,
            }),
            tx_close_requested: AtomicBool::new(false),
            rx: RxCore::empty(),
            state: AtomicU8::new(OPEN),
            poster: AtomicUsize::new(0),
            loop_fd: Mutex::new(None),
            fd: AtomicI32::new(-1),
            facts: OnceLock::new(),
            close_reason: Mutex::new(None),
        }
    }

    /// Split the port into its halves if it is whole: at its first use, or
    /// the first after a failed transfer gave it back. Called before any
    /// half's lock is taken (the lock order is `whole`, then a half's, then
    /// `loop_fd`); while the port is whole the half slots are empty, so
    /// their locks are only ever held briefly, with the GIL.
    fn split_if_whole(&self) -> PyResult<()> {
        let mut whole = lock(&self.whole);
        let Some(port) = whole.take() else {
            return Ok(());
        };
        self.facts.get_or_init(|| {
            let capacity = port.capacity();
            // A Python receiver typically holds its last message (the loop
            // variable, arrays from `.data`) while it waits for the next
            // one: large posts go to the pool (or out of line) so that held
            // messages pin little ring space (`MessagePort::set_inline_limit`).
            port.set_inline_limit(capacity / INLINE_FRACTION);
            Facts {
                capacity,
                spin: port.spin(),
            }
        });
        self.fd.store(port.as_fd().as_raw_fd(), Ordering::Relaxed);
        let (tx, rx) = match port.split() {
            Ok(halves) => halves,
            Err(e) => {
                // The port comes back untouched: kept whole, usable.
                *whole = Some(e.port);
                return Err(errors::split(e.error));
            }
        };
        // A loop waiting on `fileno()` (after a failed transfer) watches the
        // halves again.
        let watched = lock(&self.loop_fd)
            .as_ref()
            .map_or(Ok(()), |l| l.watch(&rx));
        lock(&self.tx).install(tx);
        self.rx.install(rx);
        drop(whole);
        match watched {
            Ok(()) => Ok(()),
            Err(e) => {
                // A loop that cannot watch the port would wait for ever:
                // closed instead (by its post if it is in transit).
                self.close_impl();
                Err(errors::io(e))
            }
        }
    }

    /// The port's capacity and spin: known from its first split on.
    fn facts(&self) -> PyResult<Facts> {
        if let Some(f) = self.facts.get() {
            return Ok(*f);
        }
        self.check_open()?;
        self.split_if_whole()?;
        self.facts
            .get()
            .copied()
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    fn check_open(&self) -> PyResult<()> {
        match self.state.load(Ordering::Acquire) {
            OPEN => Ok(()),
            IN_TRANSIT => Err(errors::busy("the port is being posted by another thread")),
            CLOSING => Err(errors::closed_here("the port is closed")),
            TRANSFERRED => Err(errors::closed_here("the port was posted to another port")),
            _ => Err(errors::closed_here("the port is closed")),
        }
    }

    /// Take the sending half's lock (splitting the port first if it is
    /// whole), or `BusyError`.
    fn tx_enter(&self) -> PyResult<TxGuard<'_>> {
        self.split_if_whole()?;
        match relock(self.tx.try_lock()) {
            Some(g) => Ok(TxGuard {
                port: self,
                slot: Some(g),
            }),
            None => Err(errors::busy(
                "another thread is posting on this port (one poster at a time)",
            )),
        }
    }

    /// Take the receiving half's lock (splitting the port first if it is
    /// whole), or `BusyError`.
    fn rx_enter(&self) -> PyResult<RxGuard<'_>> {
        self.split_if_whole()?;
        self.rx.enter()
    }

    fn tx_settle(&self) {
        if self.tx_close_requested.load(Ordering::Acquire) {
            if let Some(mut g) = relock(self.tx.try_lock()) {
                g.close();
            }
        }
    }

    fn note_close(&self, e: &RecvError) {
        if let RecvError::Closed(r) = e {
            *lock(&self.close_reason) = Some(match r {
                shmport::CloseReason::PeerDied => "peer_died",
                shmport::CloseReason::ProtocolError => "protocol_error",
                _ => "closed",
            });
        }
    }

    /// Take the port whole out of this object, to travel in a message: it
    /// is in transit until `restore` or `transferred`.
    fn take_whole(&self) -> PyResult<MessagePort> {
        while self
            .state
            .compare_exchange(OPEN, IN_TRANSIT, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.check_open()?;
        }
        self.poster.store(thread_token(), Ordering::Release);
        // Not used yet: it travels as it is (a new channel's port, as a kit).
        let whole = lock(&self.whole).take();
        match whole {
            Some(port) => Ok(port),
            None => self.take_halves().inspect_err(|_| self.end_transit()),
        }
    }

    fn take_halves(&self) -> PyResult<MessagePort> {
        let mut tx = self.tx_enter()?;
        if tx.slot().reservation.is_some() {
            return Err(errors::busy("the port has a reservation not committed yet"));
        }
        let mut rx = self.rx.enter()?;
        rx.drain();
        if rx.slot().live != 0 || self.rx.pins() != 0 {
            return Err(errors::busy(
                "messages received from this port are still held (release them, and drop \
                 their views, before posting the port)",
            ));
        }
        let (Some(t), Some(r)) = (tx.slot().take(), rx.slot().rx.take()) else {
            return Err(errors::closed_here("the port is closed"));
        };
        // SAFETY: made by Box::leak in RxCore::install; no message borrows
        // it (`live` is 0) and the lock is held.
        let r = *unsafe { Box::from_raw(r.as_ptr()) };
        match t.rejoin(r) {
            Ok(p) => Ok(p),
            Err((t, r)) => {
                // Never: the halves of one port.
                drop((t, r));
                self.state.store(CLOSED, Ordering::Release);
                Err(errors::closed_here("the port's halves did not rejoin"))
            }
        }
    }

    /// Put a port back, whole, after a failed transfer (closed if
    /// `close()` came meanwhile). It is split again at its next use; at
    /// once if an event loop waits on it (`fileno()`), which must watch
    /// its halves.
    fn restore(&self, port: MessagePort) {
        *lock(&self.whole) = Some(port);
        let awaited = lock(&self.loop_fd).is_some();
        if awaited && self.split_if_whole().is_err() {
            // The loop's next wait ends at the port's close: closed, as a
            // port closed while in transit is (`end_transit`).
            self.close_impl();
        }
        self.end_transit();
    }

    /// The transfer did not happen and the halves are in place: open
    /// again, or closed if `close()` came meanwhile.
    fn end_transit(&self) {
        let closing = self
            .state
            .compare_exchange(IN_TRANSIT, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err();
        if closing {
            self.state.store(CLOSED, Ordering::Release);
            self.close_halves();
        }
        self.poster.store(0, Ordering::Release);
    }

    /// The port left in a message.
    fn transferred(&self) {
        self.state.store(TRANSFERRED, Ordering::Release);
        self.poster.store(0, Ordering::Release);
        self.wake_loops();
    }

    fn wake_loops(&self) {
        if let Some(l) = &*lock(&self.loop_fd) {
            l.wake();
        }
    }

    fn post_impl(
        &self,
        py: Python<'_>,
        payload: Payload<'_>,
        ports: Option<Vec<Bound<'_, Port>>>,
        wait: Wait,
    ) -> PyResult<()> {
        self.check_open()?;
        let mut guard = self.tx_enter()?;
        let Some(tx) = guard.slot().sender() else {
            return Err(errors::closed_here("the port is closed"));
        };
        // Take the ports out of their objects (all or none).
        let carried: Vec<Bound<'_, Port>> = ports.unwrap_or_default();
        let mut whole = Vec::with_capacity(carried.len());
        for p in &carried {
            if std::ptr::eq(p.get(), self) {
                for (q, w) in carried.iter().zip(whole) {
                    q.get().restore(w);
                }
                return Err(PyValueError::new_err("a port cannot be posted over itself"));
            }
            match p.get().take_whole() {
                Ok(w) => whole.push(w),
                Err(e) => {
                    for (q, w) in carried.iter().zip(whole) {
                        q.get().restore(w);
                    }
                    return Err(e);
                }
            }
        }
        let payload = Here::new(&payload);
        loop {
            if let Some(q) = carried.iter().find(|q| q.get().closing()) {
                let e = errors::closed_here(&format!(
                    "{} in ports=[...] was closed before the post could deliver it",
                    q.get().__repr__()
                ));
                for (q, w) in carried.iter().zip(whole) {
                    q.get().restore(w);
                }
                return Err(e);
            }
            let Some(slice) = wait.slice() else {
                for (q, w) in carried.iter().zip(whole) {
                    q.get().restore(w);
                }
                return Err(PyTimeoutError::new_err("timed out waiting for room"));
            };
            let job = Here::new((tx, payload.0, std::mem::take(&mut whole)));
            let r = py.detach(move || {
                let (tx, payload, ports) = job.get();
                Here::new(post_once(tx, payload, ports, slice))
            });
            match r.get() {
                Ok(()) => {
                    for q in &carried {
                        q.get().transferred();
                    }
                    return Ok(());
                }
                Err(TransferError { error, ports }) => {
                    let again = matches!(error, PostError::Timeout) && !matches!(wait, Wait::No);
                    if again {
                        whole = ports;
                        let stop = py.check_signals().err().or_else(|| {
                            self.tx_close_requested
                                .load(Ordering::Acquire)
                                .then(|| errors::closed_here("the port was closed"))
                        });
                        if let Some(e) = stop {
                            for (q, w) in carried.iter().zip(whole) {
                                q.get().restore(w);
                            }
                            return Err(e);
                        }
                        continue;
                    }
                    for (q, w) in carried.iter().zip(ports) {
                        q.get().restore(w);
                    }
                    return Err(errors::post(error));
                }
            }
        }
    }

    fn recv_impl<'py>(&self, py: Python<'py>, wait: Wait) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.check_open()?;
        let mut guard = self.rx_enter()?;
        let Some(rx) = guard.receiver() else {
            return Err(errors::closed_here("the port is closed"));
        };
        loop {
            let Some(slice) = wait.slice() else {
                return Err(PyTimeoutError::new_err("timed out waiting for a message"));
            };
            let rxh = Here::new(rx);
            let r = py.detach(move || {
                let rx = rxh.get();
                let r = if slice.is_zero() {
                    rx.try_recv()
                } else {
                    rx.recv_timeout(slice)
                };
                Here::new(r)
            });
            match r.get() {
                Ok(m) => {
                    guard.message_taken();
                    drop(guard);
                    return Message::into_py(py, m, self.rx.clone()).map(Some);
                }
                Err(RecvError::Empty) => return Ok(None),
                Err(RecvError::Timeout) => {
                    guard.drain();
                    py.check_signals()?;
                    if self.rx.close_requested.load(Ordering::Acquire) {
                        return Err(errors::closed_here("the port was closed"));
                    }
                }
                Err(e) => {
                    self.note_close(&e);
                    return Err(errors::recv(e));
                }
            }
        }
    }

    /// Close now; a port in transit is closed by its post (`CLOSING`).
    fn close_impl(&self) {
        loop {
            let (from, to) = match self.state.load(Ordering::Acquire) {
                OPEN => (OPEN, CLOSED),
                IN_TRANSIT => (IN_TRANSIT, CLOSING),
                // Closed, or its halves are elsewhere.
                _ => return,
            };
            if self
                .state
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if to == CLOSED {
                    self.close_halves();
                }
                return;
            }
        }
    }

    /// `close()`: close, and if another thread's post carries the port,
    /// wait until that post stopped (it does within one waiting slice) or
    /// delivered it; either way the port is gone from here on return.
    fn close_and_wait(&self, py: Python<'_>) {
        self.close_impl();
        while self.closing() && self.poster.load(Ordering::Acquire) != thread_token() {
            py.detach(|| std::thread::sleep(Duration::from_millis(1)));
        }
    }

    fn closing(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSING
    }

    fn close_halves(&self) {
        // A port still whole closes here (its peer sees `Closed`). Taken
        // first: a split under way finishes, and its halves close below.
        let whole = lock(&self.whole).take();
        drop(whole);
        self.tx_close_requested.store(true, Ordering::Release);
        self.tx_settle();
        self.rx.request_close();
        self.wake_loops();
    }
}

/// What a reservation's buffers share: how many are exported, and a pin
/// that keeps the ring mapped while they live.
pub(crate) struct LoanState {
    pub(crate) exports: AtomicUsize,
    core: Arc<RxCore>,
}

impl Drop for LoanState {
    fn drop(&mut self) {
        self.core.unpin();
    }
}

/// Room for one raw message in the ring, to fill in place:
/// `with port.reserve(n) as buf: buf[:] = ...` commits at the end of the
/// block (abandons it if the block raises). While it is open, other posts
/// on the port raise `BusyError`.
#[pyclass(frozen, module = "shmport")]
pub(crate) struct Reservation {
    port: Py<Port>,
    ptr: usize,
    len: usize,
    state: Arc<LoanState>,
    done: AtomicBool,
    /// The memoryview `__enter__` handed out (released at `__exit__`).
    view: Mutex<Option<Py<PyAny>>>,
}

impl Reservation {
    /// Commit (`Some(len)`) or abandon (`None`).
    fn finish(&self, py: Python<'_>, commit: Option<usize>) -> PyResult<()> {
        if self.done.load(Ordering::Acquire) {
            return Err(PyValueError::new_err(
                "the reservation is committed or abandoned already",
            ));
        }
        if self.state.exports.load(Ordering::Acquire) != 0 {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "views of the reservation's buffer are still alive: release them \
                 (del, memoryview.release()) before committing",
            ));
        }
        let port = self.port.bind(py).get();
        let mut g = lock(&port.tx);
        let r = g.reservation.take();
        self.done.store(true, Ordering::Release);
        match (r, commit) {
            (Some(r), Some(n)) => r.commit_len(n).map_err(errors::post),
            (Some(r), None) => {
                drop(r);
                Ok(())
            }
            (None, _) => Err(errors::closed_here("the port was closed")),
        }
    }
}

#[pymethods]
impl Reservation {
    /// A writable memoryview of the reserved ring memory.
    #[getter]
    fn buffer<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let me = slf.get();
        if me.done.load(Ordering::Acquire) {
            return Err(PyValueError::new_err(
                "the reservation is committed or abandoned already",
            ));
        }
        crate::buffer::loan_memoryview(slf.as_any(), me.state.clone(), me.ptr as *mut u8, me.len)
    }

    /// Publish the first `nbytes` bytes (all by default) as one raw message.
    #[pyo3(signature = (nbytes = None))]
    fn commit(&self, py: Python<'_>, nbytes: Option<usize>) -> PyResult<()> {
        let n = nbytes.unwrap_or(self.len);
        if n > self.len {
            // The reservation stays open: commit less, or cancel.
            return Err(PyValueError::new_err(format!(
                "cannot commit {n} bytes of a {}-byte reservation",
                self.len
            )));
        }
        self.finish(py, Some(n))
    }

    /// Abandon it: nothing is sent.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, None)
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let mv = Reservation::buffer(slf)?;
        *lock(&slf.get().view) = Some(mv.clone().unbind());
        Ok(mv)
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if let Some(v) = lock(&self.view).take() {
            v.bind(py).call_method0("release")?;
        }
        if exc_type.is_some_and(|t| !t.is_none()) {
            if !self.done.load(Ordering::Acquire) {
                let _ = self.finish(py, None);
            }
            return Ok(false);
        }
        self.finish(py, Some(self.len))?;
        Ok(false)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Acquire) {
            // No buffer of it is left (each holds a reference to it):
            // abandon it. Posts on the port never wait while it is open, so
            // the lock is free or about to be.
            let port = self.port.get();
            drop(lock(&port.tx).reservation.take());
        }
    }
}

/// One post attempt, waiting at most `slice` for room (none for zero).
fn post_once(
    tx: &PortSender,
    payload: &Payload<'_>,
    ports: Vec<MessagePort>,
    slice: Duration,
) -> Result<(), TransferError> {
    let no_wait = slice.is_zero();
    match payload {
        Payload::Frame(f) if ports.is_empty() => if no_wait {
            tx.try_post(f)
        } else {
            tx.post_timeout(f, slice)
        }
        .map_err(|error| TransferError { error, ports }),
        Payload::Bytes(b) if ports.is_empty() => if no_wait {
            tx.try_post_bytes(b)
        } else {
            tx.post_bytes_timeout(b, slice)
        }
        .map_err(|error| TransferError { error, ports }),
        Payload::Frame(f) => {
            if no_wait {
                tx.try_post_with_ports(f, ports)
            } else {
                tx.post_with_ports_timeout(f, ports, slice)
            }
        }
        Payload::Bytes(b) => {
            if no_wait {
                tx.try_post_bytes_with_ports(b, ports)
            } else {
                tx.post_bytes_with_ports_timeout(b, ports, slice)
            }
        }
    }
}

/// `post(timeout=0)` tried once: no room is a timeout, not `Full`.
fn full_is_timeout(wait: Wait, r: PyResult<()>) -> PyResult<()> {
    match r {
        Err(e)
            if matches!(wait, Wait::No)
                && Python::attach(|py| e.is_instance_of::<errors::Full>(py)) =>
        {
            Err(PyTimeoutError::new_err("timed out waiting for room"))
        }
        r => r,
    }
}

/// The sending half's lock, held.
struct TxGuard<'a> {
    port: &'a Port,
    slot: Option<MutexGuard<'a, TxSlot>>,
}

impl TxGuard<'_> {
    fn slot(&mut self) -> &mut TxSlot {
        self.slot.as_mut().expect("held until drop")
    }
}

impl Drop for TxGuard<'_> {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.port.tx_settle();
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.close_impl();
    }
}

fn ports_arg<'py>(ports: Option<&Bound<'py, PyAny>>) -> PyResult<Option<Vec<Bound<'py, Port>>>> {
    let Some(ports) = ports else { return Ok(None) };
    if ports.is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for p in ports.try_iter()? {
        let p = p?;
        out.push(p.cast_into::<Port>().map_err(|e| {
            PyTypeError::new_err(format!(
                "ports=[...] holds shmport.Port objects only, not {}",
                e.into_inner().get_type()
            ))
        })?);
    }
    Ok(Some(out))
}

/// Pickle `obj` with protocol 5 (memoryviews too, see `_pickle.py`); the
/// out-of-band buffers, borrowed.
fn pickle<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, Vec<Borrowed>)> {
    let bufs = PyList::empty(py);
    let kwargs = PyDict::new(py);
    kwargs.set_item("protocol", 5)?;
    kwargs.set_item("buffer_callback", bufs.getattr("append")?)?;
    if let Ok(b) = obj.cast_exact::<pyo3::types::PyBytes>() {
        if b.as_bytes().len() >= BYTES_OUT_OF_BAND {
            let pickled = py
                .import("shmport._pickle")?
                .getattr("dumps_bytes")?
                .call1((obj, bufs.getattr("append")?))?;
            return borrowed_frame(pickled, &bufs);
        }
    }
    let pickled = match crate::pickle_dumps(py)?.call((obj,), Some(&kwargs)) {
        Ok(p) => p,
        // `pickle` refuses memoryviews: once more with shmport's pickler,
        // which sends them out of band (only such posts pay for it).
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            bufs.call_method0("clear")?;
            py.import("shmport._pickle")?
                .getattr("dumps")?
                .call1((obj, bufs.getattr("append")?))?
        }
        Err(e) => return Err(e),
    };
    borrowed_frame(pickled, &bufs)
}

/// A pickle, and the out-of-band buffers `pickle` handed `bufs`, borrowed.
fn borrowed_frame<'py>(
    pickled: Bound<'py, PyAny>,
    bufs: &Bound<'py, PyList>,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, Vec<Borrowed>)> {
    let pickled = pickled.cast_into::<pyo3::types::PyBytes>()?;
    let borrowed = bufs
        .iter()
        .map(|b| Borrowed::new(&b))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((pickled, borrowed))
}

#[pymethods]
impl Port {
    /// Post `obj` (any picklable object): pickled with protocol 5, its
    /// out-of-band buffers (numpy arrays, `pickle.PickleBuffer`s,
    /// memoryviews) copied
    /// once, straight into shared memory. `ports`: ports to transfer with
    /// it (they leave this process; `msg.ports` on the other side).
    /// Waits for room (at most `timeout` seconds: `TimeoutError`).
    #[pyo3(signature = (obj, *, ports = None, timeout = None))]
    fn post(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        ports: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let wait = Wait::from_timeout(timeout)?;
        full_is_timeout(wait, self.post_pickled(py, obj, ports, wait))
    }

    /// `post` without waiting: `shmport.Full` when the ring has no room.
    #[pyo3(signature = (obj, *, ports = None))]
    fn try_post(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        ports: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.post_pickled(py, obj, ports, Wait::No)
    }

    /// Post the bytes of any object with the buffer protocol (`bytes`,
    /// `bytearray`, `memoryview`, a contiguous numpy array, a received
    /// message...) as a raw message: what a Rust peer reads with
    /// `msg.bytes()` and a C peer with `shmport_message_bytes`.
    #[pyo3(signature = (buf, *, ports = None, timeout = None))]
    fn post_bytes(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        ports: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let wait = Wait::from_timeout(timeout)?;
        let b = Borrowed::new(buf)?;
        let r = self.post_impl(py, Payload::Bytes(b.bytes()), ports_arg(ports)?, wait);
        drop(b);
        full_is_timeout(wait, r)
    }

    /// `post_bytes` without waiting: `shmport.Full` when there is no room.
    #[pyo3(signature = (buf, *, ports = None))]
    fn try_post_bytes(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        ports: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let b = Borrowed::new(buf)?;
        let r = self.post_impl(py, Payload::Bytes(b.bytes()), ports_arg(ports)?, Wait::No);
        drop(b);
        r
    }

    /// Reserve `nbytes` in the ring for one raw message, waiting for room
    /// (at most `timeout` seconds): `with port.reserve(n) as buf:` fills it
    /// in place, no copy, and commits at the end of the block. Only
    /// messages that fit in the ring (half its capacity) can be reserved.
    #[pyo3(signature = (nbytes, *, timeout = None))]
    fn reserve(
        slf: &Bound<'_, Self>,
        nbytes: usize,
        timeout: Option<f64>,
    ) -> PyResult<Reservation> {
        let me = slf.get();
        let py = slf.py();
        me.check_open()?;
        let wait = Wait::from_timeout(timeout)?;
        let mut guard = me.tx_enter()?;
        if guard.slot().reservation.is_some() {
            return Err(errors::busy("the port has a reservation not committed yet"));
        }
        let Some(tx) = guard.slot().sender() else {
            return Err(errors::closed_here("the port is closed"));
        };
        // Ring memory only: its buffer stays mapped while a view of it lives
        // (the receiving half pins the segment), whatever happens to the
        // port. A pool block is mapped by the sending half, which `close()`
        // frees; larger messages go through `post_bytes` (one copy into the
        // pool).
        let max = tx.max_inline_payload();
        if nbytes > max {
            return Err(PyValueError::new_err(format!(
                "a reservation of {nbytes} bytes is larger than the ring holds ({max}); \
                 post_bytes takes any size"
            )));
        }
        let r = loop {
            let Some(slice) = wait.slice() else {
                return Err(PyTimeoutError::new_err("timed out waiting for room"));
            };
            let txh = Here::new(tx);
            let r = py.detach(move || {
                let tx = txh.get();
                Here::new(if slice.is_zero() {
                    tx.try_reserve_bytes(nbytes)
                } else {
                    tx.reserve_bytes_timeout(nbytes, slice)
                })
            });
            match r.get() {
                Ok(r) => break r,
                Err(PostError::Timeout) if !matches!(wait, Wait::No) => {
                    py.check_signals()?;
                    if me.tx_close_requested.load(Ordering::Acquire) {
                        return Err(errors::closed_here("the port was closed"));
                    }
                }
                Err(e) => return Err(errors::post(e)),
            }
        };
        let mut r = r;
        let bytes = r.bytes_mut();
        let (ptr, len) = (bytes.as_mut_ptr() as usize, bytes.len());
        guard.slot().reservation = Some(r);
        me.rx.pin();
        Ok(Reservation {
            port: slf.clone().unbind(),
            ptr,
            len,
            state: Arc::new(LoanState {
                exports: AtomicUsize::new(0),
                core: me.rx.clone(),
            }),
            done: AtomicBool::new(false),
            view: Mutex::new(None),
        })
    }

    /// The next message, waiting for one (at most `timeout` seconds:
    /// `TimeoutError`). After the peer's last message: the close event,
    /// raised as `Closed`, `PeerDied` or `ProtocolError`.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        match self.recv_impl(py, Wait::from_timeout(timeout)?)? {
            Some(m) => Ok(m),
            None => Err(PyTimeoutError::new_err("no message waiting")),
        }
    }

    /// A message if one is waiting, else `None` (the close event raises).
    fn try_recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.recv_impl(py, Wait::No)
    }

    /// Close the port: the peer receives every message posted before, then
    /// `Closed`. Messages received from this port stay valid. Idempotent.
    /// A port another thread is posting in `ports=[...]`: that post fails
    /// with `Closed` and the port is closed, unless the post delivered it
    /// first; this returns once one or the other happened.
    fn close(&self, py: Python<'_>) {
        self.close_and_wait(py);
    }

    /// Is the port closed (or posted away)?
    #[getter]
    fn closed(&self) -> bool {
        self.state.load(Ordering::Acquire) >= TRANSFERRED
    }

    /// The close event seen by a receive: `"closed"`, `"peer_died"`,
    /// `"protocol_error"`; `None` before.
    #[getter]
    fn close_reason(&self) -> Option<&'static str> {
        *lock(&self.close_reason)
    }

    /// Ring bytes per direction.
    #[getter]
    fn capacity(&self) -> PyResult<usize> {
        Ok(self.facts()?.capacity)
    }

    /// Seconds a blocking call spins before it sleeps.
    #[getter]
    fn spin(&self) -> PyResult<f64> {
        Ok(self.facts()?.spin.as_secs_f64())
    }

    /// Posts larger than this many bytes travel outside the ring (in a
    /// block of the sender's pool, or past the largest block, 64 MiB, in
    /// shared memory of their own) even when the ring could hold them;
    /// default: an eighth of the ring. A receiver that holds messages pins
    /// ring space only for the inline ones.
    #[getter]
    fn inline_limit(&self) -> PyResult<usize> {
        let mut g = self.tx_enter()?;
        g.slot()
            .sender()
            .map(|t| t.inline_limit())
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    #[setter]
    fn set_inline_limit(&self, n: usize) -> PyResult<()> {
        let mut g = self.tx_enter()?;
        g.slot()
            .sender()
            .map(|t| t.set_inline_limit(n))
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    /// The cap (bytes) of this port's pool of blocks for messages larger
    /// than its inline limit; `None`: the default (the larger of 64 MiB and
    /// four blocks of the largest size in use). At the cap a post waits
    /// for the receiver to let go of messages, as at a full ring.
    #[getter]
    fn pool_limit(&self) -> PyResult<Option<usize>> {
        let mut g = self.tx_enter()?;
        g.slot()
            .sender()
            .map(|t| t.pool_limit())
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    #[setter]
    fn set_pool_limit(&self, n: Option<usize>) -> PyResult<()> {
        let mut g = self.tx_enter()?;
        g.slot()
            .sender()
            .map(|t| t.set_pool_limit(n))
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    /// The largest message (bytes) this port accepts.
    #[getter]
    fn max_message_size(&self) -> PyResult<usize> {
        let mut g = self.rx_enter()?;
        g.receiver()
            .map(|r| r.max_message_size())
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    #[setter]
    fn set_max_message_size(&self, n: usize) -> PyResult<()> {
        let mut g = self.rx_enter()?;
        g.receiver()
            .map(|r| r.set_max_message_size(n))
            .ok_or_else(|| errors::closed_here("the port is closed"))
    }

    /// `"validated"` or `"untrusted"` (see the README).
    #[getter]
    fn trust(&self) -> PyResult<&'static str> {
        let mut g = self.rx_enter()?;
        let r = g
            .receiver()
            .ok_or_else(|| errors::closed_here("the port is closed"))?;
        Ok(match r.trust() {
            shmport::Trust::Untrusted => "untrusted",
            _ => "validated",
        })
    }

    #[setter]
    fn set_trust(&self, trust: &str) -> PyResult<()> {
        let t = crate::parse_trust(trust)?;
        let mut g = self.rx_enter()?;
        let r = g
            .receiver()
            .ok_or_else(|| errors::closed_here("the port is closed"))?;
        r.set_trust(t);
        Ok(())
    }

    /// A descriptor for `selectors` and event loops, readable when a
    /// message or the close event may be there (and when the port is
    /// closed here): call `prepare_poll()` before each wait, then
    /// `try_recv()` after it. Made at the first call (an epoll descriptor,
    /// see `waiting.rs`; `BusyError` if another thread is receiving on the
    /// port then); it stays open as long as this object.
    fn fileno(&self) -> PyResult<RawFd> {
        self.check_open()?;
        // Before `loop_fd`'s lock (the lock order).
        self.split_if_whole()?;
        let mut l = lock(&self.loop_fd);
        if let Some(l) = &*l {
            return Ok(l.ep.as_raw_fd());
        }
        let mut g = self.rx.enter()?;
        let r = g
            .receiver()
            .ok_or_else(|| errors::closed_here("the port is closed"))?;
        let made = LoopFd::new(r).map_err(errors::io)?;
        let fd = made.ep.as_raw_fd();
        *l = Some(made);
        Ok(fd)
    }

    /// Announce a wait on `fileno()`: `False` when a message or the close
    /// event is already there (receive instead of waiting).
    fn prepare_poll(&self) -> PyResult<bool> {
        self.check_open()?;
        let mut g = self.rx_enter()?;
        let r = g
            .receiver()
            .ok_or_else(|| errors::closed_here("the port is closed"))?;
        Ok(r.prepare_poll())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close_and_wait(py);
        false
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next message; the iteration ends at the close event `Closed`
    /// (`PeerDied` and `ProtocolError` are raised).
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.recv_impl(py, Wait::Until(None)) {
            Ok(m) => Ok(m),
            Err(e) if e.is_instance_of::<errors::Closed>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `await port.arecv()`: the next message, on the running asyncio loop.
    fn arecv<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("shmport._aio")?.getattr("arecv")?.call1((slf,))
    }

    fn __aiter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("shmport._aio")?
            .getattr("PortIterator")?
            .call1((slf,))
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a port is not pickled: pass it in ports=[...] to travel with a message",
        ))
    }

    fn __repr__(&self) -> String {
        let state = match self.state.load(Ordering::Acquire) {
            OPEN => "open",
            IN_TRANSIT => "in transit",
            TRANSFERRED => "transferred",
            CLOSING => "closing",
            _ => "closed",
        };
        match self.fd.load(Ordering::Relaxed) {
            -1 => format!("<shmport.Port not used yet, {state}>"),
            fd => format!("<shmport.Port fd={fd} {state}>"),
        }
    }
}

impl Port {
    fn post_pickled(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        ports: Option<&Bound<'_, PyAny>>,
        wait: Wait,
    ) -> PyResult<()> {
        let ports = ports_arg(ports)?;
        let (pickled, bufs) = pickle(py, obj)?;
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.bytes()).collect();
        let frame = Frame {
            pickle: pickled.as_bytes(),
            buffers: &slices,
        };
        let r = self.post_impl(py, Payload::Frame(frame), ports, wait);
        drop(slices);
        drop(bufs);
        r
    }
}

/// `_spin(ports, limit=None)`: spin, the GIL released, for the longest spin
/// time of `ports` (at most `limit` seconds) until one of them has a
/// message or its close event; its index, or `None`. What a port set and
/// `arecv` do before they announce a wait and sleep. A port another thread
/// receives on is left out; a closed one (before or while it spins) is
/// returned (receiving from it raises). Signals (Ctrl-C) are looked at
/// every `SLICE`.
#[pyfunction]
#[pyo3(signature = (ports, limit = None))]
pub(crate) fn _spin(
    py: Python<'_>,
    ports: Vec<Bound<'_, Port>>,
    limit: Option<f64>,
) -> PyResult<Option<usize>> {
    let mut guards = Vec::with_capacity(ports.len());
    let mut halves = Vec::with_capacity(ports.len());
    let mut spin = Duration::ZERO;
    for (i, p) in ports.iter().enumerate() {
        let p = p.get();
        if p.check_open().is_err() {
            return Ok(Some(i));
        }
        p.split_if_whole()?;
        let Ok(mut g) = p.rx.enter() else { continue };
        let Some(r) = g.receiver() else {
            return Ok(Some(i));
        };
        spin = spin.max(p.facts.get().map_or(Duration::ZERO, |f| f.spin));
        halves.push((i, r, &p.state));
        guards.push(g);
    }
    if let Some(limit) = limit.and_then(|l| Duration::try_from_secs_f64(l).ok()) {
        spin = spin.min(limit);
    }
    let deadline = Instant::now().checked_add(spin);
    loop {
        let left = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()));
        let job = Here::new(&halves);
        let found = py
            .detach(move || {
                let halves = job.get();
                let found = spin_until(halves, left.min(SLICE), |(_, r, state)| {
                    state.load(Ordering::Acquire) != OPEN || r.has_event()
                });
                Here::new(found.map(|k| halves[k].0))
            })
            .get();
        if found.is_some() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(found);
        }
        py.check_signals()?;
    }
}
