//! A hostile peer on the socket side: wrong descriptor counts, descriptors
//! of the wrong kind where a sealed memfd or a `SOCK_SEQPACKET` socket is
//! required, truncated and oversized socket messages, attachments that do
//! not match their records.
//!
//! The victim is a real port; its peer is raw (`shmport::testing::fuzzing`): the
//! segment and the socket, written as a hostile process would. Each case
//! checks the error is the clear one (the port closes with `ProtocolError`,
//! or that one message fails and the port goes on) and that no descriptor
//! is left open once the victim and its messages are gone. The cases run
//! one at a time (descriptor counts are per process).

mod common;

use common::raw::{SIZE_SEALS, assert_protocol_error, attach, leaks_nothing, memfd, send, serial};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::SealFlags;
use shmport::testing::fuzzing::{RawPeer, victim_and_raw_peer};
use shmport::testing::layout::{HEADER_AREA, LAYOUT_VERSION, MAGIC};
use shmport::testing::ring::{Kind, RecordMeta};
use shmport::{CloseReason, OpenError, PostError, RecvError, Trust};

/// The attachment body of `nports` ports (side A, no spin, empty inbox),
/// with or without an out-of-line memfd.
fn ports_body(ool: bool, nports: u16) -> Vec<u8> {
    let mut b = vec![ool as u8];
    b.extend_from_slice(&nports.to_le_bytes());
    for _ in 0..nports {
        b.push(0);
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    b
}

fn meta(out_of_line: bool, nports: u16) -> RecordMeta {
    RecordMeta {
        kind: Kind::Raw,
        out_of_line,
        pool: false,
        announce: false,
        kits: false,
        nports,
        fingerprint: 0,
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

fn sockets(ty: rustix::net::SocketType) -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        ty,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

fn tmpfile() -> OwnedFd {
    let fd = rustix::fs::open(
        std::env::temp_dir(),
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, 4096).unwrap();
    fd
}

/// A memfd laid out as a segment header with `magic`, sealed.
fn fake_segment(magic: u64) -> OwnedFd {
    let cap = 4096u64;
    let mut h = Vec::new();
    h.extend_from_slice(&magic.to_le_bytes());
    h.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
    h.extend_from_slice(&(HEADER_AREA as u32).to_le_bytes());
    h.extend_from_slice(&cap.to_le_bytes());
    h.extend_from_slice(&(HEADER_AREA as u64 + 2 * cap).to_le_bytes());
    memfd(&h, HEADER_AREA + 2 * cap as usize, SIZE_SEALS)
}

#[test]
fn an_out_of_line_descriptor_of_the_wrong_kind_is_a_protocol_error() {
    let _g = serial();
    type Make = fn() -> (OwnedFd, Option<OwnedFd>);
    let cases: [(&str, Make); 7] = [
        ("a regular file", || (tmpfile(), None)),
        ("a pipe", || {
            let (r, w) = pipe();
            (r, Some(w))
        }),
        ("a memfd without seals", || {
            (memfd(b"payload", 4096, SealFlags::empty()), None)
        }),
        ("a memfd sealed against growing only", || {
            (memfd(b"payload", 4096, SealFlags::GROW), None)
        }),
        ("a sealed memfd shorter than the record says", || {
            (memfd(b"short", 5, SIZE_SEALS), None)
        }),
        ("a socket", || {
            let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
            (a, Some(b))
        }),
        ("/dev/null", || {
            let fd = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            (fd, None)
        }),
    ];
    for (what, make) in cases {
        leaks_nothing(what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let (fd, other) = make();
            attach(&peer, &ports_body(true, 0), &[fd.as_fd()]);
            drop(fd);
            // The record: an out-of-line descriptor saying 4000 bytes.
            peer.commit(meta(true, 0), &4000u64.to_le_bytes()).unwrap();
            assert_protocol_error(what, &victim);
            drop((victim, peer, other));
        });
    }
}

#[test]
fn an_out_of_line_payload_without_the_write_seal_is_refused_when_untrusted() {
    let _g = serial();
    leaks_nothing("write seal", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        victim.set_trust(Trust::Untrusted);
        // Sealed against resizing but not against writing: the peer could
        // change the bytes after the victim validated them.
        let fd = memfd(b"mutable payload", 4096, SIZE_SEALS);
        attach(&peer, &ports_body(true, 0), &[fd.as_fd()]);
        drop(fd);
        peer.commit(meta(true, 0), &15u64.to_le_bytes()).unwrap();
        assert!(matches!(victim.try_recv(), Err(RecvError::Refused(_))));
        // That message only: the port goes on.
        let fd = memfd(b"sealed payload", 4096, SIZE_SEALS | SealFlags::WRITE);
        attach(&peer, &ports_body(true, 0), &[fd.as_fd()]);
        drop(fd);
        peer.commit(meta(true, 0), &14u64.to_le_bytes()).unwrap();
        let m = victim.try_recv().unwrap();
        assert!(m.is_out_of_line());
        assert_eq!(m.bytes(), b"sealed payload");
        drop(m);
        drop((victim, peer));
    });
}

#[test]
fn wrong_descriptor_counts_are_protocol_errors_and_leak_nothing() {
    let _g = serial();
    // (what, socket message, number of memfds attached, the record's
    // out-of-line flag and port count)
    let cases: Vec<(&str, Vec<u8>, usize, bool, u16)> = vec![
        (
            "out of line, no descriptor",
            [&b"A"[..], &ports_body(true, 0)].concat(),
            0,
            true,
            0,
        ),
        (
            "no ports, three descriptors",
            [&b"A"[..], &ports_body(false, 0)].concat(),
            3,
            false,
            1,
        ),
        (
            "one port, one descriptor",
            [&b"A"[..], &ports_body(false, 1)].concat(),
            1,
            false,
            1,
        ),
        (
            "two ports, three descriptors",
            [&b"A"[..], &ports_body(false, 2)].concat(),
            3,
            false,
            2,
        ),
        (
            "one port, 253 descriptors",
            [&b"A"[..], &ports_body(false, 1)].concat(),
            253,
            false,
            1,
        ),
        ("a wake token with descriptors", b"W".to_vec(), 2, false, 1),
        (
            "an unknown tag with descriptors",
            b"Q".to_vec(),
            2,
            false,
            1,
        ),
        ("descriptors and no bytes", Vec::new(), 1, true, 0),
        (
            "an attachment cut short in its port",
            [&b"A"[..], &ports_body(false, 1)[..5]].concat(),
            2,
            false,
            1,
        ),
    ];
    for (what, bytes, nfds, ool, nports) in cases {
        leaks_nothing(what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let fds: Vec<OwnedFd> = (0..nfds).map(|_| memfd(b"x", 4096, SIZE_SEALS)).collect();
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            send(&peer, &bytes, &borrowed);
            drop(borrowed);
            drop(fds);
            // A record that needs its attachment: the victim reads the
            // socket for it.
            let payload = if ool {
                1u64.to_le_bytes().to_vec()
            } else {
                b"p".to_vec()
            };
            peer.commit(meta(ool, nports), &payload).unwrap();
            assert_protocol_error(what, &victim);
            drop((victim, peer));
        });
    }
}

#[test]
fn an_attachment_that_does_not_match_its_record_is_a_protocol_error() {
    let _g = serial();
    // (attachment: out of line, ports) against (record: out of line, ports)
    for (att, rec) in [
        ((true, 0u16), (false, 1u16)),
        ((false, 1), (true, 0)),
        ((false, 1), (false, 2)),
        ((true, 0), (true, 1)),
    ] {
        let what = format!("attachment {att:?}, record {rec:?}");
        leaks_nothing(&what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let mut fds = Vec::new();
            let mut keep = Vec::new();
            if att.0 {
                fds.push(memfd(b"payload", 4096, SIZE_SEALS | SealFlags::WRITE));
            }
            for _ in 0..att.1 {
                let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
                fds.push(a);
                keep.push(b);
                fds.push(fake_segment(MAGIC));
            }
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            attach(&peer, &ports_body(att.0, att.1), &borrowed);
            drop(borrowed);
            drop(fds);
            let payload = if rec.0 {
                7u64.to_le_bytes().to_vec()
            } else {
                b"p".to_vec()
            };
            peer.commit(meta(rec.0, rec.1), &payload).unwrap();
            assert_protocol_error(&what, &victim);
            drop((victim, peer, keep));
        });
    }
}

#[test]
fn ports_made_of_the_wrong_descriptors_are_refused_and_the_good_ones_delivered() {
    let _g = serial();
    type Make = fn() -> (OwnedFd, OwnedFd, Vec<OwnedFd>);
    type Expected = fn(&OpenError) -> bool;
    let good: Make = || {
        let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
        (a, fake_segment(MAGIC), vec![b])
    };
    let bad: [(&str, Make, Expected); 6] = [
        (
            "a memfd as the socket",
            || (memfd(b"", 4096, SIZE_SEALS), fake_segment(MAGIC), vec![]),
            |e| matches!(e, OpenError::BadDescriptor(_)),
        ),
        (
            "a stream socket as the socket",
            || {
                let (a, b) = sockets(rustix::net::SocketType::STREAM);
                (a, fake_segment(MAGIC), vec![b])
            },
            |e| matches!(e, OpenError::BadDescriptor(_)),
        ),
        (
            "a pipe as the segment",
            || {
                let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
                let (r, w) = pipe();
                (a, r, vec![b, w])
            },
            |e| matches!(e, OpenError::BadDescriptor(_)),
        ),
        (
            "an unsealed memfd as the segment",
            || {
                let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
                (
                    a,
                    memfd(b"", HEADER_AREA + 8192, SealFlags::empty()),
                    vec![b],
                )
            },
            |e| matches!(e, OpenError::BadDescriptor(_)),
        ),
        (
            "a segment with a bad magic word",
            || {
                let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
                (a, fake_segment(0x0BAD_0BAD), vec![b])
            },
            |e| matches!(e, OpenError::BadMagic(0x0BAD_0BAD)),
        ),
        (
            "a regular file as the segment",
            || {
                let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
                (a, tmpfile(), vec![b])
            },
            |e| matches!(e, OpenError::BadDescriptor(_)),
        ),
    ];
    for (what, make_bad, expected) in bad {
        leaks_nothing(what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let mut keep = Vec::new();
            let mut fds = Vec::new();
            for make in [good, make_bad, good] {
                let (sock, seg, other) = make();
                fds.push(sock);
                fds.push(seg);
                keep.extend(other);
            }
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            attach(&peer, &ports_body(false, 3), &borrowed);
            drop(borrowed);
            drop(fds);
            peer.commit(meta(false, 3), b"three ports").unwrap();
            let mut m = victim.try_recv().unwrap();
            assert_eq!(m.port_count(), 3);
            let err = m.take_ports().expect_err(what);
            assert!(expected(&err.error), "{what}: {:?}", err.error);
            // The two good ports, in order, and they work.
            assert_eq!(err.ports.len(), 2, "{what}");
            for p in &err.ports {
                p.try_post_bytes(b"hello").unwrap();
            }
            drop(err);
            drop(m);
            // The port itself goes on.
            peer.commit(meta(false, 0), b"next").unwrap();
            assert_eq!(victim.try_recv().unwrap().bytes(), b"next");
            drop((victim, peer, keep));
        });
    }
}

#[test]
fn oversized_socket_messages_are_protocol_errors() {
    let _g = serial();
    for (what, len, nfds) in [
        ("an attachment longer than any the protocol sends", 5000, 0),
        ("a long attachment with descriptors", 70_000, 4),
    ] {
        leaks_nothing(what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let mut bytes = vec![0u8; len];
            bytes[0] = b'A';
            let fds: Vec<OwnedFd> = (0..nfds).map(|_| memfd(b"x", 64, SIZE_SEALS)).collect();
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            send(&peer, &bytes, &borrowed);
            drop(borrowed);
            drop(fds);
            peer.commit(meta(true, 0), &1u64.to_le_bytes()).unwrap();
            assert_protocol_error(what, &victim);
            drop((victim, peer));
        });
    }
}

#[test]
fn garbage_on_the_socket_of_an_idle_port_is_seen_by_the_next_receive() {
    let _g = serial();
    leaks_nothing("idle port", || {
        let (victim, peer) = victim_and_raw_peer(4096).unwrap();
        let fd = memfd(b"x", 64, SIZE_SEALS);
        send(&peer, b"Zgarbage", &[fd.as_fd()]);
        drop(fd);
        // Nothing in the ring: the receive looks at the socket and finds
        // the garbage (an idle port never blocks on a broken peer).
        let got = victim
            .recv_timeout(std::time::Duration::from_secs(5))
            .map(|m| m.bytes().to_vec());
        assert!(
            matches!(got, Err(RecvError::Closed(CloseReason::ProtocolError))),
            "{got:?}"
        );
        drop((victim, peer));
    });
}

#[test]
fn descriptors_still_queued_when_the_port_drops_are_closed() {
    let _g = serial();
    leaks_nothing("queued attachments", || {
        let (victim, peer) = victim_and_raw_peer(4096).unwrap();
        // Attachments for records never published: the port takes them in
        // when it closes and drops what they carry.
        for _ in 0..10 {
            let fd = memfd(b"x", 64, SIZE_SEALS | SealFlags::WRITE);
            attach(&peer, &ports_body(true, 0), &[fd.as_fd()]);
            let (a, b) = sockets(rustix::net::SocketType::SEQPACKET);
            let seg = fake_segment(MAGIC);
            attach(&peer, &ports_body(false, 1), &[a.as_fd(), seg.as_fd()]);
            drop((a, b, seg));
        }
        assert!(matches!(victim.try_recv(), Err(RecvError::Empty)));
        drop(victim);
        drop(peer);
    });
}

#[test]
fn an_empty_socket_message_closes_the_port_and_never_hangs_it() {
    let _g = serial();
    leaks_nothing("empty message", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        peer.commit(meta(false, 0), b"before").unwrap();
        send(&peer, b"", &[]);
        // The record committed before is delivered, then the close. The
        // kernel reports an empty SOCK_SEQPACKET message as it reports the
        // peer's end closing (zero bytes, no flags); the port tells them
        // apart (the peer is alive: its side is not shut down) and closes
        // with a protocol error.
        assert_eq!(victim.try_recv().unwrap().bytes(), b"before");
        let got = victim
            .recv_timeout(std::time::Duration::from_secs(5))
            .map(|m| m.bytes().to_vec());
        assert!(
            matches!(got, Err(RecvError::Closed(CloseReason::ProtocolError))),
            "{got:?}"
        );
        assert!(matches!(
            victim.try_post_bytes(b"x"),
            Err(PostError::Closed(_))
        ));
        drop((victim, peer));
    });
}

#[test]
fn a_received_port_with_an_absurd_spin_time_is_bounded_and_honours_timeouts() {
    let _g = serial();
    leaks_nothing("spin", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        let (sock, far) = sockets(rustix::net::SocketType::SEQPACKET);
        let seg = fake_segment(MAGIC);
        // One port, side A, spin u64::MAX nanoseconds (584 years).
        let mut body = vec![0, 1, 0, 0];
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        attach(&peer, &body, &[sock.as_fd(), seg.as_fd()]);
        drop((sock, seg));
        peer.commit(meta(false, 1), b"a port").unwrap();
        let mut m = victim.try_recv().unwrap();
        let port = m.take_ports().unwrap().pop().unwrap();
        // The spin it keeps is bounded (at most a second).
        assert!(port.spin() <= std::time::Duration::from_secs(1));
        // A timed receive returns on time.
        let t = std::time::Instant::now();
        assert!(matches!(
            port.recv_timeout(std::time::Duration::from_millis(50)),
            Err(RecvError::Timeout)
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // And the far end hanging up ends a receive at once.
        drop(far);
        let got = port
            .recv_timeout(std::time::Duration::from_secs(5))
            .map(|m| m.bytes().to_vec());
        assert!(
            matches!(got, Err(RecvError::Closed(CloseReason::PeerDied))),
            "{got:?}"
        );
        drop(port);
        drop(m);
        drop((victim, peer));
    });
}

/// A peer declares an out-of-line message of many gigabytes in a sparse,
/// sealed memfd (it costs the peer nothing). The receiver refuses it
/// before mapping anything beyond its limit, for that message only. It
/// used to map and populate the whole length.
#[test]
fn a_huge_sparse_out_of_line_payload_is_refused_for_that_message_only() {
    let _g = serial();
    leaks_nothing("huge out-of-line payloads", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        assert_eq!(victim.max_message_size(), shmport::DEFAULT_MAX_MESSAGE_SIZE);
        let mut send_ool = |content: &[u8], size: u64, claimed: u64| {
            let fd = memfd(content, size as usize, SIZE_SEALS | SealFlags::WRITE);
            attach(&peer, &ports_body(true, 0), &[fd.as_fd()]);
            drop(fd);
            peer.commit(meta(true, 0), &claimed.to_le_bytes()).unwrap();
        };
        for gib in [2u64, 64] {
            send_ool(b"sparse", gib << 30, gib << 30);
            let got = victim.try_recv();
            assert!(
                matches!(got, Err(RecvError::Refused(_))),
                "{gib} GiB: {got:?}"
            );
        }
        // The limit is the port's: lowered, a small message is refused too;
        // raised, it is read.
        victim.set_max_message_size(100);
        send_ool(&[9; 101], 4096, 101);
        assert!(matches!(victim.try_recv(), Err(RecvError::Refused(_))));
        victim.set_max_message_size(101);
        send_ool(&[9; 101], 4096, 101);
        assert_eq!(victim.try_recv().unwrap().bytes(), &[9; 101]);
        // The port goes on.
        peer.commit(meta(false, 0), b"after").unwrap();
        assert_eq!(victim.try_recv().unwrap().bytes(), b"after");
        drop((victim, peer));
    });
}

/// A part of an attachment sent in several messages, not the last: the
/// tag `M`, then `body`.
fn part(peer: &RawPeer, body: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut b = vec![b'M'];
    b.extend_from_slice(body);
    send(peer, &b, fds);
}

#[test]
fn an_attachment_in_parts_is_put_back_together_wherever_it_is_cut() {
    let _g = serial();
    leaks_nothing("parts", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        let body = ports_body(true, 0);
        for cut in 0..=body.len() {
            for fds_first in [true, false] {
                let fd = memfd(b"in parts", 4096, SIZE_SEALS | SealFlags::WRITE);
                let fds = [fd.as_fd()];
                let (early, late): (&[BorrowedFd<'_>], &[BorrowedFd<'_>]) =
                    if fds_first { (&fds, &[]) } else { (&[], &fds) };
                part(&peer, &body[..cut], early);
                // Tokens and empty parts may come between parts.
                peer.wake();
                part(&peer, &[], &[]);
                attach(&peer, &body[cut..], late);
                drop(fd);
                peer.commit(meta(true, 0), &8u64.to_le_bytes()).unwrap();
                let m = victim.try_recv().unwrap();
                assert_eq!(m.bytes(), b"in parts", "cut at {cut}");
                drop(m);
                peer.drain();
            }
        }
        drop((victim, peer));
    });
}

#[test]
fn an_attachment_in_parts_larger_than_a_receiver_accepts_is_a_protocol_error() {
    let _g = serial();
    // The same memfd sent 253 times a part: the victim installs each copy.
    if common::allow_fds(17_500) < 17_500 {
        eprintln!("skipped: needs 17,500 descriptors (RLIMIT_NOFILE)");
        return;
    }
    for (what, bytes, nfds) in [
        ("more than 256 KiB of body", 4095, 0),
        ("more than 16,384 descriptors", 1, 253),
    ] {
        leaks_nothing(what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let fd = memfd(b"x", 64, SIZE_SEALS);
            let fds: Vec<BorrowedFd<'_>> = (0..nfds).map(|_| fd.as_fd()).collect();
            let chunk = vec![0u8; bytes];
            let mut refused = false;
            for i in 1..=100 {
                part(&peer, &chunk, &fds);
                // The victim takes in what came (a receive that finds the
                // ring empty does), so that the socket never fills.
                match victim.try_recv() {
                    Err(RecvError::Empty) => {}
                    Err(RecvError::Closed(CloseReason::ProtocolError)) => {
                        assert_eq!(i, 65, "{what}: refused at part {i}");
                        refused = true;
                        break;
                    }
                    other => panic!("{what}: {:?}", other.map(|m| m.bytes().len())),
                }
            }
            assert!(refused, "{what}: never refused");
            drop(fds);
            drop(fd);
            peer.commit(meta(true, 0), &1u64.to_le_bytes()).unwrap();
            assert_protocol_error(what, &victim);
            drop((victim, peer));
        });
    }
}

#[test]
fn the_first_parts_of_an_attachment_are_closed_when_the_peer_goes() {
    let _g = serial();
    leaks_nothing("parts then hang-up", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        peer.commit(meta(false, 0), b"before").unwrap();
        let fd = memfd(b"x", 64, SIZE_SEALS);
        part(&peer, &[1], &[fd.as_fd()]);
        drop(fd);
        assert_eq!(victim.try_recv().unwrap().bytes(), b"before");
        drop(peer);
        let got = victim
            .recv_timeout(std::time::Duration::from_secs(5))
            .map(|m| m.bytes().len());
        assert!(
            matches!(got, Err(RecvError::Closed(CloseReason::PeerDied))),
            "{got:?}"
        );
        drop(victim);
    });
}

#[test]
fn a_part_whose_descriptors_are_lost_loses_that_message_only() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let _g = serial();
    let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
    let fd = memfd(b"lost", 4096, SIZE_SEALS | SealFlags::WRITE);
    part(&peer, &[1], &[fd.as_fd()]);
    drop(fd);
    // No descriptor free: the victim takes the part in, the kernel cannot
    // install its memfd.
    let saved = getrlimit(Resource::Nofile);
    let highest = *common::open_fds().last().unwrap() as u64;
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(highest + 16),
            maximum: saved.maximum,
        },
    )
    .unwrap();
    let mut hold = Vec::new();
    while let Ok(fd) = rustix::io::dup(std::io::stdin()) {
        hold.push(fd);
    }
    let got = victim.try_recv();
    drop(hold);
    setrlimit(Resource::Nofile, saved).unwrap();
    assert!(
        matches!(got, Err(RecvError::Empty)),
        "{:?}",
        got.map(|_| ())
    );
    // The rest comes; the message fails for want of descriptors, the next
    // one is fine.
    attach(&peer, &[0, 0], &[]);
    peer.commit(meta(true, 0), &4u64.to_le_bytes()).unwrap();
    match victim.try_recv() {
        Err(RecvError::Io(e)) => assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::MFILE.raw_os_error())
        ),
        other => panic!("expected EMFILE, got {:?}", other.map(|_| ())),
    }
    let fd = memfd(b"found", 4096, SIZE_SEALS | SealFlags::WRITE);
    part(&peer, &[1, 0], &[fd.as_fd()]);
    attach(&peer, &[0], &[]);
    drop(fd);
    peer.commit(meta(true, 0), &5u64.to_le_bytes()).unwrap();
    assert_eq!(victim.try_recv().unwrap().bytes(), b"found");
}

/// A peer that marks a move of a channel that no move could concern (the
/// sleep word `SLEEP_MOVED` on a channel of its own, no link made over it):
/// the victim's posts, non-blocking or not, and its drop end at once with
/// `ProtocolError` rather than waiting for an announcement that never
/// comes.
#[test]
fn a_move_marked_where_none_can_be_is_a_protocol_error_not_a_hang() {
    // Its descriptors must not show in another test's leak check.
    let _serial = serial();
    use shmport::testing::layout::{RING_HEADER, RingHeader, SLEEP_MOVED};
    let (victim, raw) = victim_and_raw_peer(1 << 16).unwrap();
    // The victim is side B: it writes ring 1, whose consumer is the peer.
    let at = RING_HEADER[1] + std::mem::offset_of!(RingHeader, consumer_wait);
    raw.store(at, u64::from(SLEEP_MOVED));
    let start = std::time::Instant::now();
    let first = victim.try_post_bytes(b"one");
    let second = victim.try_post_bytes(b"two");
    assert!(
        matches!(second, Err(PostError::Closed(CloseReason::ProtocolError))),
        "{first:?} then {second:?}"
    );
    drop(victim);
    assert!(start.elapsed() < std::time::Duration::from_millis(500));
}
