//! Copying a large payload into shared memory past the caches.
//!
//! A payload written into the ring or a pool block is read by the other
//! process, not by this one. A copy with ordinary stores first reads every
//! destination line into the cache (and evicts what was there); once the
//! source and the destination together outgrow the last-level cache, each
//! line then comes from memory. Non-temporal stores write whole lines
//! without reading them: a copy of 16 MiB into a pool block measured
//! 36–37 GiB/s with them against 24–30 GiB/s with `memcpy`. Where the
//! destination is still in the cache, `memcpy` is mostly faster (and the
//! reader finds the lines there too: 51–56 against 39 GiB/s for 1–4 MiB
//! written into the same blocks again), and is used.
//!
//! So a write streams when its destination is out of the cache: when the
//! write alone is larger than half the last-level cache (it evicts its own
//! start), or when its destination was last written more than
//! [`sys::cache::reach`] bytes of writes ago (a pool block lent again after
//! many others: the caller says so, [`cold`]). A copy of 1 MiB into one of 128 blocks lent in turn
//! measured 8.6–9.1 GB/s with `memcpy` and 17–21 GB/s streamed, against
//! 19–27 GB/s with `memcpy` into one of 1 to 4 blocks.

use crate::sys;

/// A write into a destination out of the cache ([`cold`]) streams from
/// this size (smaller ones are headers and tails, where the fence would
/// cost more than the stores save).
const COLD_FROM: usize = 4 << 10;

/// Does a write of `len` bytes stream past the caches whatever its
/// destination? From half the last-level cache up: the write evicts its
/// own start.
#[inline]
pub(crate) fn streams(len: usize) -> bool {
    len >= sys::cache::last_level_bytes() / 2
}

/// Does a write of `len` bytes into a destination last written more than
/// [`sys::cache::reach`] bytes of writes ago (or never) stream past the
/// caches?
#[inline]
pub(crate) fn cold(len: usize) -> bool {
    len >= COLD_FROM
}

/// Copy `src` to `dst` with non-temporal stores where the target has them
/// (x86-64: SSE2, part of its baseline), then a store fence: the bytes are
/// ordered before any later store, such as the Release store that
/// publishes the record (non-temporal stores are not ordered by it).
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes and must not
/// overlap `src`.
pub(crate) unsafe fn copy(src: &[u8], dst: *mut u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

        const LANE: usize = 16;
        const STEP: usize = 4 * LANE;
        let n = src.len();
        let s = src.as_ptr();
        // Up to the first 16-byte boundary of `dst` (what the stores need).
        let head = dst.align_offset(LANE).min(n);
        // SAFETY: `head <= n`: inside both buffers (the caller's duty for
        // `dst`), which do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(s, dst, head) };
        let mut i = head;
        while i + STEP <= n {
            // SAFETY: `i + STEP <= n`: the four loads read inside `src`
            // (unaligned loads), the four stores write inside `dst` at
            // 16-byte-aligned addresses (`dst + head` is aligned, and `i -
            // head` is a multiple of 16). SSE2 is enabled on every x86-64.
            unsafe {
                let a = _mm_loadu_si128(s.add(i).cast::<__m128i>());
                let b = _mm_loadu_si128(s.add(i + LANE).cast::<__m128i>());
                let c = _mm_loadu_si128(s.add(i + 2 * LANE).cast::<__m128i>());
                let d = _mm_loadu_si128(s.add(i + 3 * LANE).cast::<__m128i>());
                _mm_stream_si128(dst.add(i).cast::<__m128i>(), a);
                _mm_stream_si128(dst.add(i + LANE).cast::<__m128i>(), b);
                _mm_stream_si128(dst.add(i + 2 * LANE).cast::<__m128i>(), c);
                _mm_stream_si128(dst.add(i + 3 * LANE).cast::<__m128i>(), d);
            }
            i += STEP;
        }
        // SAFETY: SSE is enabled on every x86-64; the fence has no operands.
        unsafe { _mm_sfence() };
        // SAFETY: `i <= n`: the rest lies inside both buffers.
        unsafe { core::ptr::copy_nonoverlapping(s.add(i), dst.add(i), n - i) };
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    // SAFETY: the caller's duties are `copy_nonoverlapping`'s.
    unsafe {
        core::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_byte_whatever_the_alignment_and_length() {
        let src: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        for src_off in [0, 1, 5, 16] {
            for dst_off in [0, 3, 15, 16, 33] {
                for len in [0, 1, 15, 16, 63, 64, 65, 200, 1000, 4000] {
                    let mut dst = vec![0xAAu8; 4096 + 64];
                    let from = &src[src_off..src_off + len];
                    // SAFETY: `dst` has room for `dst_off + len` bytes and
                    // is another allocation than `src`.
                    unsafe { copy(from, dst.as_mut_ptr().add(dst_off)) };
                    assert_eq!(&dst[dst_off..dst_off + len], from);
                    assert!(dst[..dst_off].iter().all(|&b| b == 0xAA));
                    assert!(dst[dst_off + len..].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn streams_from_half_the_last_level_cache_or_past_twice_the_cores_own() {
        let half = sys::cache::last_level_bytes() / 2;
        assert!(streams(half));
        assert!(!streams(half - 1));
        let reach = sys::cache::reach();
        assert!(reach <= half && reach <= 2 * sys::cache::own_bytes());
        assert!(cold(COLD_FROM) && !cold(COLD_FROM - 1));
    }
}
