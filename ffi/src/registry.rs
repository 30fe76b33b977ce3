//! Handles: what a C host holds instead of pointers to Rust objects.
//!
//! A handle is a 64-bit value shaped as an opaque pointer; it is never
//! dereferenced. It names a slot in a [`Registry`] and carries the slot's
//! generation and the registry's kind tag:
//!
//! ```text
//!  63      56 55                32 31                     0
//! +----------+--------------------+------------------------+
//! |   kind   |   generation (24)  |      slot index + 1    |
//! +----------+--------------------+------------------------+
//! ```
//!
//! A slot's generation is odd while it holds a value and even while it is
//! free; every insert and every removal adds one. A handle is valid while
//! the slot's generation equals the one it carries, so a handle that was
//! freed, closed or transferred is refused (`SHMPORT_ERR_BAD_HANDLE`) until
//! its slot has been reused 2^23 times, and a handle of another kind, or a
//! value that was never a handle, is refused too (its kind or index does
//! not match). Slot memory is never given back to the allocator, so looking
//! at a stale handle never touches freed memory.
//!
//! Slots live in chunks of doubling size (64, 128, 256, ... slots), made on
//! demand and never moved: a reference to a value stays valid until that
//! value is removed.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("handles are 64-bit values: shmport's C ABI needs a 64-bit target");

/// Slots in chunk 0; chunk `c` holds `FIRST_CHUNK << c`.
const FIRST_CHUNK: usize = 64;
/// Chunks: 64 · (2^25 − 1) slots in all, more than [`MAX_SLOTS`].
const CHUNKS: usize = 25;
/// Most slots (live values) one registry holds.
const MAX_SLOTS: u32 = 1 << 30;
const GEN_MASK: u32 = (1 << 24) - 1;

/// The kinds of handle, one registry each. The tag keeps a handle of one
/// kind from being taken for another.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Kind {
    Port = 0x51,
    Message = 0x52,
    Listener = 0x53,
    Incoming = 0x54,
}

/// A handle was refused: not a live handle of this registry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

struct Slot<T> {
    /// Odd: holds a value; even: free. Written only by the call that owns
    /// the slot (inserting or removing); read by lookups.
    generation: AtomicU32,
    /// Initialized exactly while `generation` is odd.
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// The value is gone: the generation turns even.
    #[inline]
    fn vacate(&self) {
        let generation = self.generation.load(Ordering::Relaxed).wrapping_add(1) & GEN_MASK;
        // Release: a later fill (by any thread) follows this store.
        self.generation.store(generation, Ordering::Release);
    }
}

/// A free slot, claimed by one call: fill it, or give it back with
/// [`Registry::recycle`] (`index`).
pub(crate) struct Vacant<T: 'static> {
    registry: &'static Registry<T>,
    pub(crate) index: u32,
    slot: &'static Slot<T>,
}

impl<T> Vacant<T> {
    /// Store the value: the slot turns live; its handle.
    #[inline]
    pub(crate) fn fill(self, value: T) -> u64 {
        // SAFETY: the slot is free and its index was handed to this call
        // alone (popped from a free list), so no one else reads or writes
        // its value; it holds no value to drop.
        unsafe { (*self.slot.value.get()).write(value) };
        let generation = self.slot.generation.load(Ordering::Relaxed).wrapping_add(1) & GEN_MASK;
        // Release: pairs with the Acquire in `live_slot`.
        self.slot.generation.store(generation, Ordering::Release);
        self.registry.encode(self.index, generation)
    }
}

/// Slots for values of one kind, named by handles.
pub(crate) struct Registry<T> {
    kind: Kind,
    chunks: [AtomicPtr<Slot<T>>; CHUNKS],
    /// Free slot indices, and how many slots were ever handed out.
    free: Mutex<FreeList>,
}

struct FreeList {
    indices: Vec<u32>,
    created: u32,
}

// SAFETY: the registry hands each slot's value to one thread at a time. A
// free slot belongs to the call that popped its index off a free list; a
// live slot's value is used only by calls on its handle, which the C API's
// contract confines to one thread at a time (a port and the messages
// received from it together, as `MessagePort` is Send but not Sync). The
// values therefore move between threads, with the host's own
// synchronization between uses, and are never used by two at once; the
// slot's generation is the only field read concurrently, and it is atomic.
unsafe impl<T> Sync for Registry<T> {}

/// Where slot `index` lives: (chunk, offset in the chunk).
#[inline]
fn locate(index: u32) -> (usize, usize) {
    let i = index as usize + FIRST_CHUNK;
    let chunk =
        (usize::BITS - 1 - i.leading_zeros()) as usize - FIRST_CHUNK.trailing_zeros() as usize;
    (chunk, i - (FIRST_CHUNK << chunk))
}

impl<T> Registry<T> {
    pub(crate) const fn new(kind: Kind) -> Self {
        Registry {
            kind,
            chunks: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS],
            free: Mutex::new(FreeList {
                indices: Vec::new(),
                created: 0,
            }),
        }
    }

    #[inline]
    fn encode(&self, index: u32, generation: u32) -> u64 {
        (self.kind as u64) << 56 | u64::from(generation) << 32 | u64::from(index + 1)
    }

    /// The slot a live handle names, and its index.
    #[inline(always)]
    fn live_slot(&self, handle: u64) -> Result<(&Slot<T>, u32), Stale> {
        // The kind tag, and the generation's low bit set (only live slots
        // have odd generations), in one comparison.
        const TAG_AND_LIVE: u64 = 0xff << 56 | 1 << 32;
        if handle & TAG_AND_LIVE != (self.kind as u64) << 56 | 1 << 32 {
            return Err(Stale);
        }
        let index = (handle as u32).wrapping_sub(1);
        let (chunk, offset) = locate(index);
        // Acquire: pairs with the Release in `new_chunk`; the chunk's slots
        // are initialized before its pointer is seen.
        let base = self.chunks.get(chunk).ok_or(Stale)?.load(Ordering::Acquire);
        if base.is_null() {
            return Err(Stale);
        }
        // SAFETY: `base` points to a leaked chunk of `FIRST_CHUNK << chunk`
        // initialized slots that is never freed; `offset` is inside it.
        let slot = unsafe { &*base.add(offset) };
        // Acquire: pairs with the Release in `fill`; the value written
        // before the generation turned odd is visible.
        if slot.generation.load(Ordering::Acquire) != (handle >> 32) as u32 & GEN_MASK {
            return Err(Stale);
        }
        Ok((slot, index))
    }

    /// A free slot (made if needed), to [`fill`](Vacant::fill); `None`
    /// when the registry is full ([`MAX_SLOTS`] live values).
    ///
    /// `spare`: free indices kept by the caller (a port keeps some for its
    /// messages, so that receiving takes no lock).
    #[inline]
    pub(crate) fn vacant(&'static self, spare: Option<&mut Vec<u32>>) -> Option<Vacant<T>> {
        let index = match spare.and_then(|s| s.pop()) {
            Some(i) => i,
            None => self.claim_shared()?,
        };
        let (chunk, offset) = locate(index);
        // Acquire: pairs with the Release in `new_chunk` (made by this
        // thread or another one, under the mutex).
        let base = self.chunks[chunk].load(Ordering::Acquire);
        // SAFETY: slot `index` was handed out by a free list, so its chunk
        // exists (made before `created` passed it) and is never freed.
        let slot = unsafe { &*base.add(offset) };
        Some(Vacant {
            registry: self,
            index,
            slot,
        })
    }

    /// A free index from the shared list, or a new slot.
    #[cold]
    fn claim_shared(&'static self) -> Option<u32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = free.indices.pop() {
            return Some(i);
        }
        if free.created >= MAX_SLOTS {
            return None;
        }
        let i = free.created;
        let (chunk, offset) = locate(i);
        if offset == 0 {
            self.new_chunk(chunk);
        }
        free.created += 1;
        Some(i)
    }

    fn new_chunk(&self, chunk: usize) {
        let slots: Box<[Slot<T>]> = (0..FIRST_CHUNK << chunk)
            .map(|_| Slot {
                generation: AtomicU32::new(0),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        // Leaked on purpose: slots are never freed, so a stale handle never
        // points into freed memory. Release: pairs with the Acquire loads in
        // `live_slot` and `claim`.
        self.chunks[chunk].store(Box::leak(slots).as_mut_ptr(), Ordering::Release);
    }

    /// Store `value` in a free slot and return its handle; `None` when the
    /// registry is full. `spare` as for [`vacant`](Self::vacant).
    #[inline]
    pub(crate) fn insert(&'static self, value: T, spare: Option<&mut Vec<u32>>) -> Option<u64> {
        Some(self.vacant(spare)?.fill(value))
    }

    /// The value a live handle names.
    ///
    /// # Safety
    /// The reference must not be used after the value is removed, and no
    /// `&mut` to it ([`get_mut`](Self::get_mut)) may be used meanwhile; no
    /// other thread uses the handle meanwhile.
    #[inline]
    pub(crate) unsafe fn get(&'static self, handle: u64) -> Result<&'static T, Stale> {
        let (slot, _) = self.live_slot(handle)?;
        // SAFETY: the slot is live, so its value is initialized; by the
        // caller's contract nobody mutates it while this reference is used.
        Ok(unsafe { (*slot.value.get()).assume_init_ref() })
    }

    /// The value a live handle names, to change it.
    ///
    /// # Safety
    /// As for [`get`](Self::get), and no other reference to the value may
    /// be used while this one is.
    // The value sits in an `UnsafeCell`; exclusivity is the caller's duty.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn get_mut(&'static self, handle: u64) -> Result<&'static mut T, Stale> {
        let (slot, _) = self.live_slot(handle)?;
        // SAFETY: the slot is live, so its value is initialized; by the
        // caller's contract this is the only reference used.
        Ok(unsafe { (*slot.value.get()).assume_init_mut() })
    }

    /// Take the value out; the handle becomes stale at once. Returns the
    /// value and its slot's index, which the caller gives back with
    /// [`recycle`](Self::recycle).
    ///
    /// # Safety
    /// No reference obtained from [`get`](Self::get) or
    /// [`get_mut`](Self::get_mut) for this handle may be used afterwards,
    /// and no other thread uses the handle meanwhile.
    #[inline]
    pub(crate) unsafe fn remove(&'static self, handle: u64) -> Result<(T, u32), Stale> {
        let (slot, index) = self.live_slot(handle)?;
        // SAFETY: the slot is live, so its value is initialized; it is read
        // out once, and the generation turns even below, so it is never
        // read again.
        let value = unsafe { (*slot.value.get()).assume_init_read() };
        slot.vacate();
        Ok((value, index))
    }

    /// Drop the value in place and free the slot; the handle becomes stale
    /// at once. `first` looks at the value before it drops. Returns what
    /// `first` returned and the slot's index, which the caller gives back
    /// with [`recycle`](Self::recycle).
    ///
    /// # Safety
    /// As for [`remove`](Self::remove).
    #[inline]
    pub(crate) unsafe fn drop_in_place<R>(
        &'static self,
        handle: u64,
        first: impl FnOnce(&T) -> R,
    ) -> Result<(R, u32), Stale> {
        let (slot, index) = self.live_slot(handle)?;
        let value = slot.value.get().cast::<T>();
        // SAFETY: the slot is live, so its value is initialized; nothing
        // else refers to it (the caller's contract).
        let r = first(unsafe { &*value });
        // The generation turns even first: a panic in the value's drop
        // leaves the slot free, never a half-dropped live value.
        slot.vacate();
        // SAFETY: initialized, dropped once: the slot is no longer live.
        unsafe { std::ptr::drop_in_place(value) };
        Ok((r, index))
    }

    /// Give a removed slot's index back: to `spare` if given, else to the
    /// shared free list.
    #[inline]
    pub(crate) fn recycle(&self, index: u32, spare: Option<&mut Vec<u32>>) {
        match spare {
            Some(s) => s.push(index),
            None => self.release_indices(std::iter::once(index)),
        }
    }

    /// Give slot indices kept by a caller (see [`insert`](Self::insert))
    /// back to the shared free list.
    pub(crate) fn release_indices(&self, indices: impl IntoIterator<Item = u32>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.indices.extend(indices);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_double() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        assert_eq!(locate(MAX_SLOTS - 1).0, CHUNKS - 1);
    }

    static NUMBERS: Registry<String> = Registry::new(Kind::Message);
    static OTHERS: Registry<u64> = Registry::new(Kind::Port);

    #[test]
    fn stale_and_foreign_handles_are_refused() {
        let a = NUMBERS.insert("one".into(), None).unwrap();
        // SAFETY: single-threaded test; no reference outlives a removal.
        unsafe {
            assert_eq!(NUMBERS.get(a).unwrap(), "one");
            assert_eq!(OTHERS.get(a).unwrap_err(), Stale);
            let (v, i) = NUMBERS.remove(a).unwrap();
            assert_eq!(v, "one");
            NUMBERS.recycle(i, None);
            assert_eq!(NUMBERS.get(a).unwrap_err(), Stale);
            assert_eq!(NUMBERS.remove(a).unwrap_err(), Stale);
            // The slot is reused; the old handle stays stale.
            let b = NUMBERS.insert("two".into(), None).unwrap();
            assert_ne!(a, b);
            assert_eq!(a as u32, b as u32, "same slot");
            assert_eq!(NUMBERS.get(a).unwrap_err(), Stale);
            NUMBERS.get_mut(b).unwrap().push('!');
            assert_eq!(NUMBERS.get(b).unwrap(), "two!");
            for bogus in [
                0u64,
                1,
                u64::MAX,
                0x5555_5555_0000_1000,
                b ^ (1 << 40),
                b + 1,
            ] {
                assert!(NUMBERS.get(bogus).is_err(), "{bogus:#x}");
            }
        }
    }

    #[test]
    fn drop_in_place_and_vacant_slots() {
        static WORDS: Registry<String> = Registry::new(Kind::Listener);
        let h = WORDS.insert("three".into(), None).unwrap();
        // SAFETY: single-threaded test; no reference outlives a removal.
        let (len, index) = unsafe { WORDS.drop_in_place(h, |v| v.len()) }.unwrap();
        assert_eq!(len, 5);
        // SAFETY: as above.
        assert_eq!(unsafe { WORDS.get(h) }.unwrap_err(), Stale);
        let mut spare = vec![index];
        let v = WORDS.vacant(Some(&mut spare)).unwrap();
        assert_eq!(v.index, index, "a kept index is used first");
        WORDS.recycle(v.index, Some(&mut spare));
        let v = WORDS.vacant(Some(&mut spare)).unwrap();
        let h2 = v.fill("four".into());
        assert_eq!(h2 as u32, h as u32);
        // SAFETY: as above.
        unsafe {
            assert_eq!(WORDS.get(h2).unwrap(), "four");
            assert_eq!(WORDS.get(h).unwrap_err(), Stale);
            let (_, i) = WORDS.remove(h2).unwrap();
            WORDS.recycle(i, None);
        }
    }

    #[test]
    fn many_slots_across_chunks() {
        let mut spare = Vec::new();
        let handles: Vec<u64> = (0..1000)
            .map(|i| OTHERS.insert(i, Some(&mut spare)).unwrap())
            .collect();
        for (i, &h) in handles.iter().enumerate() {
            // SAFETY: single-threaded test.
            let (v, index) = unsafe { OTHERS.remove(h) }.unwrap();
            assert_eq!(v, i as u64);
            OTHERS.recycle(index, Some(&mut spare));
        }
        assert_eq!(spare.len(), 1000);
        OTHERS.release_indices(spare);
    }
}
