//! The port API within one process (cross-process behaviour is in
//! `process.rs`).

use std::time::{Duration, Instant};

use shmport::{AccessError, CloseReason, MessageChannel, MessagePort, PostError, RecvError};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Point {
    x: i64,
    y: i64,
    label: String,
}

fn small() -> (MessagePort, MessagePort) {
    MessageChannel::builder()
        .capacity(4096)
        .build()
        .unwrap()
        .into_ports()
}

#[test]
fn typed_value_is_read_in_place_and_deserialized() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let p = Point {
        x: -3,
        y: 9,
        label: "here".into(),
    };
    a.post(&p).unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_typed());
    let r = m.get::<Point>().unwrap();
    assert_eq!(
        (r.x.to_native(), r.y.to_native(), r.label.as_str()),
        (-3, 9, "here")
    );
    assert_eq!(m.deserialize::<Point>().unwrap(), p);
}

#[test]
fn both_directions_are_fifo() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    for i in 0..1000u32 {
        a.post(&i).unwrap();
        b.post(&(i * 2)).unwrap();
    }
    for i in 0..1000u32 {
        assert_eq!(b.recv().unwrap().get::<u32>().unwrap().to_native(), i);
        assert_eq!(a.recv().unwrap().get::<u32>().unwrap().to_native(), i * 2);
    }
}

#[test]
fn wrong_type_and_raw_bytes_are_clear_errors() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    a.post(&(1u32, 2u32)).unwrap();
    a.post_bytes(b"raw").unwrap();
    let m = b.recv().unwrap();
    match m.get::<String>() {
        Err(AccessError::TypeMismatch { expected, found }) => {
            assert_eq!(expected, shmport::fingerprint::<String>());
            assert_eq!(found, shmport::fingerprint::<(u32, u32)>());
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    assert_eq!(m.get::<(u32, u32)>().unwrap().1, 2);
    let raw = b.recv().unwrap();
    assert!(!raw.is_typed());
    assert_eq!(raw.bytes(), b"raw");
    assert!(matches!(raw.get::<u32>(), Err(AccessError::NotTyped)));
    let text = format!("{}", m.get::<String>().unwrap_err());
    assert!(text.contains("type mismatch"), "{text}");
}

#[test]
fn empty_and_timeouts() {
    let (a, b) = small();
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    let t = Instant::now();
    assert!(matches!(
        b.recv_timeout(Duration::from_millis(30)),
        Err(RecvError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(30));
    // Fill the 4 KiB ring.
    let mut n = 0;
    loop {
        match a.try_post_bytes(&[0u8; 200]) {
            Ok(()) => n += 1,
            Err(PostError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(n > 10);
    assert!(matches!(
        a.post_bytes_timeout(&[0u8; 200], Duration::from_millis(20)),
        Err(PostError::Timeout)
    ));
    // Draining one message makes room again.
    drop(b.recv().unwrap());
    // Space is released to the producer in batches or when the ring looks
    // empty to the consumer; drain fully.
    while b.try_recv().is_ok() {}
    a.try_post_bytes(&[0u8; 200]).unwrap();
}

#[test]
fn held_messages_keep_their_bytes_and_release_in_any_order() {
    let (a, b) = small();
    for i in 0..10u8 {
        a.post_bytes(&[i; 100]).unwrap();
    }
    let held: Vec<_> = (0..10).map(|_| b.recv().unwrap()).collect();
    // The ring (4 KiB) has little room left while all ten are held.
    for (i, m) in held.iter().enumerate() {
        assert_eq!(m.bytes(), &[i as u8; 100][..]);
    }
    let mut held = held;
    // Drop from the middle, then the rest reversed.
    drop(held.remove(5));
    while let Some(m) = held.pop() {
        drop(m);
    }
    // All space is back: a message of half the ring fits.
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    a.try_post_bytes(&vec![1u8; a.max_inline_payload()])
        .unwrap();
    assert_eq!(b.recv().unwrap().bytes().len(), a.max_inline_payload());
}

#[test]
fn large_messages_go_to_the_pool_and_read_zero_copy() {
    let (a, b) = small();
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    a.post_bytes(&big).unwrap();
    a.post(&big).unwrap();
    a.post_bytes(b"after").unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && !m.is_out_of_line());
    assert_eq!(m.bytes(), &big[..]);
    let t = b.recv().unwrap();
    assert!(t.is_pooled());
    assert_eq!(t.get::<Vec<u8>>().unwrap().as_slice(), &big[..]);
    assert_eq!(b.recv().unwrap().bytes(), b"after");
    drop((m, t));
    // The blocks come back and are reused: a stream of them keeps the
    // pool at the few blocks it started with.
    for i in 0..200u8 {
        let payload = vec![i; 3 << 20];
        a.post_bytes(&payload).unwrap();
        let m = b.recv().unwrap();
        assert!(m.is_pooled() && m.bytes() == &payload[..]);
    }
    assert!(a.pool_bytes() <= 16 << 20, "{} bytes", a.pool_bytes());
}

#[test]
fn messages_larger_than_the_largest_pool_block_go_out_of_line() {
    let (a, b) = small();
    // Not uniform, so that a byte copied to the wrong place shows (a
    // write this large takes the streaming copy).
    let big: Vec<u8> = (0..(64usize << 20) + 1).map(|i| (i % 251) as u8).collect();
    a.post_bytes(&big[..64 << 20]).unwrap();
    a.post_bytes(&big).unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes() == &big[..64 << 20]);
    let m = b.recv().unwrap();
    assert!(m.is_out_of_line() && !m.is_pooled() && m.bytes() == &big[..]);
}

#[test]
fn close_delivers_everything_first_then_the_reason() {
    let (a, b) = small();
    for i in 0..50u64 {
        a.post(&i).unwrap();
    }
    a.close();
    for i in 0..50u64 {
        assert_eq!(b.recv().unwrap().get::<u64>().unwrap().to_native(), i);
    }
    assert!(matches!(
        b.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    assert!(matches!(
        b.try_recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
    match b.post(&1u64) {
        Err(PostError::Closed(CloseReason::Closed)) => {}
        other => panic!("post after close: {other:?}"),
    }
}

#[test]
fn dropping_a_port_wakes_a_blocked_receiver() {
    let (a, b) = small();
    b.set_spin(Duration::ZERO);
    let t = std::thread::spawn(move || match b.recv() {
        Err(RecvError::Closed(r)) => r,
        other => panic!("{other:?}"),
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(a);
    assert_eq!(t.join().unwrap(), CloseReason::Closed);
}

#[test]
fn blocked_sender_wakes_when_room_appears_and_when_peer_closes() {
    let (a, b) = small();
    a.set_spin(Duration::ZERO);
    while a.try_post_bytes(&[9u8; 500]).is_ok() {}
    let t = std::thread::spawn(move || {
        // Blocks until the other thread drains.
        a.post_bytes(&[9u8; 500]).unwrap();
        // Then fill again and block until the peer closes.
        loop {
            match a.post_bytes(&[9u8; 500]) {
                Ok(()) => continue,
                Err(e) => return e,
            }
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut got = 0;
    while got < 3 {
        if b.recv_timeout(Duration::from_millis(200)).is_ok() {
            got += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    drop(b);
    match t.join().unwrap() {
        PostError::Closed(CloseReason::Closed) => {}
        e => panic!("{e:?}"),
    }
}

#[test]
fn blocking_ping_pong_between_threads_with_and_without_spin() {
    for spin in [Duration::ZERO, Duration::from_millis(1)] {
        let (a, b) = MessageChannel::builder()
            .spin(spin)
            .build()
            .unwrap()
            .into_ports();
        let t = std::thread::spawn(move || {
            loop {
                let v = match b.recv() {
                    Ok(m) => m.get::<u64>().unwrap().to_native(),
                    Err(RecvError::Closed(_)) => return,
                    Err(e) => panic!("{e}"),
                };
                b.post(&(v + 1)).unwrap();
            }
        });
        for i in 0..2000u64 {
            a.post(&i).unwrap();
            assert_eq!(a.recv().unwrap().get::<u64>().unwrap().to_native(), i + 1);
        }
        drop(a);
        t.join().unwrap();
    }
}

#[test]
fn reservations_write_in_place_and_keep_other_posts_out() {
    let (a, b) = small();
    // Past the ring, the reservation is a pool block.
    let max = a.max_inline_payload();
    let mut r = a.reserve_bytes(max + 1).unwrap();
    r.bytes_mut().fill(6);
    r.commit().unwrap();
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes() == vec![6; max + 1]);
    drop(m);

    let mut r = a.reserve_bytes(16).unwrap();
    assert_eq!(r.len(), 16);
    r.bytes_mut().copy_from_slice(b"0123456789abcdef");
    // The slot is ours until commit: posts and second reservations wait.
    assert!(matches!(a.try_post_bytes(b"x"), Err(PostError::Reserved)));
    assert!(matches!(a.try_reserve_bytes(1), Err(PostError::Reserved)));
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));
    r.commit_len(10).unwrap();
    assert_eq!(b.recv().unwrap().bytes(), b"0123456789");

    // Dropped without commit: nothing is sent, and posting works again.
    let mut r = a.reserve_bytes(3).unwrap();
    r.bytes_mut().copy_from_slice(b"bad");
    drop(r);
    a.post_bytes(b"good").unwrap();
    let m = b.recv().unwrap();
    assert_eq!(m.bytes(), b"good");
    assert!(!m.is_typed());
    drop(m);
    assert!(matches!(b.try_recv(), Err(RecvError::Empty)));

    // Full ring: try_reserve says so; a timed one times out.
    while a.try_post_bytes(&[7u8; 512]).is_ok() {}
    assert!(matches!(a.try_reserve_bytes(512), Err(PostError::Full)));
    assert!(matches!(
        a.reserve_bytes_timeout(512, Duration::from_millis(5)),
        Err(PostError::Timeout)
    ));
    // A closed peer: the reservation fails with the reason.
    drop(b);
    assert!(matches!(
        a.reserve_bytes(8),
        Err(PostError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn untrusted_ports_copy_each_record_and_free_its_ring_space_at_once() {
    let (a, b) = MessageChannel::builder()
        .capacity(4096)
        .trust(shmport::Trust::Untrusted)
        .build()
        .unwrap()
        .into_ports();
    assert_eq!(b.trust(), shmport::Trust::Untrusted);
    // Hold far more messages than the ring holds: each was copied out and
    // its space given back when it was taken.
    let mut held = Vec::new();
    for i in 0..200i64 {
        a.post(&Point {
            x: i,
            y: -i,
            label: format!("point {i}"),
        })
        .unwrap();
        held.push(b.recv().unwrap());
    }
    for (i, m) in held.iter().enumerate() {
        let p = m.get::<Point>().unwrap();
        assert_eq!((p.x.to_native(), p.y.to_native()), (i as i64, -(i as i64)));
        assert_eq!(p.label.as_str(), format!("point {i}"));
    }
    // Raw, empty and pooled messages too: a pooled one is copied out of
    // the pool (which its sender can still write) and its block given back.
    a.post_bytes(b"").unwrap();
    assert_eq!(b.recv().unwrap().bytes(), b"");
    let big = vec![9u8; 10_000];
    let mut pooled = Vec::new();
    for _ in 0..100 {
        a.post_bytes(&big).unwrap();
        let m = b.recv().unwrap();
        assert!(!m.is_pooled() && !m.is_out_of_line());
        assert_eq!(m.bytes(), &big[..]);
        pooled.push(m);
    }
    // Every block came back at once although the messages are held.
    assert_eq!(a.pool_bytes(), 1 << 20);
}

#[test]
fn unchecked_access_reads_the_same_value_and_still_checks_the_type() {
    let (a, b) = MessageChannel::new().unwrap().into_ports();
    let p = Point {
        x: 1,
        y: 2,
        label: "one, two".into(),
    };
    a.post(&p).unwrap();
    let m = b.recv().unwrap();
    // SAFETY: posted just above by this process, as a `Point`; nobody
    // writes to it afterwards.
    let v = unsafe { m.get_unchecked::<Point>() }.unwrap();
    assert_eq!(
        (v.x.to_native(), v.y.to_native(), v.label.as_str()),
        (1, 2, "one, two")
    );
    // SAFETY: the type check fails before anything is read.
    let wrong = unsafe { m.get_unchecked::<u64>() };
    assert!(matches!(wrong, Err(AccessError::TypeMismatch { .. })));
    drop(m);
    a.post_bytes(b"raw").unwrap();
    let m = b.recv().unwrap();
    // SAFETY: raw bytes are refused by the kind check before any read.
    let raw = unsafe { m.get_unchecked::<Point>() };
    assert!(matches!(raw, Err(AccessError::NotTyped)));
}

#[test]
fn a_capacity_over_the_maximum_is_refused_not_clamped() {
    use shmport::testing::layout::{MAX_CAPACITY, MIN_CAPACITY};
    for too_large in [MAX_CAPACITY + 1, usize::MAX / 2 + 1, usize::MAX] {
        let builder = MessageChannel::builder().capacity(too_large);
        let e = builder.build().expect_err("a ring over the maximum");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&MAX_CAPACITY.to_string()), "{e}");
        let e = builder
            .spawn(std::process::Command::new("true"))
            .expect_err("a spawned port's ring over the maximum");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
    // What is accepted is rounded up, and each end reads back what it got.
    for (asked, got) in [
        (0, MIN_CAPACITY),
        (1, MIN_CAPACITY),
        (MIN_CAPACITY + 1, 2 * MIN_CAPACITY),
        (100_000, 128 * 1024),
        (MAX_CAPACITY / 2 + 1, MAX_CAPACITY),
    ] {
        let (a, b) = MessageChannel::builder()
            .capacity(asked)
            .build()
            .unwrap()
            .into_ports();
        assert_eq!((a.capacity(), b.capacity()), (got, got), "asked {asked}");
    }
    let (a, _b) = MessageChannel::new().unwrap().into_ports();
    assert_eq!(a.capacity(), shmport::DEFAULT_CAPACITY);
}

/// Over the inline limit, a post travels out of line even though the ring
/// could hold it; under it, in the ring. Reservations ignore the limit.
#[test]
fn inline_limit_sends_large_posts_to_the_pool() {
    let (a, b) = MessageChannel::builder()
        .capacity(64 * 1024)
        .build()
        .unwrap()
        .into_ports();
    assert_eq!(a.inline_limit(), usize::MAX);
    a.set_inline_limit(1000);
    a.post_bytes(&[1; 1000]).unwrap();
    a.post_bytes(&[2; 1001]).unwrap();
    a.post(&vec![3u8; 2000]).unwrap();
    let mut r = a.reserve_bytes(4000).unwrap();
    r.bytes_mut().fill(4);
    r.commit().unwrap();
    let m = b.recv().unwrap();
    assert!(!m.is_out_of_line() && m.bytes() == [1; 1000]);
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.bytes() == [2; 1001]);
    let m = b.recv().unwrap();
    assert!(m.is_pooled() && m.get::<Vec<u8>>().unwrap().len() == 2000);
    let m = b.recv().unwrap();
    assert!(!m.is_out_of_line() && m.bytes() == [4; 4000]);
}

/// `post_with_ports_timeout` waits for room at most that long, and hands
/// every port back when it gives up.
#[test]
fn post_with_ports_timeout_hands_ports_back() {
    let (a, b) = MessageChannel::builder()
        .capacity(4096)
        .build()
        .unwrap()
        .into_ports();
    a.post_bytes(&[0; 1500]).unwrap();
    a.post_bytes(&[0; 1500]).unwrap();
    let (_c, d) = MessageChannel::new().unwrap().into_ports();
    let t = Instant::now();
    let e = a
        .post_bytes_with_ports_timeout(&[0; 1500], vec![d], Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(e.error, PostError::Timeout));
    assert!(t.elapsed() >= Duration::from_millis(40));
    assert_eq!(e.ports.len(), 1);
    drop(b.recv().unwrap());
    drop(b.recv().unwrap());
    a.post_with_ports_timeout(&7u32, e.ports, Duration::from_secs(5))
        .unwrap();
    let mut m = b.recv().unwrap();
    assert_eq!(m.take_ports().unwrap().len(), 1);
}
