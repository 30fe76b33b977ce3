//! Waiting for room to post, across processes: fill the ring, announce the
//! wait (`prepare_post_poll`), poll the port's descriptor; the peer's
//! receive, or its close, wakes the poll, and the post then goes through
//! (or reports the close). And the spin an event loop makes for the next
//! message before it sleeps (`spin_for_event`).

mod common;

use std::io::BufRead;
use std::os::fd::AsFd;
use std::process::Stdio;

use common::{Victim, peer, role};
use rustix::event::{PollFd, PollFlags, poll};
use shmport::{ChannelBuilder, CloseReason, MessagePort, PostError, RecvError};

/// Payload sizes: in the ring, and out of line (over half of it).
const SMALL: usize = 300;

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        // Reads commands from stdin: "read N" receives N messages, "drain"
        // finds no more, "close" drops the port.
        "reader" => {
            let port = MessagePort::from_parent().unwrap();
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let line = line.unwrap();
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("read") => {
                        let n: usize = words.next().unwrap().parse().unwrap();
                        for _ in 0..n {
                            let m = port.recv().unwrap();
                            assert!(m.bytes().iter().all(|&b| b == 7));
                        }
                        println!("READ");
                    }
                    // Nothing more: the empty receive publishes the room.
                    Some("drain") => {
                        assert!(matches!(port.try_recv(), Err(RecvError::Empty)));
                        println!("EMPTY");
                    }
                    Some("close") => {
                        drop(port);
                        return;
                    }
                    other => panic!("unknown command {other:?}"),
                }
            }
        }
        // Posts one message for each "post" line, after saying READY.
        "poster" => {
            let port = MessagePort::from_parent().unwrap();
            println!("READY");
            for line in std::io::stdin().lock().lines() {
                assert_eq!(line.unwrap(), "post");
                port.post_bytes(b"posted").unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Post `len`-byte messages until the ring is full; how many went in.
fn fill(port: &MessagePort, len: usize) -> usize {
    let mut n = 0;
    loop {
        match port.try_post_bytes(&vec![7; len]) {
            Ok(()) => n += 1,
            Err(PostError::Full) => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Poll the port's descriptor for `POLLIN` with no timeout.
fn wait_readable(port: &MessagePort) {
    let fd = port.as_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    poll(&mut fds, None).unwrap();
    assert!(fds[0].revents().contains(PollFlags::IN));
}

fn reader() -> (Victim, MessagePort) {
    let mut cmd = peer("reader");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let (child, port) = ChannelBuilder::new()
        .capacity(shmport::MIN_CAPACITY)
        .spawn(cmd)
        .unwrap();
    (Victim::new(child), port)
}

#[test]
fn a_full_ring_wakes_the_poll_when_the_peer_reads_and_when_it_closes() {
    let (mut child, port) = reader();
    let big = port.max_inline_payload() + 1;
    for len in [SMALL, big] {
        let n = fill(&port, len);
        assert!(n > 0);
        assert!(port.prepare_post_poll(len), "{len}: the ring is full");
        child.say(&format!("read {n}"));
        wait_readable(&port);
        port.end_post_poll().unwrap();
        port.try_post_bytes(&vec![7; len]).unwrap();
        child.wait_for("READ");
        child.say("read 1");
        child.wait_for("READ");
        child.say("drain");
        child.wait_for("EMPTY");
        // The room is there: nothing to wait for.
        assert!(!port.prepare_post_poll(len));
    }
    // Full again; the peer closes instead of reading.
    fill(&port, SMALL);
    assert!(port.prepare_post_poll(SMALL));
    child.say("close");
    wait_readable(&port);
    port.end_post_poll().unwrap();
    match port.try_post_bytes(&[7; SMALL]) {
        Err(PostError::Closed(CloseReason::Closed | CloseReason::PeerDied)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        !port.prepare_post_poll(SMALL),
        "closed: nothing to wait for"
    );
    child.wait_success();
}

/// `spin_for_event` (the look for the next message an event loop makes
/// before it sleeps) returns at a message posted by another process, and
/// at that process's death; with nothing coming it returns `false`.
#[test]
fn spinning_for_an_event_sees_a_message_from_a_process_and_its_death() {
    let mut cmd = peer("poster");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let (child, port) = ChannelBuilder::new().spawn(cmd).unwrap();
    let mut child = Victim::new(child);
    child.wait_for("READY");
    port.set_spin(std::time::Duration::ZERO);
    assert!(!port.spin_for_event().unwrap(), "nothing was posted");
    // A spin far longer than the test: only the event ends it.
    port.set_spin(std::time::Duration::from_secs(600));
    child.say("post");
    assert!(port.spin_for_event().unwrap());
    assert_eq!(port.try_recv().unwrap().bytes(), b"posted");
    child.kill();
    assert!(port.spin_for_event().unwrap());
    assert!(matches!(
        port.try_recv(),
        Err(RecvError::Closed(CloseReason::PeerDied))
    ));
}
