//! How a process gets its first port: a new channel, a spawned child with
//! a port already connected, or a rendezvous on a Unix socket path.

pub(crate) mod channel;
pub(crate) mod handover;
pub(crate) mod rendezvous;
pub(crate) mod spawn;
