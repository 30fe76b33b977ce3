//! Large messages on channels made per request (issue 16): they go into
//! the link's pool of their sender's side, shared by every channel of the
//! link, and the channel stays on its link. Across real processes: the
//! bytes arrive whole, blocks come back (also those of messages nobody
//! read), and a channel that leaves its link carries its large messages
//! along.

mod common;

use std::time::Duration;

use common::raw::serial;
use common::{Victim, checksum, noise, peer, role};
use shmport::{CloseReason, MessageChannel, MessagePort, RecvError};

const PATIENCE: Duration = Duration::from_secs(20);

/// Sizes of the replies, cycling: inside a default ring, and pooled.
const SIZES: [usize; 4] = [100 << 10, 1 << 20, 3 << 20, 600 << 10];

/// The entry point of every peer process.
#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        // Each message holds a size and brings a port: post that many
        // bytes of noise on it (seeded by the size), then drop it. At the
        // end, report this process's link pool bytes.
        "replier" => {
            while let Ok(mut m) = port.recv() {
                if m.bytes() == b"report" {
                    drop(m);
                    let bytes = shmport::testing::link_pool_bytes(&port) as u64;
                    port.post(&bytes).unwrap();
                    continue;
                }
                let n = m.get::<u64>().unwrap().to_native() as usize;
                let reply = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                reply.post_bytes(&noise(n, n as u64)).unwrap();
                assert!(
                    shmport::testing::on_link(&reply),
                    "a large post moved the channel off its link"
                );
            }
        }
        // Each message brings a port: drop it without reading what comes
        // on it. Answer "dropped" on the carrier.
        "dropper" => {
            while let Ok(mut m) = port.recv() {
                let p = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                drop(p);
                port.post_bytes(b"dropped").unwrap();
            }
        }
        // The first message brings a port to another process; each later
        // one a port of a link channel: wait for "go", read nothing of it,
        // and post it on (the channel leaves the link, its unread messages
        // with it).
        "forwarder" => {
            let mut first = port.recv().unwrap();
            let onward = first.take_ports().unwrap().pop().unwrap();
            drop(first);
            while let Ok(mut m) = port.recv() {
                let ports = m.take_ports().unwrap();
                drop(m);
                assert_eq!(port.recv().unwrap().bytes(), b"go");
                onward.post_bytes_with_ports(b"fwd", ports).unwrap();
            }
        }
        // The first message brings the port ports to check come on. Check
        // the messages on each (a size, then that many bytes of noise
        // seeded by it) until its close, and answer how many came.
        "checker" => {
            let mut first = port.recv().unwrap();
            let on = first.take_ports().unwrap().pop().unwrap();
            drop(first);
            while let Ok(mut m) = on.recv() {
                let p = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                port.post(&check_until_close(&p)).unwrap();
            }
        }
        // Each message brings a port: a thread checks the messages on it
        // (as "checker" does) until its close; the counts come back on
        // the carrier, one per port, in the order they finish.
        "sink" => {
            let (done, counts) = std::sync::mpsc::channel::<u32>();
            let mut threads = Vec::new();
            let mut ports = 0;
            while let Ok(mut m) = port.recv() {
                if m.bytes() == b"end" {
                    break;
                }
                let p = m.take_ports().unwrap().pop().unwrap();
                drop(m);
                ports += 1;
                let done = done.clone();
                threads.push(std::thread::spawn(move || {
                    done.send(check_until_close(&p)).unwrap();
                }));
            }
            for _ in 0..ports {
                port.post(&counts.recv().unwrap()).unwrap();
            }
            for t in threads {
                t.join().unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Check the messages on `p` (a size, then that many bytes of noise
/// seeded by it) until its close; how many pairs came.
fn check_until_close(p: &MessagePort) -> u32 {
    let mut n = 0u32;
    loop {
        let size = match p.recv() {
            Ok(m) => m.get::<u64>().unwrap().to_native() as usize,
            Err(RecvError::Closed(CloseReason::Closed)) => return n,
            Err(e) => panic!("checking: {e:?}"),
        };
        let m = p.recv().unwrap();
        assert_eq!(m.bytes().len(), size);
        assert_eq!(checksum(m.bytes()), checksum(&noise(size, size as u64)));
        n += 1;
    }
}

/// A "forwarder" whose onward port goes to a "checker": each process and
/// the port to it.
fn forwarder_to_checker() -> ((Victim, MessagePort), (Victim, MessagePort)) {
    let (fwd, to_fwd) = shmport::spawn(peer("forwarder")).unwrap();
    let (chk, to_chk) = shmport::spawn(peer("checker")).unwrap();
    let (onward, check_on) = MessageChannel::new().unwrap().into_ports();
    to_chk.post_bytes_with_ports(b"on", vec![check_on]).unwrap();
    to_fwd
        .post_bytes_with_ports(b"onward", vec![onward])
        .unwrap();
    ((Victim::new(fwd), to_fwd), (Victim::new(chk), to_chk))
}

/// A request channel: its far end goes over `x` (into their link) with
/// the size of the reply asked for.
fn request(x: &MessagePort, size: usize) -> MessagePort {
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x.post_with_ports(&(size as u64), vec![theirs]).unwrap();
    mine
}

#[test]
fn large_replies_on_request_channels_come_whole_and_reuse_the_links_pool() {
    let _serial = serial();
    let (child, x) = shmport::spawn(peer("replier")).unwrap();
    let child = Victim::new(child);
    let mut asked = 0usize;
    for round in 0..200 {
        let size = SIZES[round % SIZES.len()];
        let mine = request(&x, size);
        let m = mine
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("request {round}: {e:?}"));
        assert_eq!(m.bytes().len(), size, "request {round}");
        assert_eq!(
            checksum(m.bytes()),
            checksum(&noise(size, size as u64)),
            "request {round}"
        );
        assert!(shmport::testing::on_link(&mine), "request {round}");
        drop(m);
        assert!(matches!(
            mine.recv_timeout(PATIENCE),
            Err(RecvError::Closed(CloseReason::Closed))
        ));
        asked += size;
    }
    x.post_bytes(b"report").unwrap();
    let bytes = x
        .recv_timeout(PATIENCE)
        .unwrap()
        .get::<u64>()
        .unwrap()
        .to_native();
    // One or two blocks of each class in use, not one per request.
    assert!(bytes > 0, "the replies did not use the link's pool");
    assert!(
        bytes <= 16 << 20,
        "the replier's pool grew to {bytes} bytes for {asked} bytes of replies"
    );
    drop(x);
    child.wait_success();
}

/// The receiver of each request drops its port without reading the large
/// message posted on it: the blocks come back all the same (the channel's
/// maker gives them back once both ends are idle), so posts never wait
/// for blocks that nobody will release, and the pool stays small.
#[test]
fn blocks_of_large_messages_nobody_read_come_back() {
    let _serial = serial();
    let (child, x) = shmport::spawn(peer("dropper")).unwrap();
    let child = Victim::new(child);
    let body = noise(1 << 20, 7);
    for round in 0..300 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        x.post_bytes_with_ports(b"port", vec![theirs]).unwrap();
        // On the link now: into its pool (the far end may be gone already).
        let _ = mine.post_bytes(&body);
        assert_eq!(
            x.recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"))
                .bytes(),
            b"dropped"
        );
        // Posted after the far end went: it fails, or stays unread.
        let _ = mine.post_bytes(&body);
        drop(mine);
    }
    let bytes = shmport::testing::link_pool_bytes(&x);
    assert!(bytes > 0, "the messages did not use the link's pool");
    // Without the blocks coming back, the pool would have taken its cap
    // (64 MiB) and then waited for ever.
    assert!(bytes <= 8 << 20, "the pool grew to {bytes} bytes");
    drop(x);
    child.wait_success();
}

/// Large messages posted on a link channel and not read before its port
/// goes on to a third process (the channel leaves the link inside that
/// post) arrive there whole, in order, with what is posted after.
#[test]
fn unread_large_messages_go_along_when_the_channel_leaves_its_link() {
    let _serial = serial();
    let ((fwd, to_fwd), (chk, to_chk)) = forwarder_to_checker();
    for round in 0..20u32 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        // The far end goes into the link with the forwarder first, then
        // the messages are posted: they go into this side's link pool, and
        // the forwarder reads none of them before it posts the port on.
        to_fwd.post_bytes_with_ports(b"port", vec![theirs]).unwrap();
        let mut sizes = vec![300 << 10, 2 << 20, 64, 5 << 20];
        sizes.rotate_left(round as usize % 4);
        let post = |size: usize| {
            mine.post(&(size as u64)).unwrap();
            mine.post_bytes(&noise(size, size as u64)).unwrap();
        };
        for &size in &sizes {
            post(size);
        }
        to_fwd.post_bytes(b"go").unwrap();
        // And after the move, wherever this end is by then.
        post(1 << 20);
        post(100);
        drop(mine);
        let n = to_chk
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(*n.get::<u32>().unwrap(), 6, "round {round}");
    }
    drop(to_fwd);
    fwd.wait_success();
    drop(to_chk);
    chk.wait_success();
}

/// A reservation larger than a link channel's ring takes a block of the
/// link's pool, and the message arrives (in one process: the carrier's
/// two ends are both here).
#[test]
fn a_reservation_larger_than_the_ring_of_a_link_channel() {
    let _serial = serial();
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x1.post_bytes_with_ports(b"port", vec![theirs]).unwrap();
    let far = x2.recv().unwrap().take_ports().unwrap().pop().unwrap();
    for round in 0..3u64 {
        let body = noise(1 << 20, round);
        let mut r = mine.reserve_bytes(body.len()).unwrap();
        r.bytes_mut().copy_from_slice(&body);
        r.commit().unwrap();
        let m = far.recv_timeout(PATIENCE).unwrap();
        assert_eq!(checksum(m.bytes()), checksum(&body), "round {round}");
    }
    assert!(shmport::testing::on_link(&mine) && shmport::testing::on_link(&far));
    assert!(shmport::testing::link_pool_bytes(&x1) + shmport::testing::link_pool_bytes(&x2) > 0);
}

/// Threads of one process post large messages at once on channels of the
/// same link (one pool for all of them): every message arrives whole, in
/// its channel's order.
#[test]
fn threads_share_the_links_pool() {
    let _serial = serial();
    let (child, x) = shmport::spawn(peer("sink")).unwrap();
    let child = Victim::new(child);
    const THREADS: usize = 4;
    const EACH: usize = 40;
    let mine: Vec<MessagePort> = (0..THREADS)
        .map(|_| {
            let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
            x.post_bytes_with_ports(b"port", vec![theirs]).unwrap();
            mine
        })
        .collect();
    let posters: Vec<_> = mine
        .into_iter()
        .enumerate()
        .map(|(t, p)| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let size = SIZES[(t + i) % SIZES.len()] + t * 4096 + i;
                    p.post(&(size as u64)).unwrap();
                    p.post_bytes(&noise(size, size as u64)).unwrap();
                }
                assert!(shmport::testing::on_link(&p));
            })
        })
        .collect();
    for t in posters {
        t.join().unwrap();
    }
    x.post_bytes(b"end").unwrap();
    for _ in 0..THREADS {
        let n = x.recv_timeout(PATIENCE).unwrap();
        assert_eq!(n.get::<u32>().unwrap().to_native() as usize, EACH);
    }
    drop(x);
    child.wait_success();
}

/// The other way round: this end's channel leaves the link (its port goes
/// to a third process) while large messages it posted there are unread;
/// the far end, which follows the move and carries them over, then posts
/// its port on to a fourth process before reading them. They arrive there
/// whole and in order (restated out of line as the port leaves: the fourth
/// process has no view of the link's pool).
#[test]
fn carried_over_large_messages_go_along_to_a_fourth_process() {
    let _serial = serial();
    let ((fwd, to_fwd), (chk, to_chk)) = forwarder_to_checker();
    let (drp, to_drp) = shmport::spawn(peer("dropper")).unwrap();
    let drp = Victim::new(drp);
    for round in 0..10u32 {
        let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
        to_fwd.post_bytes_with_ports(b"port", vec![theirs]).unwrap();
        let mut sizes = vec![300 << 10, 2 << 20, 64, 5 << 20];
        sizes.rotate_left(round as usize % 4);
        for &size in &sizes {
            mine.post(&(size as u64)).unwrap();
            mine.post_bytes(&noise(size, size as u64)).unwrap();
        }
        assert!(shmport::testing::on_link(&mine));
        // This end goes elsewhere (the channel leaves the link here), and
        // is dropped there: the checker sees the close after the messages.
        to_drp.post_bytes_with_ports(b"port", vec![mine]).unwrap();
        assert_eq!(to_drp.recv_timeout(PATIENCE).unwrap().bytes(), b"dropped");
        to_fwd.post_bytes(b"go").unwrap();
        let n = to_chk
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(*n.get::<u32>().unwrap(), 4, "round {round}");
    }
    drop((to_fwd, to_drp));
    fwd.wait_success();
    drp.wait_success();
    drop(to_chk);
    chk.wait_success();
}
