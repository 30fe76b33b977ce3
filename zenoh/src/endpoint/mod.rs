//! An endpoint: one bridged port end. Its thread pumps the messages of a
//! local shmport port (the bridge's end of a channel whose other end the
//! application holds) to a peer endpoint on another host, and the peer's
//! messages back into the port.
//!
//! Lifecycle: an endpoint is *bound* to its peer from the start (the
//! accepting side of a connection, the receiving side of a transferred
//! port) or binds to the first endpoint that sends it an OPEN (the
//! connecting side, the sending side of a transferred port). Once bound it
//! publishes to the peer's key, watches the peer's liveliness token, and
//! sends its own OPEN (its window). Data flows once each side has the
//! other's OPEN. It ends when both sides closed (CLOSE, then CLOSE_ACK),
//! when the peer dies or breaks the protocol (the port closes with that
//! reason, after the messages that fully arrived), or when the session
//! closes.
//!
//! Here: the state and the loop; frames from the peer in [`inbound`],
//! messages to it in [`outbound`].

mod inbound;
mod outbound;

use std::io;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use shmport::{CloseReason, MessagePort};
use zenoh::Session;
use zenoh::Wait;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::SampleKind;

use crate::frame::{self, EndpointId};
use crate::idle;
use crate::inbox::{Event, Inbox};
use crate::keys;
use crate::options::Options;

/// How long an idle endpoint spins (looking at its inbox and its port)
/// before it sleeps.
const SPIN: Duration = Duration::from_micros(20);

/// How often an idle endpoint looks whether its session closed.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What the endpoint knows about its peer.
struct Peer {
    id: EndpointId,
    publisher: Publisher<'static>,
    /// The peer's liveliness token, watched.
    _watch: Subscriber<()>,
    seen_alive: bool,
    /// The peer's OPEN arrived: its window (what this side may have in
    /// flight), and the chunk size that follows from it.
    window: Option<u64>,
}

/// One bridged port end and its thread's state.
pub(crate) struct Endpoint {
    session: Session,
    me: EndpointId,
    options: Options,
    inbox: Arc<Inbox>,
    /// The bridge's end of the local channel; `None` once closed.
    port: Option<MessagePort>,
    /// Set at creation (bound) or by the first OPEN.
    peer: Option<Peer>,
    /// `connect` learned who accepted: the OPEN must come from it.
    expected: Option<EndpointId>,
    /// Binding, seeing the peer alive, and the CLOSE_ACK must happen
    /// before this instant.
    deadline: Option<Instant>,
    _subscriber: Subscriber<()>,
    _token: LivelinessToken,
    tx: outbound::Sending,
    rx: inbound::Receiving,
    /// The peer is gone (with this reason): deliver what arrived whole,
    /// then close the port with it.
    gone: Option<CloseReason>,
    finished: bool,
}

/// Whom an endpoint binds to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind {
    /// This peer, from the start (the accepting side, the receiving side
    /// of a transferred port).
    To(EndpointId),
    /// The first endpoint that sends OPEN, which must be this one (the
    /// connecting side: the server named it).
    Expect(EndpointId),
    /// The first endpoint that sends OPEN (the sending side of a
    /// transferred port).
    Any,
}

/// An endpoint declared on the key space — its subscriber and liveliness
/// token, so that frames sent to it from now on arrive — and not yet
/// bridging a port.
pub(crate) struct Declared {
    session: Session,
    me: EndpointId,
    inbox: Arc<Inbox>,
    subscriber: Subscriber<()>,
    token: LivelinessToken,
}

/// Declare endpoint `me`.
pub(crate) fn declare(session: &Session, me: EndpointId) -> io::Result<Declared> {
    let inbox = Arc::new(Inbox::new()?);
    let frames = Arc::clone(&inbox);
    let subscriber = session
        .declare_subscriber(keys::port_key(me))
        .callback(move |sample| frames.push(Event::Frame(sample.payload().clone())))
        .wait()
        .map_err(zenoh_error)?;
    let token = session
        .liveliness()
        .declare_token(keys::alive_key(me))
        .wait()
        .map_err(zenoh_error)?;
    Ok(Declared {
        session: session.clone(),
        me,
        inbox,
        subscriber,
        token,
    })
}

/// Declare endpoint `me` and start it bridging `port` ([`Declared::start`]);
/// on failure the port is closed.
pub(crate) fn spawn(
    session: &Session,
    me: EndpointId,
    bind: Bind,
    port: MessagePort,
    options: &Options,
) -> io::Result<()> {
    declare(session, me)?
        .start(port, bind, options)
        .map_err(|(e, _port)| e)
}

impl Declared {
    /// Start the endpoint's thread, bridging `port`. Fails only when no
    /// thread can be made; then the port comes back, untouched.
    // The port comes back by value, as the core's `SplitError` does: a
    // rare path, not worth a box.
    #[allow(clippy::result_large_err)]
    pub(crate) fn start(
        self,
        port: MessagePort,
        bind: Bind,
        options: &Options,
    ) -> Result<(), (io::Error, MessagePort)> {
        // The thread starts first and is handed the endpoint after: if it
        // cannot start, the port is still here to give back.
        let (handover, taken) = mpsc::sync_channel::<Endpoint>(1);
        let guard = idle::Running::start();
        let started = thread::Builder::new()
            .name("shmport-zenoh".into())
            .spawn(move || {
                let _guard = guard;
                let Ok(mut endpoint) = taken.recv() else {
                    return;
                };
                if let Bind::To(peer) = bind {
                    endpoint.bind(peer);
                }
                endpoint.run();
            });
        if let Err(e) = started {
            return Err((e, port));
        }
        let endpoint = Endpoint {
            session: self.session,
            me: self.me,
            options: options.clone(),
            inbox: self.inbox,
            port: Some(port),
            peer: None,
            expected: match bind {
                Bind::Expect(id) => Some(id),
                _ => None,
            },
            deadline: Some(Instant::now() + options.open_timeout),
            _subscriber: self.subscriber,
            _token: self.token,
            tx: outbound::Sending::default(),
            rx: inbound::Receiving::default(),
            gone: None,
            finished: false,
        };
        // The thread waits for it: the send cannot fail.
        let _ = handover.send(endpoint);
        Ok(())
    }
}

/// A zenoh error as an I/O error (what the public API returns).
pub(crate) fn zenoh_error(e: zenoh::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl Endpoint {
    fn run(&mut self) {
        let mut idle_since: Option<Instant> = None;
        while !self.finished {
            let mut progress = false;
            for event in self.inbox.take() {
                progress = true;
                self.on_event(event);
                if self.finished {
                    return;
                }
            }
            progress |= self.deliver();
            progress |= self.pump_out();
            self.grant_credit();
            self.check_end();
            if progress || self.finished {
                idle_since = None;
                continue;
            }
            // Spin a little before sleeping: a sleep and its wake-up cost
            // tens of microseconds between cores, paid on every hop.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            idle_since = None;
            self.wait();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Frame(bytes) => self.on_frame(&bytes.to_bytes()),
            Event::PeerAlive => {
                if let Some(p) = &mut self.peer {
                    p.seen_alive = true;
                    self.deadline = None;
                }
            }
            Event::PeerGone => self.peer_gone(CloseReason::PeerDied),
        }
    }

    /// Bind to `peer`: publish to it (once zenoh knows its subscriber),
    /// watch its liveliness, send OPEN.
    fn bind(&mut self, peer: EndpointId) {
        let publisher = match self
            .session
            .declare_publisher(keys::port_key(peer))
            .congestion_control(CongestionControl::Block)
            .express(true)
            .wait()
        {
            Ok(p) => p,
            Err(_) => return self.peer_gone(CloseReason::PeerDied),
        };
        let events = Arc::clone(&self.inbox);
        let watch = self
            .session
            .liveliness()
            .declare_subscriber(keys::alive_key(peer))
            .history(true)
            .callback(move |sample| {
                events.push(match sample.kind() {
                    SampleKind::Put => Event::PeerAlive,
                    SampleKind::Delete => Event::PeerGone,
                })
            })
            .wait();
        let Ok(watch) = watch else {
            return self.peer_gone(CloseReason::PeerDied);
        };
        // Frames published before zenoh learned of the peer's subscriber
        // would go nowhere: wait for it (bounded by the deadline).
        let until = self
            .deadline
            .unwrap_or_else(|| Instant::now() + self.options.open_timeout);
        while !matches!(publisher.matching_status().wait(), Ok(s) if s.matching()) {
            if Instant::now() >= until || self.session.is_closed() {
                return self.peer_gone(CloseReason::PeerDied);
            }
            thread::sleep(Duration::from_millis(1));
        }
        self.peer = Some(Peer {
            id: peer,
            publisher,
            _watch: watch,
            seen_alive: false,
            window: None,
        });
        self.deadline = Some(Instant::now() + self.options.open_timeout);
        self.rx.granted = self.options.window;
        self.send(frame::open(self.me, self.options.window));
    }

    /// Publish a frame to the peer; a session that cannot is as good as a
    /// dead peer.
    fn send(&mut self, bytes: Vec<u8>) {
        let Some(peer) = &self.peer else { return };
        if peer.publisher.put(bytes).wait().is_err() {
            self.peer_gone(CloseReason::PeerDied);
        }
    }

    /// The peer is gone: from here on nothing is read from it or sent to
    /// it; what arrived whole is delivered, then the port closes with
    /// `reason`.
    fn peer_gone(&mut self, reason: CloseReason) {
        if self.gone.is_none() {
            self.gone = Some(reason);
        }
        self.rx.discard_partial();
        self.check_end();
    }

    /// The peer (or someone on its key) broke the protocol: tell it, and
    /// close this port only.
    fn protocol_error(&mut self, _why: &'static str) {
        if self.gone.is_none() {
            self.send(frame::abort(self.me));
        }
        self.gone = Some(CloseReason::ProtocolError);
        self.rx.discard_partial();
        self.check_end();
    }

    /// Has the endpoint's work ended? Closes the port as it ends.
    fn check_end(&mut self) {
        if self.finished {
            return;
        }
        if self.session.is_closed() && self.gone.is_none() {
            self.gone = Some(CloseReason::PeerDied);
        }
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline && self.gone.is_none() {
                // Never bound, never saw the peer alive, or never got the
                // CLOSE_ACK: the peer is not there.
                self.gone = Some(CloseReason::PeerDied);
                if self.tx.close_sent {
                    self.finished = true;
                }
            }
        }
        if let Some(reason) = self.gone {
            if self.rx.ready.is_empty() || self.port.is_none() {
                if let Some(port) = self.port.take() {
                    port.close_with_reason(reason);
                }
                self.finished = true;
            }
            return;
        }
        // The local port closed and the peer confirmed it got everything,
        // or the peer closed and everything it sent is delivered.
        if self.tx.close_acked {
            self.port = None;
            self.finished = true;
        } else if self.rx.peer_closed_and_delivered() {
            if let Some(port) = self.port.take() {
                port.close_with_reason(self.rx.peer_close_why.unwrap_or(CloseReason::Closed));
            }
            self.send(frame::close_ack(self.me));
            self.finished = true;
        } else if self.peer.is_none() && self.tx.local_closed.is_some() {
            // Closed before anyone bound to it: nobody to tell.
            self.finished = true;
        }
    }

    /// Sleep until the port, the inbox or the clock has something.
    fn wait(&mut self) {
        let mut post_armed = false;
        let mut port_armed = false;
        if let Some(port) = &self.port {
            if self.tx.wants_port() && self.peer_ready() {
                if !port.prepare_poll() {
                    return;
                }
                port_armed = true;
            }
            if let Some(len) = self.rx.blocked_len {
                if !port.prepare_post_poll(len) {
                    return;
                }
                post_armed = true;
            }
        }
        let mut timeout = LOOK_EVERY;
        if let Some(d) = self.deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let inbox = Arc::clone(&self.inbox);
        let mut fds = vec![PollFd::new(&*inbox, PollFlags::IN)];
        if let (Some(port), true) = (&self.port, port_armed || post_armed) {
            fds.push(PollFd::new(port, PollFlags::IN));
        }
        if self.inbox.prepare_sleep() {
            // EINTR and the like: the loop looks again.
            let _ = poll(&mut fds, Some(&ts));
        }
        self.inbox.end_sleep();
        drop(fds);
        if post_armed {
            if let Some(port) = &self.port {
                let _ = port.end_post_poll();
            }
        }
        self.check_end();
    }

    /// Bound, and the peer's OPEN arrived: data may flow.
    fn peer_ready(&self) -> bool {
        self.gone.is_none() && matches!(&self.peer, Some(p) if p.window.is_some())
    }
}
