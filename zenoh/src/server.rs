//! Offering ports under a zenoh key ([`serve`]) and reaching them from
//! another host ([`connect`]).
//!
//! A connection is one zenoh query: the connecting side declares its
//! endpoint, then asks the key with its endpoint's id; the server makes a
//! local channel, starts an endpoint bound to the asker, and replies with
//! that endpoint's id. The two endpoints then open to each other
//! (crate::endpoint).

use std::io;
use std::time::{Duration, Instant};

use shmport::{MessageChannel, MessagePort};
use zenoh::Session;
use zenoh::Wait;
use zenoh::handlers::FifoChannelHandler;
use zenoh::query::{Query, QueryTarget, Queryable, Reply};

use crate::endpoint::{self, Bind, zenoh_error};
use crate::error::ConnectPortError;
use crate::frame::{self, EndpointId};
use crate::keys;
use crate::options::Options;

/// Ports offered under a key: each [`accept`](Server::accept) takes one
/// connection and gives the local end, a normal [`MessagePort`] whose peer
/// is the connecting host's port. Like [`shmport::Listener`], for zenoh.
/// Dropping it stops taking connections; accepted ports go on.
pub struct Server {
    session: Session,
    queryable: Queryable<FifoChannelHandler<Query>>,
    options: Options,
}

/// Offer ports under `key` on `session`, with the default [`Options`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use zenoh::Wait;
///
/// let session = zenoh::open(zenoh::Config::default()).wait()?;
/// let server = shmport_zenoh::serve(&session, "jobs/worker")?;
/// let port = server.accept()?;
/// let job = port.recv()?;
/// port.post_bytes(job.bytes())?;
/// # Ok(()) }
/// ```
pub fn serve(session: &Session, key: &str) -> io::Result<Server> {
    serve_with(session, key, &Options::default())
}

/// [`serve`] with `options` for the ports it accepts.
pub fn serve_with(session: &Session, key: &str, options: &Options) -> io::Result<Server> {
    let queryable = session
        .declare_queryable(key.to_owned())
        .wait()
        .map_err(zenoh_error)?;
    Ok(Server {
        session: session.clone(),
        queryable,
        options: options.clone(),
    })
}

impl Server {
    /// Wait for a connection and accept it.
    pub fn accept(&self) -> io::Result<MessagePort> {
        loop {
            let query = self.queryable.recv().map_err(zenoh_error)?;
            if let Some(port) = self.answer(query)? {
                return Ok(port);
            }
        }
    }

    /// [`accept`](Server::accept), waiting at most `timeout`; `None` when
    /// no connection came.
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<MessagePort>> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let Some(query) = self.queryable.recv_deadline(until).map_err(zenoh_error)? else {
                return Ok(None);
            };
            if let Some(port) = self.answer(query)? {
                return Ok(Some(port));
            }
        }
    }

    /// Answer one connection request; `None` if it was malformed (it gets
    /// an error reply, and the server goes on).
    fn answer(&self, query: Query) -> io::Result<Option<MessagePort>> {
        let asker = match query.payload().map(|p| frame::decode_hello(&p.to_bytes())) {
            Some(Ok(id)) => id,
            _ => {
                let _ = query
                    .reply_err("not a shmport-zenoh connection request")
                    .wait();
                return Ok(None);
            }
        };
        let (app, bridge) = MessageChannel::builder()
            .capacity(self.options.capacity)
            .build()?
            .into_ports();
        let me = keys::new_id(&self.session);
        endpoint::spawn(&self.session, me, Bind::To(asker), bridge, &self.options)?;
        query
            .reply(query.key_expr().clone(), frame::hello(me))
            .wait()
            .map_err(zenoh_error)?;
        Ok(Some(app))
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("key", &self.queryable.key_expr().as_str())
            .finish_non_exhaustive()
    }
}

/// Connect to the port server offering `key` (on any host `session`
/// reaches), with the default [`Options`]: a normal [`MessagePort`] whose
/// peer is the port the server accepted.
///
/// Fails with [`io::ErrorKind::NotFound`] when no server answers within
/// the options' open timeout, [`io::ErrorKind::ConnectionRefused`] when
/// the answer is an error.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use zenoh::Wait;
///
/// let session = zenoh::open(zenoh::Config::default()).wait()?;
/// let port = shmport_zenoh::connect(&session, "jobs/worker")?;
/// port.post_bytes(b"job")?;
/// assert_eq!(port.recv()?.bytes(), b"job");
/// # Ok(()) }
/// ```
pub fn connect(session: &Session, key: &str) -> io::Result<MessagePort> {
    connect_with(session, key, &Options::default())
}

/// [`connect`] with `options`.
pub fn connect_with(session: &Session, key: &str, options: &Options) -> io::Result<MessagePort> {
    let (app, bridge) = MessageChannel::builder()
        .capacity(options.capacity)
        .build()?
        .into_ports();
    connect_port(session, key, bridge, options).map_err(|e| e.error)?;
    Ok(app)
}

/// Connect an existing `port` to the port server offering `key`: from
/// then on `port`'s peer — wherever it is, typically in another local
/// process that reached this one through a [`shmport::Listener`] — talks
/// to the port the server accepted. This is what the
/// `shmport-zenoh-bridge` program does for every local connection, so that
/// C, C++ and Python programs reach remote peers with the ordinary
/// `connect` and without linking zenoh. Fails as [`connect`]; the error
/// hands `port` back, untouched.
// The port comes back by value, as the core's `SplitError` does: a rare
// path, not worth a box.
#[allow(clippy::result_large_err)]
pub fn connect_port(
    session: &Session,
    key: &str,
    port: MessagePort,
    options: &Options,
) -> Result<(), ConnectPortError> {
    let me = keys::new_id(session);
    let declared = match endpoint::declare(session, me) {
        Ok(d) => d,
        Err(error) => return Err(ConnectPortError { error, port }),
    };
    match accepted_by(session, key, me, options) {
        Ok(server) => declared
            .start(port, Bind::Expect(server), options)
            .map_err(|(error, port)| ConnectPortError { error, port }),
        Err(error) => Err(ConnectPortError { error, port }),
    }
}

/// Ask `key` for a connection for endpoint `me`: the id of the endpoint
/// that accepted.
fn accepted_by(
    session: &Session,
    key: &str,
    me: EndpointId,
    options: &Options,
) -> io::Result<EndpointId> {
    let reply = ask(session, key, me, options.open_timeout)?;
    let sample = reply.into_result().map_err(|e| {
        let why = String::from_utf8_lossy(&e.payload().to_bytes()).into_owned();
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("the server refused: {why}"),
        )
    })?;
    frame::decode_hello(&sample.payload().to_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad server reply: {e}")))
}

/// Ask `key` for a connection until a server answers or `timeout` passes
/// (a server whose declaration has not reached this session yet is not
/// asked: a session just opened may need a moment).
fn ask(session: &Session, key: &str, me: EndpointId, timeout: Duration) -> io::Result<Reply> {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let replies = session
            .get(key.to_owned())
            .payload(frame::hello(me))
            .target(QueryTarget::BestMatching)
            .timeout(left.max(Duration::from_millis(1)))
            .wait()
            .map_err(zenoh_error)?;
        if let Ok(reply) = replies.recv() {
            return Ok(reply);
        }
        if Instant::now() >= until || session.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no shmport-zenoh server answered on {key:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
