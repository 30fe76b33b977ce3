//! Copying a large payload into shared memory past the caches.
//!
//! A payload written into the ring or a pool block is read by the other
//! process, not by this one. A copy with ordinary stores first reads every
//! destination line into the cache (and evicts what was there); once the
//! source and the destination together outgrow the last-level cache, each
//! line then comes from memory. Non-temporal stores write whole lines
//! without reading them: a copy of 16 MiB into a pool block measured
//! 36–37 GiB/s with them against 24–30 GiB/s with `memcpy` (the pool
//! lends blocks in turn, so the destination is rarely the one written
//! last). Below half the last-level cache, `memcpy` is mostly faster (the
//! lines are in the cache, and the reader finds them there too: 51–56
//! against 39 GiB/s for 1–4 MiB), and is used.

use crate::sys;

/// Does a write of `len` bytes stream past the caches? From half the
/// last-level cache up.
#[inline]
pub(crate) fn streams(len: usize) -> bool {
    len >= sys::cache::last_level_bytes() / 2
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
    fn streams_from_half_the_last_level_cache() {
        let half = sys::cache::last_level_bytes() / 2;
        assert!(streams(half));
        assert!(!streams(half - 1));
    }
}
