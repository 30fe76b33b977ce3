//! What arrives with descriptors on a port's socket: the attachment parser
//! (out-of-line flag, port count, each port's side, spin time and inbox,
//! nested), then the opening of every port it carries (socket kind, segment
//! seals, magic, version, geometry, ring positions), with descriptors of
//! every kind in every slot.
//!
//! Checked: nothing panics, and every descriptor handed in is closed once
//! the result is dropped: a refused attachment or port leaks nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmport::testing::fuzzing::decode_attachment;
use shmport_fuzz::{Reader, is_open, make_fd, raw};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let n = r.u8() as usize % 9;
    let mut fds = Vec::with_capacity(n);
    let mut keep = Vec::new();
    for _ in 0..n {
        let kind = r.u8();
        let (fd, other) = make_fd(kind, &mut r);
        fds.push(fd);
        keep.extend(other);
    }
    let numbers: Vec<_> = fds.iter().map(raw).collect();
    let body = r.bytes(4095);
    match decode_attachment(body, fds) {
        Ok(att) => {
            for port in att.ports.into_iter().flatten() {
                // A port that opened works: a post goes into its ring, a
                // receive finds nothing or a close.
                let _ = port.try_post_bytes(b"x");
                let _ = port.try_recv().map(|m| m.bytes().len());
            }
        }
        Err(why) => assert!(!why.is_empty()),
    }
    drop(keep);
    for fd in numbers {
        assert!(!is_open(fd), "descriptor {fd} leaked");
    }
});
