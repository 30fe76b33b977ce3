//! Soak: 1,000 peer processes, each exchanging messages (inline, out of
//! line, with ports) and then killed with `kill -9` at a random moment. The
//! survivor must see every echo it was owed, in order, then "peer died";
//! afterwards its descriptors and mappings are back where they started and
//! `/dev/shm` is unchanged. A test binary of its own, so that no other test
//! opens descriptors or maps memory meanwhile.
//!
//! `SHMPORT_SOAK_PEERS` changes the number of peers (default 1,000).

mod common;

use std::time::{Duration, Instant};

use common::{dev_shm, noise, open_fds, peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, PostError, RecvError};

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    assert_eq!(role, "echo");
    let port = MessagePort::from_parent().unwrap();
    // Ports received are kept (and greeted) until this process dies.
    let mut kept = Vec::new();
    loop {
        let mut m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("{e}"),
        };
        for p in m.take_ports().unwrap() {
            p.post_bytes(b"hi").unwrap();
            kept.push(p);
        }
        if port.post_bytes(m.bytes()).is_err() {
            return;
        }
    }
}

/// xorshift64
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Payload sizes: empty, small, a page, and two out of line in the 1 MiB
/// default ring.
const SIZES: [usize; 7] = [0, 1, 64, 1000, 4096, 600_000, 1 << 20];

/// What the survivor's address space holds.
#[derive(Debug, PartialEq, Clone, Copy)]
struct Maps {
    /// Mappings of shmport memfds (segments and out-of-line messages).
    shmport: usize,
    /// All mappings.
    count: usize,
    /// Bytes mapped in all.
    bytes: u64,
}

fn maps() -> Maps {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut m = Maps {
        shmport: 0,
        count: 0,
        bytes: 0,
    };
    for line in text.lines() {
        let range = line.split(' ').next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        m.count += 1;
        m.bytes += b - a;
        if line.contains("memfd:shmport") {
            m.shmport += 1;
        }
    }
    m
}

/// One peer's life: a random number of round trips, maybe a port handed
/// over, a burst of posts, and `kill -9` at a random moment. Returns the
/// messages it exchanged.
fn one_peer(rng: &mut Rng, payloads: &[Vec<u8>]) -> usize {
    let (mut child, port) = shmport::spawn(peer("echo")).unwrap();
    let mut exchanged = 0;
    for _ in 0..rng.below(12) {
        let p = &payloads[rng.below(SIZES.len() as u64) as usize];
        port.post_bytes(p).unwrap();
        assert_eq!(port.recv().unwrap().bytes(), &p[..]);
        exchanged += 1;
    }
    // Sometimes a port travels to the peer; its far end stays here.
    let far = if rng.below(4) == 0 {
        let (far, near) = MessageChannel::new().unwrap().into_ports();
        port.post_bytes_with_ports(b"a port", vec![near]).unwrap();
        assert_eq!(far.recv().unwrap().bytes(), b"hi");
        assert_eq!(port.recv().unwrap().bytes(), b"a port");
        Some(far)
    } else {
        None
    };
    // A burst the peer is still echoing when it dies.
    let mut owed = Vec::new();
    for _ in 0..rng.below(24) {
        let i = rng.below(SIZES.len() as u64) as usize;
        match port.try_post_bytes(&payloads[i]) {
            Ok(()) => owed.push(i),
            Err(PostError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let until = Instant::now() + Duration::from_micros(rng.below(1500));
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Echoes it sent before dying arrive in order, then the close event.
    let mut echoed = 0;
    loop {
        match port.recv() {
            Ok(m) => {
                assert_eq!(m.bytes(), &payloads[owed[echoed]][..], "echo {echoed}");
                echoed += 1;
            }
            Err(RecvError::Closed(CloseReason::PeerDied)) => break,
            Err(e) => panic!("after {echoed} echoes: {e:?} {port:?}"),
        }
    }
    if let Some(far) = far {
        assert!(matches!(
            far.recv_timeout(Duration::from_secs(10)),
            Err(RecvError::Closed(CloseReason::PeerDied))
        ));
    }
    exchanged + echoed
}

#[test]
fn a_thousand_peers_killed_at_random_moments_leave_nothing_behind() {
    let peers: u64 = std::env::var("SHMPORT_SOAK_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let payloads: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| noise(n, i as u64 + 1))
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // One peer first, so that what the library sets up once per process
    // (membarrier registration) is in the baseline.
    one_peer(&mut rng, &payloads);

    let fds = open_fds();
    let shm = dev_shm();
    let before = maps();
    let start = Instant::now();
    let mut exchanged = 0;
    for _ in 0..peers {
        exchanged += one_peer(&mut rng, &payloads);
    }
    let after = maps();
    eprintln!(
        "{peers} peers, {exchanged} messages, {:.1} s; maps before {before:?}, after {after:?}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(open_fds(), fds, "descriptors left behind");
    assert_eq!(dev_shm(), shm, "files left in /dev/shm");
    assert_eq!(
        after.shmport, before.shmport,
        "shmport mappings left behind"
    );
    // The allocator may keep a little more or less of its own memory; any
    // segment (at least 1 MiB per peer here) left mapped would show.
    let grown = after.bytes.saturating_sub(before.bytes);
    assert!(grown < 4 << 20, "mapped memory grew by {grown} bytes");
    assert!(after.count <= before.count + 4, "{after:?} vs {before:?}");
}
