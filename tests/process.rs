//! Two real processes: this test binary spawns itself as the peer.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{checksum, map_parent_segment, noise, peer, role, wait_for_line};
use shmport::testing::layout::{
    HEADER_AREA, KIND_RAW, KIND_TYPED, RECORD_HEADER, RecordHeader, RecordInfo, pack_info,
};
use shmport::{AccessError, ChannelBuilder, CloseReason, MessagePort, PostError, RecvError};

/// A checksummed typed message.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Blob {
    seq: u64,
    sum: u64,
    data: Vec<u8>,
}

/// The entry point of every peer process.
#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        "stream" => {
            let port = MessagePort::from_parent().unwrap();
            stream_both_ways(&port, 2, 1);
        }
        "spawn-with-cloexec-stdout" => {
            // Our stdout is marked close-on-exec (as Node marks its
            // standard streams); a child we spawn with inherited streams
            // must still get it.
            let _port = MessagePort::from_parent().unwrap();
            rustix::io::fcntl_setfd(std::io::stdout(), rustix::io::FdFlags::CLOEXEC).unwrap();
            let mut grandchild = peer("say-hello");
            grandchild.stdout(Stdio::inherit());
            let (mut child, port) = shmport::spawn(grandchild).unwrap();
            drop(port);
            assert!(child.wait().unwrap().success());
        }
        "say-hello" => {
            let _port = MessagePort::from_parent().unwrap();
            println!("HELLO FROM THE GRANDCHILD");
        }
        "slow" => slow_receiver(),
        "drain" => {
            let port = MessagePort::from_parent().unwrap();
            let mut n = 0u64;
            let reason = loop {
                match port.recv() {
                    Ok(m) => {
                        assert_eq!(m.get::<u64>().unwrap().to_native(), n);
                        n += 1;
                    }
                    Err(RecvError::Closed(r)) => break r,
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(n, 1000);
            assert_eq!(reason, CloseReason::Closed);
        }
        "hang" => {
            let port = MessagePort::from_parent().unwrap();
            for i in 0..100u64 {
                port.post(&i).unwrap();
            }
            println!("READY");
            loop {
                std::thread::park();
            }
        }
        "close-linger" => {
            let port = MessagePort::from_parent().unwrap();
            for i in 0..5u64 {
                port.post(&i).unwrap();
            }
            drop(port);
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        "close-on-line" => {
            // Close the port (the process lives on) when the parent says so
            // on stdin.
            let port = MessagePort::from_parent().unwrap();
            println!("READY");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            drop(port);
            println!("CLOSED");
            std::thread::sleep(Duration::from_secs(60));
        }
        "exit-open" => {
            let port = MessagePort::from_parent().unwrap();
            for i in 0..3u64 {
                port.post(&i).unwrap();
            }
            // Exit with the port still open: no destructor runs.
            std::process::exit(0);
        }
        "typed" => {
            let port = MessagePort::from_parent().unwrap();
            port.post(&(7u32, 9u32)).unwrap();
            port.post_bytes(b"raw").unwrap();
            // Wait for the parent to finish before closing.
            assert!(matches!(port.recv(), Err(RecvError::Closed(_))));
        }
        "fds" => {
            let fds = common::open_fds();
            let env = std::env::var(shmport::PORT_ENV).unwrap();
            let port = MessagePort::from_parent().unwrap();
            port.post(&(fds, env)).unwrap();
            assert!(matches!(port.recv(), Err(RecvError::Closed(_))));
        }
        "hostile-len" | "hostile-payload" => hostile(&role),
        "adopt-report" => match MessagePort::from_parent() {
            Ok(_) => println!("ADOPT: ok"),
            Err(e) => println!("ADOPT: {e}"),
        },
        other => panic!("unknown role {other}"),
    }
}

fn wait_ok(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "peer failed: {status}");
}

// ---------------------------------------------------------------- streams

const STREAM_N: u64 = 1_000_000;
const NOISE: usize = 5 << 20;

/// Size of message `i`: mostly small (0..200 B), some up to 64 KiB, some up
/// to 900 KiB (beyond the 1 MiB ring's inline limit), and 4 MiB ones.
fn size_of_msg(i: u64) -> usize {
    if i % 100_000 == 99_999 {
        4 << 20
    } else if i % 10_000 == 5_000 {
        (300 << 10) + (i as usize % 7) * (100 << 10)
    } else if i % 256 == 7 {
        1024 + (i as usize * 131) % (63 << 10)
    } else {
        (i % 200) as usize
    }
}

fn slice_of(noise: &[u8], i: u64) -> &[u8] {
    let off = (i as usize * 7919) % (1 << 20);
    &noise[off..off + size_of_msg(i)]
}

fn try_post_msg(port: &MessagePort, noise: &[u8], i: u64) -> Result<(), PostError> {
    let data = slice_of(noise, i);
    if i % 3 == 0 {
        port.try_post(&Blob {
            seq: i,
            sum: checksum(data),
            data: data.to_vec(),
        })
    } else {
        port.try_post_bytes(data)
    }
}

fn check_msg(m: &shmport::Message<'_>, noise: &[u8], i: u64) {
    let want = slice_of(noise, i);
    if i % 3 == 0 {
        let b = m.get::<Blob>().unwrap();
        assert_eq!(b.seq.to_native(), i, "out of order");
        assert_eq!(b.sum.to_native(), checksum(&b.data), "checksum of {i}");
        assert!(b.data.as_slice() == want, "bytes of typed message {i}");
    } else {
        assert!(!m.is_typed());
        assert!(m.bytes() == want, "bytes of raw message {i}");
    }
}

/// Post STREAM_N messages and receive STREAM_N, interleaved on one thread,
/// never blocking, so both directions run at once.
fn stream_both_ways(port: &MessagePort, seed_out: u64, seed_in: u64) {
    let out = noise(NOISE, seed_out);
    let inn = noise(NOISE, seed_in);
    let (mut sent, mut got) = (0u64, 0u64);
    while sent < STREAM_N || got < STREAM_N {
        while got < STREAM_N {
            match port.try_recv() {
                Ok(m) => {
                    check_msg(&m, &inn, got);
                    got += 1;
                }
                Err(RecvError::Empty) => break,
                Err(e) => panic!("receive {got}: {e}"),
            }
        }
        for _ in 0..64 {
            if sent == STREAM_N {
                break;
            }
            match try_post_msg(port, &out, sent) {
                Ok(()) => sent += 1,
                Err(PostError::Full) => break,
                Err(e) => panic!("post {sent}: {e}"),
            }
        }
    }
}

#[test]
fn million_mixed_messages_both_directions_at_once_arrive_intact_in_order() {
    let (child, port) = shmport::spawn(peer("stream")).unwrap();
    let t = Instant::now();
    stream_both_ways(&port, 1, 2);
    eprintln!("2 x {STREAM_N} messages in {:?}", t.elapsed());
    drop(port);
    wait_ok(child);
}

// ---------------------------------------------------------------- pressure

fn slow_receiver() {
    let port = MessagePort::from_parent().unwrap();
    port.set_spin(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    let mut n = 0u64;
    loop {
        match port.recv() {
            Ok(m) => {
                assert_eq!(m.bytes()[..8], n.to_le_bytes());
                n += 1;
                if n % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Err(RecvError::Closed(CloseReason::Closed)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 3000);
}

#[test]
fn slow_receiver_pushes_back_and_loses_nothing() {
    let (child, port) = ChannelBuilder::new()
        .capacity(4096)
        .spin(Duration::ZERO)
        .spawn(peer("slow"))
        .unwrap();
    let msg = |i: u64| {
        let mut v = [0u8; 200];
        v[..8].copy_from_slice(&i.to_le_bytes());
        v
    };
    let mut i = 0u64;
    loop {
        match port.try_post_bytes(&msg(i)) {
            Ok(()) => i += 1,
            Err(PostError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(i < 30, "a 4 KiB ring holds few 200-byte messages, took {i}");
    assert!(matches!(
        port.post_bytes_timeout(&msg(i), Duration::from_millis(50)),
        Err(PostError::Timeout)
    ));
    let t = Instant::now();
    while i < 3000 {
        port.post_bytes(&msg(i)).unwrap();
        i += 1;
    }
    // The receiver slept 300 ms before reading: the sender waited.
    assert!(t.elapsed() >= Duration::from_millis(150));
    drop(port);
    wait_ok(child);
}

// ---------------------------------------------------------------- close

#[test]
fn receiver_drains_every_message_before_the_close() {
    let (child, port) = shmport::spawn(peer("drain")).unwrap();
    for i in 0..1000u64 {
        port.post(&i).unwrap();
    }
    port.close();
    wait_ok(child);
}

#[test]
fn dropping_the_port_in_a_live_process_reads_as_closed() {
    let mut cmd = peer("close-linger");
    cmd.stdout(Stdio::piped());
    let (mut child, port) = shmport::spawn(cmd).unwrap();
    wait_for_line(&mut child, "READY");
    for i in 0..5u64 {
        assert_eq!(port.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    assert!(matches!(
        port.post(&1u8),
        Err(PostError::Closed(CloseReason::Closed))
    ));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_reservation_committed_after_the_peer_closed_fails_with_closed() {
    let mut cmd = peer("close-on-line");
    cmd.stdout(Stdio::piped()).stdin(Stdio::piped());
    let (child, port) = shmport::spawn(cmd).unwrap();
    let mut child = common::Victim::new(child);
    child.wait_for("READY");
    let mut r = port.reserve_bytes(5).unwrap();
    r.bytes_mut().copy_from_slice(b"hello");
    child.say("close");
    child.wait_for("CLOSED");
    // As a post would: the peer is gone, nothing is published.
    assert!(matches!(
        r.commit(),
        Err(PostError::Closed(CloseReason::Closed))
    ));
    assert!(matches!(
        port.post_bytes(b"x"),
        Err(PostError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn a_reservation_committed_after_the_peer_was_seen_to_die_fails_with_peer_died() {
    let mut cmd = peer("hang");
    cmd.stdout(Stdio::piped());
    let (child, port) = shmport::spawn(cmd).unwrap();
    let mut child = common::Victim::new(child);
    child.wait_for("READY");
    let mut r = port.reserve_bytes(5).unwrap();
    r.bytes_mut().copy_from_slice(b"hello");
    child.kill();
    for i in 0..100u64 {
        assert_eq!(port.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));
    assert!(matches!(
        r.commit(),
        Err(PostError::Closed(CloseReason::PeerDied))
    ));
}

#[test]
fn exiting_without_closing_reads_as_peer_died_after_the_messages() {
    let (child, port) = shmport::spawn(peer("exit-open")).unwrap();
    for i in 0..3u64 {
        assert_eq!(port.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));
    wait_ok(child);
}

#[test]
fn kill_9_delivers_posted_messages_then_peer_died() {
    let mut cmd = peer("hang");
    cmd.stdout(Stdio::piped());
    let (mut child, port) = shmport::spawn(cmd).unwrap();
    wait_for_line(&mut child, "READY");
    child.kill().unwrap();
    child.wait().unwrap();
    for i in 0..100u64 {
        assert_eq!(port.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));
    assert!(matches!(
        port.post(&1u8),
        Err(PostError::Closed(CloseReason::PeerDied))
    ));
}

#[test]
fn kill_9_wakes_a_blocked_receiver_with_peer_died() {
    let mut cmd = peer("hang");
    cmd.stdout(Stdio::piped());
    let (mut child, port) = shmport::spawn(cmd).unwrap();
    wait_for_line(&mut child, "READY");
    for i in 0..100u64 {
        assert_eq!(port.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    // Park at once: the wake-up must come from the kernel's hang-up, not
    // from a spin or a timer.
    port.set_spin(Duration::ZERO);
    let blocked = std::thread::spawn(move || {
        let r = port.recv().map(|_| ());
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    child.kill().unwrap();
    let (r, woke) = blocked.join().unwrap();
    child.wait().unwrap();
    assert!(
        matches!(r, Err(RecvError::Closed(CloseReason::PeerDied))),
        "{r:?}"
    );
    eprintln!("kill -9 to wake-up: {:?}", woke - killed);
}

// ---------------------------------------------------------------- types

#[test]
fn wrong_type_from_another_process_is_an_error() {
    let (child, port) = shmport::spawn(peer("typed")).unwrap();
    let m = port.recv().unwrap();
    assert!(matches!(
        m.get::<String>(),
        Err(AccessError::TypeMismatch { .. })
    ));
    assert!(matches!(
        m.get::<(u64, u64)>(),
        Err(AccessError::TypeMismatch { .. })
    ));
    assert_eq!(m.get::<(u32, u32)>().unwrap().0, 7);
    let r = port.recv().unwrap();
    assert!(matches!(r.get::<(u32, u32)>(), Err(AccessError::NotTyped)));
    assert_eq!(r.bytes(), b"raw");
    drop((m, r));
    drop(port);
    wait_ok(child);
}

#[test]
fn only_the_port_descriptors_reach_the_child() {
    // An inheritable descriptor (no close-on-exec) that a careless spawn
    // would leak into the child.
    let (leaky_r, leaky_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::empty()).unwrap();
    let (child, port) = shmport::spawn(peer("fds")).unwrap();
    drop((leaky_r, leaky_w));
    common::assert_child_holds_only_stdio_and_its_port(&port);
    drop(port);
    wait_ok(child);
}

// ---------------------------------------------------------------- hostile

/// Map the segment passed in SHMPORT_PORT and write records into the
/// ring this side would produce (ring 1), as a broken or hostile peer.
fn hostile(role: &str) {
    let (base, cap, _sock) = map_parent_segment();
    let base = base.as_ptr();
    // SAFETY: ring 1's data area lies inside the mapping.
    let ring = unsafe { base.add(HEADER_AREA + cap) };
    let write = |pos: usize, kind: u8, fp: u64, payload: &[u8], claimed_len: u32| {
        // SAFETY: `pos` is a 32-aligned offset inside ring 1 with room for
        // the header and payload (the positions used below are small).
        let h = unsafe { &*ring.add(pos).cast::<RecordHeader>() };
        // SAFETY: as above; the payload follows the header.
        unsafe {
            core::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                ring.add(pos + RECORD_HEADER),
                payload.len(),
            )
        };
        h.info.store(
            pack_info(RecordInfo {
                len: claimed_len,
                kind,
                flags: 0,
                nports: 0,
            }),
            Ordering::Relaxed,
        );
        h.fingerprint.store(fp, Ordering::Relaxed);
        h.commit.store(pos as u64 + 1, Ordering::Release);
    };
    if role == "hostile-len" {
        write(0, KIND_RAW, 0, b"", 0xFFFF_FFF0);
    } else {
        // A bool archive must be 0 or 1; 7 is invalid.
        write(0, KIND_TYPED, shmport::fingerprint::<bool>(), &[7], 1);
        write(64, KIND_RAW, 0, b"ok", 2);
    }
    println!("READY");
    // Keep the socket open (no hang-up) until killed.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn corrupt_record_length_closes_the_port_with_protocol_error() {
    let mut cmd = peer("hostile-len");
    cmd.stdout(Stdio::piped());
    let (mut child, port) = shmport::spawn(cmd).unwrap();
    wait_for_line(&mut child, "READY");
    assert!(matches!(
        port.recv(),
        Err(RecvError::Closed(CloseReason::ProtocolError))
    ));
    assert!(matches!(
        port.post(&1u8),
        Err(PostError::Closed(CloseReason::ProtocolError))
    ));
    // Other ports of this process are unaffected.
    let (a, b) = shmport::MessageChannel::new().unwrap().into_ports();
    a.post(&5u8).unwrap();
    assert_eq!(*b.recv().unwrap().get::<u8>().unwrap(), 5);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn invalid_archive_is_an_error_for_that_message_only() {
    let mut cmd = peer("hostile-payload");
    cmd.stdout(Stdio::piped());
    let (mut child, port) = shmport::spawn(cmd).unwrap();
    wait_for_line(&mut child, "READY");
    let m = port.recv().unwrap();
    assert!(matches!(m.get::<bool>(), Err(AccessError::Invalid(_))));
    drop(m);
    assert_eq!(port.recv().unwrap().bytes(), b"ok");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Spawn an "adopt-report" peer whose SHMPORT_PORT names `sock` and `mem`,
/// and return what its adoption said.
fn adopt_report(sock: &OwnedFd, mem: &OwnedFd) -> String {
    let keep = [sock.as_raw_fd(), mem.as_raw_fd()];
    let mut cmd = peer("adopt-report");
    cmd.env(shmport::PORT_ENV, format!("{},{}", keep[0], keep[1]))
        .stdout(Stdio::piped());
    // SAFETY: the closure only clears close-on-exec on two descriptors the
    // parent keeps open across the spawn (async-signal-safe fcntl calls).
    unsafe {
        cmd.pre_exec(move || {
            for fd in keep {
                rustix::io::fcntl_setfd(
                    std::os::fd::BorrowedFd::borrow_raw(fd),
                    rustix::io::FdFlags::empty(),
                )?;
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split_once("ADOPT: ").map(|(_, r)| r.to_owned()))
        .expect("report line")
}

/// A memfd holding a segment header with the given words, `size` bytes.
fn fake_segment(magic: u64, version: u32, cap: u64, size: usize, sealed: bool) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd =
        rustix::fs::memfd_create("fake", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, size as u64).unwrap();
    let mut h = Vec::new();
    h.extend_from_slice(&magic.to_le_bytes());
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&(HEADER_AREA as u32).to_le_bytes());
    h.extend_from_slice(&cap.to_le_bytes());
    h.extend_from_slice(&(HEADER_AREA as u64 + 2 * cap).to_le_bytes());
    rustix::io::pwrite(&fd, &h, 0).unwrap();
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    }
    fd
}

#[test]
fn corrupt_segment_headers_are_refused_with_clear_errors() {
    let magic = shmport::testing::layout::MAGIC;
    let version = shmport::testing::layout::LAYOUT_VERSION;
    let size = HEADER_AREA + 2 * 4096;
    let (sock, _other) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let cases = [
        (fake_segment(magic, version, 4096, size, true), "ok"),
        (
            fake_segment(0xdead_beef, version, 4096, size, true),
            "not a shmport segment",
        ),
        (
            fake_segment(magic, 99, 4096, size, true),
            "layout version 99",
        ),
        (
            fake_segment(magic, version, 8192, size, true),
            "segment size does not match",
        ),
        (
            fake_segment(magic, version, 3000, size, true),
            "not a power of two",
        ),
        (
            fake_segment(magic, version, 4096, size, false),
            "missing required seals",
        ),
    ];
    for (mem, want) in &cases {
        let got = adopt_report(&sock, mem);
        assert!(got.contains(want), "expected {want:?}, got {got:?}");
    }
    // The socket slot given a memfd, and the memfd slot given a socket.
    let got = adopt_report(&cases[0].0, &sock);
    assert!(got.contains("bad port descriptor"), "{got}");
}

/// A spawned child inherits the standard streams even where the parent
/// marked them close-on-exec (Node does): before, the child had none and
/// its output was lost.
#[test]
fn inherited_standard_streams_reach_the_child_even_if_marked_close_on_exec() {
    let mut cmd = peer("spawn-with-cloexec-stdout");
    cmd.stdout(Stdio::piped());
    let (child, port) = shmport::spawn(cmd).unwrap();
    let mut child = common::Victim::new(child);
    child.wait_for("HELLO FROM THE GRANDCHILD");
    drop(port);
    child.wait_success();
}
