//! A ring in process memory: the same algorithm as in a shared segment, for
//! unit tests and models that run without an operating system.

use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::Arc;

use super::RingMemory;
use crate::shm::layout::{MIN_CAPACITY, RingHeader};

/// A zeroed heap block holding a ring header and a data area.
pub struct HeapRing {
    header: NonNull<RingHeader>,
    data: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the block is owned by this value and only accessed through atomics
// (header) and raw pointers under the ring protocol (data), like the shared
// segment it stands in for.
unsafe impl Send for HeapRing {}
// SAFETY: as above; shared access goes through atomics and the protocol.
unsafe impl Sync for HeapRing {}

impl HeapRing {
    /// A ring with `capacity` bytes of data (a power of two, >= 4096).
    pub fn new(capacity: usize) -> Arc<Self> {
        assert!(capacity.is_power_of_two() && capacity >= MIN_CAPACITY);
        let hl = Layout::new::<RingHeader>();
        let dl = Layout::from_size_align(capacity, 4096).expect("ring layout");
        // SAFETY: both layouts have nonzero size.
        let (h, d) = unsafe { (alloc_zeroed(hl), alloc_zeroed(dl)) };
        let header = NonNull::new(h.cast::<RingHeader>()).expect("out of memory");
        let data = NonNull::new(d).expect("out of memory");
        Arc::new(HeapRing {
            header,
            data,
            capacity,
        })
    }

    /// Raw view of the data area, for tests that corrupt it.
    pub fn data_ptr(&self) -> *mut u8 {
        self.data.as_ptr()
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly these layouts.
        unsafe {
            dealloc(self.header.as_ptr().cast(), Layout::new::<RingHeader>());
            dealloc(
                self.data.as_ptr(),
                Layout::from_size_align(self.capacity, 4096).expect("ring layout"),
            );
        }
    }
}

// SAFETY: header and data come from zeroed allocations of the right size and
// alignment (4096 >= RECORD_ALIGN; RingHeader's own alignment), owned until
// the last Arc drops; capacity is checked to be a power of two >= 4096.
unsafe impl RingMemory for Arc<HeapRing> {
    fn header(&self) -> &RingHeader {
        // SAFETY: valid for the Arc's lifetime (see the impl's comment);
        // RingHeader holds only atomics.
        unsafe { self.header.as_ref() }
    }
    fn data(&self) -> NonNull<u8> {
        self.data
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
}
