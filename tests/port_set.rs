//! Waiting on many ports: fairness, wake-ups, close events, other processes.

mod common;

use std::time::{Duration, Instant};

use common::{peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, PortSet, RecvError};

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        // Post a few messages, then close or hang until killed.
        "talk-close" => {
            for i in 0..3u32 {
                port.post(&i).unwrap();
            }
        }
        "talk-hang" => {
            for i in 0..3u32 {
                port.post(&i).unwrap();
            }
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Make sure this process may open `n` descriptors.
fn allow_fds(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < n) {
        lim.current = lim.maximum;
        setrlimit(Resource::Nofile, lim).unwrap();
    }
}

#[test]
fn a_thousand_ports_are_served_round_robin() {
    allow_fds(5000);
    let mut set = PortSet::new().unwrap();
    let mut senders = Vec::new();
    for _ in 0..1000 {
        let (a, b) = MessageChannel::builder()
            .capacity(4096)
            .build()
            .unwrap()
            .into_ports();
        set.add(b).unwrap();
        senders.push(a);
    }
    for (i, a) in senders.iter().enumerate() {
        for j in 0..5u32 {
            a.post(&(i as u32, j)).unwrap();
        }
    }
    let mut next = vec![0u32; 1000];
    for round in 0..5 {
        let mut served = vec![false; 1000];
        for _ in 0..1000 {
            let k = set.wait().unwrap().unwrap();
            let m = set.get(k).unwrap().try_recv().unwrap();
            let (i, j) = m.deserialize::<(u32, u32)>().unwrap();
            assert_eq!(i as usize, k, "keys follow insertion order here");
            assert_eq!(j, next[k]);
            next[k] += 1;
            assert!(!served[k], "port {k} served twice in round {round}");
            served[k] = true;
        }
    }
    assert!(set.poll().is_none());
    assert_eq!(set.wait_timeout(Duration::from_millis(10)).unwrap(), None);
}

#[test]
fn a_sleeping_set_wakes_for_a_message_and_for_a_close() {
    let mut set = PortSet::new().unwrap();
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    let kb = set.add(b).unwrap();
    let kd = set.add(d).unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a.post_bytes(b"late").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        a
    });
    let t0 = Instant::now();
    assert_eq!(set.wait().unwrap(), Some(kb));
    assert!(t0.elapsed() >= Duration::from_millis(40));
    assert_eq!(set.get(kb).unwrap().try_recv().unwrap().bytes(), b"late");
    assert_eq!(set.wait().unwrap(), Some(kd));
    assert!(matches!(
        set.get(kd).unwrap().try_recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    let d = set.remove(kd).unwrap();
    drop(d);
    assert_eq!(set.len(), 1);
    let _a = t.join().unwrap();
    assert_eq!(set.wait_timeout(Duration::from_millis(20)).unwrap(), None);
}

#[test]
fn ports_of_other_processes_deliver_and_close_with_their_reasons() {
    let mut set = PortSet::new().unwrap();
    let (mut quiet, p1) = shmport::spawn(peer("talk-close")).unwrap();
    let (mut loud, p2) = shmport::spawn(peer("talk-hang")).unwrap();
    let k1 = set.add(p1).unwrap();
    let k2 = set.add(p2).unwrap();
    assert_ne!(k1, k2);
    let mut got = [0, 0];
    let mut reasons = [None, None];
    let mut killed = false;
    while reasons.iter().any(Option::is_none) {
        let k = set.wait().unwrap().unwrap();
        let i = if k == k1 { 0 } else { 1 };
        let closed = match set.get(k).unwrap().try_recv() {
            Ok(m) => {
                assert_eq!(m.get::<u32>().unwrap().to_native(), got[i]);
                got[i] += 1;
                None
            }
            Err(RecvError::Closed(r)) => Some(r),
            Err(e) => panic!("{e}"),
        };
        if closed.is_some() {
            reasons[i] = closed;
            drop(set.remove(k));
        }
        if got[1] == 3 && !killed {
            loud.kill().unwrap();
            killed = true;
        }
    }
    assert_eq!(got, [3, 3]);
    // The first child exited after its port was dropped (closed), the second
    // was killed with its port open.
    assert_eq!(reasons[0], Some(CloseReason::Closed));
    assert_eq!(reasons[1], Some(CloseReason::PeerDied));
    quiet.wait().unwrap();
    loud.wait().unwrap();
}

/// The receive loop a user writes: `PortSet::recv` removes each port at its
/// close event (no list of ports to remove), for a peer that closes and
/// one killed with -9; freed keys go to the next ports added.
#[test]
fn recv_removes_each_port_at_its_close_event_and_frees_its_key() {
    use common::Victim;
    use shmport::SetEvent;
    use std::process::Stdio;

    let mut set = PortSet::new().unwrap();
    let (quiet, p1) = shmport::spawn(peer("talk-close")).unwrap();
    let mut cmd = peer("talk-hang");
    cmd.stdout(Stdio::piped());
    let (loud, p2) = shmport::spawn(cmd).unwrap();
    let quiet = Victim::new(quiet);
    let loud = Victim::new(loud);
    let k1 = set.add(p1).unwrap();
    let k2 = set.add(p2).unwrap();
    let mut got = [0u32, 0];
    let mut reasons = [None, None];
    let mut loud = Some(loud);
    while let Some(event) = set.recv().unwrap() {
        match event {
            SetEvent::Message { key, message } => {
                let i = usize::from(key == k2);
                assert_eq!(message.get::<u32>().unwrap().to_native(), got[i]);
                got[i] += 1;
            }
            SetEvent::Closed { key, reason, port } => {
                let i = usize::from(key == k2);
                assert!(reasons[i].is_none(), "a second close event for {key}");
                reasons[i] = Some(reason);
                // The port, out of the set, still reads as closed.
                assert!(matches!(port.try_recv(), Err(RecvError::Closed(r)) if r == reason));
            }
            SetEvent::Error { key, error } => panic!("port {key}: {error}"),
        }
        if got[1] == 3 {
            if let Some(v) = loud.take() {
                v.kill();
            }
        }
    }
    assert_eq!(got, [3, 3]);
    assert_eq!(
        reasons,
        [Some(CloseReason::Closed), Some(CloseReason::PeerDied)]
    );
    assert!(set.is_empty());
    assert!(set.get(k1).is_none() && set.get(k2).is_none());
    quiet.wait_success();

    // Both keys are free again, and reused by new ports that work.
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let (c, d) = MessageChannel::new().unwrap().into_ports();
    let (kb, kd) = (set.add(b).unwrap(), set.add(d).unwrap());
    let mut keys = [kb, kd];
    keys.sort();
    let mut old = [k1, k2];
    old.sort();
    assert_eq!(keys, old);
    a.post(&7u32).unwrap();
    c.post(&8u32).unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match set.recv().unwrap() {
            Some(SetEvent::Message { key, message }) => {
                seen.push((key, message.get::<u32>().unwrap().to_native()));
            }
            other => panic!("{other:?}"),
        }
    }
    seen.sort();
    let mut want = vec![(kb, 7), (kd, 8)];
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(set.len(), 2);
    assert!(matches!(set.try_recv(), Ok(None)));
}

/// A port handed back at its close event is still this end of the channel:
/// when the peer only stopped sending, it can still post.
#[test]
fn a_port_handed_back_at_its_close_event_still_posts_after_a_half_close() {
    use shmport::SetEvent;

    let mut set = PortSet::new().unwrap();
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let key = set.add(b).unwrap();
    let (tx, rx) = a.split().unwrap();
    tx.post_bytes(b"last").unwrap();
    drop(tx);
    match set.recv().unwrap() {
        Some(SetEvent::Message { key: k, message }) => {
            assert_eq!(k, key);
            assert_eq!(message.bytes(), b"last");
        }
        other => panic!("{other:?}"),
    }
    let b = match set.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(SetEvent::Closed {
            key: k,
            reason,
            port,
        }) => {
            assert_eq!((k, reason), (key, CloseReason::Closed));
            port
        }
        other => panic!("{other:?}"),
    };
    assert!(set.is_empty());
    assert!(matches!(set.recv(), Ok(None)));
    b.post_bytes(b"reply").unwrap();
    assert_eq!(rx.recv().unwrap().bytes(), b"reply");
}
