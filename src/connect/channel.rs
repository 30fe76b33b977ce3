//! Making entangled port pairs.

use std::io;
use std::time::Duration;

use crate::port::{DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SPIN, Fresh, MessagePort, Settings, Trust};
use crate::shm::layout::{MAX_CAPACITY, MIN_CAPACITY};

/// Default bytes per ring (each direction has its own ring).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Two entangled ports: what one posts, the other receives, in order, in
/// both directions.
///
/// # Example
/// ```
/// use shmport::MessageChannel;
///
/// let channel = MessageChannel::new()?;
/// channel.port1.post_bytes(b"ping")?;
/// assert_eq!(channel.port2.recv()?.bytes(), b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MessageChannel {
    /// One end.
    pub port1: MessagePort,
    /// The other end.
    pub port2: MessagePort,
}

impl MessageChannel {
    /// A channel with the default settings ([`ChannelBuilder::new`]).
    pub fn new() -> io::Result<MessageChannel> {
        ChannelBuilder::new().build()
    }

    /// Settings for a new channel.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder::new()
    }

    /// The two ports, `(port1, port2)`.
    pub fn into_ports(self) -> (MessagePort, MessagePort) {
        (self.port1, self.port2)
    }
}

/// Settings for new channels (and for spawned children's ports).
///
/// ```
/// use std::time::Duration;
/// use shmport::MessageChannel;
///
/// let (a, b) = MessageChannel::builder()
///     .capacity(64 * 1024)
///     .spin(Duration::from_micros(50))
///     .build()?
///     .into_ports();
/// assert_eq!(a.max_inline_payload(), 32 * 1024 - 32);
/// # drop(b);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    capacity: usize,
    spin: Duration,
    trust: Trust,
    max_message: usize,
    pool_limit: Option<usize>,
    own_sockets: bool,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        ChannelBuilder::new()
    }
}

impl ChannelBuilder {
    /// 1 MiB per ring ([`DEFAULT_CAPACITY`]), 20 µs of spinning before a
    /// blocking call sleeps.
    pub fn new() -> Self {
        ChannelBuilder {
            capacity: DEFAULT_CAPACITY,
            spin: DEFAULT_SPIN,
            trust: Trust::Validated,
            max_message: DEFAULT_MAX_MESSAGE_SIZE,
            pool_limit: None,
            own_sockets: false,
        }
    }

    /// Bytes in each direction's ring: rounded up to a power of two, and to
    /// at least [`MIN_CAPACITY`] (4 KiB); at most [`MAX_CAPACITY`] (1 GiB),
    /// or [`build`](Self::build) and [`spawn`](Self::spawn) fail with
    /// [`io::ErrorKind::InvalidInput`]. [`MessagePort::capacity`] tells the
    /// size a port got.
    ///
    /// A message up to half the ring travels inline; larger ones, up to
    /// 64 MiB, go into the sending side's pool of reused blocks (as fast;
    /// see [`pool_limit`](Self::pool_limit)), and larger still out of line
    /// in their own memfd (a few system calls and page faults each). The
    /// default ring suits messages of any size. Memory is touched only as
    /// the ring is used.
    ///
    /// A channel that goes into a link (see [`own_sockets`](Self::own_sockets))
    /// gets rings of at most 64 KiB there, whatever is asked: its larger
    /// messages go into the link's pool, whose blocks serve one channel
    /// after another, so that thousands of channels to one process take
    /// little memory. `own_sockets(true)` keeps the ring asked for.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, _b) = MessageChannel::builder().capacity(5000).build()?.into_ports();
    /// assert_eq!(a.capacity(), 8192);
    /// let too_large = MessageChannel::builder().capacity(usize::MAX).build();
    /// assert_eq!(too_large.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// How long blocking calls spin before sleeping (see
    /// [`MessagePort::set_spin`]).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// The trust mode of the ports this builder makes ([`Trust`]; default
    /// [`Trust::Validated`]). A port keeps its mode only in this process:
    /// one that travels starts validated where it lands.
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// The largest message from outside the ring (pooled or out of line)
    /// the ports this builder makes accept (see
    /// [`MessagePort::set_max_message_size`]; default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]). Kept only in this process, like the
    /// trust mode.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Cap each port's large-message pool at `bytes` (see
    /// [`MessagePort::set_pool_limit`]; default: the larger of 64 MiB and
    /// four blocks of the largest size class in use). Kept only in this
    /// process, like the trust mode.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::builder()
    ///     .pool_limit(8 << 20)
    ///     .build()?
    ///     .into_ports();
    /// a.post_bytes(&vec![7; 3 << 20])?; // in a 4 MiB pool block
    /// assert!(b.recv()?.is_pooled());
    /// assert!(a.pool_bytes() <= 8 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pool_limit(mut self, bytes: usize) -> Self {
        self.pool_limit = Some(bytes);
        self
    }

    /// Give each port of the channel a socket of its own wherever it
    /// goes (default `false`).
    ///
    /// By default a port posted to another process before either port of
    /// its channel was used (a channel per request) goes into the *link*
    /// between the two processes: no descriptor per channel
    /// (ARCHITECTURE.md, "Links"). Such a port gets a socket of its own,
    /// its channel moving off the link, the first time something needs
    /// one: [`AsFd::as_fd`](std::os::fd::AsFd::as_fd),
    /// [`MessagePort::prepare_poll`], [`MessagePort::split`], a
    /// [`PortSet`](crate::PortSet), async receiving, posting a port or a
    /// message over 64 MiB over it (one up to 64 MiB goes into the link's
    /// pool), or posting it to a third process. That
    /// move costs what making a channel of its own costs (a memfd and a
    /// socket pair, tens of microseconds). Ports that will be waited on
    /// through their descriptor or split anyway, one channel per request,
    /// save it with `own_sockets(true)`: they travel as kits of the
    /// carrying channel instead (reused segments and socket pairs, no
    /// system call per request once warm, two descriptors per live
    /// channel). The Python and Node bindings make their channels so.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (x, y) = MessageChannel::new()?.into_ports();
    /// let (mine, theirs) = MessageChannel::builder()
    ///     .own_sockets(true)
    ///     .build()?
    ///     .into_ports();
    /// x.post_bytes_with_ports(b"reply here", vec![theirs])?;
    /// let theirs = y.recv()?.take_ports()?.pop().unwrap();
    /// let (tx, _rx) = theirs.split()?; // no move: it has its socket
    /// tx.post(&42u32)?;
    /// assert_eq!(*mine.recv()?.get::<u32>()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn own_sockets(mut self, yes: bool) -> Self {
        self.own_sockets = yes;
        self
    }

    /// Make the channel.
    ///
    /// Its ports are built when first used. A port posted over another
    /// port before either was used travels as a *kit* of that port's
    /// channel: a segment and socket pair the two processes keep from an
    /// earlier channel between them, so that a channel per request costs
    /// no system call once one has closed (ARCHITECTURE.md, "Kits").
    pub fn build(&self) -> io::Result<MessageChannel> {
        let (port1, port2) = Fresh::pair(Settings {
            capacity: self.ring_capacity()?,
            spin: self.spin,
            trust: self.trust,
            max_message: self.max_message,
            pool_limit: self.pool_limit,
            own_sockets: self.own_sockets,
        })?;
        Ok(MessageChannel { port1, port2 })
    }

    /// Apply this builder's per-process settings (trust mode, largest
    /// message, pool cap) to a port it made.
    pub(crate) fn configure(&self, port: &MessagePort) {
        port.set_trust(self.trust);
        port.set_max_message_size(self.max_message);
        port.set_pool_limit(self.pool_limit);
    }

    pub(crate) fn spin_time(&self) -> Duration {
        self.spin
    }

    /// The ring size asked for, rounded as [`ChannelBuilder::capacity`]
    /// says; an error if it is over the maximum.
    pub(crate) fn ring_capacity(&self) -> io::Result<usize> {
        if self.capacity > MAX_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a ring of {} bytes is over the maximum, {MAX_CAPACITY} (1 GiB)",
                    self.capacity
                ),
            ));
        }
        Ok(self.capacity.max(MIN_CAPACITY).next_power_of_two())
    }
}
