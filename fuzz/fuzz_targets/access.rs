//! Typed access to a received message, as `Message::get` does it: the
//! record's kind and type fingerprint are compared, then rkyv validates
//! the bytes in place. A hostile peer chooses the bytes, the kind and the
//! fingerprint; the victim asks for one of fourteen types (integers, chars,
//! strings, vectors, options, boxes, hash and B-tree maps, tuples, arrays,
//! a recursive struct, an enum with data).
//!
//! Input: byte 0 the type asked for, byte 1 what the record claims (0: the
//! right fingerprint, 1: another type's, 2: raw bytes, 3: the next eight
//! bytes as the fingerprint), byte 2 the trust mode (bit 0: untrusted),
//! the rest the payload.
//!
//! Checked: nothing panics; a value that validates can be walked entirely
//! (its `Debug` form) and deserialized; an honest record is always
//! received (the ring is not disturbed by bad payloads).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use shmport::testing::fuzzing::{RawPeer, victim_and_raw_peer};
use shmport::testing::ring::{Kind, RecordMeta};
use shmport::{MessagePort, RecvError, Trust};
use shmport_fuzz::{ACCESS_TYPES, Reader, access_as, fingerprint_of};

const CAP: usize = 1 << 16;

thread_local! {
    /// One victim and peer for the whole run: a channel per input would
    /// spend the time in system calls.
    static PAIR: RefCell<(MessagePort, RawPeer)> =
        RefCell::new(victim_and_raw_peer(CAP).expect("channel"));
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let which = r.u8() % ACCESS_TYPES;
    let claim = r.u8() % 4;
    let untrusted = r.u8() % 2 == 1;
    let meta = RecordMeta {
        kind: if claim == 2 { Kind::Raw } else { Kind::Typed },
        out_of_line: false,
        pool: false,
        announce: false,
        kits: false,
        nports: 0,
        fingerprint: match claim {
            0 => fingerprint_of(which),
            1 => fingerprint_of(which + 1),
            2 => 0,
            _ => r.u64(),
        },
    };
    let payload = r.bytes(shmport::testing::fuzzing::max_payload(CAP));
    PAIR.with(|pair| {
        let (victim, peer) = &mut *pair.borrow_mut();
        victim.set_trust(if untrusted {
            Trust::Untrusted
        } else {
            Trust::Validated
        });
        if peer.commit(meta, payload).is_none() {
            // Released space not yet published: an empty receive publishes it.
            assert!(matches!(victim.try_recv(), Err(RecvError::Empty)));
            peer.commit(meta, payload).expect("room after the release");
        }
        let m = victim.try_recv().expect("an honest record is received");
        assert_eq!(m.bytes(), payload);
        let ok = access_as(&m, which);
        if meta.kind == Kind::Raw || meta.fingerprint != fingerprint_of(which) {
            assert!(!ok, "accessed with a wrong kind or fingerprint");
        }
    });
});
