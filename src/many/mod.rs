//! Other ways to wait on ports than one blocking receive: a set of many
//! ports, listeners on a dispatcher (push), and async ports on tokio.

#[cfg(feature = "tokio")]
pub mod aio;
pub(crate) mod port_set;
pub mod push;
