//! The Node.js binding of shmport: the native half. `index.js` builds
//! Electron's `MessageChannelMain` / `MessagePortMain` on these functions.
//!
//! Ports live in a per-thread table and JavaScript holds their numbers, so a
//! transfer list is a list of numbers and a failed transfer puts every port
//! back under its number. Readiness comes from libuv: each started port has
//! one `uv_poll_t` on its descriptor, on the loop of the thread that owns it
//! (`watch.rs`); no thread per port.

// napi-derive's generated registration code has no docs.
#![allow(missing_docs)]

pub mod copies;
pub mod views;
pub mod watch;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command};

use napi::bindgen_prelude::{BufferSlice, Either, Object, Uint8Array};
use napi::{Env, Error, Result, Status};
use napi_derive::napi;
use shmport::{CloseReason, Message, MessageChannel, MessagePort, PostError, RecvError};

/// A structured-clone value (`tag` 1, the bytes of `v8.serialize`) or a
/// binary view other than `Uint8Array` (`tag` ≥ 2: which view, decided in
/// JavaScript). `Buffer`/`Uint8Array` travel as raw messages, so Rust, C
/// and Python peers exchange plain bytes with Node.
#[derive(rkyv::Archive, rkyv::Serialize)]
pub(crate) struct JsPayload<'a> {
    tag: u8,
    #[rkyv(with = rkyv::with::InlineAsBox)]
    bytes: &'a [u8],
}

thread_local! {
    static PORTS: RefCell<HashMap<u32, MessagePort>> = RefCell::new(HashMap::new());
    static CHILDREN: RefCell<HashMap<u32, Child>> = RefCell::new(HashMap::new());
    static NEXT: RefCell<u32> = const { RefCell::new(1) };
    /// Each channel made on this thread: port number → its peer's.
    static PEERS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
}

/// The cap of a port's pool unless `set_pool_limit` says otherwise: four
/// times the core's default floor (64 MiB). A Node receiver gives a block
/// back only when the garbage collector frees the `Buffer` that views it,
/// 10 to 14 ms after receipt here (median; p90 30 to 40 ms, in a stream
/// of 1 MiB messages): a sender that streams faster than the pool per that
/// time runs out of blocks and its posts wait as copies. 256 MiB covers
/// 10 ms of a 25 GB/s stream; the pool grows to it only under such a
/// stream (buffers are added on demand). Not less than the core's own
/// default, four blocks of the largest size (64 MiB).
pub(crate) const POOL_LIMIT: usize = 256 << 20;

fn add_port(port: MessagePort) -> u32 {
    port.set_pool_limit(Some(POOL_LIMIT));
    let id = NEXT.with(|n| {
        let mut n = n.borrow_mut();
        let id = *n;
        *n = n.wrapping_add(1).max(1);
        id
    });
    PORTS.with(|p| p.borrow_mut().insert(id, port));
    id
}

fn closed_port() -> Error {
    Error::new(Status::InvalidArg, "the port is closed or was transferred")
}

fn with_port<R>(id: u32, f: impl FnOnce(&MessagePort) -> R) -> Result<R> {
    PORTS.with(|p| p.borrow().get(&id).map(f).ok_or_else(closed_port))
}

fn reason_text(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Closed => "closed",
        CloseReason::PeerDied => "peer died",
        _ => "protocol error",
    }
}

/// The channel settings for a ring of `capacity` bytes each way (the
/// core's default, 1 MiB, when `None`).
fn builder(capacity: Option<u32>) -> shmport::ChannelBuilder {
    // Every Node port is watched through its descriptor (libuv): a socket
    // of its own from the start (kits, not links: no move per channel).
    let b = MessageChannel::builder().own_sockets(true);
    match capacity {
        Some(c) => b.capacity(c as usize),
        None => b,
    }
}

/// A new channel: the numbers of its two ports. `capacity`: the bytes of
/// each ring (messages up to half of it travel inside the ring).
#[napi]
pub fn channel(capacity: Option<u32>) -> Result<Vec<u32>> {
    let (a, b) = builder(capacity)
        .build()
        .map_err(|e| Error::from_reason(format!("cannot create a channel: {e}")))?
        .into_ports();
    let (a, b) = (add_port(a), add_port(b));
    PEERS.with(|p| {
        let mut p = p.borrow_mut();
        p.insert(a, b);
        p.insert(b, a);
    });
    Ok(vec![a, b])
}

/// What a post did.
const SENT: u32 = 0;
/// Nothing sent: the ring is full; the ports stay under their numbers.
pub(crate) const FULL: u32 = 1;
/// Nothing sent: the peer is gone.
const GONE: u32 = 2;

/// Post without waiting: `SENT` (0), `FULL` (1: nothing sent; the ports stay
/// under their numbers, retry later) or `GONE` (2: the peer is gone:
/// nothing sent, as Electron drops such a message; the ports are closed).
/// A port of this channel's own peer in `ports` throws and sends nothing.
#[napi]
pub fn post(id: u32, tag: u32, data: Uint8Array, ports: Vec<u32>) -> Result<u32> {
    post_slice(id, tag, &data, ports)
}

/// `post` of bytes from anywhere.
pub(crate) fn post_slice(id: u32, tag: u32, data: &[u8], ports: Vec<u32>) -> Result<u32> {
    let tag = u8::try_from(tag).map_err(|_| Error::new(Status::InvalidArg, "bad tag"))?;
    PORTS.with(|table| {
        let mut table = table.borrow_mut();
        if !table.contains_key(&id) {
            return Err(closed_port());
        }
        let mut moving = Vec::with_capacity(ports.len());
        for (i, pid) in ports.iter().enumerate() {
            match table.remove(pid) {
                Some(p) if *pid != id => moving.push(p),
                other => {
                    // Put back what was taken: nothing is lost.
                    if let Some(p) = other {
                        table.insert(*pid, p);
                    }
                    for (p, n) in moving.into_iter().zip(&ports) {
                        table.insert(*n, p);
                    }
                    return Err(Error::new(
                        Status::InvalidArg,
                        format!("Port at index {i} is already neutered or is a duplicate."),
                    ));
                }
            }
        }
        let port = table.get(&id).ok_or_else(closed_port)?;
        let result = if ports.is_empty() {
            let r = if tag == 0 {
                port.try_post_bytes(data)
            } else {
                port.try_post(&JsPayload { tag, bytes: data })
            };
            r.map_err(|error| shmport::TransferError {
                error,
                ports: Vec::new(),
            })
        } else if tag == 0 {
            port.try_post_bytes_with_ports(data, moving)
        } else {
            port.try_post_with_ports(&JsPayload { tag, bytes: data }, moving)
        };
        match result {
            Ok(()) => {
                // The ports left this thread: their peers spin for them.
                PEERS.with(|p| {
                    let mut p = p.borrow_mut();
                    for n in &ports {
                        p.remove(n);
                    }
                });
                Ok(SENT)
            }
            Err(e) => {
                let back = !matches!(e.error, PostError::Closed(_));
                if back {
                    for (p, n) in e.ports.into_iter().zip(&ports) {
                        table.insert(*n, p);
                    }
                }
                match e.error {
                    PostError::Full => Ok(FULL),
                    PostError::Closed(_) => Ok(GONE),
                    PostError::PeerInTransfer => Err(Error::new(
                        Status::InvalidArg,
                        "A port in the transfer list is the entangled peer of the source port (or carries it); nothing was sent.",
                    )),
                    other => Err(Error::from_reason(format!("postMessage failed: {other}"))),
                }
            }
        }
    })
}

/// What arrived: `null` (nothing yet), `{ close: reason }` (the close
/// event, after every message), the payload itself for raw bytes without
/// ports (a Buffer: the common case, with no object around it), or
/// `{ tag, data, ports }`. `copy` forces one copy of the payload
/// (Electron's memory cage); otherwise a payload outside the ring (a
/// block of the sender's pool, or an out-of-line memfd) is a view of its
/// shared memory, kept until the Buffer is collected, within the limit
/// `views.rs` explains (past it, a copy).
#[napi]
pub fn try_recv<'env>(
    env: &'env Env,
    id: u32,
    copy: bool,
) -> Result<Option<Either<BufferSlice<'env>, Object<'env>>>> {
    let got = PORTS.with(|table| {
        let table = table.borrow();
        let port = table.get(&id).ok_or_else(closed_port)?;
        match port.try_recv() {
            Ok(msg) => received(env, id, msg, copy).map(Some),
            Err(RecvError::Empty) => Ok(None),
            Err(RecvError::Closed(reason)) => {
                let mut o = Object::new(env)?;
                o.set("close", reason_text(reason))?;
                Ok(Some(Received::Close(o)))
            }
            Err(e) => Err(Error::from_reason(format!("receive failed: {e}"))),
        }
    })?;
    // The table is free again: the ports that came get their numbers.
    Ok(match got {
        None => None,
        Some(Received::Close(o)) => Some(Either::B(o)),
        Some(Received::Message(0, data, ports)) if ports.is_empty() => Some(Either::A(data)),
        Some(Received::Message(tag, data, ports)) => {
            let mut o = Object::new(env)?;
            o.set("tag", u32::from(tag))?;
            o.set("data", data)?;
            let ids: Vec<u32> = ports.into_iter().map(add_port).collect();
            o.set("ports", ids)?;
            Some(Either::B(o))
        }
    })
}

/// A receive's result, made while the port table is borrowed.
enum Received<'env> {
    /// The close event.
    Close(Object<'env>),
    /// A message: its tag, its payload, the ports that came with it.
    Message(u8, BufferSlice<'env>, Vec<MessagePort>),
}

/// The message's tag, payload and ports.
fn received<'env>(
    env: &'env Env,
    id: u32,
    mut msg: Message<'_>,
    copy: bool,
) -> Result<Received<'env>> {
    let ports = match msg.take_ports() {
        Ok(p) => p,
        Err(e) => {
            return Err(Error::from_reason(format!(
                "a received port is not valid: {}",
                e.error
            )));
        }
    };
    let typed = msg.is_typed();
    let tag = if typed {
        let p = msg
            .get::<JsPayload<'static>>()
            .map_err(|e| Error::from_reason(format!("not a message of the Node binding: {e}")))?;
        p.tag
    } else {
        0
    };
    // Out of the ring: a view of the sender's memory, unless a copy is
    // forced, or the port views as many of the pool's blocks as it may
    // (views.rs), or the payload is a cloned value (`v8.deserialize` reads
    // it once: a view would hold the block until a collection for
    // nothing, and the bytes would stay writable by the sender while they
    // are decoded).
    let block = msg.pool_class();
    let view = !copy
        && (msg.is_out_of_line() || block.is_some_and(|b| tag != 1 && views::may_view(id, b)));
    let data = if view {
        let block = block.map(|(size, _)| (id, size));
        match msg.into_shared_bytes() {
            Ok(shared) => views::shared_buffer(env, shared, typed, block)?,
            Err(msg) => copies::copied_buffer(env, payload(&msg, typed)?)?,
        }
    } else {
        copies::copied_buffer(env, payload(&msg, typed)?)?
    };
    Ok(Received::Message(tag, data, ports))
}

/// The payload bytes of a message: the raw bytes, or the bytes inside a
/// `JsPayload` archive.
fn payload<'m>(msg: &'m Message<'_>, typed: bool) -> Result<&'m [u8]> {
    if typed {
        let p = msg
            .get::<JsPayload<'static>>()
            .map_err(|e| Error::from_reason(format!("not a message of the Node binding: {e}")))?;
        Ok(p.bytes.get())
    } else {
        Ok(msg.bytes())
    }
}

/// Tell V8 that `bytes` of memory outside its heap are held (or, negative,
/// released) by Buffers, so that it collects them, and their shared memory
/// or kept mappings come back, as often as the memory they hold calls for
/// (it counts such memory towards its next collection); returns `bytes`.
pub(crate) fn external_memory(env: &Env, bytes: impl TryInto<i64>) -> i64 {
    let bytes = bytes.try_into().unwrap_or(0);
    // Only a hint: a failure changes when V8 collects, nothing else.
    let _ = env.adjust_external_memory(bytes);
    bytes
}

/// How many blocks of the sender's pool the Buffers received on port `id`
/// view (until the garbage collector frees them).
#[napi]
pub fn viewed_blocks(id: u32) -> u32 {
    views::viewed_blocks(id)
}

/// Announce that the caller is about to wait for the port's descriptor:
/// `false` if an event is already there (receive instead of waiting).
#[napi]
pub fn prepare_poll(id: u32) -> Result<bool> {
    with_port(id, |p| p.prepare_poll())
}

/// `prepare_poll` for the watch: a port gone meanwhile has nothing to
/// wait for.
pub(crate) fn prepare_poll_port(id: u32) -> bool {
    with_port(id, |p| p.prepare_poll()).unwrap_or(true)
}

/// Spin for the port's spin time until its next message or close is
/// there; whether one is (a failure to read its socket counts: the
/// receive that follows reports it).
pub(crate) fn spin_for_event(id: u32) -> bool {
    with_port(id, |p| p.spin_for_event().unwrap_or(true)).unwrap_or(false)
}

/// Whether a spin for the port's next message can find one: its spin time
/// is not zero, and its peer is not a port of this thread (whose loop,
/// busy spinning, could not post).
pub(crate) fn spins(id: u32) -> bool {
    let local_peer = PEERS.with(|p| p.borrow().get(&id).copied());
    PORTS.with(|t| {
        let t = t.borrow();
        let spin = t.get(&id).is_some_and(|p| !p.spin().is_zero());
        spin && !local_peer.is_some_and(|peer| t.contains_key(&peer))
    })
}

/// Set how long the port spins for its next message, in microseconds,
/// before its watch sleeps (the core's spin time; 0: never spin).
#[napi]
pub fn set_spin(id: u32, micros: f64) -> Result<()> {
    if !(micros >= 0.0 && micros.is_finite()) {
        return Err(Error::new(
            Status::InvalidArg,
            "the spin time must be a finite number of microseconds, 0 or more",
        ));
    }
    with_port(id, |p| {
        p.set_spin(std::time::Duration::from_secs_f64(micros / 1e6))
    })
}

/// Cap the port's large-message pool (the shared memory of its posts too
/// large for the ring) at `bytes`; `None`: the binding's default,
/// `POOL_LIMIT`.
#[napi]
pub fn set_pool_limit(id: u32, bytes: Option<f64>) -> Result<()> {
    let bytes = match bytes {
        None => Some(POOL_LIMIT),
        Some(b) if b >= 0.0 && b.fract() == 0.0 && b <= 2f64.powi(53) => Some(b as usize),
        Some(_) => {
            return Err(Error::new(
                Status::InvalidArg,
                "the pool limit must be a whole number of bytes, 0 or more, or null",
            ));
        }
    };
    with_port(id, |p| p.set_pool_limit(bytes))
}

/// Bytes of the port's pool now.
#[napi]
pub fn pool_bytes(id: u32) -> Result<f64> {
    with_port(id, |p| p.pool_bytes() as f64)
}

/// The port's spin time, in microseconds.
#[napi]
pub fn spin(id: u32) -> Result<f64> {
    with_port(id, |p| p.spin().as_secs_f64() * 1e6)
}

/// At most this many bytes of a `JsPayload` archive are not its payload
/// (checked by a test).
const TYPED_OVERHEAD: usize = 64;

/// After a post of `len` payload bytes with `tag` found the ring full:
/// announce that the port waits for room for it, so that the peer's next
/// release wakes its descriptor (readable). `false`: the room (or the
/// close) is already there; post again.
#[napi]
pub fn prepare_room(id: u32, tag: u32, len: i64) -> Result<bool> {
    let len = usize::try_from(len).map_err(|_| Error::new(Status::InvalidArg, "bad length"))?;
    with_port(id, |p| {
        let max = p.max_inline_payload();
        // A cloned value's archive is a little longer than its payload;
        // never wait for more than the largest message the ring holds.
        let need = if tag == 0 || len > max {
            len
        } else {
            (len + TYPED_OVERHEAD).min(max)
        };
        p.prepare_post_poll(need)
    })
}

/// Withdraw `prepare_room`'s announcement and take in what the port's
/// socket holds, so that its descriptor stops polling readable.
#[napi]
pub fn end_room(id: u32) -> Result<()> {
    with_port(id, |p| p.end_post_poll())?
        .map_err(|e| Error::from_reason(format!("cannot read the port's socket: {e}")))
}

/// The descriptor to wait on (readable: a message or the close).
#[napi]
pub fn port_fd(id: u32) -> Result<i32> {
    with_port(id, |p| p.as_fd().as_raw_fd())
}

/// Close a port: its peer sees "closed" after every message posted before.
/// Closing a closed port does nothing.
#[napi]
pub fn close(id: u32) {
    if let Some(p) = PORTS.with(|t| t.borrow_mut().remove(&id)) {
        p.close();
    }
    PEERS.with(|p| p.borrow_mut().remove(&id));
}

/// Is this number a live port?
#[napi]
pub fn is_open(id: u32) -> bool {
    PORTS.with(|t| t.borrow().contains_key(&id))
}

/// In a process started by `spawn`: its port to the parent, or `null` if
/// it was not started so.
#[napi]
pub fn from_parent() -> Result<Option<u32>> {
    match MessagePort::from_parent() {
        Ok(p) => Ok(Some(add_port(p))),
        Err(shmport::OpenError::NoPort) => Ok(None),
        Err(e) => Err(Error::from_reason(format!(
            "cannot adopt the parent's port: {e}"
        ))),
    }
}

/// A spawned child: its pid, this process's port to it, and a pidfd that
/// turns readable when it exits.
#[napi(object)]
pub struct Spawned {
    pub pid: u32,
    pub port: u32,
    pub pidfd: i32,
}

/// Start `program args` with a port connected (shmport's spawn); the child
/// inherits standard streams and `env` is added to its environment.
#[napi]
pub fn spawn(
    program: String,
    args: Vec<String>,
    env: HashMap<String, String>,
    capacity: Option<u32>,
) -> Result<Spawned> {
    let mut cmd = Command::new(program);
    cmd.args(args).envs(env);
    // Node marks its own standard streams close-on-exec, so "inherit" would
    // give the child none (and it would reopen them on /dev/null): hand it
    // copies, which the spawn puts at 0, 1 and 2 without the flag.
    if let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() {
        cmd.stdin(fd);
    }
    if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
        cmd.stdout(fd);
    }
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stderr(fd);
    }
    let (child, port) = builder(capacity)
        .spawn(cmd)
        .map_err(|e| Error::from_reason(format!("cannot spawn: {e}")))?;
    let pid = child.id();
    let pidfd =
        watch::pidfd_open(pid).map_err(|e| Error::from_reason(format!("pidfd_open: {e}")))?;
    CHILDREN.with(|c| c.borrow_mut().insert(pid, child));
    Ok(Spawned {
        pid,
        port: add_port(port),
        pidfd,
    })
}

/// How a child ended, once it has: `[code, signal]` (one of them `null`);
/// `null` while it runs. Reaps it and closes its pidfd.
#[napi]
pub fn child_exit(pid: u32) -> Result<Option<Vec<Option<i32>>>> {
    use std::os::unix::process::ExitStatusExt;
    CHILDREN.with(|c| {
        let mut c = c.borrow_mut();
        let Some(child) = c.get_mut(&pid) else {
            return Err(Error::from_reason(format!("no child {pid}")));
        };
        match child.try_wait() {
            Ok(Some(st)) => {
                c.remove(&pid);
                Ok(Some(vec![st.code(), st.signal()]))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::from_reason(format!("waitpid: {e}"))),
        }
    })
}

/// Close a descriptor this module handed out (a child's pidfd).
#[napi]
pub fn close_fd(fd: i32) {
    watch::close_fd(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `prepare_room` waits for the payload's length plus `TYPED_OVERHEAD`:
    /// never less than the archive a cloned value's post writes.
    #[test]
    fn a_cloned_value_s_archive_is_at_most_its_payload_plus_the_overhead() {
        for len in (0..300).chain([4095, 4096, 65_537, 1 << 20]) {
            let bytes = vec![7u8; len];
            let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&JsPayload {
                tag: 1,
                bytes: &bytes,
            })
            .unwrap();
            assert!(archive.len() >= len);
            assert!(
                archive.len() <= len + TYPED_OVERHEAD,
                "{len}: {}",
                archive.len()
            );
        }
    }
}
