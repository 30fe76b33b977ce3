//! A hostile peer and the large-message pool, both ways.
//!
//! - As a **sender** whose pool the victim reads: references to buffers it
//!   never announced, blocks outside their buffer, lengths past their
//!   block, buffers announced twice, without the write seal, of the wrong
//!   size, or more than a receiver maps. Each closes the victim's port with
//!   `ProtocolError`, after the good messages before it.
//! - As a **receiver** of the victim's pool: blocks given back that were
//!   never lent, or twice, and garbage positions in the release queue. The
//!   victim's next post that needs a block fails with `ProtocolError`;
//!   never is a block lent twice. And the pool's memfd, as the peer gets
//!   it, cannot be written: no writable mapping, no `mprotect`, no
//!   `pwrite`, no hole punched, no resize.
//!
//! The victim is a real port; its peer is raw (`shmport::testing::fuzzing`),
//! as in `hostile_socket.rs`. No case leaves a descriptor open.

mod common;

use std::os::fd::{AsFd, OwnedFd};

use common::raw::{assert_protocol_error, attach, leaks_nothing, memfd, send, serial};
use rustix::fs::SealFlags;
use shmport::testing::fuzzing::{RawPeer, decode_attachment, victim_and_raw_peer};
use shmport::testing::layout::{MIN_BLOCK_LOG2, POOL_REF};
use shmport::testing::ring::{Kind, RecordMeta};
use shmport::{CloseReason, PostError, RecvError};

/// The seals a pool buffer must carry.
const POOL_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::FUTURE_WRITE)
    .union(SealFlags::SEAL);

const BLOCK: usize = 1 << MIN_BLOCK_LOG2;

fn pooled(announce: bool) -> RecordMeta {
    RecordMeta {
        kind: Kind::Raw,
        out_of_line: false,
        pool: true,
        announce,
        kits: false,
        nports: 0,
        fingerprint: 0,
    }
}

fn pool_ref(buffer: u32, block: u32, len: u64) -> [u8; POOL_REF] {
    let mut r = [0u8; POOL_REF];
    r[..4].copy_from_slice(&buffer.to_le_bytes());
    r[4..8].copy_from_slice(&block.to_le_bytes());
    r[8..].copy_from_slice(&len.to_le_bytes());
    r
}

/// Announce buffer `id` of `blocks` blocks of 64 KiB (the memfd `fd`) with
/// the attachment of the next record.
fn announce(peer: &RawPeer, id: u32, blocks: u32, fd: &OwnedFd) {
    let mut body = vec![3];
    body.extend_from_slice(&id.to_le_bytes());
    body.push(MIN_BLOCK_LOG2);
    body.extend_from_slice(&blocks.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    attach(peer, &body, &[fd.as_fd()]);
}

/// A proper pool buffer of `blocks` blocks, block `i` filled with `i + 1`
/// (every byte written: allocated in full).
fn buffer(blocks: u32) -> OwnedFd {
    let content: Vec<u8> = (0..blocks as usize * BLOCK)
        .map(|i| (i / BLOCK) as u8 + 1)
        .collect();
    memfd(&content, content.len(), POOL_SEALS)
}

/// A buffer that is sealed and sized right but sparse: its holes would be
/// allocated by whoever reads them.
fn sparse_buffer() -> OwnedFd {
    memfd(&[1], 2 * BLOCK, POOL_SEALS)
}

/// A good pooled message first (buffer 0 announced, block 1), then what
/// `then` sends: the victim gets the good one, then `ProtocolError`.
fn after_a_good_message(what: &str, then: impl FnOnce(&mut RawPeer)) {
    leaks_nothing(what, || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        let fd = buffer(2);
        announce(&peer, 0, 2, &fd);
        drop(fd);
        peer.commit(pooled(true), &pool_ref(0, 1, 1000)).unwrap();
        let m = victim.try_recv().unwrap();
        assert!(
            m.is_pooled() && m.bytes() == [2; 1000],
            "{what}: the good one"
        );
        drop(m);
        then(&mut peer);
        assert_protocol_error(what, &victim);
        drop((victim, peer));
    });
}

#[test]
fn references_outside_the_announced_buffers_close_the_port() {
    let _g = serial();
    after_a_good_message("a buffer never announced", |p| {
        p.commit(pooled(false), &pool_ref(1, 0, 10)).unwrap();
    });
    after_a_good_message("a block past the buffer's end", |p| {
        p.commit(pooled(false), &pool_ref(0, 2, 10)).unwrap();
    });
    after_a_good_message("a length past the block's end", |p| {
        p.commit(pooled(false), &pool_ref(0, 1, BLOCK as u64 + 1))
            .unwrap();
    });
    after_a_good_message("a huge length", |p| {
        p.commit(pooled(false), &pool_ref(0, 0, u64::MAX)).unwrap();
    });
    after_a_good_message("a reference of the wrong size", |p| {
        p.commit(pooled(false), &[0; 8]).unwrap();
    });
    after_a_good_message("an announcement promised and not sent", |p| {
        p.commit(pooled(true), &pool_ref(1, 0, 10)).unwrap();
    });
}

#[test]
fn bad_announcements_close_the_port() {
    let _g = serial();
    type Case = (&'static str, fn() -> OwnedFd, u32, u32);
    let cases: [Case; 6] = [
        ("a buffer its sender did not allocate", sparse_buffer, 1, 2),
        (
            "a buffer without the write seal",
            || memfd(&[1], 2 * BLOCK, SealFlags::SHRINK | SealFlags::GROW),
            1,
            2,
        ),
        ("a buffer of the wrong size", || buffer(1), 1, 2),
        ("the same id again", || buffer(1), 0, 1),
        ("no blocks", || buffer(1), 1, 0),
        (
            "a pipe, not a memfd",
            || rustix::pipe::pipe().unwrap().0,
            1,
            1,
        ),
    ];
    for (what, fd, id, blocks) in cases {
        after_a_good_message(what, |p| {
            let fd = fd();
            announce(p, id, blocks, &fd);
            drop(fd);
            p.commit(pooled(true), &pool_ref(id, 0, 10)).unwrap();
        });
    }
    after_a_good_message("a block size out of range", |p| {
        let fd = buffer(1);
        let mut body = vec![3];
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(40);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        send(p, &[&b"A"[..], &body].concat(), &[fd.as_fd()]);
        p.commit(pooled(true), &pool_ref(1, 0, 10)).unwrap();
    });
}

#[test]
fn more_buffers_than_a_receiver_maps_close_the_port() {
    let _g = serial();
    leaks_nothing("a flood of buffers", || {
        let (victim, mut peer) = victim_and_raw_peer(1 << 20).unwrap();
        let mut outcome = None;
        for id in 0..300u32 {
            let fd = buffer(1);
            announce(&peer, id, 1, &fd);
            drop(fd);
            peer.commit(pooled(true), &pool_ref(id, 0, 1)).unwrap();
            match victim.try_recv() {
                Ok(m) => assert_eq!(m.bytes(), [1]),
                Err(e) => {
                    outcome = Some((id, e));
                    break;
                }
            }
        }
        let (id, e) = outcome.expect("the victim took every buffer");
        assert_eq!(id, 256, "refused at the 257th buffer");
        assert!(matches!(e, RecvError::Closed(CloseReason::ProtocolError)));
        drop((victim, peer));
    });
}

/// The victim posts a pooled message; the raw peer takes its reference
/// and the announcement (with the buffer's memfd).
fn victim_lends(victim: &shmport::MessagePort, peer: &mut RawPeer) -> ((u32, u32, u64), OwnedFd) {
    victim.post_bytes(&vec![7; 100_000]).unwrap();
    let att = recv_attachment(peer);
    let (_, fd) = att.pool.expect("the first use announces the buffer");
    let r = peer.take_pooled().expect("a pooled record");
    assert_eq!(r.2, 100_000);
    (r, fd)
}

/// The next attachment on the raw peer's socket, decoded.
fn recv_attachment(peer: &RawPeer) -> shmport::testing::fuzzing::DecodedAttachment {
    use std::mem::MaybeUninit;
    let mut buf = [0u8; 4096];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        peer.sock(),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for m in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    assert_eq!(buf[0], b'A', "one whole attachment");
    decode_attachment(&buf[1..got.bytes], fds).unwrap()
}

#[test]
fn blocks_given_back_that_were_not_lent_are_protocol_errors() {
    let _g = serial();
    type Case = (&'static str, fn(&mut RawPeer, (u32, u32)));
    let cases: [Case; 4] = [
        ("a block never lent", |p, (b, i)| {
            assert!(p.give_back(b, i + 1));
        }),
        ("a buffer that does not exist", |p, (b, _)| {
            assert!(p.give_back(b + 5, 0));
        }),
        ("the same block twice", |p, (b, i)| {
            assert!(p.give_back(b, i) && p.give_back(b, i));
        }),
        ("a release position beyond a queue of keys", |p, _| {
            let at = p.victim_release_header();
            p.store(at, 1 << 40);
        }),
    ];
    for (what, give_back) in cases {
        leaks_nothing(what, || {
            let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
            let ((b, i, _), fd) = victim_lends(&victim, &mut peer);
            drop(fd);
            give_back(&mut peer, (b, i));
            peer.wake();
            let got = victim.try_post_bytes(&vec![8; 100_000]);
            assert!(
                matches!(got, Err(PostError::Closed(CloseReason::ProtocolError))),
                "{what}: {got:?}"
            );
            // Small posts report it too: the port is broken both ways.
            assert!(matches!(
                victim.try_recv(),
                Err(RecvError::Closed(CloseReason::ProtocolError))
            ));
            drop((victim, peer));
        });
    }
}

#[test]
fn a_block_given_back_once_is_lent_again_and_never_twice() {
    let _g = serial();
    leaks_nothing("reuse", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        let ((b, i, _), fd) = victim_lends(&victim, &mut peer);
        drop(fd);
        // Not given back: the next post gets another block.
        victim.post_bytes(&vec![8; 100_000]).unwrap();
        let second = peer.take_pooled().unwrap();
        assert_ne!((second.0, second.1), (b, i));
        // Given back: the next post reuses it (last freed, first lent).
        assert!(peer.give_back(b, i));
        victim.post_bytes(&vec![9; 100_000]).unwrap();
        let third = peer.take_pooled().unwrap();
        assert_eq!((third.0, third.1), (b, i));
        drop((victim, peer));
    });
}

#[test]
fn the_receiver_cannot_write_the_pool() {
    use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
    let _g = serial();
    leaks_nothing("a writer", || {
        let (victim, mut peer) = victim_and_raw_peer(4096).unwrap();
        let (_, fd) = victim_lends(&victim, &mut peer);
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(POOL_SEALS), "{seals:?}");
        let len = rustix::fs::fstat(&fd).unwrap().st_size as usize;
        // SAFETY: fresh mappings the kernel places (or refuses); nothing
        // else refers to them; each is unmapped below.
        unsafe {
            let rw = rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            );
            assert_eq!(rw.unwrap_err(), rustix::io::Errno::PERM);
            let ro = rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                &fd,
                0,
            )
            .unwrap();
            let up = rustix::mm::mprotect(ro, len, MprotectFlags::READ | MprotectFlags::WRITE);
            assert_eq!(up.unwrap_err(), rustix::io::Errno::ACCESS);
            // What it reads is the victim's message.
            assert_eq!(*ro.cast::<u8>(), 7);
            rustix::mm::munmap(ro, len).unwrap();
        }
        assert_eq!(
            rustix::io::pwrite(&fd, b"x", 0).unwrap_err(),
            rustix::io::Errno::PERM
        );
        let punch = rustix::fs::fallocate(
            &fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            0,
            4096,
        );
        assert_eq!(punch.unwrap_err(), rustix::io::Errno::PERM);
        assert_eq!(
            rustix::fs::ftruncate(&fd, 0).unwrap_err(),
            rustix::io::Errno::PERM
        );
        // The victim's pool works on.
        drop(fd);
        victim.post_bytes(&vec![1; 100_000]).unwrap();
        assert!(peer.take_pooled().is_some());
        drop((victim, peer));
    });
}
