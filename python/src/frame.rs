//! The frame of a pickled message: the pickle (protocol 5) and its
//! out-of-band buffers, written straight into the ring (or, for a message
//! over the port's inline limit, into a block of its pool, or past the
//! largest block into a memfd of its own) in one pass.
//!
//! The pickle and the table take a few hundred bytes beside the buffers:
//! a pickled array of exactly 64 MiB does not fit the largest pool block
//! and travels in a memfd of its own (`post_bytes` sends the bytes alone,
//! which fit).
//!
//! It is posted as a typed message (an rkyv "archive" whose root is the
//! 32-byte trailer below), so its fingerprint tells a receiver that it is
//! a pickled message, not raw bytes. Layout, offsets from the payload's
//! start, integers little-endian:
//!
//! ```text
//! [pickle][zeros to 64][buffer 0][zeros to 64][buffer 1]...[zeros to 8]
//! [table: per buffer, offset u64 + length u64]
//! [trailer: magic u32 "SPy1", buffer count u32, pickle offset u64,
//!           pickle length u64, table offset u64]
//! ```
//!
//! Buffers start on 64-byte boundaries of the payload, which itself starts
//! on at least a 16-byte boundary in memory: numpy arrays rebuilt on them
//! are aligned.

use shmport::rkyv::rancor::Fallible;
use shmport::rkyv::ser::{Positional, Writer};
use shmport::rkyv::{Archive, Place, Serialize};

const MAGIC: u32 = u32::from_le_bytes(*b"SPy1");
const TRAILER: usize = 32;
const BUFFER_ALIGN: usize = 64;

/// A pickle and its out-of-band buffers, to post.
pub(crate) struct Frame<'a> {
    pub(crate) pickle: &'a [u8],
    pub(crate) buffers: &'a [&'a [u8]],
}

/// The type fingerprint pickled messages carry.
pub(crate) fn fingerprint() -> u64 {
    shmport::fingerprint::<Frame<'static>>()
}

impl Archive for Frame<'_> {
    type Archived = [u8; TRAILER];
    type Resolver = [u8; TRAILER];

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        out.write(resolver);
    }
}

fn pad<S: Writer<E> + ?Sized, E>(s: &mut S, align: usize) -> Result<(), E> {
    const ZEROS: [u8; BUFFER_ALIGN] = [0; BUFFER_ALIGN];
    let n = (align - s.pos() % align) % align;
    s.write(&ZEROS[..n])
}

impl<S> Serialize<S> for Frame<'_>
where
    S: Fallible + Writer<<S as Fallible>::Error> + ?Sized,
{
    fn serialize(&self, s: &mut S) -> Result<[u8; TRAILER], S::Error> {
        // The record writer starts at 0: offsets are positions.
        let start = s.pos();
        s.write(self.pickle)?;
        let mut table = Vec::with_capacity(self.buffers.len() * 16);
        for b in self.buffers {
            pad(s, BUFFER_ALIGN)?;
            table.extend_from_slice(&((s.pos() - start) as u64).to_le_bytes());
            table.extend_from_slice(&(b.len() as u64).to_le_bytes());
            s.write(b)?;
        }
        pad(s, 8)?;
        let table_off = s.pos() - start;
        s.write(&table)?;
        let mut t = [0u8; TRAILER];
        t[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        t[4..8].copy_from_slice(&(self.buffers.len() as u32).to_le_bytes());
        t[8..16].copy_from_slice(&0u64.to_le_bytes());
        t[16..24].copy_from_slice(&(self.pickle.len() as u64).to_le_bytes());
        t[24..32].copy_from_slice(&(table_off as u64).to_le_bytes());
        Ok(t)
    }
}

/// Where the pieces of a received frame are: (offset, length) pairs.
pub(crate) struct Layout {
    pub(crate) pickle: (usize, usize),
    pub(crate) buffers: Vec<(usize, usize)>,
}

fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    usize::try_from(u64::from_le_bytes(bytes)).ok()
}

/// A range inside a payload of `len` bytes, checked.
fn range(off: usize, n: usize, len: usize) -> Option<(usize, usize)> {
    (off.checked_add(n)? <= len).then_some((off, n))
}

/// Read a frame's trailer and table; every range is checked against the
/// payload (a peer's mistake is an error, never an out-of-bounds view).
pub(crate) fn parse(p: &[u8]) -> Result<Layout, &'static str> {
    const BAD: &str = "not a valid pickled shmport message (bad frame)";
    let len = p.len();
    let t = len.checked_sub(TRAILER).ok_or(BAD)?;
    let magic = u32::from_le_bytes(p[t..t + 4].try_into().map_err(|_| BAD)?);
    if magic != MAGIC {
        return Err(BAD);
    }
    let n = u32::from_le_bytes(p[t + 4..t + 8].try_into().map_err(|_| BAD)?) as usize;
    let pickle = range(
        u64_at(p, t + 8).ok_or(BAD)?,
        u64_at(p, t + 16).ok_or(BAD)?,
        t,
    )
    .ok_or(BAD)?;
    let table = u64_at(p, t + 24).ok_or(BAD)?;
    range(table, n.checked_mul(16).ok_or(BAD)?, t).ok_or(BAD)?;
    let buffers = (0..n)
        .map(|i| {
            let at = table + i * 16;
            range(u64_at(p, at)?, u64_at(p, at + 8)?, t)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(BAD)?;
    Ok(Layout { pickle, buffers })
}
