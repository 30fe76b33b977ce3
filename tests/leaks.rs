//! Nothing left behind: descriptors, mappings' files, processes. A test
//! binary of its own, so that no other test opens descriptors meanwhile.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{dev_shm, open_fds, peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, PortSet, RecvError, SetEvent};

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    assert_eq!(role, "echo");
    let port = MessagePort::from_parent().unwrap();
    loop {
        let m = match port.recv() {
            Ok(m) => m,
            Err(RecvError::Closed(_)) => return,
            Err(e) => panic!("{e}"),
        };
        port.post_bytes(m.bytes()).unwrap();
        if m.bytes() == b"bye" {
            // Close the port and exit normally.
            return;
        }
        if m.bytes() == b"hang" {
            println!("READY");
            loop {
                std::thread::park();
            }
        }
    }
}

#[test]
fn channels_children_and_kills_leave_no_descriptor_or_file_behind() {
    let fds_before = open_fds();
    let shm_before = dev_shm();
    let big = vec![3u8; 3 << 20];

    // In-process channels with inline and out-of-line messages, some still
    // queued when the ports drop.
    for _ in 0..20 {
        let (a, b) = MessageChannel::builder()
            .capacity(64 * 1024)
            .build()
            .unwrap()
            .into_ports();
        a.post_bytes(&big).unwrap();
        a.post(&big).unwrap();
        a.post_bytes(b"small").unwrap();
        assert_eq!(b.recv().unwrap().bytes().len(), big.len());
        drop(a);
        // One out-of-line message left unread; its memfd must be closed too.
        drop(b);
    }

    // Children that echo, closed normally or killed with -9.
    for i in 0..6 {
        let mut cmd = peer("echo");
        cmd.stdout(Stdio::piped());
        let (mut child, port) = shmport::spawn(cmd).unwrap();
        port.post_bytes(&big).unwrap();
        assert_eq!(port.recv().unwrap().bytes().len(), big.len());
        if i % 2 == 0 {
            drop(port);
            assert!(child.wait().unwrap().success());
        } else {
            port.post_bytes(b"hang").unwrap();
            assert_eq!(port.recv().unwrap().bytes(), b"hang");
            child.kill().unwrap();
            child.wait().unwrap();
            port.set_spin(Duration::ZERO);
            assert!(matches!(
                port.recv(),
                Err(RecvError::Closed(CloseReason::PeerDied))
            ));
        }
    }

    // A port set whose receive loop lets ports go at their close events
    // (`PortSet::recv` removes them): children closed normally and killed
    // with -9, the handed-back ports dropped, keys reused by the next ones.
    let mut set = PortSet::new().unwrap();
    let mut children = Vec::new();
    for round in 0..2 {
        for i in 0..3 {
            let mut cmd = peer("echo");
            cmd.stdout(Stdio::piped());
            let (child, port) = shmport::spawn(cmd).unwrap();
            let word: &[u8] = if i == 0 { b"hang" } else { b"bye" };
            port.post_bytes(word).unwrap();
            let key = set.add(port).unwrap();
            assert!(key < 3, "round {round}: key {key} was not reused");
            children.push((key, common::Victim::new(child), i == 0));
        }
        let mut open = 3;
        while open > 0 {
            match set.recv().unwrap().expect("ports left") {
                SetEvent::Message { key, message } => {
                    let (_, child, hang) = children.iter_mut().find(|c| c.0 == key).unwrap();
                    if *hang {
                        assert_eq!(message.bytes(), b"hang");
                        child.signal(rustix::process::Signal::KILL);
                    } else {
                        // The child closes its port after this echo.
                        assert_eq!(message.bytes(), b"bye");
                    }
                }
                SetEvent::Closed { key, reason, port } => {
                    let hang = children.iter().find(|c| c.0 == key).unwrap().2;
                    let want = if hang {
                        CloseReason::PeerDied
                    } else {
                        CloseReason::Closed
                    };
                    assert_eq!(reason, want);
                    drop(port);
                    open -= 1;
                }
                SetEvent::Error { error, .. } => panic!("{error}"),
            }
        }
        assert!(set.is_empty());
        for (_, child, hang) in children.drain(..) {
            if hang {
                drop(child); // reaped
            } else {
                child.wait_success();
            }
        }
    }
    drop(set);

    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    assert_eq!(dev_shm(), shm_before, "files left in /dev/shm");
}
