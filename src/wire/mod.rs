//! What travels beside the ring, as bytes: the attachment codec (the
//! descriptors a record needs, sent on the port's socket) and the writer
//! that serializes a message straight into ring or memfd memory.

pub(crate) mod attachment;
pub(crate) mod writer;
