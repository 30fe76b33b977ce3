//! The bytes two processes share: the segment (one memfd holding a header
//! and two rings), its layout drawn field by field, and the lock-free ring
//! protocol over it. Nothing here knows of ports or sockets.
//!
//! `layout` and `ring` are `pub` only so that [`crate::testing`] can show
//! them to the project's fuzzers and hostile-peer tests; this module is
//! private, so they are not part of the API.

pub mod layout;
pub mod ring;
pub(crate) mod segment;
pub(crate) mod sync;
