//! Push receiving (`PushPort`) across real processes: nothing before
//! `start()`, order kept, the close listener once after the last message,
//! listener panics, and an application-driven loop.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Victim, peer, role};
use shmport::push::PushPort;
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
    push.port().post_bytes(b"go").unwrap();
    let dispatcher = push.start().unwrap();
    assert_eq!(dispatcher.join().unwrap(), CloseReason::Closed);
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
    assert_eq!(dispatcher.join().unwrap(), CloseReason::PeerDied);
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
    assert_eq!(push.run(), CloseReason::Closed);
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
    push.port().post_bytes(b"go").unwrap();
    let reason = loop {
        if push.prepare_poll() {
            let mut fds = [PollFd::new(&push, PollFlags::IN)];
            poll(&mut fds, None).unwrap();
        }
        if let Some(r) = push.dispatch_ready() {
            break r;
        }
    };
    assert_eq!(reason, CloseReason::Closed);
    assert_eq!(push.dispatch_ready(), Some(CloseReason::Closed));
    assert_eq!(*events.lock().unwrap(), expected(CloseReason::Closed));
    victim.wait_success();
}
