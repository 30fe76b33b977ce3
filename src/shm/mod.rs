//! The bytes two processes share: the segment (one memfd holding a header,
//! two rings and two release queues), its layout drawn field by field, the
//! lock-free ring protocol over it, and the large-message pools (blocks in
//! memfds of their own, lent by a ring's producer and given back through
//! its release queue). Nothing here knows of ports or sockets.
//!
//! `layout` and `ring` are `pub` only so that [`crate::testing`] can show
//! them to the project's fuzzers and hostile-peer tests; this module is
//! private, so they are not part of the API.

pub(crate) mod arena;
pub(crate) mod kit;
pub mod layout;
pub mod pool;
pub mod release;
pub mod ring;
pub(crate) mod segment;
pub(crate) mod sync;
