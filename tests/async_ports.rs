//! Async ports (feature `tokio`) across real processes: one task serving
//! 100 ports, cancelled receives that lose nothing, the close as the end of
//! a stream, posts that await room.
#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::{Victim, noise, peer, role};
use futures_util::StreamExt;
use shmport::aio::{AsyncPort, AsyncPortSet};
use shmport::{CloseReason, MessageChannel, MessagePort, PortSet, RecvError};

/// Messages the slow reader takes.
const SLOW_N: u64 = 5000;

/// Requests each client port sends in the 100-port test.
const REQUESTS: u64 = 50;

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        "clients" => {
            // Ports arrive in one message; each asks REQUESTS questions,
            // interleaved across ports, and checks every answer.
            let mut m = port.recv().unwrap();
            let ports = m.take_ports().unwrap();
            drop(m);
            for i in 0..REQUESTS {
                for (k, p) in ports.iter().enumerate() {
                    p.post(&(k as u64, i)).unwrap();
                }
                for (k, p) in ports.iter().enumerate() {
                    let r = p.recv().unwrap();
                    assert_eq!(*r.get::<u64>().unwrap(), (k as u64) * 1000 + i);
                }
            }
            port.post_bytes(b"done").unwrap();
        }
        "trickle" => {
            // Numbered messages at irregular moments.
            for i in 0..2000u64 {
                port.post(&i).unwrap();
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_micros(50 + (i % 13) * 20));
                }
            }
        }
        "burst-then-return" => {
            for i in 0..300u64 {
                port.post_bytes(&noise(100 + i as usize * 7, i)).unwrap();
            }
        }
        "burst-then-hang" => {
            for i in 0..300u64 {
                port.post_bytes(&noise(100 + i as usize * 7, i)).unwrap();
            }
            println!("ready");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "slow-reader" => {
            // Reads SLOW_N messages, pausing now and then, and says how many.
            let mut next = 0u64;
            while next < SLOW_N {
                let m = port.recv().unwrap();
                assert_eq!(m.bytes(), &noise(64 + (next % 900) as usize, next)[..]);
                next += 1;
                if next % 500 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            port.post(&next).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn one_task_serves_100_ports_of_four_processes() {
    rt().block_on(async {
        let mut set = PortSet::new().unwrap();
        let mut children = Vec::new();
        for _ in 0..4 {
            let (child, port) = shmport::spawn(peer("clients")).unwrap();
            let mut theirs = Vec::new();
            for _ in 0..25 {
                let (mine, t) = MessageChannel::builder()
                    .capacity(4096)
                    .spin(Duration::ZERO)
                    .build()
                    .unwrap()
                    .into_ports();
                set.add(mine).unwrap();
                theirs.push(t);
            }
            port.post_bytes_with_ports(b"ports", theirs).unwrap();
            children.push((Victim::new(child), port));
        }
        let mut set = AsyncPortSet::new(set).unwrap();
        // One task: await the next ready port, answer, until every request
        // of every port is answered.
        let server = tokio::spawn(async move {
            let mut answered = 0u64;
            while answered < 100 * REQUESTS {
                let k = set.wait().await.unwrap().unwrap();
                let port = set.get(k).unwrap();
                while let Ok(m) = port.try_recv() {
                    let (key, i) = {
                        let q = m.get::<(u64, u64)>().unwrap();
                        (q.0.to_native(), q.1.to_native())
                    };
                    drop(m);
                    port.post(&(key * 1000 + i)).unwrap();
                    answered += 1;
                }
            }
            answered
        });
        assert_eq!(server.await.unwrap(), 100 * REQUESTS);
        for (victim, port) in children {
            assert_eq!(port.recv().unwrap().bytes(), b"done");
            drop(port);
            victim.wait_success();
        }
    });
}

#[test]
fn a_hundred_tasks_each_await_their_own_port() {
    rt().block_on(async {
        let mut tasks = Vec::new();
        let mut theirs = Vec::new();
        for k in 0..100u64 {
            let (mine, t) = MessageChannel::builder()
                .capacity(4096)
                .build()
                .unwrap()
                .into_ports();
            theirs.push(t);
            tasks.push(tokio::spawn(async move {
                let mut port = AsyncPort::new(mine).unwrap();
                let mut sum = 0;
                loop {
                    match port.recv().await {
                        Ok(m) => sum += m.get::<u64>().unwrap().to_native(),
                        Err(RecvError::Closed(CloseReason::Closed)) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                assert_eq!(sum, k * 10);
            }));
        }
        // A sender thread posts to all of them, then closes them.
        let sender = std::thread::spawn(move || {
            for (k, p) in theirs.iter().enumerate() {
                for _ in 0..10 {
                    p.post(&(k as u64)).unwrap();
                }
            }
        });
        sender.join().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn a_cancelled_recv_loses_no_message() {
    rt().block_on(async {
        let (child, port) = shmport::spawn(peer("trickle")).unwrap();
        let victim = Victim::new(child);
        port.set_spin(Duration::from_micros(5));
        let mut port = AsyncPort::new(port).unwrap();
        let mut next = 0u64;
        let mut cancelled = 0;
        let mut round = 0u64;
        loop {
            round += 1;
            // Deadlines from 0 to ~150 µs: many receives are dropped while
            // awaiting the reactor, some while spinning.
            let limit = Duration::from_micros((round * 37) % 150);
            match tokio::time::timeout(limit, port.recv()).await {
                Err(_) => cancelled += 1,
                Ok(Ok(m)) => {
                    assert_eq!(*m.get::<u64>().unwrap(), next);
                    next += 1;
                }
                Ok(Err(RecvError::Closed(CloseReason::Closed))) => break,
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(next, 2000);
        assert!(cancelled > 0, "no receive was cancelled");
        victim.wait_success();
    });
}

#[test]
fn the_close_is_the_end_of_the_stream() {
    rt().block_on(async {
        for (role, reason) in [
            ("burst-then-return", CloseReason::Closed),
            ("burst-then-hang", CloseReason::PeerDied),
        ] {
            let mut cmd = peer(role);
            cmd.stdout(std::process::Stdio::piped());
            let (child, port) = shmport::spawn(cmd).unwrap();
            let mut victim = Victim::new(child);
            let mut stream = AsyncPort::new(port).unwrap().into_stream();
            if reason == CloseReason::PeerDied {
                victim.wait_for("ready");
                victim.kill();
            } else {
                victim.wait_success();
            }
            let mut i = 0u64;
            while let Some(m) = stream.next().await {
                assert_eq!(m.unwrap().bytes(), &noise(100 + i as usize * 7, i)[..]);
                i += 1;
            }
            assert_eq!(i, 300, "{role}");
            assert_eq!(stream.close_reason(), Some(reason), "{role}");
            assert!(stream.next().await.is_none());
        }
    });
}

#[test]
fn posts_await_room_in_a_full_ring() {
    rt().block_on(async {
        let (child, port) = MessageChannel::builder()
            .capacity(8192)
            .spin(Duration::ZERO)
            .spawn(peer("slow-reader"))
            .unwrap();
        let victim = Victim::new(child);
        let mut port = AsyncPort::new(port).unwrap();
        for i in 0..SLOW_N {
            port.post_bytes(&noise(64 + (i % 900) as usize, i))
                .await
                .unwrap();
        }
        let n = *port.recv().await.unwrap().get::<u64>().unwrap();
        assert_eq!(n, SLOW_N);
        drop(port);
        victim.wait_success();
    });
}
