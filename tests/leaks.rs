//! Nothing left behind: descriptors, mappings' files, processes. A test
//! binary of its own, so that no other test opens descriptors meanwhile.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{dev_shm, open_fds, peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

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

    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    assert_eq!(dev_shm(), shm_before, "files left in /dev/shm");
}
