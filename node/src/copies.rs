//! Copies of payloads in memory that is used again: a received payload
//! copied into a Buffer (inside the ring, past a port's views, or in a
//! runtime that refuses external memory), and a posted payload that waits
//! for room. Fresh pages cost more than the copy itself here, so large
//! copies go into mappings kept for reuse.

use std::cell::RefCell;
use std::collections::HashMap;

use napi::bindgen_prelude::{BufferSlice, Uint8Array};
use napi::{Env, Error, Result};
use napi_derive::napi;

use crate::external_memory;

/// From this size on, a received copy goes into a mapping of its own
/// (of `mapped_len`), and the mapping is kept for the next copy when its
/// Buffer is collected: the allocator would hand back fresh pages, each
/// faulted in on its first write, which costs more than the copy itself
/// (about 2 µs a 4 KiB page here: 550 µs a MiB).
const MAPPED_COPY: usize = 256 * 1024;

/// A transparent huge page. From half of one on, a copy's mapping is made
/// of them (where the kernel allows it, `madvise`): one fault and a 2 MiB
/// clear instead of 512 faults, 60 to 80 µs a MiB here instead of 550.
const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// The size of the mapping that holds a copy of `len` bytes.
fn mapped_len(len: usize) -> usize {
    if len >= HUGE_PAGE / 2 {
        len.next_multiple_of(HUGE_PAGE)
    } else {
        len.next_multiple_of(MAPPED_COPY)
    }
}

/// The most bytes of collected copies kept mapped for reuse, per thread.
const KEPT_BYTES: usize = 64 * 1024 * 1024;

/// Anonymous memory, unmapped when dropped.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is a mapping this value made and owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

thread_local! {
    /// Mappings of collected copies, and their total size.
    static KEPT: RefCell<(Vec<Mapping>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// A mapping of `len` bytes (a `mapped_len`): a kept one, or a new one,
/// populated up front.
fn mapping(len: usize) -> Option<Mapping> {
    let kept = KEPT.with(|k| {
        let mut k = k.borrow_mut();
        let i = k.0.iter().position(|m| m.len == len)?;
        k.1 -= len;
        Some(k.0.swap_remove(i))
    });
    if kept.is_some() {
        return kept;
    }
    let huge = len.is_multiple_of(HUGE_PAGE);
    // Room to start at a huge page's boundary.
    let extra = if huge { HUGE_PAGE } else { 0 };
    let populate = if huge { 0 } else { libc::MAP_POPULATE };
    // SAFETY: a new private anonymous mapping; no memory is passed in.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len + extra,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | populate,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    let head = if huge {
        (ptr as usize).next_multiple_of(HUGE_PAGE) - ptr as usize
    } else {
        0
    };
    let start = ptr.cast::<u8>().wrapping_add(head);
    if huge {
        // SAFETY: the two ends cut off lie inside the mapping just made, and
        // nothing uses them; then advice on the part kept, which is ours.
        // Advice that fails (no huge pages here) leaves small pages, faulted
        // in by the copy.
        unsafe {
            if head > 0 {
                libc::munmap(ptr, head);
            }
            if extra > head {
                libc::munmap(start.add(len).cast(), extra - head);
            }
            libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE);
            libc::madvise(start.cast(), len, libc::MADV_POPULATE_WRITE);
        }
    }
    Some(Mapping { ptr: start, len })
}

/// Keep a collected copy's mapping for reuse, up to `KEPT_BYTES`; the
/// oldest go first.
fn keep(m: Mapping) {
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.1 += m.len;
        k.0.push(m);
        while k.1 > KEPT_BYTES {
            let old = k.0.remove(0);
            k.1 -= old.len;
        }
    });
}

/// A Buffer holding a copy of `bytes`.
pub(crate) fn copied_buffer<'env>(env: &'env Env, bytes: &[u8]) -> Result<BufferSlice<'env>> {
    if bytes.len() < MAPPED_COPY {
        return BufferSlice::copy_from(env, bytes);
    }
    let Some(map) = mapping(mapped_len(bytes.len())) else {
        return BufferSlice::from_data(env, bytes.to_vec());
    };
    // SAFETY: the mapping has at least `bytes.len()` writable bytes, and no
    // Buffer uses it (a kept one's Buffer was collected).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.ptr, bytes.len()) };
    let p = map.ptr;
    let held = external_memory(env, map.len);
    // SAFETY: `p..p+bytes.len()` lies in the mapping `map` owns; `map` is
    // the finalize hint, kept or unmapped only when the Buffer is collected.
    unsafe {
        BufferSlice::from_external(env, p, bytes.len(), map, move |env, m| {
            external_memory(&env, -held);
            keep(m);
        })
    }
}

/// A copy of bytes that wait for room, held here rather than in a Buffer:
/// its mapping goes back for reuse as soon as the message is sent.
enum Held {
    Mapped(Mapping, usize),
    Heap(Vec<u8>),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: the first `len` bytes of the mapping were written by `hold`.
            Held::Mapped(m, len) => unsafe { std::slice::from_raw_parts(m.ptr, *len) },
            Held::Heap(v) => v,
        }
    }

    fn release(self) {
        if let Held::Mapped(m, _) = self {
            keep(m);
        }
    }
}

thread_local! {
    static HELD: RefCell<HashMap<u32, Held>> = RefCell::new(HashMap::new());
    static NEXT_HELD: RefCell<u32> = const { RefCell::new(1) };
}

/// Copy `data` (a message that must wait for room: the caller may change
/// its Buffer once postMessage returns); the number of the copy, for
/// `post_held` and `release_held`.
#[napi]
pub fn hold(data: Uint8Array) -> u32 {
    let held = if data.len() >= MAPPED_COPY {
        match mapping(mapped_len(data.len())) {
            Some(m) => {
                // SAFETY: the mapping has room for `data` and nothing else uses it.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.ptr, data.len()) };
                Held::Mapped(m, data.len())
            }
            None => Held::Heap(data.to_vec()),
        }
    } else {
        Held::Heap(data.to_vec())
    };
    let n = NEXT_HELD.with(|n| {
        let mut n = n.borrow_mut();
        let id = *n;
        *n = n.wrapping_add(1).max(1);
        id
    });
    HELD.with(|h| h.borrow_mut().insert(n, held));
    n
}

/// `post` of a held copy; the copy is released unless the ring is full.
#[napi]
pub fn post_held(id: u32, tag: u32, held: u32, ports: Vec<u32>) -> Result<u32> {
    let Some(copy) = HELD.with(|h| h.borrow_mut().remove(&held)) else {
        return Err(Error::from_reason(format!("no held message {held}")));
    };
    let result = crate::post_slice(id, tag, copy.bytes(), ports);
    if matches!(result, Ok(crate::FULL)) {
        HELD.with(|h| h.borrow_mut().insert(held, copy));
    } else {
        copy.release();
    }
    result
}

/// Release a held copy that will not be sent.
#[napi]
pub fn release_held(held: u32) {
    if let Some(copy) = HELD.with(|h| h.borrow_mut().remove(&held)) {
        copy.release();
    }
}
