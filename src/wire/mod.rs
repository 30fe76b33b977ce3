//! What travels beside the ring, as bytes: the attachment codec (the
//! descriptors a record needs, sent on the port's socket) and the writer
//! that serializes a message straight into ring or memfd memory (large
//! writes past the caches: `stream_copy`).

pub(crate) mod attachment;
pub(crate) mod stream_copy;
pub(crate) mod writer;
