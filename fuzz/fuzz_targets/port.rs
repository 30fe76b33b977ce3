//! A real port (the victim) whose peer is hostile: between the victim's
//! receives and posts, the peer commits records with any header fields
//! (pooled ones naming any buffer, block and length), rewrites any word of
//! the shared segment (ring header lines, record headers, payloads, the
//! release queues), sends anything on the socket (wake tokens, well-formed
//! and malformed attachments, pool buffer announcements, unknown tags,
//! descriptors of every kind), and gives back blocks of the victim's pool,
//! lent or not.
//!
//! Checked: nothing panics; a message the victim receives can be read (its
//! bytes, and typed access, which fails cleanly on a bad archive or type);
//! once the victim reports `ProtocolError`, every later receive and post
//! does too; and when everything is dropped, no descriptor is left open.
#![no_main]

use std::os::fd::AsFd;

use libfuzzer_sys::fuzz_target;
use shmport::testing::fuzzing::{RawPeer, victim_and_raw_peer};
use shmport::testing::layout::{POOL_REF, RECORD_HEADER, RING_HEADER};
use shmport::testing::ring::{Kind, RecordMeta};
use shmport::{CloseReason, MessagePort, PostError, RecvError, Trust};
use shmport_fuzz::{
    ACCESS_TYPES, Reader, access_as, fingerprint_of, make_fd, open_fd_count, send_raw,
};

fuzz_target!(|data: &[u8]| {
    let before = open_fd_count();
    run(data);
    assert_eq!(open_fd_count(), before, "descriptors leaked");
});

/// Descriptors of the kinds `make_fd` offers, plus the peer's own segment
/// and socket and the victim's socket (a port sent to itself).
fn pick_fds<'a>(
    r: &mut Reader<'_>,
    peer: &'a RawPeer,
    victim: &'a MessagePort,
    made: &mut Vec<std::os::fd::OwnedFd>,
    keep: &mut Vec<std::os::fd::OwnedFd>,
) -> Vec<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    let n = r.u8() as usize % 5;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.u8();
        match kind % 16 {
            13 => out.push(peer.segment_fd().as_raw_fd()),
            14 => out.push(peer.sock().as_raw_fd()),
            15 => out.push(victim.as_fd().as_raw_fd()),
            _ => {
                let (fd, other) = make_fd(kind, r);
                out.push(fd.as_raw_fd());
                made.push(fd);
                keep.extend(other);
            }
        }
    }
    out
}

fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let cap = 4096usize << (r.u8() % 2);
    let (victim, mut peer) = victim_and_raw_peer(cap).unwrap();
    let mut keep = Vec::new();
    let mut held = Vec::new();
    let mut last_pos: Option<u64> = None;
    let mut broken = false;
    let max = shmport::testing::fuzzing::max_payload(cap);
    let mut steps = 0;
    while !r.is_empty() && steps < 500 {
        steps += 1;
        match r.u8() % 14 {
            0 | 1 => {
                let which = r.u8();
                let pool = r.u8().is_multiple_of(4);
                let meta = RecordMeta {
                    kind: if which.is_multiple_of(4) {
                        Kind::Raw
                    } else {
                        Kind::Typed
                    },
                    out_of_line: r.u8().is_multiple_of(8),
                    pool,
                    announce: pool && r.u8().is_multiple_of(2),
                    // Kit references the receiver does not hold (or forged).
                    kits: r.u8().is_multiple_of(16),
                    nports: if r.u8().is_multiple_of(8) {
                        r.u8() as u16 % 4
                    } else {
                        0
                    },
                    fingerprint: match r.u8() % 4 {
                        0 => r.u64(),
                        _ => fingerprint_of(which),
                    },
                };
                let len = if pool && !r.u8().is_multiple_of(8) {
                    POOL_REF
                } else {
                    r.u16() as usize % (max + 1)
                };
                let mut payload = r.bytes(len).to_vec();
                payload.resize(len, 0);
                if pool && len == POOL_REF && !r.u8().is_multiple_of(4) {
                    // A plausible reference: a small buffer id and block.
                    payload[..4].copy_from_slice(&(r.u8() as u32 % 3).to_le_bytes());
                    payload[4..8].copy_from_slice(&(r.u8() as u32 % 5).to_le_bytes());
                    payload[8..].copy_from_slice(&(r.u32() as u64 % 70_000).to_le_bytes());
                }
                if let Some(pos) = peer.commit(meta, &payload) {
                    last_pos = Some(pos);
                }
            }
            2 => {
                // Rewrite a header word of the last record committed.
                let Some(pos) = last_pos else { continue };
                let off =
                    peer.victim_ring_data() + (pos as usize % cap) + (r.u8() as usize % 4) * 8;
                let v = r.hostile_u64(cap as u64);
                peer.store(off, v);
            }
            3 => {
                // Any word of the ring headers or the victim's ring.
                let off = match r.u8() % 3 {
                    0 => RING_HEADER[0] + (r.u16() as usize % 512),
                    1 => RING_HEADER[1] + (r.u16() as usize % 512),
                    _ => peer.victim_ring_data() + r.u16() as usize % cap,
                };
                let v = r.hostile_u64(cap as u64);
                peer.store(off, v);
            }
            4 => {
                // A raw socket message: any tag, any body, any descriptors.
                let mut made = Vec::new();
                let fds = pick_fds(&mut r, &peer, &victim, &mut made, &mut keep);
                let bytes = r.blob(300).to_vec();
                // SAFETY: every number names a descriptor open until this
                // arm ends (`made`, the peer's, or the victim's).
                let borrowed: Vec<_> = fds
                    .iter()
                    .map(|&fd| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
                    .collect();
                send_raw(peer.sock(), &bytes, &borrowed);
            }
            5 => {
                // A well-formed attachment: out-of-line flag, ports, each
                // with its socket and segment, from whatever descriptors.
                let mut made = Vec::new();
                let fds = pick_fds(&mut r, &peer, &victim, &mut made, &mut keep);
                let ool = [0, 1, 3][r.u8() as usize % 3];
                let nports = r.u8() as u16 % 3;
                let mut body = vec![b'A', ool];
                if ool == 3 {
                    // A pool buffer announcement: id, block size, blocks.
                    body.extend_from_slice(&(r.u8() as u32 % 3).to_le_bytes());
                    body.push([16, 16, 17, 15, 27, 0][r.u8() as usize % 6]);
                    body.extend_from_slice(&(r.u8() as u32 % 5).to_le_bytes());
                }
                body.extend_from_slice(&nports.to_le_bytes());
                for _ in 0..nports {
                    body.push(r.u8() % 2);
                    body.extend_from_slice(&(r.u16() as u64).to_le_bytes());
                    body.extend_from_slice(&0u32.to_le_bytes());
                }
                // SAFETY: as above.
                let borrowed: Vec<_> = fds
                    .iter()
                    .map(|&fd| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
                    .collect();
                send_raw(peer.sock(), &body, &borrowed);
            }
            6 | 7 => {
                let got = victim.try_recv();
                if broken {
                    assert!(
                        matches!(got, Err(RecvError::Closed(CloseReason::ProtocolError))),
                        "a broken port received {got:?}"
                    );
                }
                match got {
                    Ok(mut m) => {
                        let _ = m.bytes().iter().fold(0u8, |a, b| a ^ b);
                        let _ = m.is_out_of_line();
                        access_as(&m, r.u8() % ACCESS_TYPES);
                        if r.u8().is_multiple_of(2) {
                            let ports = match m.take_ports() {
                                Ok(p) => p,
                                Err(e) => e.ports,
                            };
                            for p in ports {
                                let _ = p.try_post_bytes(b"hop");
                                let _ = p.try_recv().map(|m| m.bytes().len());
                            }
                        }
                        if r.u8().is_multiple_of(2) && held.len() < 8 {
                            held.push(m);
                        }
                    }
                    Err(RecvError::Closed(CloseReason::ProtocolError)) => broken = true,
                    Err(_) => {}
                }
            }
            8 => {
                if !held.is_empty() {
                    let i = r.u8() as usize % held.len();
                    held.swap_remove(i);
                }
            }
            9 => {
                // Small, or past the ring: in the victim's pool.
                let len = if r.u8().is_multiple_of(4) {
                    70_000 + r.u16() as usize
                } else {
                    r.u16() as usize % 2000
                };
                let got = victim.try_post_bytes(&vec![0x5a; len]);
                if broken {
                    assert!(
                        matches!(got, Err(PostError::Closed(CloseReason::ProtocolError))),
                        "a broken port posted: {got:?}"
                    );
                }
            }
            10 => {
                peer.drain();
            }
            13 => {
                // The victim's pool: take its pooled records, give blocks
                // back (lent or not, once or twice), or scribble on its
                // release queue.
                match r.u8() % 3 {
                    0 => {
                        if let Some((buffer, block, _)) = peer.take_pooled()
                            && r.u8().is_multiple_of(2)
                        {
                            peer.give_back(buffer, block);
                        }
                    }
                    1 => {
                        peer.give_back(r.u8() as u32 % 3, r.u8() as u32 % 20);
                    }
                    _ => {
                        let off = peer.victim_release_header() + (r.u8() as usize % 48) * 8;
                        let v = r.hostile_u64(1024);
                        peer.store(off, v);
                    }
                }
            }
            11 => victim.set_trust(if r.u8().is_multiple_of(2) {
                Trust::Validated
            } else {
                Trust::Untrusted
            }),
            _ => {
                peer.wake();
                // A record header's reserved word, for completeness.
                if let Some(pos) = last_pos {
                    let off = peer.victim_ring_data() + pos as usize % cap + RECORD_HEADER - 8;
                    peer.store(off, r.u64());
                }
            }
        }
    }
    drop(held);
    drop(victim);
    drop(peer);
    drop(keep);
}
