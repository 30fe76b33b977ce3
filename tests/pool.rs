//! The large-message pool across real processes: every size from just over
//! the ring to past the largest block, both ways and in order; a reader
//! that holds blocks (the sender waits, or gets `Full`, and is woken when
//! blocks come back, or when the reader closes or dies); a pool that cannot
//! grow; a reservation filled in place; and nothing left behind.

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use common::{Victim, checksum, noise, open_fds, peer, role};
use shmport::{ChannelBuilder, CloseReason, MessagePort, PostError, RecvError};

const MIB: usize = 1 << 20;

/// Sizes around every class boundary that matters, inline to out of line.
const SIZES: [usize; 10] = [
    100,
    600 * 1024,
    MIB,
    MIB + 1,
    3 * MIB + 17,
    4 * MIB,
    16 * MIB - 5,
    32 * MIB + 3,
    64 * MIB,
    64 * MIB + 1,
];

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    let port = MessagePort::from_parent().unwrap();
    match role.as_str() {
        // Post every message back, raw as raw, typed as typed.
        "echo" => loop {
            let m = match port.recv() {
                Ok(m) => m,
                Err(RecvError::Closed(_)) => return,
                Err(e) => panic!("echo: {e}"),
            };
            if m.is_typed() {
                let v = m.deserialize::<Vec<u8>>().unwrap();
                drop(m);
                port.post(&v).unwrap();
            } else {
                port.post_bytes(m.bytes()).unwrap();
            }
        },
        // Hold `n` messages, say so, then drop them when told (a line on
        // stdin) or wait to be killed; then acknowledge whatever comes.
        "holder" => {
            let (tx, rx) = port.split().unwrap();
            let n = rx.recv().unwrap().get::<u64>().unwrap().to_native();
            let held: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
            println!("holding");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap();
            if line.trim() == "close" {
                // Stop receiving with the messages (and their blocks) held.
                rx.close_receiving();
                while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {}
                return;
            }
            drop(held);
            while let Ok(m) = rx.recv() {
                let sum = checksum(m.bytes());
                drop(m);
                tx.post(&sum).unwrap();
            }
        }
        // A process whose files may not grow past 1 MiB: a pool buffer of
        // 4 MiB cannot be made.
        "small-files" => {
            use rustix::process::{Resource, Rlimit, setrlimit};
            // SAFETY: ignoring a signal installs no handler code.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
            let lim = Rlimit {
                current: Some(MIB as u64),
                maximum: Some(MIB as u64),
            };
            setrlimit(Resource::Fsize, lim).unwrap();
            let big = port.post_bytes(&vec![1; 3 * MIB]);
            let code = match big {
                Err(PostError::Io(e)) => e.raw_os_error().unwrap_or(-1),
                other => panic!("small-files: expected an I/O error, got {other:?}"),
            };
            port.post(&(code as i64)).unwrap();
            // The port works on: small messages, and a class that fits.
            port.post_bytes(b"still here").unwrap();
            port.post_bytes(&vec![2; 600 * 1024]).unwrap();
            let _ = port.recv();
        }
        // Fill a large message in place, in a pool block.
        "reserve" => {
            let mut r = port.reserve_bytes(40 * MIB).unwrap();
            for (i, chunk) in r.bytes_mut().chunks_mut(MIB).enumerate() {
                chunk.fill(i as u8);
            }
            r.commit().unwrap();
            let _ = port.recv();
        }
        other => panic!("unknown role {other}"),
    }
}

/// One test at a time: descriptor and mapping counts are per process.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pool memfds this process maps now.
fn pool_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("shmport-pool"))
        .count()
}

#[test]
fn messages_of_every_size_cross_both_ways_whole_and_in_order() {
    let _g = serial();
    let (mut child, port) = shmport::spawn(peer("echo")).unwrap();
    let mut expected = Vec::new();
    // Posted in a window of three, so that blocks are in flight both ways.
    for (i, &len) in SIZES.iter().chain(SIZES.iter().rev()).enumerate() {
        let payload = noise(len, i as u64);
        if i % 2 == 0 {
            port.post_bytes(&payload).unwrap();
        } else {
            port.post(&payload).unwrap();
        }
        expected.push((i % 2 == 1, checksum(&payload), len));
        if expected.len() == 3 {
            check_echo(&port, expected.remove(0));
        }
    }
    for e in expected {
        check_echo(&port, e);
    }
    drop(port);
    assert!(child.wait().unwrap().success());
}

fn check_echo(port: &MessagePort, (typed, sum, len): (bool, u64, usize)) {
    let m = port.recv().unwrap();
    let bytes = if typed {
        m.get::<Vec<u8>>().unwrap().as_slice()
    } else {
        m.bytes()
    };
    assert_eq!((bytes.len(), checksum(bytes)), (len, sum));
    // Between the ring and the largest block, the pool carries it (a typed
    // vector's archive is a few bytes longer than its bytes).
    let size = if typed { len + 64 } else { len };
    let pooled = size > port.max_inline_payload() && size <= 64 * MIB;
    assert_eq!(m.is_pooled(), pooled, "{len} bytes");
}

/// A holder child that holds two messages of 1 MiB, with this side's pool
/// capped at two 1 MiB blocks.
fn holder() -> (Victim, MessagePort) {
    let mut cmd = peer("holder");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let (child, port) = ChannelBuilder::new()
        .pool_limit(2 * MIB)
        .spawn(cmd)
        .unwrap();
    let mut child = Victim::new(child);
    port.post(&2u64).unwrap();
    port.post_bytes(&vec![1; MIB]).unwrap();
    port.post_bytes(&vec![2; MIB]).unwrap();
    child.wait_for("holding");
    (child, port)
}

#[test]
fn a_reader_holding_every_block_makes_posts_wait_until_it_gives_one_back() {
    let _g = serial();
    let (mut child, port) = holder();
    let third = vec![3; MIB];
    assert!(matches!(port.try_post_bytes(&third), Err(PostError::Full)));
    assert!(matches!(
        port.post_bytes_timeout(&third, Duration::from_millis(50)),
        Err(PostError::Timeout)
    ));
    // A message that fits the ring does not need the pool.
    port.post_bytes(b"small").unwrap();
    // The post waits; the reader drops its messages; the post is woken.
    child.say("drop");
    port.post_bytes(&third).unwrap();
    assert_eq!(
        port.recv().unwrap().get::<u64>().unwrap(),
        &checksum(b"small")
    );
    assert_eq!(
        port.recv().unwrap().get::<u64>().unwrap(),
        &checksum(&third)
    );
    assert_eq!(port.pool_bytes(), 2 * MIB, "the pool stayed at its cap");
    drop(port);
    child.wait_success();
}

#[test]
fn a_post_waiting_for_a_block_sees_the_reader_close_or_die() {
    let _g = serial();
    for exits in [true, false] {
        let (mut child, port) = holder();
        let ender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            if exits {
                child.say("close");
                Some(child)
            } else {
                child.kill();
                None
            }
        });
        let got = port.post_bytes(&vec![3; MIB]);
        let want = if exits {
            CloseReason::Closed
        } else {
            CloseReason::PeerDied
        };
        assert!(
            matches!(got, Err(PostError::Closed(r)) if r == want),
            "{got:?}, expected {want:?}"
        );
        // Nobody will read the pool again: its memory is freed.
        assert_eq!(port.pool_bytes(), 0);
        drop(ender.join().unwrap());
    }
}

#[test]
fn a_reader_killed_while_holding_blocks_leaves_nothing_behind() {
    let _g = serial();
    let fds = open_fds();
    let maps = pool_mappings();
    for _ in 0..20 {
        let (child, port) = holder();
        child.kill();
        assert!(matches!(
            port.post_bytes(&vec![3; MIB]),
            Err(PostError::Closed(CloseReason::PeerDied))
        ));
        drop(port);
    }
    assert_eq!(open_fds(), fds, "descriptors left open");
    assert_eq!(pool_mappings(), maps, "pool buffers left mapped");
}

#[test]
fn a_pool_that_cannot_grow_fails_the_post_with_the_systems_error() {
    let _g = serial();
    let (mut child, port) = shmport::spawn(peer("small-files")).unwrap();
    let code = port.recv().unwrap().get::<i64>().unwrap().to_native();
    assert_eq!(code, libc::EFBIG as i64, "the file size limit's error");
    assert_eq!(port.recv().unwrap().bytes(), b"still here");
    let m = port.recv().unwrap();
    assert!(m.is_pooled() && m.bytes() == vec![2; 600 * 1024]);
    drop(m);
    drop(port);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_large_reservation_is_filled_in_place_in_a_pool_block() {
    let _g = serial();
    let (mut child, port) = shmport::spawn(peer("reserve")).unwrap();
    let m = port.recv().unwrap();
    assert!(m.is_pooled());
    assert_eq!(m.bytes().len(), 40 * MIB);
    for (i, chunk) in m.bytes().chunks(MIB).enumerate() {
        assert!(chunk.iter().all(|&b| b == i as u8), "MiB {i}");
    }
    drop(m);
    drop(port);
    assert!(child.wait().unwrap().success());
}

#[test]
fn reservations_past_the_largest_block_are_too_large_and_abandoned_ones_give_the_block_back() {
    let _g = serial();
    let (a, b) = shmport::MessageChannel::new().unwrap().into_ports();
    assert!(matches!(
        a.reserve_bytes(64 * MIB + 1),
        Err(PostError::TooLarge { .. })
    ));
    let r = a.reserve_bytes(3 * MIB).unwrap();
    drop(r);
    let before = a.pool_bytes();
    let mut r = a.reserve_bytes(3 * MIB).unwrap();
    r.bytes_mut().fill(4);
    r.commit_len(2 * MIB).unwrap();
    assert_eq!(a.pool_bytes(), before, "the abandoned block was reused");
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes().len() == 2 * MIB && m.bytes()[0] == 4);
}

#[test]
fn a_cap_taken_by_free_smaller_blocks_sends_a_large_message_out_of_line_rather_than_waiting() {
    let _g = serial();
    let (a, b) = ChannelBuilder::new()
        .capacity(64 * 1024)
        .pool_limit(2 * MIB)
        .build()
        .unwrap()
        .into_ports();
    // Sixteen held messages of 100 KiB grow the 128 KiB class to the cap.
    let held: Vec<_> = (0..16)
        .map(|i| {
            a.post_bytes(&vec![i; 600 * 1024 / 6]).unwrap();
            b.recv().unwrap()
        })
        .collect();
    assert!(held.iter().all(|m| m.is_pooled()));
    assert_eq!(a.pool_bytes(), 2 * MIB);
    drop(held);
    // Everything is free, but only in blocks too small for 1 MiB, and the
    // cap allows no new buffer: waiting would never end.
    a.post_bytes(&vec![9; MIB]).unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_out_of_line() && m.bytes() == vec![9; MIB]);
    drop(m);
    // A smaller message borrows a free block of a larger class when its
    // own cannot grow: here a 128 KiB block serves a 40 KiB message.
    a.post_bytes(&vec![5; 40 * 1024]).unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes() == vec![5; 40 * 1024]);
    assert_eq!(a.pool_bytes(), 2 * MIB);
}

#[test]
fn a_pooled_message_kept_as_shared_bytes_is_writable_here_only_and_its_block_comes_back() {
    let _g = serial();
    let (a, b) = ChannelBuilder::new()
        .pool_limit(MIB)
        .build()
        .unwrap()
        .into_ports();
    a.post_bytes(&vec![1; MIB]).unwrap();
    let shared = b.recv().unwrap().into_shared_bytes().unwrap();
    assert_eq!(shared.bytes(), vec![1; MIB]);
    // A runtime may write it: the writes stay in this process's copy.
    // SAFETY: `as_mut_ptr` is valid for `bytes().len()` writable bytes
    // while `shared` lives, and nothing else reads them meanwhile.
    unsafe { std::ptr::write_bytes(shared.as_mut_ptr(), 0xaa, MIB) };
    assert_eq!(shared.bytes()[MIB - 1], 0xaa);
    // Held, it holds the pool's only block: the next post waits.
    assert!(matches!(
        a.try_post_bytes(&vec![2; MIB]),
        Err(PostError::Full)
    ));
    // Dropped on another thread, the block goes back and wakes the post.
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(shared);
    });
    a.post_bytes(&vec![2; MIB]).unwrap();
    dropper.join().unwrap();
    // The same block, read again: the sender's bytes, not the writes above.
    let m = b.recv().unwrap();
    assert!(m.is_pooled());
    assert!(m.bytes().iter().all(|&x| x == 2), "stale private pages");
    assert_eq!(a.pool_bytes(), MIB);
}

#[test]
fn shared_bytes_outlive_their_port_and_its_move() {
    let _g = serial();
    let (a, b) = ChannelBuilder::new().build().unwrap().into_ports();
    a.post_bytes(&vec![3; 2 * MIB]).unwrap();
    a.post_bytes(&vec![4; 2 * MIB]).unwrap();
    let shared = b.recv().unwrap().into_shared_bytes().unwrap();
    // The receiving port moves with the second message queued on it.
    let (c, d) = shmport::MessageChannel::new().unwrap().into_ports();
    c.post_with_ports(&0u8, vec![b]).unwrap();
    let b = d.recv().unwrap().take_ports().unwrap().pop().unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes() == vec![4; 2 * MIB]);
    drop(m);
    drop(b);
    // Still readable; dropping it gives nothing back to a port that moved.
    assert!(shared.bytes().iter().all(|&x| x == 3));
    drop(shared);
    assert!(matches!(
        a.try_post_bytes(&vec![5; 2 * MIB]),
        Err(PostError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn typed_values_after_a_large_one_go_where_they_fit() {
    let _g = serial();
    let (a, b) = shmport::MessageChannel::new().unwrap().into_ports();
    let big = vec![7u8; MIB];
    for _ in 0..3 {
        // Large (the pool), small (the ring), large again.
        a.post(&big).unwrap();
        a.post(&(5u64, "small".to_string())).unwrap();
        let m = b.recv().unwrap();
        assert!(m.is_pooled() && m.get::<Vec<u8>>().unwrap().as_slice() == &big[..]);
        drop(m);
        let m = b.recv().unwrap();
        assert!(!m.is_pooled() && !m.is_out_of_line());
        assert_eq!(m.get::<(u64, String)>().unwrap().1.as_str(), "small");
    }
}

#[test]
fn a_pooled_message_names_its_block_size_and_the_blocks_of_that_size_announced() {
    let _g = serial();
    let (a, b) = ChannelBuilder::new().build().unwrap().into_ports();
    // The 1 MiB class's first buffer holds one block; a second message
    // while the first is held makes the pool grow a buffer of two more.
    a.post_bytes(&vec![1; MIB]).unwrap();
    let first = b.recv().unwrap();
    assert_eq!(first.pool_class(), Some((MIB, 1)));
    a.post_bytes(&vec![2; MIB - 7]).unwrap();
    let second = b.recv().unwrap();
    assert_eq!(second.pool_class(), Some((MIB, 3)));
    // The first buffer's message now counts the second buffer too.
    assert_eq!(first.pool_class(), Some((MIB, 3)));
    drop((first, second));
    // Other payloads name no block.
    a.post_bytes(&[3; 100]).unwrap();
    assert_eq!(b.recv().unwrap().pool_class(), None);
}

#[test]
fn a_burst_grows_its_class_by_at_most_a_quarter_of_the_cap_and_leaves_room_for_larger_blocks() {
    let _g = serial();
    let (a, b) = ChannelBuilder::new()
        .pool_limit(64 * MIB)
        .build()
        .unwrap()
        .into_ports();
    // Forty 1 MiB messages held at once: the class grows buffers of 1, 2,
    // 4, 8 and 16 blocks (31), then one of 16 (a quarter of the cap), not
    // of 32, which would have taken the whole cap.
    let held: Vec<_> = (0..40u8)
        .map(|i| {
            a.post_bytes(&vec![i; MIB]).unwrap();
            b.recv().unwrap()
        })
        .collect();
    assert!(held.iter().all(|m| m.is_pooled()));
    assert_eq!(held[39].pool_class(), Some((MIB, 47)));
    assert_eq!(a.pool_bytes(), 47 * MIB);
    drop(held);
    // The 17 MiB left hold a 16 MiB block: a 16 MiB message is pooled, not
    // sent out of line in a memfd of its own.
    a.post_bytes(&vec![9; 16 * MIB]).unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes().len() == 16 * MIB && m.bytes()[16 * MIB - 1] == 9);
    assert_eq!(m.pool_class(), Some((16 * MIB, 1)));
    assert_eq!(a.pool_bytes(), 63 * MIB);
}
