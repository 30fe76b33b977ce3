//! A loom model of moving a ring's consumer to a new segment while the
//! producer keeps posting: every record reaches the new segment (or was
//! taken before the move) exactly once, in order.
//!
//! The mover ([`Consumer::seal`]) marks the ring moved, issues the sleep
//! barrier and finds where the committed records end; it takes those to
//! the new segment, then publishes the position
//! ([`Consumer::publish_moved_at`]). The producer's look after each commit
//! (the sleep handshake's) sees the mark or its commit was seen; once it
//! sees the mark it waits for the position, re-posts its last record on the
//! new segment if the position does not cover it, and posts everything
//! after that there. The new segment is a list here (in production a new
//! ring that the mover fills first and the producer continues).
//!
//! Run with the other models:
//!
//! ```text
//! RUSTFLAGS="--cfg shmport_loom" cargo test --release --lib ring::move_model
//! ```

use std::sync::Arc;

use loom::sync::Mutex;
use loom::thread;

use super::model::{CAP, Mem, ModelMemory, RAW, check, fill, model, take};
use super::{Barriers, Consumer, Producer};
use crate::shm::layout::RECORD_ALIGN;

/// Messages the producer posts: one ring slot each, fewer than the ring
/// holds, so the producer never waits for room.
const N: usize = 3;
const LEN: usize = 8;
const _: () = assert!(N * RECORD_ALIGN < CAP);

/// The producer posts `N` messages; the mover takes `before` of them the
/// ordinary way (those that are there when it looks), then moves.
fn run_move(before: usize, barriers: Barriers) {
    let mem = ModelMemory::new();
    // The new segment: message numbers in the order they land there.
    let moved_to: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(Vec::new()));
    let mut c = Consumer::new(mem.clone(), barriers).unwrap();
    let producer = {
        let (mem, moved_to) = (mem.clone(), moved_to.clone());
        thread::spawn(move || {
            let mut p: Producer<Mem> = Producer::new(mem, barriers).unwrap();
            let mut i = 0;
            while i < N && !p.consumer_moved() {
                let slot = p.reserve(LEN).unwrap().expect("room for every message");
                // SAFETY: the slot has at least LEN bytes of free space the
                // consumer does not read before the commit.
                unsafe { core::ptr::write_bytes(slot.payload.as_ptr(), fill(i), LEN) };
                // Nobody sleeps in this model: a wake-up is never due.
                assert!(!p.commit(slot, LEN, RAW), "a wake-up nobody asked for");
                i += 1;
            }
            if !p.consumer_moved() {
                return;
            }
            // Moved: wait for the mover's position (it publishes it after
            // taking its records to the new segment), then re-post there.
            let at = loop {
                if let Some(at) = p.moved_at().unwrap() {
                    break at;
                }
                thread::yield_now();
            };
            let mut rest = moved_to.lock().unwrap();
            if let Some(pos) = p.moved_record() {
                if pos >= at {
                    // The record that saw the mark, not taken by the mover.
                    rest.push(i - 1);
                }
            }
            rest.extend(i..N);
        })
    };
    let mut got = Vec::new();
    while got.len() < before {
        match take(&mut c) {
            Some(t) => {
                check(&t, got.len(), LEN);
                assert!(!c.release(t.pos, t.end) || !c.publish_head());
                got.push(got.len());
            }
            None => break,
        }
    }
    let at = c.seal().unwrap();
    {
        let mut new_ring = moved_to.lock().unwrap();
        while let Some(t) = take(&mut c) {
            let i = got.len() + new_ring.len();
            check(&t, i, LEN);
            new_ring.push(i);
        }
    }
    c.publish_moved_at(at);
    producer.join().unwrap();
    got.extend(moved_to.lock().unwrap().iter().copied());
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "a message lost, doubled or out of order across the move"
    );
}

/// The move before the consumer took anything.
#[test]
fn a_move_loses_and_doubles_nothing() {
    model(|| run_move(0, Barriers::FENCES));
}

/// The move after the consumer took a message the ordinary way.
#[test]
fn a_move_after_a_receive_loses_and_doubles_nothing() {
    model(|| run_move(1, Barriers::FENCES));
}

/// Without the mover's barrier the model finds the message that is lost
/// or doubled: proof that it explores what the barrier is for.
#[test]
#[should_panic(expected = "a message lost, doubled or out of order")]
fn without_the_barrier_a_message_goes_astray() {
    fn nothing() {}
    let none = Barriers {
        registered: true,
        heavy: Some(nothing),
    };
    model(move || run_move(0, none));
}
