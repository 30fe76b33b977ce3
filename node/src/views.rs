//! Received Buffers that are views of shared memory (plain Node; a
//! runtime that refuses external memory, Electron, gets copies instead).
//!
//! A payload too large for the ring lies in a block of the sender's pool
//! (or, past the pool, in a memfd of its own). Handed to JavaScript as an
//! external Buffer over that memory, it costs no copy, but the block goes
//! back to the sender only when the garbage collector frees the Buffer,
//! which may be much later than the listener's last use, or never if the
//! process allocates nothing more. V8 is told the Buffer holds the block's
//! bytes (`adjust_external_memory`), which makes it collect sooner.
//!
//! A sender at its pool's cap waits for a block of the size it needs (or
//! larger) to come back, and no collection may ever come. So a port views
//! all but an eighth (at least one) of the blocks of one size that the
//! sender has shown it (`Message::pool_class`, `cycling`) and copies the
//! rest, giving their blocks back at once: of the blocks the sender could
//! wait for, at least that eighth are free or in messages this port is
//! about to receive, and those come back without a collection. A listener
//! that keeps its Buffers keeps at most those views, as a Rust receiver
//! holding messages would.
//!
//! The cost of a view: up to seven eighths of a pool of the sender's
//! memory stays in flight until collections return it, and the sender's
//! pool grows to its cap sooner (hence the binding's larger default cap,
//! `POOL_LIMIT`); while the views are out, further messages of that size
//! are copied (one copy, as in Electron). A port that moves to another
//! process while Buffers view its blocks leaves those blocks with this
//! process: the core does not give them back from here, and the sender
//! has that many fewer. After the sending port moved, the count of blocks
//! also holds its earlier owner's buffers, which the new owner never
//! lends: the limit is then looser than the share of what the sender can
//! wait for. And a
//! view shows the sender's block as it is: a sender that keeps to the
//! protocol does not write a block before it comes back, a hostile one
//! could change the bytes under the Buffer (only bytes: nothing this
//! binding decodes is read from a view; cloned values are copied first).

use std::cell::RefCell;
use std::collections::HashMap;

use napi::bindgen_prelude::BufferSlice;
use napi::{Env, Error, Result};

use crate::{ArchivedJsPayload, external_memory};

/// An external Buffer over a payload kept past its message (a pool
/// block, or an out-of-line memfd's mapping): no copy; the memory lives
/// until the Buffer is collected. `block`: the receiving port and the
/// block's size, for a pool block (counted until then).
pub(crate) fn shared_buffer(
    env: &Env,
    shared: shmport::SharedBytes,
    typed: bool,
    block: Option<(u32, usize)>,
) -> Result<BufferSlice<'_>> {
    let all = shared.bytes();
    let (start, len) = if typed {
        let archived = rkyv::access::<ArchivedJsPayload<'static>, rkyv::rancor::Error>(all)
            .map_err(|e| Error::from_reason(format!("not a message of the Node binding: {e}")))?;
        let inner = archived.bytes.get();
        (inner.as_ptr() as usize - all.as_ptr() as usize, inner.len())
    } else {
        (0, all.len())
    };
    if len == 0 {
        return BufferSlice::from_data(env, Vec::new());
    }
    // A pointer into the copy-on-write mapping, which `shared` owns.
    let ptr = shared.as_mut_ptr().wrapping_add(start);
    let held = external_memory(env, len);
    if let Some(b) = block {
        count_view(b, true);
    }
    // SAFETY: `ptr..ptr+len` lies inside `shared`'s mapping (the archive was
    // validated above; raw payloads are the whole of it), which is private
    // and writable (copy-on-write), so JavaScript may read and write it.
    // `shared` is the finalize hint: it is dropped, unmapping the memory,
    // only when the Buffer is collected.
    unsafe {
        BufferSlice::from_external(env, ptr, len, shared, move |env, s| {
            external_memory(&env, -held);
            drop(s);
            if let Some(b) = block {
                count_view(b, false);
            }
        })
    }
}

thread_local! {
    /// Pool blocks held by Buffers that view them, per receiving port and
    /// block size.
    static VIEWED: RefCell<HashMap<(u32, usize), usize>> = RefCell::new(HashMap::new());
}

/// May port `id` hand out one more view of a block of `size` bytes, of
/// which the sender has shown `blocks`? All but `cycling(blocks)` of them
/// may be viewed at a time, so that blocks always come back to a sender
/// at its pool's cap while the garbage collector keeps the others.
pub(crate) fn may_view(id: u32, (size, blocks): (usize, usize)) -> bool {
    let viewed = VIEWED.with(|v| v.borrow().get(&(id, size)).copied().unwrap_or(0));
    viewed + cycling(blocks) < blocks
}

/// Of `blocks` blocks of one size, how many a port never views: an eighth
/// (rounded down), at least one. They are copied on receipt and go back
/// at once, so a sender at its pool's cap always gets blocks back (one
/// would do for that), and keeps an eighth of its pool streaming while
/// the collector holds the rest. Views cost the receiver nothing, copies
/// a copy into memory that itself comes back only at a collection: a
/// larger share of views was faster here (1 MiB messages through a
/// 256 MiB pool: 13–19 GB/s with an eighth or one block left, 8–9 GB/s
/// with half; BENCHMARKS.md).
fn cycling(blocks: usize) -> usize {
    (blocks / 8).max(1)
}

/// A view of a block came (`true`) or was collected.
fn count_view(key: (u32, usize), came: bool) {
    VIEWED.with(|v| {
        let mut v = v.borrow_mut();
        let n = v.entry(key).or_insert(0);
        if came {
            *n += 1;
        } else {
            *n -= 1;
            if *n == 0 {
                v.remove(&key);
            }
        }
    });
}

/// How many pool blocks Buffers received on port `id` view.
pub(crate) fn viewed_blocks(id: u32) -> u32 {
    VIEWED.with(|v| {
        let n: usize = v
            .borrow()
            .iter()
            .filter(|(k, _)| k.0 == id)
            .map(|(_, n)| n)
            .sum();
        u32::try_from(n).unwrap_or(u32::MAX)
    })
}
