//! shmport: MessagePort-style channels between processes on one Linux
//! machine, carried over shared memory.
//!
//! - [`MessageChannel::new`] makes two entangled [`MessagePort`]s; what one
//!   posts, the other receives, in order, in both directions.
//! - Messages are rkyv archives serialized straight into a shared ring and
//!   read in place by the receiver, validated ([`Message::get`]), or raw
//!   bytes ([`MessagePort::post_bytes`], [`Message::bytes`]).
//! - A port's peer learns when the port goes away — closed, dropped, or its
//!   process killed — as a close event with a [`CloseReason`], after every
//!   message posted before.
//! - Ports travel inside messages ([`MessagePort::post_with_ports`],
//!   [`Message::take_ports`]) to any process, with the messages queued on
//!   them.
//! - [`spawn`] starts a child process with a port already connected;
//!   the child calls [`MessagePort::from_parent`]. Unrelated processes meet
//!   through a [`Listener`] on a Unix socket path and [`connect`]; the
//!   listener sees each connector's pid, uid and gid before it hands out a
//!   port.
//! - A [`PortSet`] waits on many ports at once; every port is `AsFd`.
//!
//! Linux only: it is built on memfd, seals, `SCM_RIGHTS` and `SOCK_SEQPACKET`.
//!
//! # Example
//! ```
//! use shmport::MessageChannel;
//!
//! #[derive(rkyv::Archive, rkyv::Serialize)]
//! struct Job {
//!     id: u64,
//!     input: Vec<f32>,
//! }
//!
//! let (main, worker) = MessageChannel::new()?.into_ports();
//! main.post(&Job { id: 1, input: vec![1.0, 2.0, 3.0] })?;
//!
//! let msg = worker.recv()?;
//! let job = msg.get::<Job>()?; // &ArchivedJob, in shared memory
//! let sum: f32 = job.input.iter().map(|x| x.to_native()).sum();
//! worker.post(&(job.id.to_native(), sum))?;
//! drop(msg); // gives the ring space back
//!
//! let reply = main.recv()?;
//! assert_eq!(reply.get::<(u64, f32)>()?.1, 6.0);
//!
//! drop(worker);
//! assert!(matches!(
//!     main.recv(),
//!     Err(shmport::RecvError::Closed(shmport::CloseReason::Closed))
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg(target_os = "linux")]

// The layers, bottom up: each folder imports only those above it in this
// list (ARCHITECTURE.md, "Layers").
mod connect;
mod error;
mod fault;
mod link;
mod many;
mod port;
mod shm;
mod sys;
#[doc(hidden)]
pub mod testing;
mod wire;

pub use connect::channel::{ChannelBuilder, DEFAULT_CAPACITY, MessageChannel};
pub use connect::rendezvous::{
    ConnectError, Credentials, DEFAULT_CONNECT_TIMEOUT, Incoming, Listener, connect,
    connect_abstract, connect_abstract_timeout, connect_timeout,
};
pub use connect::spawn::{PORT_ENV, spawn};
pub use error::{AccessError, CloseReason, PostError, RecvError};
#[cfg(feature = "tokio")]
pub use many::aio;
pub use many::port_set::{AddError, PortSet, SetEvent};
pub use many::push;
pub use port::message::{Message, OwnedMessage, Receivable, SharedBytes, TakePortsError};
pub use port::{
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SPIN, MAX_PORTS, MessagePort, PortReceiver, PortSender,
    Reservation, SplitError, TransferError, Trust,
};
pub use shm::layout::{MAX_CAPACITY, MIN_CAPACITY};
pub use shm::segment::OpenError;
pub use wire::writer::{MAX_MESSAGE_SIZE, Postable, RecordSerializer, RecordWriter, fingerprint};

/// rkyv, re-exported so users derive with the same version.
pub use rkyv;
