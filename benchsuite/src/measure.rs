//! The measuring loops (the suite's side), written once over [`Link`]; the
//! peer's side of each is in `link/serve.rs`.
//!
//! Round trip: the suite stamps and sends a payload, the peer sends the same
//! bytes back, the suite checks the stamps; each round trip is timed with
//! `Instant`. One way: the suite sends a batch of payloads, the last one
//! marked; the peer checks and counts each, and acks the batch; the time is
//! from the first send to the ack. In both, every message's stamps are
//! checked (sequence number at both ends); in verify mode every byte is.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::Result;
use crate::link::{Link, Work};
use crate::payload::{self, Op};
use crate::plan::Counts;

/// Round-trip timings, nanoseconds, one per measured round trip.
pub struct RttRun {
    pub samples: Vec<u64>,
    pub damaged: u64,
}

/// One one-way repetition: seconds for the batch, messages in it.
pub struct OnewayRun {
    pub secs: f64,
    pub msgs: usize,
    pub damaged: u64,
}

/// The round-trip workload.
pub struct Rtt {
    pub size: usize,
    pub counts: Counts,
}

impl Work for Rtt {
    type Out = RttRun;

    fn run<L: Link>(self, link: &mut L) -> Result<RttRun> {
        let verify = self.counts.quick;
        let pattern = payload::pattern(self.size);
        let mut buf = pattern.clone();
        let mut seq = 0u64;
        let mut damaged = 0u64;
        let mut one = |link: &mut L, seq: u64| -> Result<(u64, bool)> {
            payload::stamp(&mut buf, seq, Op::Data);
            let t0 = Instant::now();
            link.send(&buf)?;
            let ok = link.recv(self.size, |b| {
                payload::read(b) == Some((seq, Op::Data))
                    && (!verify || payload::body_intact(b, &pattern))
            })?;
            Ok((t0.elapsed().as_nanos() as u64, ok))
        };
        // Warm-up: the same round trips, not recorded.
        let warm_start = Instant::now();
        let mut warm = 0;
        while warm < 10 || warm_start.elapsed() < self.counts.warmup {
            let (_, ok) = one(link, seq)?;
            damaged += u64::from(!ok);
            seq += 1;
            warm += 1;
        }
        let iters = self.counts.rtt_iters(self.size);
        let mut samples = Vec::with_capacity(iters);
        for _ in 0..iters {
            let (ns, ok) = one(link, seq)?;
            samples.push(ns);
            damaged += u64::from(!ok);
            seq += 1;
        }
        Ok(RttRun { samples, damaged })
    }
}

/// The one-way workload.
pub struct Oneway {
    pub size: usize,
    pub counts: Counts,
}

impl Work for Oneway {
    type Out = OnewayRun;

    fn run<L: Link>(self, link: &mut L) -> Result<OnewayRun> {
        let msgs = self.counts.oneway_msgs(self.size);
        let mut buf = payload::pattern(self.size);
        let mut seq = 0u64;
        let mut damaged = 0u64;
        let mut batch = |link: &mut L, seq: &mut u64| -> Result<(f64, bool)> {
            let t0 = Instant::now();
            for i in 0..msgs {
                let op = if i + 1 == msgs { Op::Last } else { Op::Data };
                payload::stamp(&mut buf, *seq, op);
                link.send(&buf)?;
                *seq += 1;
            }
            let ack = link.recv(payload::CTRL_LEN, payload::read_control)?;
            let secs = t0.elapsed().as_secs_f64();
            Ok((secs, ack == Some((Op::Ack, msgs as u64, 0))))
        };
        let warm_start = Instant::now();
        while seq == 0 || warm_start.elapsed() < self.counts.warmup {
            let (_, ok) = batch(link, &mut seq)?;
            damaged += u64::from(!ok);
        }
        let (secs, ok) = batch(link, &mut seq)?;
        damaged += u64::from(!ok);
        Ok(OnewayRun {
            secs,
            msgs,
            damaged,
        })
    }
}

/// Single-thread memcpy of `size` bytes between two buffers, repeated:
/// seconds for one repetition of `per_rep` copies, after a warm-up; the
/// best of [`MEMCPY_TRIES`] repetitions, since this is the floor the
/// transports are held against.
///
/// The buffers' placement is fixed, not the allocator's: both 64-byte
/// aligned, the destination half a page past the source modulo 4 KiB.
/// Two separate allocations land wherever the heap is at that moment
/// (after other transports' rounds, a different place each round), and
/// a destination a few bytes past the source modulo 4 KiB makes the
/// processor's copy falsely depend on its own stores (4 KiB aliasing):
/// in a probe on this project's VM, 16 bytes past cost 4 KiB and 64 KiB
/// copies about a third (136 and 121 GiB/s at 2 KiB past, 92 and 90 at
/// 16 bytes past).
pub fn memcpy(size: usize, counts: Counts) -> (f64, usize) {
    const PAGE: usize = 4096;
    let pattern = payload::pattern(size);
    // Room for the source, a gap that puts the destination at 2 KiB past
    // the source modulo 4 KiB, the destination, and alignment slack.
    let gap = (size.div_ceil(PAGE) * PAGE) + PAGE / 2;
    let mut area = vec![0u8; gap + size + PAGE];
    let start = area.as_ptr().align_offset(64);
    area[start..start + size].copy_from_slice(&pattern);
    let (head, tail) = area.split_at_mut(start + gap);
    let src = &head[start..start + size];
    let dst = &mut tail[..size];
    let total: usize = if counts.quick { 16 << 20 } else { 256 << 20 };
    let per_rep = (total / size).max(1);
    let mut run = || {
        let t0 = Instant::now();
        for _ in 0..per_rep {
            dst.copy_from_slice(black_box(src));
            black_box(&mut *dst);
        }
        t0.elapsed().as_secs_f64()
    };
    let warm = Instant::now();
    while warm.elapsed() < counts.warmup.min(Duration::from_millis(100)) {
        run();
    }
    let best = (0..MEMCPY_TRIES)
        .map(|_| run())
        .fold(f64::INFINITY, f64::min);
    (best, per_rep)
}

/// Repetitions of the memcpy floor per round; the fastest counts.
const MEMCPY_TRIES: usize = 5;
