//! The loom switch, in one place: the atomics and fences the ring protocol
//! uses are the processor's, or in a model-checking build (`--cfg
//! shmport_loom`) loom's models of them, so that `ring::model` explores
//! the production code unchanged (tokio keeps such a facade too). Nothing
//! else in the crate names loom.

#[cfg(not(shmport_loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, fence};
pub(crate) use core::sync::atomic::{Ordering, compiler_fence};
#[cfg(shmport_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, fence};
