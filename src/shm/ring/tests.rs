use super::heap::HeapRing;
use super::*;
use crate::shm::layout::{RecordInfo, align_record, pack_info, unpack_info};
use core::sync::atomic::Ordering;
use std::sync::Arc;

const RAW: RecordMeta = RecordMeta {
    kind: Kind::Raw,
    out_of_line: false,
    pool: false,
    announce: false,
    kits: false,
    nports: 0,
    fingerprint: 0,
};

/// A producer, a consumer, and the memory they share.
type Pair = (
    Producer<Arc<HeapRing>>,
    Consumer<Arc<HeapRing>>,
    Arc<HeapRing>,
);

fn pair(cap: usize) -> Pair {
    let mem = HeapRing::new(cap);
    let p = Producer::new(mem.clone(), Barriers::FENCES).unwrap();
    let c = Consumer::new(mem.clone(), Barriers::FENCES).unwrap();
    (p, c, mem)
}

/// Write `bytes` as one record; `false` if there is no room.
fn put(p: &mut Producer<Arc<HeapRing>>, bytes: &[u8]) -> bool {
    match p.reserve(bytes.len()).unwrap() {
        None => false,
        Some(slot) => {
            assert!(slot.room >= bytes.len());
            assert_eq!(slot.payload.as_ptr() as usize % 32, 0);
            // SAFETY: the slot has room for `bytes`.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.payload.as_ptr(), bytes.len())
            };
            p.commit(slot, bytes.len(), RAW);
            true
        }
    }
}

/// Take one record, copy it out and release it.
fn get(c: &mut Consumer<Arc<HeapRing>>) -> Option<Vec<u8>> {
    let r = c.take().unwrap()?;
    // SAFETY: the record's payload is valid until released.
    let v = unsafe { core::slice::from_raw_parts(r.payload.as_ptr(), r.len) }.to_vec();
    if c.release(r.pos, r.end) {
        c.publish_head();
    }
    Some(v)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn one_record_round_trips() {
    let (mut p, mut c, _m) = pair(4096);
    assert!(get(&mut c).is_none());
    assert!(put(&mut p, b"hello"));
    assert!(c.ready());
    assert_eq!(get(&mut c).unwrap(), b"hello");
    assert!(get(&mut c).is_none());
    assert!(put(&mut p, b""));
    assert_eq!(get(&mut c).unwrap(), b"");
}

#[test]
fn many_laps_with_padding_keep_order_and_bytes() {
    let (mut p, mut c, _m) = pair(4096);
    let mut sent = 0u64;
    let mut got = 0u64;
    while got < 20_000 {
        let len = (sent as usize * 37) % (max_payload(4096) + 1);
        if put(&mut p, &pattern(sent, len)) {
            sent += 1;
        } else {
            c.publish_head();
        }
        while let Some(v) = get(&mut c) {
            let len = (got as usize * 37) % (max_payload(4096) + 1);
            assert_eq!(v, pattern(got, len), "record {got}");
            got += 1;
        }
        c.publish_head();
    }
}

#[test]
fn full_ring_refuses_until_released() {
    let (mut p, mut c, _m) = pair(4096);
    let mut n = 0;
    while put(&mut p, &[7u8; 100]) {
        n += 1;
    }
    // 4096 / align64(32 + 100) = 4096 / 192 = 21 records (the rest is too short).
    assert_eq!(n, 21);
    assert!(p.reserve(100).unwrap().is_none());
    let r = c.take().unwrap().unwrap();
    c.release(r.pos, r.end);
    // Released but not published: the producer cannot see it yet.
    assert!(p.reserve(100).unwrap().is_none());
    c.publish_head();
    assert!(p.reserve(100).unwrap().is_some());
}

#[test]
fn too_large_for_the_ring_is_never_reserved() {
    let (mut p, _c, _m) = pair(4096);
    assert!(p.reserve(max_payload(4096)).unwrap().is_some());
    assert!(p.reserve(max_payload(4096) + 1).unwrap().is_none());
}

#[test]
fn out_of_order_release_frees_space_in_order() {
    let (mut p, mut c, _m) = pair(4096);
    for i in 0..3u8 {
        assert!(put(&mut p, &[i; 64]));
    }
    let a = c.take().unwrap().unwrap();
    let b = c.take().unwrap().unwrap();
    let d = c.take().unwrap().unwrap();
    assert_eq!(c.in_flight(), 3);
    c.release(b.pos, b.end);
    c.release(d.pos, d.end);
    c.publish_head();
    assert_eq!(c.memory().header().consumer.head.load(Ordering::Relaxed), 0);
    c.release(a.pos, a.end);
    c.publish_head();
    assert_eq!(
        c.memory().header().consumer.head.load(Ordering::Relaxed),
        3 * 128
    );
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn consumer_sleep_announcement_asks_for_exactly_one_wake() {
    let (mut p, c, _m) = pair(4096);
    assert!(c.prepare_sleep());
    let slot = p.reserve(8).unwrap().unwrap();
    assert!(p.commit(slot, 8, RAW), "sleeping consumer must be woken");
    let slot = p.reserve(8).unwrap().unwrap();
    assert!(!p.commit(slot, 8, RAW), "only one wake per sleep");
    // With a record waiting, the consumer does not go to sleep.
    assert!(!c.prepare_sleep());
}

#[test]
fn producer_wait_announcement_is_answered_by_publish() {
    let (mut p, mut c, _m) = pair(4096);
    while put(&mut p, &[1u8; 1000]) {}
    assert!(p.prepare_wait(1000).unwrap());
    let r = c.take().unwrap().unwrap();
    c.release(r.pos, r.end);
    assert!(c.publish_head(), "waiting producer must be woken");
    assert!(!c.publish_head(), "only one wake per wait");
    assert!(!p.prepare_wait(1000).unwrap(), "room is there now");
}

#[test]
fn close_flags_reach_the_other_end() {
    let (p, mut c, _m) = pair(4096);
    assert!(!c.producer_closed());
    assert!(!p.close(), "nobody sleeps: no wake-up due");
    assert!(c.producer_closed());
    assert!(!p.consumer_closed());
    assert!(!c.close(), "nobody waits: no wake-up due");
    assert!(p.consumer_closed());
}

#[test]
fn a_close_wakes_the_other_side_if_it_sleeps() {
    // The consumer sleeps on an empty ring: the producer's close must wake
    // it (a half-close leaves the socket open, so nothing else would).
    let (p, c, _m) = pair(4096);
    assert!(c.prepare_sleep());
    assert!(p.close(), "the close must wake a sleeping consumer");
    assert!(c.producer_closed());

    // The producer waits for room in a full ring: the consumer's close must
    // wake it, and a wait announced after the close does not sleep.
    let (mut p, mut c, _m) = pair(4096);
    while let Some(slot) = p.reserve(100).unwrap() {
        let _ = p.commit(slot, 100, RAW);
    }
    assert!(p.prepare_wait(100).unwrap(), "the ring is full");
    assert!(c.close(), "the close must wake a producer waiting for room");
    assert!(p.consumer_closed());
    assert!(!p.prepare_wait(100).unwrap(), "nobody reads: do not sleep");
}

#[test]
fn roles_resume_from_published_positions() {
    let (mut p, mut c, m) = pair(4096);
    assert!(put(&mut p, b"one"));
    p.publish_tail();
    drop(p);
    let mut p2 = Producer::new(m.clone(), Barriers::FENCES).unwrap();
    assert!(put(&mut p2, b"two"));
    assert_eq!(get(&mut c).unwrap(), b"one");
    c.publish_head();
    drop(c);
    let mut c2 = Consumer::new(m, Barriers::FENCES).unwrap();
    assert_eq!(get(&mut c2).unwrap(), b"two");
}

/// Commit one good record, rewrite its header's info word with `f`, and
/// return what the consumer says.
fn corrupt_first(f: impl FnOnce(&mut RecordInfo)) -> Corrupt {
    let (mut p, mut c, m) = pair(4096);
    assert!(put(&mut p, b"payload"));
    let h = header_at(&m, 0);
    let mut info = unpack_info(h.info.load(Ordering::Relaxed));
    f(&mut info);
    h.info.store(pack_info(info), Ordering::Relaxed);
    c.take().unwrap_err()
}

#[test]
fn corrupt_records_are_errors() {
    assert_eq!(corrupt_first(|i| i.kind = 9).0, "unknown record kind");
    for flags in [0x80, 0x10, 1 | 2, 4, 1 | 4, 7, 8 | 1, 8 | 2, 8 | 2 | 4] {
        assert_eq!(
            corrupt_first(|i| i.flags = flags).0,
            "unknown or contradictory record flags",
            "flags {flags:#x}"
        );
    }
    for bad in [u32::MAX, 4096, 2048 - 31, 0x8000_0000] {
        assert_eq!(
            corrupt_first(|i| i.len = bad).0,
            "record length outside the ring"
        );
    }
    assert_eq!(
        corrupt_first(|i| {
            i.kind = crate::shm::layout::KIND_PADDING;
            i.len = 64;
        })
        .0,
        "padding does not reach the end of the lap"
    );
}

#[test]
fn uncommitted_or_stale_records_are_invisible() {
    let (mut p, mut c, m) = pair(4096);
    let slot = p.reserve(16).unwrap().unwrap();
    // Reserved, payload half written, never committed: nothing to take.
    // SAFETY: the slot has room for 8 bytes.
    unsafe { core::ptr::write_bytes(slot.payload.as_ptr(), 0xAB, 8) };
    assert!(c.take().unwrap().is_none());
    // A commit word from another lap does not match either.
    header_at(&m, 0).commit.store(4096 + 1, Ordering::Relaxed);
    assert!(c.take().unwrap().is_none());
}

#[test]
fn corrupt_positions_are_errors() {
    let (mut p, _c, m) = pair(4096);
    while put(&mut p, &[0u8; 200]) {}
    for (head, why) in [
        (u64::MAX - 31, "head beyond tail"),
        (8, "misaligned position"),
    ] {
        m.header().consumer.head.store(head, Ordering::Relaxed);
        assert_eq!(p.reserve(200).unwrap_err().0, why);
    }
    m.header().consumer.head.store(0, Ordering::Relaxed);
    m.header().producer.tail.store(1 << 40, Ordering::Relaxed);
    assert_eq!(
        Producer::new(m.clone(), Barriers::FENCES).err().unwrap().0,
        "more than a ring of bytes in flight"
    );
}

#[test]
fn two_threads_stream_checksummed_records() {
    let mem = HeapRing::new(1 << 16);
    let mut p = Producer::new(mem.clone(), Barriers::FENCES).unwrap();
    let mut c = Consumer::new(mem, Barriers::FENCES).unwrap();
    const N: u64 = 200_000;
    let t = std::thread::spawn(move || {
        let mut i = 0u64;
        while i < N {
            let len = (i % 300) as usize;
            if put(&mut p, &pattern(i, len)) {
                i += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let mut i = 0u64;
    while i < N {
        match get(&mut c) {
            Some(v) => {
                assert_eq!(v, pattern(i, (i % 300) as usize));
                i += 1;
            }
            None => {
                if c.unpublished() {
                    c.publish_head();
                }
                std::hint::spin_loop();
            }
        }
    }
    t.join().unwrap();
}

#[test]
fn padding_alone_is_not_a_message() {
    let (mut p, mut c, _m) = pair(4096);
    // Move to 3 KiB into the lap, then release everything.
    for _ in 0..3 {
        assert!(put(&mut p, &[1u8; 1024 - 32]));
        get(&mut c).unwrap();
    }
    c.publish_head();
    // A 1.5 KiB record does not fit the last 1 KiB: reserving pads the lap
    // (committing the padding) before the record is written.
    let slot = p.reserve(1536).unwrap().unwrap();
    assert!(c.ready(), "the padding is committed");
    assert!(!c.has_message(), "but no message yet");
    p.commit(slot, 1536, RAW);
    assert!(c.has_message());
    assert_eq!(get(&mut c).unwrap().len(), 1536);
}

#[test]
fn positions_near_the_end_of_u64_are_corrupt() {
    let m = HeapRing::new(4096);
    let far = u64::MAX - 63;
    m.header().producer.tail.store(far, Ordering::Relaxed);
    m.header().consumer.head.store(far, Ordering::Relaxed);
    assert_eq!(
        Producer::new(m.clone(), Barriers::FENCES).err().unwrap().0,
        "position out of range"
    );
    assert_eq!(
        Consumer::new(m, Barriers::FENCES).err().unwrap().0,
        "position out of range"
    );
}

/// Take one record, check its bytes, release it and tell the producer (as
/// an idle consumer does): the record's position in the ring.
fn get_at(c: &mut Consumer<Arc<HeapRing>>, expect: &[u8]) -> u64 {
    let r = c.take().unwrap().expect("a record");
    // SAFETY: the record's payload is valid until released.
    let got = unsafe { core::slice::from_raw_parts(r.payload.as_ptr(), r.len) };
    assert!(got == expect, "record bytes differ");
    c.release(r.pos, r.end);
    c.publish_head();
    r.pos
}

const MIB: usize = 1 << 20;

/// A pair whose producer rewinds, whatever this machine's caches.
fn rewinding_pair(cap: usize) -> Pair {
    let (mut p, c, m) = pair(cap);
    p.rewind_from(REWIND_MIN);
    (p, c, m)
}

#[test]
fn a_large_record_starts_the_ring_over_when_it_is_empty() {
    let (mut p, mut c, _m) = rewinding_pair(MIB);
    let big = pattern(1, REWIND_MIN + 1000);
    for lap in 1..4u64 {
        assert!(put(&mut p, &big));
        // Every one lands at the start of a lap, after padding.
        assert_eq!(get_at(&mut c, &big), (lap - 1) * MIB as u64);
    }
}

#[test]
fn no_rewind_while_records_are_unreleased_or_when_the_start_is_too_small() {
    let (mut p, mut c, _m) = rewinding_pair(MIB);
    let big = pattern(2, REWIND_MIN);
    let bigger = pattern(3, 3 * REWIND_MIN);
    let small = pattern(4, 1000);
    assert!(put(&mut p, &big));
    // Not empty: the next record follows.
    assert!(put(&mut p, &big));
    let first_end = align_record(RECORD_HEADER + big.len()) as u64;
    assert_eq!(get_at(&mut c, &big), 0);
    assert_eq!(get_at(&mut c, &big), first_end);
    // Empty, but `bigger` does not fit before where the last record ended
    // (two `big` ones do not make three).
    assert!(put(&mut p, &bigger));
    assert_eq!(get_at(&mut c, &bigger), 2 * first_end);
    // A small record after a large one is expected to be as large (the
    // size of a typed value is not known in advance): it rewinds.
    assert!(put(&mut p, &small));
    assert_eq!(get_at(&mut c, &small), MIB as u64);
    // Small after small never rewinds.
    assert!(put(&mut p, &small));
    let after = MIB as u64 + align_record(RECORD_HEADER + small.len()) as u64;
    assert_eq!(get_at(&mut c, &small), after);
}

#[test]
fn mixed_sizes_over_many_laps_keep_order_and_bytes_with_rewinds() {
    let (mut p, mut c, _m) = rewinding_pair(MIB);
    let sizes = [100, REWIND_MIN + 7, 300_000, 5_000, REWIND_MIN, 200_001, 1];
    let mut queued: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut rewinds = 0;
    for i in 0..400u64 {
        let msg = pattern(i, sizes[i as usize % sizes.len()]);
        while !put(&mut p, &msg) {
            let m = queued.pop_front().expect("room once everything is taken");
            get_at(&mut c, &m);
        }
        queued.push_back(msg);
        // Drain sometimes, so that the ring is sometimes empty.
        if i % 3 == 0 {
            while let Some(m) = queued.pop_front() {
                if get_at(&mut c, &m) % MIB as u64 == 0 && m.len() >= REWIND_MIN {
                    rewinds += 1;
                }
            }
        }
    }
    while let Some(m) = queued.pop_front() {
        get_at(&mut c, &m);
    }
    assert!(c.take().unwrap().is_none());
    assert!(rewinds > 10, "only {rewinds} rewinds");
}

#[test]
fn a_payload_of_unknown_size_rewinds_as_large_as_the_last_one() {
    let (mut p, mut c, _m) = rewinding_pair(MIB);
    let big = pattern(5, REWIND_MIN + 64);
    assert!(put(&mut p, &big));
    assert_eq!(get_at(&mut c, &big), 0);
    // Reserve with no size given (as a typed value is): room at the start
    // of the next lap, as much as the last record needed.
    let slot = p.reserve(0).unwrap().expect("room");
    assert_eq!(slot.pos, MIB as u64);
    assert!(slot.room >= big.len());
    // SAFETY: the slot has room for `big`.
    unsafe { core::ptr::copy_nonoverlapping(big.as_ptr(), slot.payload.as_ptr(), big.len()) };
    p.commit(slot, big.len(), RAW);
    assert_eq!(get_at(&mut c, &big), MIB as u64);
}
