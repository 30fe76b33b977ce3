//! One libuv poll handle per watched descriptor, on the loop of the thread
//! that made it: the callback runs JavaScript through `napi_make_callback`
//! (so exceptions, microtasks and async hooks behave as for any Node
//! callback). A handle is ref'd or unref'd as JavaScript asks: an unref'd
//! or stopped handle does not keep the process alive.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::ptr;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::Function;
use napi::{Env, Error, JsValue, Result, sys};
use napi_derive::napi;

// libuv, exported by the node executable that loads this addon.
unsafe extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(lp: *mut sys::uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: CloseCb);
    fn uv_ref(handle: *mut c_void);
    fn uv_unref(handle: *mut c_void);
    fn uv_strerror(err: c_int) -> *const std::ffi::c_char;
    fn uv_has_ref(handle: *const c_void) -> c_int;
    fn uv_backend_timeout(lp: *const sys::uv_loop_s) -> c_int;
}

type PollCb = unsafe extern "C" fn(*mut c_void, c_int, c_int);
type CloseCb = unsafe extern "C" fn(*mut c_void);

const UV_POLL: c_int = 8;

/// The longest a port's callback goes on receiving after a spin found the
/// next message, before it lets the loop run its other work.
const SPIN_BUDGET: Duration = Duration::from_millis(1);

/// What a handle's callback needs; the handle's `data` (its first field)
/// points here.
struct State {
    env: sys::napi_env,
    func: sys::napi_ref,
    ctx: sys::napi_async_context,
    /// The loop the handle is on.
    lp: *mut sys::uv_loop_s,
    /// The port whose descriptor this is (0: another descriptor).
    port: u32,
    /// The handle's memory (`uv_handle_size(UV_POLL)` bytes, 8-aligned).
    mem: Vec<u64>,
}

thread_local! {
    static WATCHES: RefCell<HashMap<u32, *mut State>> = RefCell::new(HashMap::new());
    static NEXT: RefCell<u32> = const { RefCell::new(1) };
}

fn uv_error(what: &str, code: c_int) -> Error {
    // SAFETY: uv_strerror returns a static C string for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(uv_strerror(code)) };
    Error::from_reason(format!("{what}: {}", text.to_string_lossy()))
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::from_reason(format!("{what} failed ({status})")))
    }
}

fn handle(id: u32) -> Result<*mut c_void> {
    WATCHES.with(|w| {
        w.borrow()
            .get(&id)
            // SAFETY: a State in the table is live (freed only after its
            // removal, in `on_closed`).
            .map(|s| unsafe { (**s).mem.as_mut_ptr().cast::<c_void>() })
            .ok_or_else(|| Error::from_reason(format!("no watch {id}")))
    })
}

/// Watch `fd`; `callback()` runs on this thread's loop each time it is
/// ready while the watch is started. Not started, and ref'd, when made.
///
/// With `port`, the descriptor is that port's and the callback is
/// `callback(spin)`, returning `true` when it found the port's ring empty
/// and did not announce a sleep, which it does only when `spin` is true:
/// the watch then spins for the port's next message (once the callback's
/// microtasks have run, so that what they post is out) and calls again if
/// one came, or announces the sleep (`prepare_poll`) and returns to the
/// loop. See `spin_allowed` for when it spins.
#[napi]
pub fn watch_new(env: Env, fd: i32, callback: Function<(), ()>, port: Option<u32>) -> Result<u32> {
    let raw_env = env.raw();
    let mut lp = ptr::null_mut();
    // SAFETY: a valid env on its own thread; `lp` is an out pointer.
    let status = unsafe { sys::napi_get_uv_event_loop(raw_env, &mut lp) };
    check(status, "napi_get_uv_event_loop")?;
    let mut func = ptr::null_mut();
    // SAFETY: `callback` is a live function value of this env.
    let status = unsafe { sys::napi_create_reference(raw_env, callback.raw(), 1, &mut func) };
    check(status, "napi_create_reference")?;
    let mut name = ptr::null_mut();
    let mut resource = ptr::null_mut();
    let mut ctx = ptr::null_mut();
    // SAFETY: plain value creation in a valid env, with out pointers.
    unsafe {
        check(
            sys::napi_create_string_utf8(raw_env, c"shmport".as_ptr(), 7, &mut name),
            "napi_create_string_utf8",
        )?;
        check(
            sys::napi_create_object(raw_env, &mut resource),
            "napi_create_object",
        )?;
        check(
            sys::napi_async_init(raw_env, resource, name, &mut ctx),
            "napi_async_init",
        )?;
    }
    // SAFETY: uv_handle_size has no preconditions.
    let size = unsafe { uv_handle_size(UV_POLL) };
    let state = Box::into_raw(Box::new(State {
        env: raw_env,
        func,
        ctx,
        lp,
        port: port.unwrap_or(0),
        mem: vec![0u64; size.div_ceil(8)],
    }));
    // SAFETY: `state` was just made; its `mem` is large enough for a
    // uv_poll_t and stays put (the Vec is never resized) until `on_closed`.
    let h = unsafe { (*state).mem.as_mut_ptr().cast::<c_void>() };
    // SAFETY: `lp` is this thread's loop, `h` uninitialised handle memory.
    let rc = unsafe { uv_poll_init(lp, h, fd) };
    if rc != 0 {
        // SAFETY: never handed to libuv; ours alone to free.
        let s = unsafe { Box::from_raw(state) };
        release(&s);
        return Err(uv_error("uv_poll_init", rc));
    }
    // SAFETY: a uv_handle_t starts with `void* data`.
    unsafe { *h.cast::<*mut c_void>() = state.cast() };
    let id = NEXT.with(|n| {
        let mut n = n.borrow_mut();
        let id = *n;
        *n = n.wrapping_add(1).max(1);
        id
    });
    WATCHES.with(|w| w.borrow_mut().insert(id, state));
    Ok(id)
}

/// Start (or keep) calling back when the descriptor is ready for
/// `events` (libuv's: 1 readable, 2 writable; a new mask replaces the old).
#[napi]
pub fn watch_start(id: u32, events: i32) -> Result<()> {
    let h = handle(id)?;
    // SAFETY: `h` is an initialised, not closing, poll handle of this loop.
    let rc = unsafe { uv_poll_start(h, events, on_poll) };
    if rc != 0 {
        return Err(uv_error("uv_poll_start", rc));
    }
    Ok(())
}

/// Stop calling back (the descriptor is left alone).
#[napi]
pub fn watch_stop(id: u32) -> Result<()> {
    let h = handle(id)?;
    // SAFETY: as in `watch_start`.
    unsafe { uv_poll_stop(h) };
    Ok(())
}

/// Whether the started watch keeps the process alive.
#[napi]
pub fn watch_ref(id: u32, keep_alive: bool) -> Result<()> {
    let h = handle(id)?;
    // SAFETY: as in `watch_start`.
    unsafe { if keep_alive { uv_ref(h) } else { uv_unref(h) } };
    Ok(())
}

/// Stop and free the watch; safe from inside its own callback.
#[napi]
pub fn watch_close(id: u32) {
    if let Some(state) = WATCHES.with(|w| w.borrow_mut().remove(&id)) {
        // SAFETY: a live handle leaves the table once, here; libuv calls
        // `on_closed` after it is done with the handle, which frees it.
        unsafe {
            let h = (*state).mem.as_mut_ptr().cast::<c_void>();
            uv_poll_stop(h);
            uv_close(h, on_closed);
        }
    }
}

/// Drop the callback's reference and async context.
fn release(s: &State) {
    // SAFETY: on the env's own thread, outside any callback of this handle;
    // each is released exactly once (the State is freed after).
    unsafe {
        sys::napi_async_destroy(s.env, s.ctx);
        sys::napi_delete_reference(s.env, s.func);
    }
}

unsafe extern "C" fn on_closed(h: *mut c_void) {
    // SAFETY: `data` was set to the State in `watch_new`, and this is the
    // handle's last callback: nothing uses the State after.
    let state = unsafe { Box::from_raw((*h.cast::<*mut c_void>()).cast::<State>()) };
    release(&state);
}

unsafe extern "C" fn on_poll(h: *mut c_void, _status: c_int, _events: c_int) {
    // SAFETY: `data` points to this handle's State, live until `on_closed`
    // (which libuv runs only after this callback has returned).
    let s = unsafe { &*(*h.cast::<*mut c_void>()).cast::<State>() };
    if s.port == 0 {
        call(s, None);
        return;
    }
    let start = Instant::now();
    let mut spin = true;
    // The callback returns `true` only when it was asked to leave the
    // sleep to us (`spin`) and found the ring empty.
    while call(s, Some(spin)) {
        if spin_allowed(s, h) && spin_for_next(s.port) {
            // A message came while spinning: deliver it, and go on
            // spinning while the budget lasts; then the callback
            // announces the sleep itself.
            spin = start.elapsed() < SPIN_BUDGET;
            continue;
        }
        if crate::prepare_poll_port(s.port) {
            return; // the peer's next message wakes the descriptor
        }
        spin = false; // an event came meanwhile: one more call, which sleeps
    }
}

/// Whether a port's watch spins for the next message: it keeps the loop
/// alive (a port the program `unref()`ed should not hold a CPU for it),
/// nothing else is due on the loop (no timer expired, no `setImmediate`
/// queued, no handle closing: libuv's next poll would not block), the
/// port's spin time is not zero, with its peer not on this thread's loop
/// (which cannot answer while we spin), and the thread's budget for
/// spins that find nothing is not spent (`MISS_SHARE`).
fn spin_allowed(s: &State, h: *mut c_void) -> bool {
    // SAFETY: `h` is a live handle of the loop `s.lp`, on its own thread.
    let idle = unsafe { uv_has_ref(h) != 0 && uv_backend_timeout(s.lp) != 0 };
    idle && crate::spins(s.port) && MISSES.with(|m| m.allows(Instant::now()))
}

/// Spin for port `id`'s next event; `true` if one came. A spin that
/// found nothing is charged to the thread's budget.
fn spin_for_next(id: u32) -> bool {
    let began = Instant::now();
    let found = crate::spin_for_event(id);
    if !found {
        let now = Instant::now();
        MISSES.with(|m| m.charge(now - began, now));
    }
    found
}

/// Spins that find nothing may take this share of a loop thread's time
/// (one part in `MISS_SHARE`), in bursts of up to `MISS_BURST`. A peer
/// that answers within the spin costs no wake-up (a round trip of two
/// Node processes here: 10 to 15 µs spinning, 70 to 80 µs through the
/// loop's sleep); one that does not (it is slow, or it cannot run because
/// this spin holds the CPU it needs) costs at most that share.
///
/// A budget, not a count of misses: the watch used to skip its next 2^k −
/// 1 spins after k misses in a row, and in a ping-pong one side's skipped
/// spin (a sleep, then a wake-up slower than the other side's spin) made
/// the other side miss, which made it skip: in 14,000 round trips a
/// receiver skipped 3,381 spins after 172 misses, each skip a round trip
/// through both loops' sleeps.
const MISS_SHARE: u32 = 8;
const MISS_BURST: Duration = Duration::from_millis(1);

/// A loop thread's budget for spins that find nothing: the nanoseconds
/// that may still be spent (below zero: overspent by a spin longer than
/// what was left), as of `at`; refilled at one `MISS_SHARE`th of the time
/// passed, up to `MISS_BURST`.
struct MissBudget {
    left: Cell<i64>,
    at: Cell<Option<Instant>>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl MissBudget {
    fn refill(&self, now: Instant) {
        let left = match self.at.get() {
            Some(at) => self
                .left
                .get()
                .saturating_add(nanos(now.saturating_duration_since(at)) / i64::from(MISS_SHARE)),
            None => nanos(MISS_BURST),
        };
        self.left.set(left.min(nanos(MISS_BURST)));
        self.at.set(Some(now));
    }

    fn allows(&self, now: Instant) -> bool {
        self.refill(now);
        self.left.get() > 0
    }

    fn charge(&self, spent: Duration, now: Instant) {
        self.refill(now);
        self.left.set(self.left.get().saturating_sub(nanos(spent)));
    }
}

thread_local! {
    static MISSES: MissBudget = const {
        MissBudget {
            left: Cell::new(0),
            at: Cell::new(None),
        }
    };
}

/// Call the watch's callback (with `spin` as its argument, if any) the
/// way Node calls into JavaScript from its loop: in a handle scope, through
/// `napi_make_callback`, which runs the microtasks and `process.nextTick`
/// callbacks it queued before it returns. Returns whether it returned
/// `true`; an exception becomes an uncaught exception, and `false`.
fn call(s: &State, spin: Option<bool>) -> bool {
    // SAFETY: the loop thread of `s.env`, outside JavaScript: the documented
    // way to call into it is a handle scope and napi_make_callback. Every
    // value made here lives in that scope.
    unsafe {
        let env = s.env;
        let mut scope = ptr::null_mut();
        if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
            return false;
        }
        let mut func = ptr::null_mut();
        let mut recv = ptr::null_mut();
        let mut result = ptr::null_mut();
        let mut arg = ptr::null_mut();
        let mut returned = false;
        sys::napi_get_reference_value(env, s.func, &mut func);
        sys::napi_get_global(env, &mut recv);
        let argc = match spin {
            Some(b) => {
                sys::napi_get_boolean(env, b, &mut arg);
                1
            }
            None => 0,
        };
        if !func.is_null() {
            let st = sys::napi_make_callback(env, s.ctx, recv, func, argc, &arg, &mut result);
            if st == sys::Status::napi_pending_exception {
                let mut exc = ptr::null_mut();
                sys::napi_get_and_clear_last_exception(env, &mut exc);
                sys::napi_fatal_exception(env, exc);
            } else if st == sys::Status::napi_ok
                && sys::napi_get_value_bool(env, result, &mut returned) != sys::Status::napi_ok
            {
                returned = false;
            }
        }
        sys::napi_close_handle_scope(env, scope);
        returned
    }
}

/// A pidfd for `pid` (readable once it exits), close-on-exec.
pub fn pidfd_open(pid: u32) -> std::io::Result<i32> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fd as i32)
    }
}

/// Close a descriptor handed out by `pidfd_open`.
pub fn close_fd(fd: i32) {
    // SAFETY: JavaScript hands back a pidfd it owns, once, after its watch
    // is closed; closing an invalid number only returns EBADF.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> MissBudget {
        MissBudget {
            left: Cell::new(0),
            at: Cell::new(None),
        }
    }

    #[test]
    fn spins_that_find_nothing_take_at_most_their_share_of_the_time() {
        let b = budget();
        let t0 = Instant::now();
        // A full burst to start with.
        assert!(b.allows(t0));
        b.charge(MISS_BURST - Duration::from_micros(1), t0);
        assert!(b.allows(t0));
        b.charge(Duration::from_micros(20), t0);
        assert!(!b.allows(t0), "the burst is spent, and 19 µs more");
        // Refilled at one part in MISS_SHARE of the time passed: the 19 µs
        // overspent are made up after 19 * MISS_SHARE µs.
        let us = |n: u64| Duration::from_micros(n);
        let share = u64::from(MISS_SHARE);
        assert!(!b.allows(t0 + us(19 * share)));
        let t1 = t0 + us(20 * share);
        assert!(b.allows(t1));
        b.charge(us(20), t1);
        assert!(!b.allows(t1 + us(19 * share)));
        let t2 = t1 + us(20 * share);
        assert!(b.allows(t2));
        // Over a long run of misses, the spin time stays within the share.
        let mut now = t2;
        let mut spent = Duration::ZERO;
        let start = now;
        for _ in 0..10_000 {
            if b.allows(now) {
                b.charge(Duration::from_micros(20), now);
                spent += Duration::from_micros(20);
            }
            now += Duration::from_micros(30);
        }
        let share = spent.as_secs_f64() / (now - start).as_secs_f64();
        let most = 1.0 / MISS_SHARE as f64 + MISS_BURST.as_secs_f64() / (now - start).as_secs_f64();
        assert!(share <= most, "{share} of the time spent in vain");
        // The budget never holds more than one burst, however long idle.
        let later = now + Duration::from_secs(60);
        b.refill(later);
        assert_eq!(b.left.get(), nanos(MISS_BURST));
    }
}
