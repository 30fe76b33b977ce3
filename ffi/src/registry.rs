//! Handles: what a C host holds instead of pointers to Rust objects.
//!
//! A handle is a 64-bit value shaped as an opaque pointer; it is never
//! dereferenced. It names a slot in a [`Registry`] and carries the slot's
//! generation and the registry's kind tag:
//!
//! ```text
//!  63                  40 39      32 31                     0
//! +----------------------+----------+------------------------+
//! |   generation (24)    |   kind   |      slot index + 1    |
//! +----------------------+----------+------------------------+
//! ```
//!
//! A slot's generation is odd while it holds a value and even while it is
//! free; every insert and every removal adds one (wrapping: it is the top
//! bits). A handle is valid while the slot's generation equals the one it
//! carries, so a handle that was freed, closed or transferred is refused
//! (`SHMPORT_ERR_BAD_HANDLE`) until its slot has been reused 2^23 times,
//! and a handle of another kind, or a value that was never a handle, is
//! refused too (its kind or index does not match). Slot memory is never
//! given back to the allocator, so looking at a stale handle never touches
//! freed memory.
//!
//! Each slot has one word that makes a lookup a single comparison. While
//! the slot holds a value, the word *is* the value's handle. While it is
//! free, the word is the (even) generation and the kind (zero in a slot
//! never used) with the index bits zero: no handle naming this slot has
//! those (its index bits are the index + 1, never zero), so no handle
//! matches a free slot. A lookup finds the slot from the handle's index
//! bits and compares the slot's word with the whole handle: equal means
//! this kind, this generation, live.
//!
//! Slots live in chunks of doubling size (64, 128, 256, ... slots), never
//! moved: a reference to a value stays valid until that value is removed.
//! The first chunk is part of the registry (a static), so that its slots,
//! all most programs use, are found without a pointer to follow; the
//! others are made on demand.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("handles are 64-bit values: shmport's C ABI needs a 64-bit target");

/// Slots in chunk 0; chunk `c` holds `FIRST_CHUNK << c`.
const FIRST_CHUNK: usize = 64;
/// Chunks: one for every index a handle can carry (any `u32`, see
/// [`locate`]), though only the first 25 (64 · (2^25 − 1) slots, more than
/// [`MAX_SLOTS`]) are ever used; a handle naming a later one finds it
/// missing.
const CHUNKS: usize = 27;
/// Most slots (live values) one registry holds.
const MAX_SLOTS: u32 = 1 << 30;
/// A handle's (and a live slot word's) index bits.
const INDEX: u64 = 0xffff_ffff;
/// Where a handle's kind tag is.
const KIND_SHIFT: u32 = 32;
/// A handle's kind bits.
const KIND: u64 = 0xff << KIND_SHIFT;
/// One generation step in a handle or slot word; the generation is the
/// top 24 bits, so it wraps when the word does.
const ONE_GENERATION: u64 = 1 << 40;

/// The kinds of handle, one registry each. The tag keeps a handle of one
/// kind from being taken for another.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Kind {
    Port = 0x51,
    Message = 0x52,
    Listener = 0x53,
    Incoming = 0x54,
    PortSet = 0x55,
}

/// A handle was refused: not a live handle of this registry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale;

struct Slot<T> {
    /// Live: the handle of the value. Free: the generation (even) and the
    /// kind (zero if the slot was never used), index bits zero. Written
    /// only by the call that owns the slot (filling or vacating it); read
    /// by lookups, possibly on other threads (a stale handle is still
    /// looked up).
    word: AtomicU64,
    /// Initialized exactly while the slot is live.
    value: UnsafeCell<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    /// A slot never used: free, generation 0.
    const fn unused() -> Slot<T> {
        Slot {
            word: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value is gone: the word, the handle `live` (as a lookup just
    /// found), turns free, one generation on.
    #[inline]
    fn vacate(&self, live: u64) {
        debug_assert_eq!(self.word.load(Ordering::Relaxed), live);
        let free = (live & !INDEX).wrapping_add(ONE_GENERATION);
        // Relaxed: a lookup that finds the slot free touches no value, so
        // there is nothing to publish; the slot's next owner gets it through
        // the free list's lock or with its port, which orders this store
        // (and whatever was done to the value) before its fill.
        self.word.store(free, Ordering::Relaxed);
    }
}

/// A free slot, claimed by one caller: fill it, give it back with
/// [`Registry::recycle`], or keep it for a later value (a port keeps one
/// for its next message, so that receiving takes no lock).
#[must_use = "a claimed slot that is neither filled nor recycled is never reused"]
pub(crate) struct Vacant<T: 'static> {
    /// The kind and index bits of the slot's handles (a free slot's word
    /// may lack the kind: a slot never used has a zero word).
    tag: u64,
    slot: &'static Slot<T>,
}

impl<T> std::fmt::Debug for Vacant<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vacant")
            .field("index", &self.index())
            .finish()
    }
}

impl<T> Vacant<T> {
    fn new(kind: Kind, index: u32, slot: &'static Slot<T>) -> Vacant<T> {
        let tag = (kind as u64) << KIND_SHIFT | (u64::from(index) + 1);
        Vacant { tag, slot }
    }

    /// The slot that `handle` named, now free.
    fn freed(handle: u64, slot: &'static Slot<T>) -> Vacant<T> {
        Vacant {
            tag: handle & (KIND | INDEX),
            slot,
        }
    }

    fn index(&self) -> u32 {
        (self.tag as u32).wrapping_sub(1)
    }

    /// Store the value: the slot turns live; its handle.
    #[inline]
    pub(crate) fn fill(self, value: T) -> u64 {
        // SAFETY: the slot is free and was claimed by this caller alone
        // (popped from a free list, or kept by the one caller that freed
        // it), so no one else reads or writes its value; it holds no value
        // to drop.
        unsafe { (*self.slot.value.get()).write(value) };
        // Relaxed: the slot is this caller's; its word was last written by
        // the call that freed it, on this thread or before the slot was
        // handed over (through the free list's lock, or with its port).
        let free = self.slot.word.load(Ordering::Relaxed);
        debug_assert!(free & INDEX == 0 && free & ONE_GENERATION == 0);
        // The index bits are zero; the kind bits are the kind's, or zero.
        let handle = (free | self.tag).wrapping_add(ONE_GENERATION);
        // Release: pairs with the Acquire in `live_slot`; a lookup that sees
        // the handle sees the value written above.
        self.slot.word.store(handle, Ordering::Release);
        handle
    }
}

/// Slots for values of one kind, named by handles.
pub(crate) struct Registry<T> {
    kind: Kind,
    /// Chunk 0.
    first: [Slot<T>; FIRST_CHUNK],
    /// Chunks 1 and up, made on demand (`chunks[0]` stays null).
    chunks: [AtomicPtr<Slot<T>>; CHUNKS],
    /// Free slot indices, and how many slots were ever handed out.
    free: Mutex<FreeList>,
}

struct FreeList {
    indices: Vec<u32>,
    created: u32,
}

// SAFETY: the registry hands each slot's value to one thread at a time. A
// free slot belongs to the caller that claimed it (a `Vacant`); a live
// slot's value is used only by calls on its handle, which the C API's
// contract confines to one thread at a time (a port and the messages
// received from it together, as `MessagePort` is Send but not Sync). The
// values therefore move between threads, with the host's own
// synchronization between uses, and are never used by two at once; the
// slot's word is the only field read concurrently, and it is atomic.
unsafe impl<T> Sync for Registry<T> {}

/// Where slot `index` lives: (chunk, offset in the chunk).
///
/// Counting slots from 64 (slot `index` is number `index + 64`), chunk `c`
/// holds numbers `64 · 2^c` to `64 · 2^(c+1) − 1`: a number's top bit
/// gives its chunk, the bits below it the offset. Defined for every `u32`:
/// the chunk is at most 26.
#[inline(always)]
fn locate(index: u32) -> (usize, usize) {
    // 64 ..= 2^32 + 63.
    let n = u64::from(index) + FIRST_CHUNK as u64;
    // 0 ..= 26: `n / 64` is 1 ..= 2^26, its top bit the chunk.
    let chunk = (n / FIRST_CHUNK as u64).ilog2();
    (
        chunk as usize,
        (n ^ ((FIRST_CHUNK as u64) << chunk)) as usize,
    )
}

impl<T: 'static> Registry<T> {
    pub(crate) const fn new(kind: Kind) -> Self {
        Registry {
            kind,
            first: [const { Slot::unused() }; FIRST_CHUNK],
            chunks: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS],
            free: Mutex::new(FreeList {
                indices: Vec::new(),
                created: 0,
            }),
        }
    }

    /// Slot `index`, if its chunk was made.
    #[inline(always)]
    fn slot(&'static self, index: u32) -> Option<&'static Slot<T>> {
        if let Some(slot) = self.first.get(index as usize) {
            return Some(slot);
        }
        let (chunk, offset) = locate(index);
        // Acquire: pairs with the Release in `new_chunk`; the chunk's slots
        // are initialized before its pointer is seen.
        let base = self.chunks.get(chunk)?.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: `base` points to a leaked chunk of `FIRST_CHUNK << chunk`
        // initialized slots that is never freed, and `offset` is below that
        // (it is below the top bit `locate` took off, `FIRST_CHUNK << chunk`).
        Some(unsafe { &*base.add(offset) })
    }

    /// The slot a live handle names.
    #[inline(always)]
    fn live_slot(&'static self, handle: u64) -> Result<&'static Slot<T>, Stale> {
        // The index bits name the slot; the slot's word is the handle
        // exactly when the slot is live, of this kind and this generation.
        let index = (handle as u32).wrapping_sub(1);
        let slot = self.slot(index).ok_or(Stale)?;
        // Acquire: pairs with the Release in `fill`; the value written
        // before the handle was published is visible.
        if slot.word.load(Ordering::Acquire) != handle {
            return Err(Stale);
        }
        Ok(slot)
    }

    /// A free slot (made if needed), to [`fill`](Vacant::fill); `None`
    /// when the registry is full ([`MAX_SLOTS`] live values). Takes the
    /// registry's lock.
    pub(crate) fn vacant(&'static self) -> Option<Vacant<T>> {
        let index = self.claim()?;
        // Made before `created` passed `index` (or `index` was freed), so
        // the chunk exists.
        let slot = self.slot(index)?;
        Some(Vacant::new(self.kind, index, slot))
    }

    /// A free index from the shared list, or a new slot.
    fn claim(&'static self) -> Option<u32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = free.indices.pop() {
            return Some(i);
        }
        if free.created >= MAX_SLOTS {
            return None;
        }
        let i = free.created;
        let (chunk, offset) = locate(i);
        if chunk > 0 && offset == 0 {
            self.new_chunk(chunk);
        }
        free.created += 1;
        Some(i)
    }

    fn new_chunk(&self, chunk: usize) {
        let slots: Box<[Slot<T>]> = (0..FIRST_CHUNK << chunk).map(|_| Slot::unused()).collect();
        // Leaked on purpose: slots are never freed, so a stale handle never
        // points into freed memory. Release: pairs with the Acquire load in
        // `slot`.
        self.chunks[chunk].store(Box::leak(slots).as_mut_ptr(), Ordering::Release);
    }

    /// Store `value` in a free slot and return its handle; `None` when the
    /// registry is full. Takes the registry's lock.
    pub(crate) fn insert(&'static self, value: T) -> Option<u64> {
        Some(self.vacant()?.fill(value))
    }

    /// The value a live handle names.
    ///
    /// # Safety
    /// The reference must not be used after the value is removed, and no
    /// `&mut` to it ([`get_mut`](Self::get_mut)) may be used meanwhile; no
    /// other thread uses the handle meanwhile.
    #[inline]
    pub(crate) unsafe fn get(&'static self, handle: u64) -> Result<&'static T, Stale> {
        let slot = self.live_slot(handle)?;
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
        let slot = self.live_slot(handle)?;
        // SAFETY: the slot is live, so its value is initialized; by the
        // caller's contract this is the only reference used.
        Ok(unsafe { (*slot.value.get()).assume_init_mut() })
    }

    /// Take the value out; the handle becomes stale at once. Returns the
    /// value and its slot, now free, which the caller recycles or keeps.
    ///
    /// # Safety
    /// No reference obtained from [`get`](Self::get) or
    /// [`get_mut`](Self::get_mut) for this handle may be used afterwards,
    /// and no other thread uses the handle meanwhile.
    #[inline]
    pub(crate) unsafe fn remove(&'static self, handle: u64) -> Result<(T, Vacant<T>), Stale> {
        let slot = self.live_slot(handle)?;
        // SAFETY: the slot is live, so its value is initialized; it is read
        // out once, and the slot turns free below, so it is never read
        // again.
        let value = unsafe { (*slot.value.get()).assume_init_read() };
        slot.vacate(handle);
        Ok((value, Vacant::freed(handle, slot)))
    }

    /// Drop the value in place and free the slot; the handle becomes stale
    /// at once. `first` looks at the value before it drops. Returns what
    /// `first` returned and the slot, now free, which the caller recycles
    /// or keeps.
    ///
    /// # Safety
    /// As for [`remove`](Self::remove).
    #[inline]
    pub(crate) unsafe fn drop_in_place<R>(
        &'static self,
        handle: u64,
        first: impl FnOnce(&T) -> R,
    ) -> Result<(R, Vacant<T>), Stale> {
        let slot = self.live_slot(handle)?;
        let value = slot.value.get().cast::<T>();
        // SAFETY: the slot is live, so its value is initialized; nothing
        // else refers to it (the caller's contract).
        let r = first(unsafe { &*value });
        // The slot turns free first: a panic in the value's drop leaves it
        // free (and never reused: its `Vacant` is lost), never a
        // half-dropped live value.
        slot.vacate(handle);
        // SAFETY: initialized, dropped once: the slot is no longer live.
        unsafe { std::ptr::drop_in_place(value) };
        Ok((r, Vacant::freed(handle, slot)))
    }

    /// Give a free slot back to the shared free list.
    pub(crate) fn recycle(&self, slot: Vacant<T>) {
        self.release([slot]);
    }

    /// Give free slots kept by a caller back to the shared free list.
    pub(crate) fn release(&self, slots: impl IntoIterator<Item = Vacant<T>>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.indices.extend(slots.into_iter().map(|s| s.index()));
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
        assert_eq!(locate(MAX_SLOTS - 1).0, 24);
        assert_eq!(locate(u32::MAX).0, CHUNKS - 1);
        for (chunk, (&i, &n)) in [0u32, 64, 192, 448]
            .iter()
            .zip(&[64, 128, 256, 512])
            .enumerate()
        {
            assert_eq!(locate(i), (chunk, 0));
            assert_eq!(locate(i + n - 1), (chunk, n as usize - 1));
        }
    }

    static NUMBERS: Registry<String> = Registry::new(Kind::Message);
    static OTHERS: Registry<u64> = Registry::new(Kind::Port);

    #[test]
    fn stale_and_foreign_handles_are_refused() {
        let a = NUMBERS.insert("one".into()).unwrap();
        // SAFETY: single-threaded test; no reference outlives a removal.
        unsafe {
            assert_eq!(NUMBERS.get(a).unwrap(), "one");
            assert_eq!(OTHERS.get(a).unwrap_err(), Stale);
            let (v, slot) = NUMBERS.remove(a).unwrap();
            assert_eq!(v, "one");
            // A free slot's word, given as a handle, names nothing.
            let free_word = slot.slot.word.load(Ordering::Relaxed);
            assert_eq!(NUMBERS.get(free_word).unwrap_err(), Stale);
            assert_eq!(NUMBERS.get(free_word | 1).unwrap_err(), Stale);
            NUMBERS.recycle(slot);
            assert_eq!(NUMBERS.get(a).unwrap_err(), Stale);
            assert_eq!(NUMBERS.remove(a).unwrap_err(), Stale);
            // The slot is reused; the old handle stays stale.
            let b = NUMBERS.insert("two".into()).unwrap();
            assert_ne!(a, b);
            assert_eq!(a as u32, b as u32, "same slot");
            assert_eq!(b >> 40, (a >> 40) + 2);
            assert_eq!(NUMBERS.get(a).unwrap_err(), Stale);
            NUMBERS.get_mut(b).unwrap().push('!');
            assert_eq!(NUMBERS.get(b).unwrap(), "two!");
            for bogus in [
                0u64,
                1,
                u64::MAX,
                0x5555_5555_0000_1000,
                0x52_0000_0000,
                0x52_ffff_ffff,
                // Generation 1 of a slot never used (its word is zero).
                0x0100_0052_0000_003c,
                0x0100_0052_0001_003c,
                b & !INDEX,
                b ^ (1 << 32),
                b ^ (1 << 40),
                b ^ (1 << 63),
                b + 1,
            ] {
                assert!(NUMBERS.get(bogus).is_err(), "{bogus:#x}");
            }
        }
    }

    #[test]
    fn the_generation_wraps() {
        static WRAP: Registry<u8> = Registry::new(Kind::Incoming);
        let kind = (Kind::Incoming as u64) << KIND_SHIFT;
        let slot = WRAP.vacant().unwrap();
        // The last even generation: the next fill is the last odd one, and
        // freeing it wraps to zero, keeping the kind.
        let last_even = ((1 << 24) - 2) << 40;
        slot.slot.word.store(kind | last_even, Ordering::Relaxed);
        let h = slot.fill(7);
        assert_eq!(h >> 40, (1 << 24) - 1);
        assert_eq!(h >> KIND_SHIFT & 0xff, Kind::Incoming as u64);
        // SAFETY: single-threaded test.
        let (v, slot) = unsafe { WRAP.remove(h) }.unwrap();
        assert_eq!(v, 7);
        assert_eq!(slot.slot.word.load(Ordering::Relaxed), kind);
        let h2 = slot.fill(8);
        assert_eq!(h2 >> 40, 1);
        assert_eq!(h2 & !INDEX & !(0xff << KIND_SHIFT), ONE_GENERATION);
        // SAFETY: single-threaded test.
        unsafe {
            assert_eq!(WRAP.get(h).unwrap_err(), Stale);
            assert_eq!(*WRAP.get(h2).unwrap(), 8);
            let (_, slot) = WRAP.remove(h2).unwrap();
            WRAP.recycle(slot);
        }
    }

    #[test]
    fn drop_in_place_and_vacant_slots() {
        static WORDS: Registry<String> = Registry::new(Kind::Listener);
        let h = WORDS.insert("three".into()).unwrap();
        // SAFETY: single-threaded test; no reference outlives a removal.
        let (len, slot) = unsafe { WORDS.drop_in_place(h, |v| v.len()) }.unwrap();
        assert_eq!(len, 5);
        // SAFETY: as above.
        assert_eq!(unsafe { WORDS.get(h) }.unwrap_err(), Stale);
        // A kept slot is filled again under a new handle.
        let h2 = slot.fill("four".into());
        assert_eq!(h2 as u32, h as u32);
        assert_ne!(h2, h);
        // SAFETY: as above.
        unsafe {
            assert_eq!(WORDS.get(h2).unwrap(), "four");
            assert_eq!(WORDS.get(h).unwrap_err(), Stale);
            let (_, slot) = WORDS.remove(h2).unwrap();
            WORDS.recycle(slot);
        }
    }

    #[test]
    fn many_slots_across_chunks() {
        let handles: Vec<u64> = (0..1000).map(|i| OTHERS.insert(i).unwrap()).collect();
        let mut kept = Vec::new();
        for (i, &h) in handles.iter().enumerate() {
            // SAFETY: single-threaded test.
            let (v, slot) = unsafe { OTHERS.remove(h) }.unwrap();
            assert_eq!(v, i as u64);
            kept.push(slot);
        }
        for &h in &handles {
            // SAFETY: single-threaded test.
            assert_eq!(unsafe { OTHERS.get(h) }.unwrap_err(), Stale);
        }
        OTHERS.release(kept);
    }
}
