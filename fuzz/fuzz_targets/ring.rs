//! The record ring under a hostile peer: an honest producer and consumer
//! over a heap ring, and operations that write any value into the ring's
//! header lines and data area between their steps.
//!
//! Checked: nothing panics; every record the consumer hands out lies inside
//! the data area, 32-byte aligned, with a consistent end (AddressSanitizer
//! sees a read outside the heap block); while nothing hostile happened,
//! every record arrives whole and in order, `has_message` agrees with what
//! is queued, and neither side reports corruption.
#![no_main]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use shmport::testing::layout::{RECORD_HEADER, align_record};
use shmport::testing::ring::heap::HeapRing;
use shmport::testing::ring::{Barriers, Consumer, Kind, Producer, Record, RecordMeta, RingMemory};
use shmport_fuzz::Reader;

const RAW: RecordMeta = RecordMeta {
    kind: Kind::Raw,
    out_of_line: false,
    pool: false,
    announce: false,
    kits: false,
    nports: 0,
    fingerprint: 0,
};

/// The bytes of the `seq`-th record posted.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

/// A view of the 8-byte word at `offset` of the data area.
fn data_word(mem: &Arc<HeapRing>, offset: usize) -> &AtomicU64 {
    let offset = (offset % mem.capacity()) & !7;
    // SAFETY: `offset` is 8-aligned and below the capacity (a multiple of
    // 8), inside the heap block that `mem` keeps alive; the data area is
    // only accessed through atomics and raw pointers.
    unsafe { &*mem.data_ptr().add(offset).cast::<AtomicU64>() }
}

/// Check a record the consumer handed out and read all its bytes.
fn check_record(mem: &Arc<HeapRing>, r: &Record) -> Vec<u8> {
    let data = mem.data_ptr() as usize;
    let cap = mem.capacity();
    let p = r.payload.as_ptr() as usize;
    assert!(p >= data + RECORD_HEADER, "payload before the data area");
    assert!(p + r.len <= data + cap, "payload past the data area");
    assert_eq!((p - data) % 32, 0, "payload misaligned");
    assert_eq!(
        r.end - r.pos,
        align_record(RECORD_HEADER + r.len) as u64,
        "record end"
    );
    assert_eq!(
        (r.pos % cap as u64) as usize,
        p - data - RECORD_HEADER,
        "record position and payload disagree"
    );
    // SAFETY: checked above to lie inside the data area.
    unsafe { std::slice::from_raw_parts(r.payload.as_ptr(), r.len) }.to_vec()
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let cap = 4096usize << (r.u8() % 3);
    let mem = HeapRing::new(cap);
    let mut producer = Some(Producer::new(mem.clone(), Barriers::FENCES).unwrap());
    let mut consumer = Some(Consumer::new(mem.clone(), Barriers::FENCES).unwrap());
    // Posted and not yet taken: (position, sequence number, length).
    let mut queued: VecDeque<(u64, u64, usize)> = VecDeque::new();
    let mut held: Vec<Record> = Vec::new();
    let mut seq = 0u64;
    let mut hostile = false;
    let max = shmport::testing::ring::max_payload(cap);
    let mut steps = 0;
    while !r.is_empty() && steps < 2000 {
        steps += 1;
        match r.u8() % 12 {
            0 => {
                let Some(p) = producer.as_mut() else { continue };
                let len = r.u16() as usize % (max + 1);
                match p.reserve(len) {
                    Ok(Some(slot)) => {
                        assert!(slot.room >= len);
                        let bytes = payload(seq, len);
                        // SAFETY: the slot has `room >= len` bytes.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                bytes.as_ptr(),
                                slot.payload.as_ptr(),
                                len,
                            )
                        };
                        queued.push_back((slot.pos, seq, len));
                        seq += 1;
                        p.commit(slot, len, RAW);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        assert!(hostile, "honest ring reported {e}");
                        producer = None;
                    }
                }
            }
            1 | 2 => {
                let Some(c) = consumer.as_mut() else { continue };
                match c.take() {
                    Ok(Some(rec)) => {
                        let bytes = check_record(&mem, &rec);
                        if !hostile {
                            let (pos, s, len) = queued.pop_front().expect("a record nobody posted");
                            assert_eq!(rec.pos, pos, "record out of place");
                            assert_eq!(bytes, payload(s, len), "record {s} damaged");
                            assert_eq!(rec.meta, RAW);
                        }
                        held.push(rec);
                        if held.len() > 32 {
                            let old = held.remove(0);
                            if c.release(old.pos, old.end) {
                                c.publish_head();
                            }
                        }
                    }
                    Ok(None) => assert!(hostile || queued.is_empty(), "a posted record is missing"),
                    Err(e) => {
                        assert!(hostile, "honest ring reported {e}");
                        // A port stops reading a corrupt ring.
                        consumer = None;
                        held.clear();
                    }
                }
            }
            3 => {
                let Some(c) = consumer.as_mut() else { continue };
                if held.is_empty() {
                    continue;
                }
                let rec = held.swap_remove(r.u8() as usize % held.len());
                // The bytes are still ours until released.
                check_record(&mem, &rec);
                if c.release(rec.pos, rec.end) {
                    c.publish_head();
                }
            }
            4 => {
                if let Some(c) = consumer.as_mut()
                    && c.unpublished()
                {
                    c.publish_head();
                }
            }
            5 => {
                if let Some(c) = consumer.as_ref() {
                    let has = c.has_message();
                    let _ = c.ready();
                    if !hostile {
                        assert_eq!(has, !queued.is_empty(), "has_message disagrees");
                    }
                }
            }
            6 => {
                hostile = true;
                let off = r.u16() as usize;
                let v = r.hostile_u64(cap as u64);
                data_word(&mem, off).store(v, Ordering::Release);
            }
            7 => {
                hostile = true;
                let v = r.hostile_u64(cap as u64);
                let h = mem.header();
                match r.u8() % 7 {
                    0 => h.producer.tail.store(v, Ordering::Release),
                    1 => h.producer.closed.store(v as u32, Ordering::Release),
                    2 => h.consumer.head.store(v, Ordering::Release),
                    3 => h.consumer_wait.sleeping.store(v as u32, Ordering::Release),
                    4 => h.consumer_wait.closed.store(v as u32, Ordering::Release),
                    5 => h.producer_wait.waiting.store(v as u32, Ordering::Release),
                    _ => h.producer_wait.barrier.store(v as u32, Ordering::Release),
                }
            }
            8 => {
                // Rewrite a header field of a record still queued (the
                // targeted attack: the record the consumer reads next).
                let Some(&(pos, _, _)) = queued.get(r.u8() as usize % queued.len().max(1)) else {
                    continue;
                };
                hostile = true;
                let field = r.u8() as usize % 4;
                let v = r.hostile_u64(cap as u64);
                data_word(&mem, pos as usize % cap + field * 8).store(v, Ordering::Release);
            }
            9 => {
                // A role moves to another process: it resumes from what the
                // previous holder published.
                if r.u8().is_multiple_of(2) {
                    if let Some(p) = producer.take() {
                        p.publish_tail();
                        match Producer::new(mem.clone(), Barriers::FENCES) {
                            Ok(p) => producer = Some(p),
                            Err(e) => assert!(hostile, "honest producer handover: {e}"),
                        }
                    }
                } else if held.is_empty()
                    && let Some(mut c) = consumer.take()
                {
                    c.publish_head();
                    match Consumer::new(mem.clone(), Barriers::FENCES) {
                        Ok(c) => consumer = Some(c),
                        Err(e) => assert!(hostile, "honest consumer handover: {e}"),
                    }
                }
            }
            10 => {
                if let Some(c) = consumer.as_ref() {
                    if c.prepare_sleep() {
                        c.end_sleep();
                    }
                    let _ = c.producer_closed();
                }
                if let Some(p) = producer.as_mut() {
                    let len = r.u16() as usize % (max + 1);
                    match p.prepare_wait(len) {
                        Ok(true) => p.end_wait(),
                        Ok(false) => {}
                        Err(e) => {
                            assert!(hostile, "honest ring reported {e}");
                            producer = None;
                        }
                    }
                    let _ = p_consumer_closed(producer.as_ref());
                }
            }
            _ => {
                if let Some(p) = producer.as_ref() {
                    let _ = p.close();
                }
                if let Some(c) = consumer.as_ref() {
                    assert!(producer.is_none() || c.producer_closed() || hostile);
                }
            }
        }
    }
    if let Some(c) = consumer.as_mut() {
        for rec in held.drain(..) {
            c.release(rec.pos, rec.end);
        }
        let _ = c.close();
    }
});

fn p_consumer_closed<M: RingMemory>(p: Option<&Producer<M>>) -> bool {
    p.is_some_and(|p| p.consumer_closed())
}
