//! Push receiving (`PushPort`) across real processes: nothing before
//! `start()`, order kept, the close listener once after the last message,
//! listener panics, and an application-driven loop.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Victim, peer, role};
use shmport::push::{Ended, PushPort};
use shmport::{CloseReason, MessagePort, RecvError};

const N: u64 = 500;

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        "post-n-then-wait" => {
            for i in 0..N {
                port.post(&i).unwrap();
            }
            println!("posted");
            // Until the parent says go, then close by returning.
            let m = port.recv().unwrap();
            assert_eq!(m.bytes(), b"go");
        }
        "post-n-then-hang" => {
            for i in 0..N {
                port.post(&i).unwrap();
            }
            println!("posted");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "ask" => {
            // Questions, each answered through the listener's port.
            for i in 0..N {
                port.post(&i).unwrap();
                let a = port.recv().unwrap();
                assert_eq!(*a.get::<u64>().unwrap(), i * 2);
            }
        }
        "post-n-expect-bye-then-close" => {
            for i in 0..N {
                port.post(&i).unwrap();
            }
            println!("posted");
            // What the listener posted before it closed, then the close.
            assert_eq!(port.recv().unwrap().bytes(), b"bye");
            match port.recv() {
                Err(RecvError::Closed(CloseReason::Closed)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
        "start-without-a-thread" => {
            // No address space for a thread's stack: the start fails and
            // hands the push port back, which then runs here.
            use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
            let got = Arc::new(Mutex::new(Vec::new()));
            let seen = got.clone();
            let mut push = PushPort::new(port);
            push.on_message(move |m, _| seen.lock().unwrap().push(*m.get::<u64>().unwrap()));
            let was = getrlimit(Resource::As);
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let vm_kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            let tight = Rlimit {
                current: Some((vm_kib + 256) * 1024),
                maximum: was.maximum,
            };
            setrlimit(Resource::As, tight).unwrap();
            let failed = push.start();
            setrlimit(Resource::As, was).unwrap();
            let push = match failed {
                Ok(_) => panic!("a dispatcher thread started without address space"),
                Err(e) => e.push,
            };
            // Still open and connected: tell the parent, then deliver here.
            push.port().unwrap().post_bytes(b"ready").unwrap();
            assert!(matches!(push.run(), Ended::PeerGone(CloseReason::Closed)));
            assert_eq!(*got.lock().unwrap(), (0..N).collect::<Vec<_>>());
        }
        "expect-close" => {
            port.post(&0u64).unwrap();
            match port.recv() {
                Err(RecvError::Closed(CloseReason::Closed)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str) -> (Victim, MessagePort) {
    let mut cmd = peer(role);
    cmd.stdout(Stdio::piped());
    let (child, port) = shmport::spawn(cmd).unwrap();
    (Victim::new(child), port)
}

#[derive(Debug, PartialEq)]
enum Event {
    Message(u64),
    Close(CloseReason),
}

fn recording(push: &mut PushPort) -> Arc<Mutex<Vec<Event>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (e1, e2) = (events.clone(), events.clone());
    push.on_message(move |m, _| {
        e1.lock()
            .unwrap()
            .push(Event::Message(m.get::<u64>().unwrap().to_native()))
    })
    .on_close(move |r| e2.lock().unwrap().push(Event::Close(r)));
    events
}

fn expected(reason: CloseReason) -> Vec<Event> {
    let mut v: Vec<Event> = (0..N).map(Event::Message).collect();
    v.push(Event::Close(reason));
    v
}

#[test]
fn nothing_before_start_then_in_order_then_one_close() {
    let (mut victim, port) = spawn("post-n-then-wait");
    victim.wait_for("posted");
    let mut push = PushPort::new(port);
    let events = recording(&mut push);
    // Listeners registered, everything posted: still nothing delivered.
    std::thread::sleep(Duration::from_millis(50));
    assert!(events.lock().unwrap().is_empty());
    push.port().unwrap().post_bytes(b"go").unwrap();
    let dispatcher = push.start().unwrap();
    assert_eq!(
        dispatcher.join().unwrap(),
        Ended::PeerGone(CloseReason::Closed)
    );
    assert_eq!(*events.lock().unwrap(), expected(CloseReason::Closed));
    victim.wait_success();
}

#[test]
fn a_killed_peer_is_a_close_after_its_messages() {
    let (mut victim, port) = spawn("post-n-then-hang");
    victim.wait_for("posted");
    let mut push = PushPort::new(port);
    let events = recording(&mut push);
    let dispatcher = push.start().unwrap();
    victim.kill();
    assert_eq!(
        dispatcher.join().unwrap(),
        Ended::PeerGone(CloseReason::PeerDied)
    );
    assert_eq!(*events.lock().unwrap(), expected(CloseReason::PeerDied));
}

#[test]
fn listeners_reply_through_the_port_on_the_calling_thread() {
    let (victim, port) = spawn("ask");
    let mut push = PushPort::new(port);
    let (tx, rx) = mpsc::channel();
    push.on_message(|m, port| {
        let q = m.get::<u64>().unwrap().to_native();
        drop(m);
        port.post(&(q * 2)).unwrap();
    })
    .on_close(move |r| tx.send(r).unwrap());
    assert_eq!(push.run(), Ended::PeerGone(CloseReason::Closed));
    assert_eq!(rx.try_recv().unwrap(), CloseReason::Closed);
    assert!(rx.try_recv().is_err(), "the close listener ran twice");
    victim.wait_success();
}

#[test]
fn a_panicking_listener_stops_the_dispatcher_and_closes_the_port() {
    let (victim, port) = spawn("expect-close");
    let mut push = PushPort::new(port);
    let (tx, rx) = mpsc::channel::<CloseReason>();
    push.on_message(|_, _| panic!("listener failed"))
        .on_close(move |r| tx.send(r).unwrap());
    let dispatcher = push.start().unwrap();
    let panic = dispatcher.join().unwrap_err();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"listener failed"));
    // The close listener did not run; the peer saw a close.
    assert!(rx.try_recv().is_err());
    victim.wait_success();
}

#[test]
fn an_application_loop_drives_dispatch_with_poll() {
    use rustix::event::{PollFd, PollFlags, poll};
    let (mut victim, port) = spawn("post-n-then-wait");
    victim.wait_for("posted");
    port.set_spin(Duration::ZERO);
    let mut push = PushPort::new(port);
    let events = recording(&mut push);
    // Deliver what is there, then say go: the rest is the close.
    assert_eq!(push.dispatch_ready(), None);
    push.port().unwrap().post_bytes(b"go").unwrap();
    let reason = loop {
        if push.prepare_poll() {
            let mut fds = [PollFd::new(&push, PollFlags::IN)];
            poll(&mut fds, None).unwrap();
        }
        if let Some(r) = push.dispatch_ready() {
            break r;
        }
    };
    assert_eq!(reason, Ended::PeerGone(CloseReason::Closed));
    assert_eq!(
        push.dispatch_ready(),
        Some(Ended::PeerGone(CloseReason::Closed))
    );
    assert_eq!(*events.lock().unwrap(), expected(CloseReason::Closed));
    victim.wait_success();
}

/// Wait for `f` on another thread; a test that would hang fails instead.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("did not return (a sleeping dispatcher not woken?)")
}

/// Electron's `port.close()` on a started port: the dispatcher asleep in
/// its wait wakes, ends, and the peer process sees the close.
#[test]
fn closing_a_started_port_wakes_its_sleeping_dispatcher_and_the_peer_sees_closed() {
    let (victim, port) = spawn("expect-close");
    let mut push = PushPort::new(port);
    let (tx, rx) = mpsc::channel();
    let (close_tx, close_rx) = mpsc::channel::<CloseReason>();
    push.on_message(move |m, _| tx.send(m.get::<u64>().unwrap().to_native()).unwrap())
        .on_close(move |r| close_tx.send(r).unwrap());
    let dispatcher = push.start().unwrap();
    // Its one message delivered; the peer posts nothing more, so the
    // dispatcher goes to sleep waiting.
    assert_eq!(rx.recv().unwrap(), 0);
    let closer = dispatcher.closer();
    let ended = within_a_minute(move || dispatcher.close().unwrap());
    assert_eq!(ended, Ended::ClosedHere);
    // The close listener is the peer's close event: it did not run.
    assert!(close_rx.try_recv().is_err());
    // Closing again does nothing.
    closer.close();
    victim.wait_success();
}

/// The web's `port.close()` inside `onmessage`: no message event after it,
/// though more messages were already queued; what the listener posted
/// before closing reaches the peer before its close event.
#[test]
fn a_listener_closes_its_port_and_no_message_is_delivered_after() {
    let (mut victim, port) = spawn("post-n-expect-bye-then-close");
    victim.wait_for("posted");
    let mut push = PushPort::new(port);
    let closer = push.closer();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    push.on_message(move |m, port| {
        let i = m.get::<u64>().unwrap().to_native();
        seen2.lock().unwrap().push(i);
        if i == 10 {
            port.post_bytes(b"bye").unwrap();
            closer.close();
        }
    })
    .on_close(|r| panic!("the close listener ran: {r}"));
    let dispatcher = push.start().unwrap();
    assert_eq!(dispatcher.join().unwrap(), Ended::ClosedHere);
    // All N were queued; only 0..=10 were delivered.
    assert_eq!(*seen.lock().unwrap(), (0..=10).collect::<Vec<u64>>());
    victim.wait_success();
}

/// The same on the calling thread (`run`) and in an application's loop
/// (`dispatch_ready`).
#[test]
fn a_listener_closes_its_port_on_the_calling_thread_and_in_an_application_loop() {
    use rustix::event::{PollFd, PollFlags, poll};
    use shmport::MessageChannel;

    let (a, b) = MessageChannel::new().unwrap().into_ports();
    for i in 0..5u64 {
        a.post(&i).unwrap();
    }
    let mut push = PushPort::new(b);
    let closer = push.closer();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    push.on_message(move |m, _| {
        let i = m.get::<u64>().unwrap().to_native();
        seen2.lock().unwrap().push(i);
        if i == 2 {
            closer.close();
        }
    });
    assert_eq!(push.run(), Ended::ClosedHere);
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    assert!(matches!(
        a.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));

    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let mut push = PushPort::new(b);
    let closer = push.closer();
    push.on_message(move |m, _| {
        if m.bytes() == b"stop" {
            closer.close();
        }
    });
    assert_eq!(push.dispatch_ready(), None);
    a.post_bytes(b"stop").unwrap();
    a.post_bytes(b"not delivered").unwrap();
    let ended = loop {
        if push.prepare_poll() {
            let mut fds = [PollFd::new(&push, PollFlags::IN)];
            poll(&mut fds, None).unwrap();
        }
        if let Some(e) = push.dispatch_ready() {
            break e;
        }
    };
    assert_eq!(ended, Ended::ClosedHere);
    assert!(push.port().is_none());
    assert!(!push.prepare_poll());
    assert_eq!(push.dispatch_ready(), Some(Ended::ClosedHere));
    // Closed now, before the PushPort is dropped.
    assert!(matches!(
        a.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    drop(push);
}

/// A start that cannot make its thread hands the push port back, open: the
/// peer sees no close, and the push port runs on the calling thread.
#[test]
fn a_failed_start_hands_the_push_port_back() {
    let (child, port) = shmport::spawn(peer("start-without-a-thread")).unwrap();
    let victim = Victim::new(child);
    assert_eq!(port.recv().unwrap().bytes(), b"ready");
    for i in 0..N {
        port.post(&i).unwrap();
    }
    drop(port);
    victim.wait_success();
}
