//! Port benchmarks between real processes: what a channel per request
//! costs, whether a transferred port is as fast as the original, and a
//! worker serving four clients.
//!
//! ```text
//! cargo bench --bench ports            # about 25 s
//! cargo bench --bench ports -- --test  # every benchmark once (CI)
//! cargo bench --bench ports -- channel_per_request  # both below, one run
//! ```
//!
//! - `channel_per_request`: make a channel, send one end to another
//!   process, which posts one message on it and drops it; receive the
//!   message and the close event. Both sides busy-spin, so the figure is
//!   the work, not two sleep/wake hops between vCPUs.
//! - `channel_per_request_floor`: the system calls one channel costs in
//!   this design, made directly with rustix, without shmport: memfd,
//!   size, seals, mapping, socket pair, the descriptors passed over a
//!   control socket, the peer's checks and mapping, one reply word and a
//!   closed flag in the shared pages, and every close and unmap. Measured
//!   right after `channel_per_request`, in the same run, to split it into
//!   the kernel's floor and shmport's own overhead.
//! - `socketpair_and_close`: one `socketpair()` and the two `close()`s,
//!   right after `channel_per_request`: the cheapest kernel object a
//!   channel could be, against which a channel per request is compared.
//! - `parked/{channel_per_request,rtt_64B}`: the same request, and a
//!   64-byte round trip, with both sides sleeping on their sockets at
//!   once (spin 0): each hop a wake-up.
//! - `parked/third_party_hop`: a channel per request whose far end goes
//!   through a middle process: posted to one child, which posts it on to
//!   a second child that replies and drops it. The port leaves the pair
//!   of processes its channel was made for (on a link, its channel moves
//!   off the link to a segment and socket of its own). Three processes on
//!   two vCPUs: every side sleeps (spin 0), as three busy spinners would
//!   share the vCPUs by the scheduler's time slices.
//! - `large_reply/{channel_per_request,one_channel}`: a channel per
//!   request whose reply is 1 MiB (into the pool of the link's direction:
//!   a block reused from request to request), and the same request and
//!   reply over one long-lived channel (its own pool), in the same run.
//!   Both sides busy-spin.
//! - `transferred_rtt/{original,transferred}`: 64-byte round trip, busy
//!   spin, on the port `spawn` made, and on a port that travelled to the
//!   child inside a message.
//! - `worker_4_clients`: four client threads, each with its own port to one
//!   worker process that waits on all four with a `PortSet` and answers
//!   each small request (the sum of 16 integers); throughput in requests.
//!
//! The peer is this binary, re-executed with `SHMPORT_BENCH_ROLE` set.

mod common;

use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut};
use std::mem::{MaybeUninit, offset_of};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rustix::fs::{FileType, MemfdFlags, SealFlags};
use rustix::io::{Errno, FdFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use shmport::testing::layout::{self, ProducerLine, RingHeader};
use shmport::{DEFAULT_CAPACITY, MessageChannel, MessagePort, PortSet, RecvError};

const ROLE_ENV: &str = "SHMPORT_BENCH_ROLE";
const BUSY: Duration = Duration::from_secs(10);

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        run_role(&role);
        return;
    }
    let mut c = common::criterion();
    channel_per_request(&mut c);
    socketpair_and_close(&mut c);
    channel_per_request_floor(&mut c);
    parked(&mut c);
    large_reply(&mut c);
    transferred_rtt(&mut c);
    worker_4_clients(&mut c);
    c.final_summary();
}

fn peer(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
    cmd.env(ROLE_ENV, role).stdout(Stdio::null());
    cmd
}

fn finish(mut child: Child, port: MessagePort) {
    drop(port);
    let status = child.wait().expect("wait for the peer");
    assert!(status.success(), "peer failed: {status}");
}

// ------------------------------------------------------------------ peers

fn run_role(role: &str) {
    if role == "floor-acceptor" {
        // No port: a bare control socket (see `spawn_floor_acceptor`).
        return floor_acceptor();
    }
    let port = MessagePort::from_parent().expect("adopt the bench's port");
    match role {
        "acceptor" => {
            port.set_spin(BUSY);
            acceptor(port)
        }
        "echo" => {
            port.set_spin(BUSY);
            echo(&port)
        }
        "acceptor-parked" => {
            port.set_spin(Duration::ZERO);
            acceptor(port)
        }
        "echo-parked" => {
            port.set_spin(Duration::ZERO);
            echo(&port)
        }
        "adopt-echo" => {
            // The first message brings the port to echo on.
            let mut m = port.recv().expect("the port to echo on");
            let p = m.take_ports().expect("a port").pop().expect("one port");
            drop(m);
            p.set_spin(BUSY);
            echo(&p)
        }
        "worker" => worker(port),
        "large-acceptor" => {
            port.set_spin(BUSY);
            let reply = vec![7u8; LARGE_REPLY];
            while let Ok(mut m) = port.recv() {
                for p in m.take_ports().expect("ports") {
                    p.set_spin(BUSY);
                    p.post_bytes(&reply).expect("reply");
                }
            }
        }
        "large-replier" => {
            port.set_spin(BUSY);
            let reply = vec![7u8; LARGE_REPLY];
            while port.recv().is_ok() {
                port.post_bytes(&reply).expect("reply");
            }
        }
        "forwarder" => {
            // The first message brings the port to forward on.
            let mut m = port.recv().expect("the onward port");
            let onward = m.take_ports().expect("a port").pop().expect("one port");
            drop(m);
            port.set_spin(Duration::ZERO);
            onward.set_spin(Duration::ZERO);
            forwarder(&port, &onward)
        }
        "adopt-acceptor" => {
            // The first message brings the port whose ports to accept.
            let mut m = port.recv().expect("the port to accept on");
            let p = m.take_ports().expect("a port").pop().expect("one port");
            drop(m);
            p.set_spin(Duration::ZERO);
            acceptor(p)
        }
        other => panic!("{ROLE_ENV}={other:?}: unknown role"),
    }
}

/// Each message brings a fresh port: post one message on it and drop it.
fn acceptor(port: MessagePort) {
    loop {
        let mut m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("acceptor: {e}"),
        };
        for p in m.take_ports().expect("ports") {
            p.set_spin(port.spin());
            p.post(&1u64).expect("reply");
        }
    }
}

/// Post every port that comes on `port` on over `onward`.
fn forwarder(port: &MessagePort, onward: &MessagePort) {
    loop {
        let mut m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("forwarder: {e}"),
        };
        let ports = m.take_ports().expect("ports");
        drop(m);
        onward.post_with_ports(&(), ports).expect("forward");
    }
}

fn echo(port: &MessagePort) {
    loop {
        let m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("echo: {e}"),
        };
        let w = m.get::<[u64; 8]>().expect("64-byte message")[0].to_native();
        drop(m);
        port.post(&[w; 8]).expect("echo");
    }
}

/// The first message brings four client ports; serve them until all close.
fn worker(port: MessagePort) {
    let mut m = port.recv().expect("client ports");
    let mut set = PortSet::new().expect("port set");
    for p in m.take_ports().expect("ports") {
        set.add(p).expect("add");
    }
    drop(m);
    while let Some(k) = set.wait().expect("wait") {
        let client = set.get(k).expect("key");
        let keep = match client.try_recv() {
            Ok(m) => {
                let sum: u64 = m
                    .get::<[u32; 16]>()
                    .expect("request")
                    .iter()
                    .map(|x| x.to_native() as u64)
                    .sum();
                drop(m);
                client.post(&sum).is_ok()
            }
            Err(RecvError::Closed(_)) => false,
            Err(e) => panic!("worker: {e}"),
        };
        if !keep {
            drop(set.remove(k));
        }
    }
}

// ------------------------------------------------------------- benchmarks

fn channel_per_request(c: &mut Criterion) {
    let (child, port) = shmport::spawn(peer("acceptor")).expect("spawn");
    c.bench_function("channel_per_request", |b| {
        b.iter(|| one_request(&port, BUSY))
    });
    finish(child, port);
}

/// A channel per request: make it, post one end over `port`, receive the
/// reply and the close event.
fn one_request(port: &MessagePort, spin: Duration) {
    let (mine, theirs) = MessageChannel::builder()
        .spin(spin)
        .build()
        .expect("channel")
        .into_ports();
    port.post_with_ports(&(), vec![theirs])
        .expect("send a port");
    let v = mine
        .recv()
        .expect("reply")
        .get::<u64>()
        .expect("u64")
        .to_native();
    assert_eq!(v, 1);
    assert!(matches!(mine.recv(), Err(RecvError::Closed(_))));
}

/// `parked/third_party_hop`, in the `parked` group.
fn third_party_hop(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let spawn = |role| {
        MessageChannel::builder()
            .spin(Duration::ZERO)
            .spawn(peer(role))
            .expect("spawn")
    };
    let (fwd, to_fwd) = spawn("forwarder");
    let (acc, to_acc) = spawn("adopt-acceptor");
    let (onward, accept_on) = MessageChannel::new().expect("channel").into_ports();
    to_acc
        .post_with_ports(&(), vec![accept_on])
        .expect("the acceptor's port");
    to_fwd
        .post_with_ports(&(), vec![onward])
        .expect("the forwarder's onward port");
    group.bench_function("third_party_hop", |b| {
        b.iter(|| one_request(&to_fwd, Duration::ZERO))
    });
    finish(fwd, to_fwd);
    finish(acc, to_acc);
}

fn socketpair_and_close(c: &mut Criterion) {
    c.bench_function("socketpair_and_close", |b| {
        b.iter(|| {
            let pair = rustix::net::socketpair(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .expect("socketpair");
            drop(black_box(pair));
        })
    });
}

fn parked(c: &mut Criterion) {
    let mut group = c.benchmark_group("parked");
    let (child, port) = MessageChannel::builder()
        .spin(Duration::ZERO)
        .spawn(peer("acceptor-parked"))
        .expect("spawn");
    group.bench_function("channel_per_request", |b| {
        b.iter(|| one_request(&port, Duration::ZERO))
    });
    finish(child, port);
    let (child, port) = MessageChannel::builder()
        .spin(Duration::ZERO)
        .spawn(peer("echo-parked"))
        .expect("spawn");
    group.bench_function("rtt_64B", |b| b.iter_custom(|n| rtt(&port, n)));
    finish(child, port);
    third_party_hop(&mut group);
    group.finish();
}

/// The reply of `large_reply`.
const LARGE_REPLY: usize = 1 << 20;

fn large_reply(c: &mut Criterion) {
    let mut group = c.benchmark_group("large_reply");
    group.throughput(Throughput::Bytes(LARGE_REPLY as u64));
    let (child, port) = shmport::spawn(peer("large-acceptor")).expect("spawn");
    port.set_spin(BUSY);
    group.bench_function("channel_per_request", |b| {
        b.iter(|| {
            let (mine, theirs) = MessageChannel::builder()
                .spin(BUSY)
                .build()
                .expect("channel")
                .into_ports();
            port.post_with_ports(&(), vec![theirs])
                .expect("send a port");
            let m = mine.recv().expect("reply");
            assert_eq!(black_box(m.bytes()).len(), LARGE_REPLY);
            drop(m);
            assert!(matches!(mine.recv(), Err(RecvError::Closed(_))));
        })
    });
    finish(child, port);
    let (child, port) = shmport::spawn(peer("large-replier")).expect("spawn");
    port.set_spin(BUSY);
    group.bench_function("one_channel", |b| {
        b.iter(|| {
            port.post(&()).expect("request");
            let m = port.recv().expect("reply");
            assert_eq!(black_box(m.bytes()).len(), LARGE_REPLY);
        })
    });
    finish(child, port);
    group.finish();
}

// ------------------------------------------------- channel_per_request_floor

/// Names the floor peer's control socket (a descriptor number).
const FLOOR_FD_ENV: &str = "SHMPORT_BENCH_FLOOR_FD";
/// A channel's segment at the default ring capacity, as shmport sizes it.
const SEGMENT_SIZE: usize = layout::segment_size(DEFAULT_CAPACITY);
/// The reply: where shmport's first record from the accepting side starts
/// (ring 1's data area), and the value shmport's commit word takes there.
const REPLY_AT: usize = layout::ring_data(1, DEFAULT_CAPACITY);
const REPLY: u64 = 1;
/// The accepting side's closed flag, where shmport keeps it (ring 1's
/// producer line, in the header page).
const CLOSED_AT: usize =
    layout::RING_HEADER[1] + offset_of!(RingHeader, producer) + offset_of!(ProducerLine, closed);
/// The message that carries the two descriptors: as long as shmport's
/// attachment for one port (a tag byte and a 16-byte body).
const ATTACHMENT: [u8; 17] = *b"A\0\x01\0\x01\0\0\0\0\0\0\0\0\0\0\0\0";

/// A shared, writable mapping of a whole segment, unmapped on drop. Not
/// prefaulted: shmport maps without `MAP_POPULATE` too.
struct FloorMap(NonNull<u8>);

impl FloorMap {
    fn new(memfd: &OwnedFd) -> FloorMap {
        // SAFETY: a new mapping at an address the kernel picks, aliasing
        // nothing; the memfd is SEGMENT_SIZE bytes and sealed against
        // shrinking (checked by the peer before it maps).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                SEGMENT_SIZE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                memfd,
                0,
            )
        }
        .expect("mmap");
        FloorMap(NonNull::new(ptr.cast()).expect("mmap gave null"))
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        assert!(at % 8 == 0 && at + 8 <= SEGMENT_SIZE);
        // SAFETY: 1. aligned and inside the mapping (asserted); 2. the
        // mapping lives as long as `self`, which the reference borrows;
        // 3. both processes touch these bytes only through atomics.
        unsafe { AtomicU64::from_ptr(self.0.as_ptr().add(at).cast()) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        assert!(at % 4 == 0 && at + 4 <= SEGMENT_SIZE);
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU32::from_ptr(self.0.as_ptr().add(at).cast()) }
    }
}

impl Drop for FloorMap {
    fn drop(&mut self) {
        // SAFETY: this value owns the mapping, and every reference into it
        // borrowed `self`, so none is left.
        unsafe { rustix::mm::munmap(self.0.as_ptr().cast(), SEGMENT_SIZE) }.expect("munmap");
    }
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

/// What one non-blocking `recvmsg` found.
enum Got {
    Nothing,
    EndOfFile,
    /// The two descriptors of a channel: its socket end and its memfd.
    Channel(OwnedFd, OwnedFd),
}

/// One `recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC)`, as shmport receives.
fn recv_channel(sock: &OwnedFd) -> Got {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 64];
    let flags = RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC;
    let got =
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut buf)], &mut control, flags) {
            Ok(got) => got,
            Err(Errno::AGAIN) => return Got::Nothing,
            Err(e) => panic!("recvmsg: {e}"),
        };
    let mut fds = Vec::with_capacity(2);
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            fds.extend(it);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        // SOCK_SEQPACKET: zero bytes is the end (no empty message is sent).
        return Got::EndOfFile;
    }
    assert!(
        !got.flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
    );
    assert_eq!(got.bytes, ATTACHMENT.len(), "one attachment");
    let [sock, memfd]: [OwnedFd; 2] = fds.try_into().expect("two descriptors");
    Got::Channel(sock, memfd)
}

/// The floor peer and our end of its control socket, whose number
/// `FLOOR_FD_ENV` names in the child.
fn spawn_floor_acceptor() -> (Child, OwnedFd) {
    let (control, theirs) = seqpacket_pair();
    let mut cmd = peer("floor-acceptor");
    cmd.env(
        FLOOR_FD_ENV,
        std::os::fd::AsRawFd::as_raw_fd(&theirs).to_string(),
    );
    // Runs in the child between fork and exec: the control socket (made
    // close-on-exec, like every descriptor shmport and this bench make)
    // stays open across the exec.
    let keep_control = move || -> std::io::Result<()> {
        rustix::io::fcntl_setfd(&theirs, FdFlags::empty())?;
        Ok(())
    };
    // SAFETY: the closure makes one async-signal-safe system call (fcntl)
    // and allocates nothing. It owns `theirs`, so the number stays open
    // until the command is dropped below.
    unsafe {
        cmd.pre_exec(keep_control);
    }
    let child = cmd.spawn().expect("spawn the floor peer");
    // Closes our copy of the child's end: its death must hang up `control`.
    drop(cmd);
    (child, control)
}

/// The accepting side of the floor: for each channel on the control socket,
/// what shmport's acceptor does in the kernel and in the shared pages;
/// returns at the control socket's end of file.
fn floor_acceptor() {
    let raw: RawFd = std::env::var(FLOOR_FD_ENV)
        .expect("the control socket's number")
        .parse()
        .expect("a descriptor number");
    assert!(
        raw > 2,
        "{FLOOR_FD_ENV}={raw}: not a descriptor the bench made"
    );
    // SAFETY: the bench made this descriptor for this process and named it
    // in FLOOR_FD_ENV (`spawn_floor_acceptor`); nothing else here owns it.
    let control = unsafe { OwnedFd::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&control, FdFlags::CLOEXEC).expect("close-on-exec");
    assert_eq!(
        rustix::net::sockopt::socket_type(&control).expect("control socket"),
        SocketType::SEQPACKET
    );
    loop {
        // Busy spin, like the acceptor on its control port.
        let (sock, memfd) = match recv_channel(&control) {
            Got::Nothing => {
                std::hint::spin_loop();
                continue;
            }
            Got::EndOfFile => return,
            Got::Channel(sock, memfd) => (sock, memfd),
        };
        // The checks shmport makes of a received port.
        let ty = rustix::net::sockopt::socket_type(&sock).expect("SO_TYPE");
        assert_eq!(ty, SocketType::SEQPACKET);
        let st = rustix::fs::fstat(&memfd).expect("fstat");
        assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::RegularFile);
        assert_eq!(st.st_size, SEGMENT_SIZE as i64);
        let seals = rustix::fs::fcntl_get_seals(&memfd).expect("F_GET_SEALS");
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW));
        let map = FloorMap::new(&memfd);
        // Acquire: pairs with the Release store of the magic by the creator.
        assert_eq!(map.u64_at(0).load(Ordering::Acquire), layout::MAGIC);
        // Release, both: the creator's Acquire loads pair with them, as
        // with shmport's commit word and closed flag.
        map.u64_at(REPLY_AT).store(REPLY, Ordering::Release);
        map.u32_at(CLOSED_AT).store(1, Ordering::Release);
        // Close in shmport's order: socket (the hang-up), mapping, memfd.
        drop(sock);
        drop(map);
        drop(memfd);
    }
}

/// One channel per request, at the floor: the creating side.
fn floor_request(control: &OwnedFd) {
    let memfd = rustix::fs::memfd_create(
        "shmport-channel",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    rustix::fs::ftruncate(&memfd, SEGMENT_SIZE as u64).expect("ftruncate");
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW,
    )
    .expect("F_ADD_SEALS");
    let map = FloorMap::new(&memfd);
    // The segment header's first word, as shmport writes it (the first
    // page's fault is part of the cost).
    map.u64_at(0).store(layout::MAGIC, Ordering::Release);
    let (mine, theirs) = seqpacket_pair();
    let fds = [theirs.as_fd(), memfd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = rustix::net::sendmsg(
        control,
        &[IoSlice::new(&ATTACHMENT)],
        &mut cmsg,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )
    .expect("sendmsg");
    assert_eq!(sent, ATTACHMENT.len());
    drop(theirs);
    // Acquire, both: pair with the peer's Release stores.
    let reply = map.u64_at(REPLY_AT);
    while reply.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    assert_eq!(reply.load(Ordering::Relaxed), REPLY);
    let closed = map.u32_at(CLOSED_AT);
    while closed.load(Ordering::Acquire) == 0 {
        std::hint::spin_loop();
    }
    // The close event is the flag; like shmport, look at the socket once
    // (it may or may not have hung up yet), then close.
    assert!(matches!(recv_channel(&mine), Got::Nothing | Got::EndOfFile));
    drop(mine);
    drop(map);
    drop(memfd);
}

/// `channel_per_request` without shmport: the system calls one channel
/// costs in this design, made directly with rustix, with the same sizes and
/// flags and in shmport's order, and the same shared pages touched. It
/// exists to split `channel_per_request`, measured just before it in the
/// same run, into the kernel's floor and shmport's own overhead.
///
/// Per request, the creating side: `memfd_create`, `ftruncate` (a
/// default-sized segment), `F_ADD_SEALS`, `mmap`, the header's first word,
/// `socketpair`, one `sendmsg` of both descriptors and 17 bytes (an
/// attachment's length) on the control socket, `close` of the sent end;
/// spin on the reply word, then on the closed flag (shmport's close event
/// for a peer that closes: it does not wait for the hang-up); one
/// non-blocking `recvmsg` on its end, as shmport looks there once; `close`,
/// `munmap`, `close`. The peer, spinning on non-blocking `recvmsg` of the
/// control socket: the checks shmport makes (`SO_TYPE`, `fstat`,
/// `F_GET_SEALS`), `mmap`, the magic read, the reply and closed flag stored
/// where shmport stores them, `close`, `munmap`, `close`.
///
/// Left out, as shmport's choices rather than the design's needs: the
/// control channel's own ring (the peer spins on the control socket
/// instead), reading a socket again until it is empty, and the `poll` that
/// tells an end of file from an empty message.
fn channel_per_request_floor(c: &mut Criterion) {
    let (mut child, control) = spawn_floor_acceptor();
    c.bench_function("channel_per_request_floor", |b| {
        b.iter(|| floor_request(&control))
    });
    drop(control);
    let status = child.wait().expect("wait for the floor peer");
    assert!(status.success(), "floor peer failed: {status}");
}

fn rtt(port: &MessagePort, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        port.post(&[i; 8]).expect("post");
        let m = port.recv().expect("echo");
        assert_eq!(m.get::<[u64; 8]>().expect("reply")[0], i);
    }
    start.elapsed()
}

fn transferred_rtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("transferred_rtt");
    let (child, port) = MessageChannel::builder()
        .spin(BUSY)
        .spawn(peer("echo"))
        .expect("spawn");
    group.bench_function("original", |b| b.iter_custom(|n| rtt(&port, n)));
    finish(child, port);

    let (child, carrier) = shmport::spawn(peer("adopt-echo")).expect("spawn");
    let (mine, theirs) = MessageChannel::builder()
        .spin(BUSY)
        .build()
        .expect("channel")
        .into_ports();
    carrier
        .post_with_ports(&(), vec![theirs])
        .expect("send the port");
    group.bench_function("transferred", |b| b.iter_custom(|n| rtt(&mine, n)));
    drop(mine);
    finish(child, carrier);
    group.finish();
}

fn worker_4_clients(c: &mut Criterion) {
    let mut group = c.benchmark_group("worker_4_clients");
    group.throughput(Throughput::Elements(4));
    let (child, carrier) = shmport::spawn(peer("worker")).expect("spawn");
    // Five threads on this 2-core machine: the default spin (20 us), not a
    // busy spin, so that waiting threads give their core up.
    let (clients, theirs): (Vec<_>, Vec<_>) = (0..4)
        .map(|_| MessageChannel::new().expect("channel").into_ports())
        .unzip();
    carrier.post_with_ports(&(), theirs).expect("send ports");
    let mut clients = Some(clients);
    group.bench_function("requests", |b| {
        b.iter_custom(|n| {
            // Four threads, n requests each; the time is the slowest's.
            let ports = clients.take().expect("clients");
            let start = Instant::now();
            let handles: Vec<_> = ports
                .into_iter()
                .enumerate()
                .map(|(t, p)| {
                    thread::spawn(move || {
                        let req: [u32; 16] = std::array::from_fn(|i| (i + t) as u32);
                        let want: u64 = req.iter().map(|&x| x as u64).sum();
                        for _ in 0..n {
                            p.post(&req).expect("request");
                            let got = p
                                .recv()
                                .expect("reply")
                                .get::<u64>()
                                .expect("u64")
                                .to_native();
                            assert_eq!(black_box(got), want);
                        }
                        p
                    })
                })
                .collect();
            let back: Vec<MessagePort> = handles
                .into_iter()
                .map(|h| h.join().expect("client"))
                .collect();
            let elapsed = start.elapsed();
            clients = Some(back);
            elapsed
        })
    });
    drop(clients);
    finish(child, carrier);
    group.finish();
}
