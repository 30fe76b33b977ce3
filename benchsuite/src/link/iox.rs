//! iceoryx2: two publish-subscribe services of `[u8]` slices (one per
//! direction). The sender loans a slice in the shared data segment, copies
//! the payload into it and sends it; the receiver reads the sample in place.
//!
//! Busy-poll path: the receiver calls `receive` in a loop. Sleep path
//! ("iceoryx2 + event"): each direction also has an event service; the
//! sender notifies after every send and a receiver that finds nothing waits
//! on its listener, the pattern iceoryx2's event-based examples use. In both
//! paths a sender whose subscriber's queue is full retries until there is
//! room (`RetryUntilDelivered`), spinning.
//!
//! Every file iceoryx2 creates goes under this run's own directory and
//! `/dev/shm` prefix (see `cleanup`).

use std::process::Command;
use std::time::{Duration, Instant};

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample;
use iceoryx2::service::port_factory::{event, publish_subscribe};

use super::{Link, Session};
use crate::peer::Peer;
use crate::plan::{Wait, iceoryx2_queue};
use crate::{Result, cleanup};

/// The base of the services' names, for the peer.
const NAME_ENV: &str = "SHMPORT_BENCHSUITE_IOX_SERVICE";
/// A receiver that has seen nothing for this long gives up.
const SILENCE: Duration = Duration::from_secs(60);

type PubSub = publish_subscribe::PortFactory<ipc::Service, [u8], ()>;
type Event = event::PortFactory<ipc::Service>;

pub struct IoxLink {
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    wake: Option<(Notifier<ipc::Service>, Listener<ipc::Service>)>,
    // Dropped after the ports, before the node.
    _services: (PubSub, PubSub, Option<(Event, Event)>),
    _node: Node<ipc::Service>,
}

fn err(what: &str, e: impl std::fmt::Debug) -> crate::Error {
    format!("iceoryx2: {what}: {e:?}").into()
}

/// iceoryx2's settings for this run: its files under the run's directory,
/// its shared memory objects named with the run's prefix.
pub fn config() -> Result<Config> {
    let paths = cleanup::paths();
    let mut config = Config::default();
    let root = format!("{}/iceoryx2/", paths.dir.display());
    config
        .global
        .set_root_path(&Path::new(root.as_bytes()).map_err(|e| err("root path", e))?);
    config.global.prefix =
        FileName::new(paths.shm_prefix.as_bytes()).map_err(|e| err("prefix", e))?;
    Ok(config)
}

pub fn node(config: &Config) -> Result<Node<ipc::Service>> {
    NodeBuilder::new()
        .config(config)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(|e| err("node", e))
}

/// A publish-subscribe service for one direction; the suite creates it,
/// the peer opens it with the same settings.
pub fn pubsub(node: &Node<ipc::Service>, name: &str, queue: usize, create: bool) -> Result<PubSub> {
    let builder = node
        .service_builder(&ServiceName::new(name).map_err(|e| err("service name", e))?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2)
        .history_size(0)
        .subscriber_max_buffer_size(queue)
        .subscriber_max_borrowed_samples(2)
        .enable_safe_overflow(false);
    if create {
        builder.create().map_err(|e| err("create service", e))
    } else {
        builder.open().map_err(|e| err("open service", e))
    }
}

fn event(node: &Node<ipc::Service>, name: &str, create: bool) -> Result<Event> {
    let builder = node
        .service_builder(&ServiceName::new(name).map_err(|e| err("event name", e))?)
        .event()
        .max_notifiers(1)
        .max_listeners(1)
        .max_nodes(2);
    if create {
        builder.create().map_err(|e| err("create event", e))
    } else {
        builder.open().map_err(|e| err("open event", e))
    }
}

pub fn publisher(service: &PubSub, max_len: usize) -> Result<Publisher<ipc::Service, [u8], ()>> {
    service
        .publisher_builder()
        .initial_max_slice_len(max_len)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .max_loaned_samples(1)
        .create()
        .map_err(|e| err("publisher", e))
}

pub fn subscriber(service: &PubSub, queue: usize) -> Result<Subscriber<ipc::Service, [u8], ()>> {
    service
        .subscriber_builder()
        .buffer_size(queue)
        .create()
        .map_err(|e| err("subscriber", e))
}

/// Open (peer) or create (suite) everything for `session`; `out` is the
/// suite-to-peer direction.
fn open(session: &Session, base: &str, suite: bool) -> Result<IoxLink> {
    let node = node(&config()?)?;
    let queue = iceoryx2_queue(session.size);
    let out = pubsub(&node, &format!("{base}/out"), queue, suite)?;
    let back = pubsub(&node, &format!("{base}/back"), queue, suite)?;
    let events = match session.transport.wait {
        Wait::BusyPoll => None,
        Wait::Sleep => Some((
            event(&node, &format!("{base}/out-event"), suite)?,
            event(&node, &format!("{base}/back-event"), suite)?,
        )),
    };
    let (publisher, subscriber) = if suite {
        (
            publisher(&out, session.out_len())?,
            subscriber(&back, queue)?,
        )
    } else {
        (
            publisher(&back, session.back_len())?,
            subscriber(&out, queue)?,
        )
    };
    let wake = match &events {
        None => None,
        Some((out_event, back_event)) => {
            let (to_peer, from_peer) = if suite {
                (out_event, back_event)
            } else {
                (back_event, out_event)
            };
            Some((
                to_peer
                    .notifier_builder()
                    .create()
                    .map_err(|e| err("notifier", e))?,
                from_peer
                    .listener_builder()
                    .create()
                    .map_err(|e| err("listener", e))?,
            ))
        }
    };
    Ok(IoxLink {
        publisher,
        subscriber,
        wake,
        _services: (out, back, events),
        _node: node,
    })
}

pub fn parent(session: &Session, mut cmd: Command, tag: &str) -> Result<(IoxLink, Peer)> {
    let base = format!("shmport-benchsuite/{}/{tag}", std::process::id());
    let link = open(session, &base, true)?;
    cmd.env(NAME_ENV, &base);
    let child = cmd.spawn()?;
    Ok((link, Peer::new(child, session.transport.name().into())))
}

pub fn child(session: &Session) -> Result<IoxLink> {
    let base = std::env::var(NAME_ENV).map_err(|_| "no iceoryx2 service name")?;
    open(session, &base, false)
}

/// Loan a slice, copy `bytes` in, send; then notify on the sleep path.
/// Before the peer's subscriber is connected a send reaches nobody: that
/// only happens at the start of a session (or of a set-up), and is retried
/// at once.
pub fn publish(
    publisher: &Publisher<ipc::Service, [u8], ()>,
    notifier: Option<&Notifier<ipc::Service>>,
    bytes: &[u8],
) -> Result<()> {
    let mut since = None;
    loop {
        let sample = publisher
            .loan_slice_uninit(bytes.len())
            .map_err(|e| err("loan", e))?;
        let delivered = sample
            .write_from_slice(bytes)
            .send()
            .map_err(|e| err("send", e))?;
        if delivered > 0 {
            break;
        }
        let t0 = *since.get_or_insert_with(Instant::now);
        if t0.elapsed() > SILENCE {
            return Err("iceoryx2: no subscriber connected in 60 s".into());
        }
        std::hint::spin_loop();
    }
    if let Some(n) = notifier {
        n.notify().map_err(|e| err("notify", e))?;
    }
    Ok(())
}

/// The next sample: polled for (busy-poll path), or waited for on the
/// listener when there is none (sleep path).
pub fn next_sample(
    subscriber: &Subscriber<ipc::Service, [u8], ()>,
    listener: Option<&Listener<ipc::Service>>,
) -> Result<Sample<ipc::Service, [u8], ()>> {
    let mut polls = 0u32;
    let mut since = None;
    loop {
        if let Some(s) = subscriber.receive().map_err(|e| err("receive", e))? {
            return Ok(s);
        }
        match listener {
            Some(l) => {
                l.timed_wait(|_| {}, Duration::from_millis(100))
                    .map_err(|e| err("wait", e))?;
            }
            None => std::hint::spin_loop(),
        }
        polls = polls.wrapping_add(1);
        if listener.is_some() || polls.is_multiple_of(4096) {
            let t0 = *since.get_or_insert_with(Instant::now);
            if t0.elapsed() > SILENCE {
                return Err("iceoryx2: no message from the peer in 60 s".into());
            }
        }
    }
}

impl Link for IoxLink {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        publish(&self.publisher, self.wake.as_ref().map(|w| &w.0), payload)
    }

    fn recv<R>(&mut self, _len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let sample = next_sample(&self.subscriber, self.wake.as_ref().map(|w| &w.1))?;
        Ok(f(sample.payload()))
    }

    fn echo(&mut self, _len: usize, f: impl FnOnce(&[u8]) -> bool) -> Result<bool> {
        let sample = next_sample(&self.subscriber, self.wake.as_ref().map(|w| &w.1))?;
        let again = f(sample.payload());
        if again {
            publish(
                &self.publisher,
                self.wake.as_ref().map(|w| &w.0),
                sample.payload(),
            )?;
        }
        Ok(again)
    }
}
