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
