//! The attachment codec: round trips, malformed and hostile input, parts,
//! partial attachments that travel, and the scan of an inbox.

use super::*;

fn memfd() -> OwnedFd {
    crate::sys::memfd::create("t", 4096).unwrap()
}

#[test]
fn nested_attachments_round_trip() {
    let inner = Attachment {
        ool: Some(memfd()),
        pool: None,
        ports: vec![],
        lost: false,
    };
    let a = Attachment {
        lost: false,
        ool: Some(memfd()),
        pool: None,
        ports: vec![PortParts {
            seg: SegmentRef::Unopened(memfd()),
            sock: memfd(),
            side: Side::B,
            spin: Duration::from_micros(7),
            inbox: VecDeque::from([inner]),
            partial: Partial::default(),
            pool: Vec::new(),
            kit: false,
            held: Vec::new(),
            links: Vec::new(),
        }],
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    a.encode(&mut body, &mut fds);
    assert_eq!(fds.len(), 4);
    let owned: Vec<OwnedFd> = fds
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect();
    let b = Attachment::decode(&body, owned).unwrap();
    assert!(b.ool.is_some());
    assert_eq!(b.ports.len(), 1);
    assert_eq!(b.ports[0].side, Side::B);
    assert_eq!(b.ports[0].spin, Duration::from_micros(7));
    assert_eq!(b.ports[0].inbox.len(), 1);
    assert!(b.ports[0].inbox[0].ool.is_some());
}

#[test]
fn a_lost_attachment_travels_as_a_placeholder() {
    let mut body = Vec::new();
    let mut fds = Vec::new();
    let lost = Attachment::lost();
    lost.encode(&mut body, &mut fds);
    assert!(fds.is_empty());
    assert!(Attachment::decode(&body, Vec::new()).unwrap().lost);
    assert_eq!(
        Attachment::decode(&[2, 1, 0], Vec::new()).err().unwrap().0,
        "a lost attachment carries ports"
    );
}

#[test]
fn malformed_attachments_are_refused() {
    let fd = || vec![memfd()];
    for (body, fds, why) in [
        (vec![], vec![], "attachment cut short"),
        (vec![4, 0, 0], vec![], "bad out-of-line flag in attachment"),
        (vec![3, 0, 0], vec![], "attachment cut short"),
        (vec![1, 0, 0], vec![], "attachment cut short"),
        (
            vec![0, 0, 0, 9],
            vec![],
            "attachment has bytes or descriptors left over",
        ),
        (
            vec![0, 0, 0],
            fd(),
            "attachment has bytes or descriptors left over",
        ),
        (vec![0, 1, 0, 0x40], vec![], "bad side in attachment"),
        (
            vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            fd(),
            "attachment cut short",
        ),
    ] {
        assert_eq!(Attachment::decode(&body, fds).err().unwrap().0, why);
    }
    // Hostile nesting depth.
    let mut body = Vec::new();
    for _ in 0..40 {
        body.extend_from_slice(&[0, 1, 0, 0]);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    let fds: Vec<OwnedFd> = (0..80).map(|_| memfd()).collect();
    assert_eq!(
        Attachment::decode(&body, fds).err().unwrap().0,
        "attachment nested too deep"
    );
}

fn owned(fds: &[BorrowedFd<'_>]) -> Vec<OwnedFd> {
    fds.iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect()
}

/// A port (unopened parts) whose inbox holds `n` out-of-line
/// attachments.
fn port_holding(n: usize) -> PortParts {
    PortParts {
        seg: SegmentRef::Unopened(memfd()),
        sock: memfd(),
        side: Side::A,
        spin: Duration::ZERO,
        inbox: (0..n)
            .map(|_| Attachment {
                ool: Some(memfd()),
                ..Attachment::default()
            })
            .collect(),
        partial: Partial::default(),
        pool: Vec::new(),
        kit: false,
        held: Vec::new(),
        links: Vec::new(),
    }
}

/// Send `body` and `fds` through [`parts`] and a [`Partial`], as the
/// two ends of a socket do.
fn through_parts(body: &[u8], fds: &[BorrowedFd<'_>]) -> (usize, Attachment) {
    let mut partial = Partial::default();
    let mut n = 0;
    let mut whole = None;
    for (b, f, last) in parts(body, fds) {
        assert!(b.len() < MAX_BODY && f.len() <= MAX_FDS);
        assert!(whole.is_none(), "a part after the last");
        n += 1;
        whole = partial.take(b, Some(owned(f)), last).unwrap();
        assert_eq!(whole.is_some(), last);
    }
    assert!(partial.is_empty());
    (n, whole.unwrap())
}

#[test]
fn an_attachment_too_large_for_one_message_goes_in_parts() {
    // 600 descriptors (three parts of at most 253), 1,800 bytes.
    let a = Attachment {
        ports: vec![port_holding(598)],
        ..Attachment::default()
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    a.encode(&mut body, &mut fds);
    assert_eq!(fds.len(), 600);
    let (n, b) = through_parts(&body, &fds);
    assert_eq!(n, 3);
    assert_eq!(b.ports[0].inbox.len(), 598);

    // 500 ports in five messages queued on one port: more than 4 KiB of
    // body, and 1,002 descriptors.
    let a = Attachment {
        ports: (0..100).map(|_| port_holding(0)).collect(),
        ..Attachment::default()
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    a.encode(&mut body, &mut fds);
    // Five times over, as if queued in five messages of one port.
    let big: Vec<u8> = {
        let mut b = vec![0, 1, 0, 0];
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&5u32.to_le_bytes());
        for _ in 0..5 {
            b.extend_from_slice(&body);
        }
        b
    };
    let mut all = vec![memfd().as_fd().try_clone_to_owned().unwrap(), memfd()];
    for _ in 0..5 {
        all.extend(owned(&fds));
    }
    let all_b: Vec<BorrowedFd<'_>> = all.iter().map(|f| f.as_fd()).collect();
    assert!(big.len() > PART_BODY);
    let (n, b) = through_parts(&big, &all_b);
    assert_eq!(
        n,
        big.len()
            .div_ceil(PART_BODY)
            .max(all_b.len().div_ceil(MAX_FDS))
    );
    assert_eq!(b.ports[0].inbox.len(), 5);
    assert!(b.ports[0].inbox.iter().all(|a| a.ports.len() == 100));

    // One message when it fits.
    let (n, _) = through_parts(&[0, 0, 0], &[]);
    assert_eq!(n, 1);
}

#[test]
fn a_partial_attachment_travels_with_its_port() {
    // The first part of an out-of-line attachment (body 1 0 0, one
    // memfd) is taken in: its flag byte and the memfd.
    let mut partial = Partial::default();
    assert!(
        partial
            .take(&[1], Some(vec![memfd()]), false)
            .unwrap()
            .is_none()
    );
    let mut port = port_holding(2);
    port.partial = partial;
    let a = Attachment {
        ports: vec![port],
        ..Attachment::default()
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    a.encode(&mut body, &mut fds);
    assert_eq!(fds.len(), 5);
    let mut b = Attachment::decode(&body, owned(&fds)).unwrap();
    let mut p = b.ports.pop().unwrap();
    assert_eq!(p.inbox.len(), 2);
    assert_eq!(p.partial.body, [1]);
    assert_eq!(p.partial.fds.len(), 1);
    // The new owner gathers the rest from the socket.
    let whole = p
        .partial
        .take(&[0, 0], Some(vec![]), true)
        .unwrap()
        .unwrap();
    assert!(whole.ool.is_some() && whole.ports.is_empty());
    assert!(p.partial.is_empty());

    // A lost partial travels as such; a lost one with bytes is refused.
    let mut port = port_holding(0);
    port.partial = Partial::lost();
    let a = Attachment {
        ports: vec![port],
        ..Attachment::default()
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    a.encode(&mut body, &mut fds);
    let b = Attachment::decode(&body, owned(&fds)).unwrap();
    assert!(b.ports[0].partial.lost);
    let at = body.len() - 9;
    body[at + 1] = 1;
    body.push(0);
    assert_eq!(
        Attachment::decode(&body, owned(&fds)).err().unwrap().0,
        "a lost partial attachment carries bytes"
    );
}

#[test]
fn lost_parts_and_oversized_attachments() {
    // A lost middle part: the whole attachment is lost, the rest
    // dropped.
    let mut partial = Partial::default();
    assert!(
        partial
            .take(&[1], Some(vec![memfd()]), false)
            .unwrap()
            .is_none()
    );
    assert!(partial.take(&[], None, false).unwrap().is_none());
    assert!(
        partial
            .take(&[0, 0], Some(vec![memfd()]), false)
            .unwrap()
            .is_none()
    );
    assert!(partial.fds.is_empty());
    assert!(
        partial
            .take(&[0], Some(vec![]), true)
            .unwrap()
            .unwrap()
            .lost
    );
    assert!(partial.is_empty());
    // A lost last part.
    assert!(
        partial
            .take(&[1], Some(vec![memfd()]), false)
            .unwrap()
            .is_none()
    );
    assert!(partial.take(&[], None, true).unwrap().unwrap().lost);

    // Past the bounds: refused, what came dropped.
    let chunk = vec![0u8; PART_BODY];
    for _ in 0..MAX_ATTACH_BODY / PART_BODY {
        assert!(partial.take(&chunk, Some(vec![]), false).unwrap().is_none());
    }
    assert_eq!(
        partial.take(&chunk, Some(vec![]), false).err().unwrap().0,
        "attachment larger than a receiver accepts"
    );
    assert!(partial.is_empty());
}

#[test]
fn a_scan_finds_the_depth_and_the_peer() {
    let seg = Segment::create(4096).unwrap();
    // An inbox holding a port (side B of `seg`) inside a port inside a
    // port.
    let peer = PortParts {
        seg: SegmentRef::Unopened(seg.fd().unwrap().try_clone().unwrap()),
        ..port_holding(0)
    };
    let wrap = |p: PortParts| PortParts {
        inbox: VecDeque::from([Attachment {
            ports: vec![p],
            ..Attachment::default()
        }]),
        ..port_holding(0)
    };
    let inbox = wrap(wrap(PortParts {
        side: Side::B,
        ..peer
    }))
    .inbox;
    let s = scan(&inbox, &[&seg], Side::A);
    assert_eq!(s.depth, 2);
    assert!(s.holds_peer);
    // The same side is not the peer; another segment neither.
    assert!(!scan(&inbox, &[&seg], Side::B).holds_peer);
    let other = Segment::create(4096).unwrap();
    assert!(!scan(&inbox, &[&other], Side::A).holds_peer);
    // A mapped segment is recognised too.
    let mapped = wrap(PortParts {
        seg: SegmentRef::Mapped(seg.clone()),
        side: Side::B,
        ..port_holding(0)
    })
    .inbox;
    let s = scan(&mapped, &[&seg], Side::A);
    assert!(s.holds_peer);
    assert_eq!(s.depth, 1);
    assert_eq!(scan(&VecDeque::new(), &[&seg], Side::A).depth, 0);
}

#[test]
fn pool_announcements_and_a_ports_pool_buffers_round_trip() {
    let info = |id| BufferInfo {
        id,
        log2: 20,
        blocks: 4,
    };
    let a = Attachment {
        pool: Some((info(7), memfd())),
        ports: vec![PortParts {
            pool: vec![(info(1), memfd()), (info(2), memfd())],
            ..port_holding(1)
        }],
        ..Attachment::default()
    };
    let mut body = Vec::new();
    let mut fds = Vec::new();
    a.encode(&mut body, &mut fds);
    // The buffer, then the port's socket, segment, inbox memfd, 2 buffers.
    assert_eq!(fds.len(), 6);
    let b = Attachment::decode(&body, owned(&fds)).unwrap();
    assert_eq!(b.pool.as_ref().map(|p| p.0), Some(info(7)));
    assert!(b.ool.is_none());
    let infos: Vec<_> = b.ports[0].pool.iter().map(|p| p.0).collect();
    assert_eq!(infos, [info(1), info(2)]);
    // Cut anywhere, it is refused, never a panic.
    for cut in 0..body.len() {
        assert!(Attachment::decode(&body[..cut], owned(&fds)).is_err());
    }
}

#[test]
fn a_port_with_more_pool_buffers_than_a_receiver_maps_is_refused() {
    // Flag byte: side A with pool buffers; spin; empty inbox; 257 buffers.
    let mut body = vec![0, 1, 0, super::HAS_POOL];
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&((MAX_BUFFERS + 1) as u16).to_le_bytes());
    let fds = vec![memfd(), memfd()];
    assert_eq!(
        Attachment::decode(&body, fds).err(),
        Some(Corrupt(
            "a port carries more pool buffers than a receiver maps"
        ))
    );
}
