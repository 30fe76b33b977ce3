//! A hostile peer process: it maps the segment of its port and writes
//! garbage into it while this process (the victim) receives.
//!
//! Three kinds of rounds, each against a fresh child:
//! - **targeted**: a few good records, then one record (or ring position)
//!   with a value chosen to break one check — a length off by one, huge, or
//!   negative as unsigned; an unknown kind or flag; a padding record that
//!   misses the end of the lap; descriptors promised and never sent; a
//!   misaligned, runaway or out-of-range head. The victim must receive the
//!   good records in order, then close the port with `ProtocolError`.
//! - **payload**: well-formed records whose kind, type fingerprint and
//!   bytes are garbage (random, or valid archives with bytes flipped),
//!   written before each commit. Every record must arrive; reading it as a
//!   type fails cleanly or yields a value that can be walked entirely; the
//!   port never closes.
//! - **vandal**: a second thread of the child writes random and targeted
//!   values anywhere in the segment, at any time (ring header lines,
//!   committed records, forged commit words at the victim's head), while
//!   its main thread posts records; sometimes garbage on the socket. The
//!   victim, in `Trust::Untrusted` mode (the mode for such peers), may see
//!   messages, access errors or the close, never a crash or a hang.
//!
//! Throughout, the victim's other ports — a channel to a well-behaved child
//! and one inside the process — keep working, every receive returns within
//! its time limit, and once the port reports `ProtocolError`, every later
//! receive and post does too. A watchdog aborts the test binary if any call
//! hangs.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Victim, map_parent_segment, peer, role};
use shmport::testing::layout::{
    FLAG_OUT_OF_LINE, HEADER_AREA, KIND_PADDING, KIND_RAW, KIND_TYPED, RING_HEADER, RecordHeader,
    RecordInfo, RingHeader, pack_info, ring_data,
};
use shmport::testing::ring::{Barriers, Consumer, Kind, Producer, RecordMeta, RingMemory};
use shmport::{ChannelBuilder, CloseReason, MessagePort, PostError, RecvError, Trust};

/// A typed message with strings and vectors, for the payload rounds.
#[derive(rkyv::Archive, rkyv::Serialize, Debug)]
#[rkyv(derive(Debug))]
struct Blob {
    seq: u64,
    name: String,
    data: Vec<u8>,
    tags: Vec<String>,
}

/// The entry point of every peer process.
#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        "echo" => echo(),
        "hostile" => hostile(),
        other => panic!("unknown role {other}"),
    }
}

// ------------------------------------------------------------------ peers

/// A well-behaved peer: sends back every message's bytes.
fn echo() {
    let port = MessagePort::from_parent().unwrap();
    loop {
        match port.recv() {
            Ok(m) => {
                let b = m.bytes().to_vec();
                drop(m);
                port.post_bytes(&b).unwrap();
            }
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("echo: {e}"),
        }
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// One ring of the segment as this child mapped it.
#[derive(Clone, Copy)]
struct Mapped {
    base: NonNull<u8>,
    cap: usize,
    ring: usize,
}

// SAFETY: the mapping stays for the whole life of the child process (never
// unmapped); it is shared memory accessed through atomics and raw pointers.
unsafe impl Send for Mapped {}

// SAFETY: (1) RING_HEADER[ring] is a 128-aligned offset inside the header
// area of a page-aligned mapping of the whole segment; (2) the data area at
// `ring_data(ring, cap)` holds `cap` bytes, page aligned, accessed only
// through raw pointers and atomics; (3) `cap` is the segment's ring
// capacity, a power of two >= 4096 (the victim created it so).
unsafe impl RingMemory for Mapped {
    fn header(&self) -> &RingHeader {
        // SAFETY: see the impl's comment; RingHeader holds only atomics.
        unsafe { &*self.base.as_ptr().add(RING_HEADER[self.ring]).cast() }
    }
    fn data(&self) -> NonNull<u8> {
        // SAFETY: inside the mapping, see the impl's comment.
        unsafe { self.base.add(ring_data(self.ring, self.cap)) }
    }
    fn capacity(&self) -> usize {
        self.cap
    }
}

impl Mapped {
    /// The 8-byte word at `offset` of the segment (rounded down to 8,
    /// modulo the segment's size).
    fn word(&self, offset: usize) -> &AtomicU64 {
        let len = HEADER_AREA + 2 * self.cap;
        let offset = (offset % len) & !7;
        // SAFETY: 8-aligned, inside the mapping (which is never unmapped),
        // accessed only atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The header of the record at position `pos` of this ring.
    fn record(&self, pos: u64) -> &RecordHeader {
        let offset = (pos as usize & (self.cap - 1)) & !63;
        // SAFETY: a 64-aligned offset inside the data area: the 32-byte
        // header fits; only atomics.
        unsafe { &*self.data().as_ptr().add(offset).cast::<RecordHeader>() }
    }
}

/// Send raw bytes on the port's socket (a wake token is `b"W"`); a full
/// socket is ignored.
fn send_raw(sock: RawFd, bytes: &[u8]) {
    // SAFETY: the port's socket stays open for the life of the child.
    let fd = unsafe { BorrowedFd::borrow_raw(sock) };
    let _ = rustix::net::send(
        fd,
        bytes,
        rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
    );
}

/// Values of the info word that break one check each, for a record at ring
/// offset `offset` in a ring of `cap` bytes. Indexed by the targeted
/// round's number.
fn bad_info(variant: u32, cap: usize, offset: usize) -> u64 {
    let to_end = (cap - offset) as u32;
    let max = (cap / 2 - 32) as u32;
    let info = |len: u32, kind: u8, flags: u8, nports: u16| {
        pack_info(RecordInfo {
            len,
            kind,
            flags,
            nports,
        })
    };
    match variant {
        0 => info(max + 1, KIND_RAW, 0, 0), // one past the largest payload
        1 => info(u32::MAX, KIND_RAW, 0, 0), // -1 as unsigned
        2 => info(0x8000_0000, KIND_TYPED, 0, 0), // i32::MIN as unsigned
        3 => info(8, 0, 0, 0),              // kind 0
        4 => info(8, 0xC7, 0, 0),           // unknown kind
        5 => info(to_end - 32 - 64, KIND_PADDING, 0, 0), // padding short of the end
        6 => info(to_end - 32 + 64, KIND_PADDING, 0, 0), // padding past the end
        7 => info(8, KIND_RAW, 0x80, 0),    // unknown flag
        8 => info(8, KIND_RAW, FLAG_OUT_OF_LINE, 0), // memfd promised, never sent
        9 => info(8, KIND_TYPED, 0, 1),     // a port promised, never sent
        10 => info(8, KIND_RAW, 0, u16::MAX), // 65535 ports promised
        _ => info(7, KIND_RAW, FLAG_OUT_OF_LINE, 0), // descriptor of the wrong size
    }
}

/// Targeted rounds past the info-word ones: corrupt the head of the ring
/// the victim posts into (the child is its consumer).
const HEAD_VARIANTS: [(u64, &str); 3] = [
    (8, "misaligned head"),
    (64 * 1000, "head beyond the tail"),
    (1 << 63, "head past the position range"),
];
const INFO_VARIANTS: u32 = 12;

fn hostile() {
    let mode = std::env::var("HOSTILE_MODE").unwrap();
    let seed: u64 = std::env::var("HOSTILE_SEED").unwrap().parse().unwrap();
    let (base, cap, sock) = map_parent_segment();
    let out = Mapped { base, cap, ring: 1 };
    let inn = Mapped { base, cap, ring: 0 };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut producer = Producer::new(out, Barriers::FENCES).unwrap();
    let mut consumer = Consumer::new(inn, Barriers::FENCES).unwrap();
    // Never outlive the test by much, even if nobody kills us.
    let deadline = Instant::now() + Duration::from_secs(30);
    let post = |p: &mut Producer<Mapped>, meta: RecordMeta, bytes: &[u8]| -> bool {
        match p.reserve(bytes.len()) {
            Ok(Some(slot)) => {
                // SAFETY: the slot has room for `bytes`.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        slot.payload.as_ptr(),
                        bytes.len(),
                    )
                };
                if p.commit(slot, bytes.len(), meta) {
                    send_raw(sock, b"W");
                }
                true
            }
            _ => false,
        }
    };
    const RAW: RecordMeta = RecordMeta {
        kind: Kind::Raw,
        out_of_line: false,
        pool: false,
        announce: false,
        kits: false,
        nports: 0,
        fingerprint: 0,
    };
    match mode.as_str() {
        "targeted" => {
            let variant = seed as u32;
            // Good records first: the victim must receive all of them.
            let good = 5 + variant as u64 % 7;
            for seq in 0..good {
                while !post(&mut producer, RAW, &seq.to_le_bytes().repeat(2)) {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            if variant < INFO_VARIANTS {
                // The next record: a header that breaks one check.
                let slot = loop {
                    match producer.reserve(64) {
                        Ok(Some(s)) => break s,
                        _ => std::thread::sleep(Duration::from_micros(50)),
                    }
                };
                let h = out.record(slot.pos);
                let offset = slot.pos as usize & (cap - 1);
                h.info
                    .store(bad_info(variant, cap, offset), Ordering::Relaxed);
                h.fingerprint
                    .store(shmport::fingerprint::<u64>(), Ordering::Relaxed);
                h.commit.store(slot.pos + 1, Ordering::Release);
            } else {
                // The victim's posts must find the bad head: stop reading.
                let (head, _) = HEAD_VARIANTS[(variant - INFO_VARIANTS) as usize];
                inn.header().consumer.head.store(head, Ordering::Release);
            }
            send_raw(sock, b"W");
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "payload" => {
            let samples = payload_samples();
            while Instant::now() < deadline {
                while let Ok(Some(r)) = consumer.take() {
                    consumer.release(r.pos, r.end);
                }
                if consumer.unpublished() && consumer.publish_head() {
                    send_raw(sock, b"W");
                }
                let (meta, bytes) = garbage_record(&mut rng, &samples);
                if !post(&mut producer, meta, &bytes) {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        }
        "vandal" => {
            let vandal_seed = rng.next() | 1;
            std::thread::spawn(move || vandal(out, sock, vandal_seed));
            let samples = payload_samples();
            while Instant::now() < deadline {
                while let Ok(Some(r)) = consumer.take() {
                    consumer.release(r.pos, r.end);
                }
                if consumer.unpublished() && consumer.publish_head() {
                    send_raw(sock, b"W");
                }
                let (meta, bytes) = garbage_record(&mut rng, &samples);
                match producer.reserve(bytes.len()) {
                    Ok(Some(_)) => {
                        post(&mut producer, meta, &bytes);
                    }
                    Ok(None) => std::thread::sleep(Duration::from_micros(20)),
                    // The vandal broke our own view (the victim's head):
                    // take the role again from what is published.
                    Err(_) => match Producer::new(out, Barriers::FENCES) {
                        Ok(p) => producer = p,
                        Err(_) => std::thread::sleep(Duration::from_micros(100)),
                    },
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Valid archives of the types the victim asks for, to mutate.
fn payload_samples() -> Vec<(u64, Vec<u8>)> {
    let blob = Blob {
        seq: 7,
        name: "a name longer than eight bytes".into(),
        data: (0..100).collect(),
        tags: vec!["x".into(), "a second tag, out of line".into()],
    };
    vec![
        (
            shmport::fingerprint::<u64>(),
            rkyv::to_bytes::<rkyv::rancor::Error>(&42u64)
                .unwrap()
                .to_vec(),
        ),
        (
            shmport::fingerprint::<String>(),
            rkyv::to_bytes::<rkyv::rancor::Error>(&"a string, not inline".to_string())
                .unwrap()
                .to_vec(),
        ),
        (
            shmport::fingerprint::<Vec<String>>(),
            rkyv::to_bytes::<rkyv::rancor::Error>(&vec!["one".to_string(), "two, longer".into()])
                .unwrap()
                .to_vec(),
        ),
        (
            shmport::fingerprint::<Blob>(),
            rkyv::to_bytes::<rkyv::rancor::Error>(&blob)
                .unwrap()
                .to_vec(),
        ),
    ]
}

/// A well-formed record with a garbage payload, kind or fingerprint.
fn garbage_record(rng: &mut Rng, samples: &[(u64, Vec<u8>)]) -> (RecordMeta, Vec<u8>) {
    let (fp, sample) = &samples[rng.below(samples.len() as u64) as usize];
    let mut bytes = match rng.below(4) {
        // A valid archive (it must be read fine).
        0 => sample.clone(),
        // Random bytes.
        1 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        // A truncated archive.
        2 => sample[..rng.below(sample.len() as u64) as usize].to_vec(),
        // A valid archive with a few bytes changed.
        _ => {
            let mut b = sample.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = match rng.below(4) {
                    0 => 0xFF,
                    1 => 0x80,
                    2 => b[i].wrapping_add(1),
                    _ => rng.next() as u8,
                };
            }
            b
        }
    };
    bytes.truncate(1500);
    let fingerprint = match rng.below(6) {
        0 => rng.next(),
        1 => 0,
        2 => samples[rng.below(samples.len() as u64) as usize].0,
        _ => *fp,
    };
    let kind = if rng.chance(5) {
        Kind::Raw
    } else {
        Kind::Typed
    };
    let meta = RecordMeta {
        kind,
        out_of_line: false,
        pool: false,
        announce: false,
        kits: false,
        nports: 0,
        fingerprint,
    };
    (meta, bytes)
}

/// Write random and targeted values anywhere in the segment, for ever.
fn vandal(out: Mapped, sock: RawFd, seed: u64) {
    let mut rng = Rng(seed);
    let cap = out.cap;
    let inn = Mapped { ring: 0, ..out };
    loop {
        // The victim's published head of the ring it reads: a record
        // forged there is the next thing it looks at.
        let head = out.header().consumer.head.load(Ordering::Relaxed);
        let value = |rng: &mut Rng| match rng.below(8) {
            0 => rng.next(),
            1 => rng.below(256),
            2 => u64::MAX - rng.below(256),
            3 => (1u64 << 63) + rng.below(256),
            4 => head + 64 * rng.below(16) + 1,
            5 => pack_info(RecordInfo {
                len: match rng.below(4) {
                    0 => rng.next() as u32,
                    1 => (cap / 2 - 32) as u32 + rng.below(3) as u32,
                    2 => u32::MAX - rng.below(4) as u32,
                    _ => rng.below(2048) as u32,
                },
                kind: rng.below(5) as u8,
                flags: rng.below(3) as u8,
                nports: rng.below(3) as u16,
            }),
            6 => head
                .wrapping_add(cap as u64 * rng.below(3))
                .wrapping_sub(rng.below(2) * 64),
            _ => 0,
        };
        let v = value(&mut rng);
        match rng.below(100) {
            // A header word of a record near the victim's head.
            0..=19 => {
                let h = out.record(head + 64 * rng.below(8));
                match rng.below(4) {
                    0 => h.commit.store(v, Ordering::Release),
                    1 => h.info.store(v, Ordering::Release),
                    2 => h.fingerprint.store(v, Ordering::Release),
                    _ => h.reserved.store(v, Ordering::Release),
                }
            }
            // A forged record at the victim's head: info, then commit.
            20..=29 => {
                let h = out.record(head);
                h.info.store(value(&mut rng), Ordering::Relaxed);
                h.fingerprint.store(rng.next(), Ordering::Relaxed);
                h.commit.store(head + 1, Ordering::Release);
            }
            // A word of either ring's header lines.
            30..=34 => {
                let ring = rng.below(2) as usize;
                out.word(RING_HEADER[ring] + 8 * rng.below(64) as usize)
                    .store(v, Ordering::Release);
            }
            // The head of the victim's own ring, seen by its producer.
            35 => inn.header().consumer.head.store(v, Ordering::Release),
            // Payload bytes anywhere in the ring the victim reads.
            36..=79 => out
                .word(ring_data(1, cap) + rng.below(cap as u64) as usize)
                .store(v, Ordering::Release),
            // The socket: wake tokens, rarely garbage.
            _ => {
                if rng.chance(100) {
                    send_raw(sock, b"Zgarbage");
                } else {
                    send_raw(sock, b"W");
                }
            }
        }
        // Between writes, give the victim time to take records: a round
        // then sees a mix of messages, errors and (at last) the close.
        std::thread::sleep(Duration::from_micros(rng.below(200)));
    }
}

// ------------------------------------------------------------------ victim

/// Aborts the test binary if nobody pets it for `limit`: a hang in the
/// victim is a failure, not a stuck CI job.
struct Watchdog {
    last: Arc<AtomicU64>,
    start: Instant,
}

impl Watchdog {
    fn new(what: &'static str, limit: Duration) -> Watchdog {
        let last = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let seen = last.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let now = start.elapsed().as_millis() as u64;
                let pet = seen.load(Ordering::Relaxed);
                if pet == u64::MAX {
                    return;
                }
                if now.saturating_sub(pet) > limit.as_millis() as u64 {
                    let _ = writeln!(
                        std::io::stderr(),
                        "{what}: no progress for {limit:?}: the victim hangs"
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { last, start }
    }

    fn pet(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.last.store(u64::MAX, Ordering::Relaxed);
    }
}

/// The victim's other ports: a well-behaved child and a local channel.
struct Bystanders {
    child: Victim,
    remote: MessagePort,
    local: (MessagePort, MessagePort),
    n: u64,
}

impl Bystanders {
    fn new() -> Bystanders {
        let (child, remote) = shmport::spawn(peer("echo")).unwrap();
        Bystanders {
            child: Victim::new(child),
            remote,
            local: shmport::MessageChannel::new().unwrap().into_ports(),
            n: 0,
        }
    }

    /// One round trip on each: they must work, whatever the hostile port
    /// went through.
    fn check(&mut self) {
        self.n += 1;
        let msg = self.n.to_le_bytes();
        self.remote.post_bytes(&msg).unwrap();
        let got = self.remote.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got.bytes(), msg, "the well-behaved child's echo");
        drop(got);
        self.local.0.post(&self.n).unwrap();
        let got = self.local.1.try_recv().unwrap();
        assert_eq!(got.get::<u64>().unwrap().to_native(), self.n);
    }

    fn finish(self) {
        drop(self.remote);
        self.child.wait_success();
    }
}

/// What the victim saw in one round.
#[derive(Default, Debug)]
struct Seen {
    messages: u64,
    typed_ok: u64,
    access_errors: u64,
    raw_seq: Vec<u64>,
    posts_ok: u64,
    closed: Option<CloseReason>,
    other_errors: HashMap<String, u64>,
}

/// Read a message every way the victim might: its bytes, and as each type
/// the hostile peer could claim; a value that validates is walked entirely.
fn read(m: &shmport::Message<'_>, seen: &mut Seen) {
    seen.messages += 1;
    let sum = m
        .bytes()
        .iter()
        .fold(0u64, |a, &b| a.rotate_left(5) ^ b as u64);
    std::hint::black_box(sum);
    if !m.is_typed() && m.bytes().len() == 16 {
        seen.raw_seq
            .push(u64::from_le_bytes(m.bytes()[..8].try_into().unwrap()));
    }
    let mut walk = |r: Result<String, shmport::AccessError>| match r {
        Ok(s) => {
            std::hint::black_box(s);
            seen.typed_ok += 1;
        }
        Err(_) => seen.access_errors += 1,
    };
    walk(m.get::<u64>().map(|v| format!("{v:?}")));
    walk(m.get::<String>().map(|v| format!("{v:?}")));
    walk(m.get::<Vec<String>>().map(|v| format!("{v:?}")));
    walk(m.get::<Blob>().map(|v| format!("{v:?}")));
}

/// Run one round against a hostile child for at most `limit`; stop early
/// at the close.
fn round(mode: &str, seed: u64, trust: Trust, limit: Duration, by: &mut Bystanders) -> Seen {
    let mut cmd = peer("hostile");
    cmd.env("HOSTILE_MODE", mode)
        .env("HOSTILE_SEED", seed.to_string());
    let (child, port) = ChannelBuilder::new()
        .capacity(4096)
        .spin(Duration::from_micros(5))
        .trust(trust)
        .spawn(cmd)
        .unwrap();
    let child = Victim::new(child);
    let dog = Watchdog::new("hostile round", Duration::from_secs(20));
    let mut seen = Seen::default();
    let end = Instant::now() + limit;
    let mut i = 0u64;
    while Instant::now() < end {
        dog.pet();
        i += 1;
        let t = Instant::now();
        let got = port.recv_timeout(Duration::from_millis(2));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a 2 ms receive took {:?}",
            t.elapsed()
        );
        match got {
            Ok(m) => read(&m, &mut seen),
            Err(RecvError::Timeout) => {}
            Err(RecvError::Closed(reason)) => {
                assert_ne!(
                    reason,
                    CloseReason::PeerDied,
                    "the hostile child died: it must live until killed"
                );
                seen.closed = Some(reason);
            }
            Err(e) => *seen.other_errors.entry(format!("{e}")).or_default() += 1,
        }
        // The victim posts too: a corrupt head is found here.
        match port.try_post_bytes(&i.to_le_bytes().repeat(12)) {
            Ok(()) => seen.posts_ok += 1,
            Err(PostError::Full) => {}
            Err(PostError::Closed(reason)) => {
                assert_ne!(reason, CloseReason::PeerDied, "the hostile child died");
                seen.closed = Some(reason);
            }
            Err(e) => panic!("post to the hostile peer: {e}"),
        }
        by.check();
        if let Some(reason) = seen.closed {
            if reason == CloseReason::ProtocolError {
                // It stays closed: no receive or post reaches the peer again.
                for _ in 0..3 {
                    assert!(matches!(
                        port.try_recv(),
                        Err(RecvError::Closed(CloseReason::ProtocolError))
                    ));
                    assert!(matches!(
                        port.try_post_bytes(b"more"),
                        Err(PostError::Closed(CloseReason::ProtocolError))
                    ));
                }
            }
            break;
        }
    }
    drop(port);
    child.kill();
    seen
}

#[test]
fn targeted_corruption_closes_the_port_with_protocol_error_after_the_good_records() {
    let mut by = Bystanders::new();
    for variant in 0..INFO_VARIANTS + HEAD_VARIANTS.len() as u32 {
        let seen = round(
            "targeted",
            variant as u64,
            Trust::Validated,
            Duration::from_secs(3),
            &mut by,
        );
        let what = if variant < INFO_VARIANTS {
            format!("bad info word #{variant}")
        } else {
            HEAD_VARIANTS[(variant - INFO_VARIANTS) as usize]
                .1
                .to_string()
        };
        assert_eq!(
            seen.closed,
            Some(CloseReason::ProtocolError),
            "{what}: {seen:?}"
        );
        let good: Vec<u64> = (0..5 + variant as u64 % 7).collect();
        if variant < INFO_VARIANTS {
            // The bad record follows the good ones in the ring.
            assert_eq!(seen.raw_seq, good, "{what}: the good records, in order");
        } else {
            // A post may find the bad head before every good record was
            // received: those received came in order, with no gap.
            assert!(
                good.starts_with(&seen.raw_seq),
                "{what}: {:?}",
                seen.raw_seq
            );
        }
        assert!(seen.other_errors.is_empty(), "{what}: {seen:?}");
    }
    by.finish();
}

#[test]
fn payload_garbage_is_an_error_per_message_and_never_closes_the_port() {
    let mut by = Bystanders::new();
    let mut total = Seen::default();
    for seed in 1..=4 {
        let seen = round(
            "payload",
            seed,
            Trust::Validated,
            Duration::from_millis(400),
            &mut by,
        );
        assert_eq!(seen.closed, None, "seed {seed}: {seen:?}");
        assert!(seen.other_errors.is_empty(), "seed {seed}: {seen:?}");
        assert!(seen.messages > 0, "seed {seed}: nothing arrived");
        total.messages += seen.messages;
        total.typed_ok += seen.typed_ok;
        total.access_errors += seen.access_errors;
    }
    eprintln!(
        "payload garbage: {} messages, {} typed reads ok, {} access errors",
        total.messages, total.typed_ok, total.access_errors
    );
    // Both outcomes happened: valid archives read, garbage refused.
    assert!(total.typed_ok > 0 && total.access_errors > 0, "{total:?}");
    by.finish();
}

#[test]
fn a_vandal_writing_anywhere_at_any_time_never_crashes_or_hangs_the_victim() {
    let mut by = Bystanders::new();
    let mut closes = HashMap::new();
    let mut messages = 0;
    for seed in 1..=20 {
        let seen = round(
            "vandal",
            seed,
            Trust::Untrusted,
            Duration::from_millis(250),
            &mut by,
        );
        messages += seen.messages;
        *closes.entry(format!("{:?}", seen.closed)).or_insert(0) += 1;
        for e in seen.other_errors.keys() {
            // Refusals and per-message errors are allowed; name them.
            eprintln!("seed {seed}: {e}");
        }
    }
    eprintln!("vandal rounds: {messages} messages; closes {closes:?}");
    assert!(messages > 0, "the vandal's producer got nothing through");
    by.finish();
}

// ------------------------------------------------------------ ring level

/// Found by review of the padding path: padding records were not checked
/// against unreleased space, so while the victim held a message a hostile
/// peer could commit a padding record at the start of every lap and run
/// the consumer's head laps ahead, each lap queueing one more released
/// span (memory and time that grew without bound). Padding now obeys the
/// same bound as records.
#[test]
fn padding_cannot_run_the_head_ahead_of_held_messages() {
    use shmport::testing::layout::{RECORD_HEADER, align_record};
    use shmport::testing::ring::heap::HeapRing;

    let cap = 4096usize;
    let mem = HeapRing::new(cap);
    let mut producer = Producer::new(mem.clone(), Barriers::FENCES).unwrap();
    let mut consumer = Consumer::new(mem.clone(), Barriers::FENCES).unwrap();
    let slot = producer.reserve(64).unwrap().unwrap();
    producer.commit(
        slot,
        64,
        RecordMeta {
            kind: Kind::Raw,
            out_of_line: false,
            pool: false,
            announce: false,
            kits: false,
            nports: 0,
            fingerprint: 0,
        },
    );
    // The victim takes the message and holds it.
    let held = consumer.take().unwrap().unwrap();
    let next = held.end;
    assert_eq!(next, align_record(RECORD_HEADER + 64) as u64);
    let forge = |pos: u64| {
        let offset = pos as usize % cap;
        // SAFETY: a 64-aligned offset inside the heap ring's data area; the
        // header is accessed only through its atomics.
        let h = unsafe { &*mem.data_ptr().add(offset).cast::<RecordHeader>() };
        h.info.store(
            pack_info(RecordInfo {
                len: (cap - offset - RECORD_HEADER) as u32,
                kind: KIND_PADDING,
                flags: 0,
                nports: 0,
            }),
            Ordering::Relaxed,
        );
        h.commit.store(pos + 1, Ordering::Release);
    };
    // Padding to the end of the first lap lies in free space: accepted.
    forge(next);
    assert!(consumer.take().unwrap().is_none());
    // A whole lap of padding would cover the held message: refused.
    forge(cap as u64);
    assert_eq!(
        consumer.take().unwrap_err().0,
        "padding overruns unreleased space"
    );
    consumer.release(held.pos, held.end);
}
