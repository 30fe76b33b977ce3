//! What a bridged port can be tuned with.

use std::time::Duration;

/// The least window an endpoint accepts from its peer (a peer announcing
/// less breaks the protocol).
pub const MIN_WINDOW: u64 = 4096;

/// Settings of the ports [`connect`](crate::connect) and
/// [`Server::accept`](crate::Server::accept) make, and of the ports that
/// arrive inside their messages.
///
/// ```
/// use std::time::Duration;
/// use shmport_zenoh::Options;
///
/// let options = Options::new()
///     .window(1 << 20)
///     .open_timeout(Duration::from_secs(2));
/// assert_eq!(options.window_bytes(), 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) window: u64,
    pub(crate) open_timeout: Duration,
    pub(crate) capacity: usize,
    pub(crate) max_message_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window: 8 << 20,
            open_timeout: Duration::from_secs(10),
            capacity: 4 << 20,
            max_message_size: shmport::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl Options {
    /// The defaults: an 8 MiB window, a 10 s open timeout, 4 MiB rings
    /// (messages up to 2 MiB travel inside the ring; chosen when the
    /// bridge sent 1 MiB chunks, which then stayed in the ring: 5.6 times
    /// the throughput of 1 MiB rings, when larger messages went out of
    /// line), shmport's default largest message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of message data the peer may send this port before the
    /// application has read them (the back-pressure bound: at most this
    /// much is buffered per port and direction, besides the local ring).
    /// Larger windows keep a long link busy; at least 4 KiB.
    pub fn window(mut self, bytes: u64) -> Self {
        self.window = bytes.max(MIN_WINDOW);
        self
    }

    /// The window ([`Options::window`]).
    pub fn window_bytes(&self) -> u64 {
        self.window
    }

    /// How long a port waits for its peer to appear (to answer, to be
    /// seen alive) and for a close to be confirmed before it takes the
    /// peer for dead.
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Ring bytes of the local channels behind bridged ports
    /// ([`shmport::ChannelBuilder::capacity`]; default 4 MiB).
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// The largest message accepted from the network; a larger one is a
    /// protocol error on that port.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
}
