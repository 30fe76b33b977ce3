//! Write the seed corpus: for each target, a few inputs that take the
//! meaningful paths (valid records and archives, padding laps, out-of-line
//! payloads, transferred ports, targeted corruption), so that fuzzing
//! starts from them instead of from nothing.
//!
//! `cargo run --bin make_seeds` in `fuzz/`; writes `corpus/<target>/seed-*`.

use std::path::Path;

use shmport_fuzz::{ACCESS_TYPES, Script, sample_archive};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

// Operation numbers of each target's script (see the targets).
mod ring_op {
    pub const POST: u8 = 0;
    pub const TAKE: u8 = 1;
    pub const RELEASE: u8 = 3;
    pub const PUBLISH: u8 = 4;
    pub const HAS_MESSAGE: u8 = 5;
    pub const STORE_HEADER: u8 = 7;
    pub const CORRUPT_QUEUED: u8 = 8;
    pub const ROLES: u8 = 9;
    pub const SLEEP: u8 = 10;
    pub const CLOSE: u8 = 11;
}

mod port_op {
    pub const COMMIT: u8 = 0;
    pub const CORRUPT_LAST: u8 = 2;
    pub const STORE: u8 = 3;
    pub const RAW: u8 = 4;
    pub const ATTACH: u8 = 5;
    pub const RECV: u8 = 6;
    pub const DROP_HELD: u8 = 8;
    pub const POST: u8 = 9;
    pub const DRAIN: u8 = 10;
    pub const TRUST: u8 = 11;
}

/// `hostile_u64` selector 5: a packed info word.
fn info_word(s: &mut Script, len: u32, kind: u8, flags: u8) {
    s.u8(5).u8(0).u32(len).u8(kind).u8(flags).u8(0);
}

fn ring_seeds() {
    use ring_op::*;
    // Records of every size through several laps (padding records).
    let mut s = Script::default();
    s.u8(0);
    for i in 0..40u16 {
        s.u8(POST).u16(i * 97 % 2016);
        s.u8(HAS_MESSAGE).u8(TAKE).u8(RELEASE).u8(0).u8(PUBLISH);
    }
    write("ring", "laps", &s.0);

    // Held records released out of order; roles handed over.
    let mut s = Script::default();
    s.u8(1);
    for _ in 0..6 {
        s.u8(POST).u16(300);
    }
    for _ in 0..6 {
        s.u8(TAKE);
    }
    s.u8(RELEASE).u8(3).u8(RELEASE).u8(1).u8(RELEASE).u8(0);
    s.u8(RELEASE)
        .u8(0)
        .u8(RELEASE)
        .u8(1)
        .u8(RELEASE)
        .u8(0)
        .u8(PUBLISH);
    s.u8(ROLES).u8(0).u8(ROLES).u8(1).u8(POST).u16(10).u8(TAKE);
    s.u8(SLEEP).u16(100).u8(CLOSE).u8(HAS_MESSAGE);
    write("ring", "out-of-order", &s.0);

    // The record the consumer reads next gets a length past the ring.
    let mut s = Script::default();
    s.u8(0).u8(POST).u16(64).u8(CORRUPT_QUEUED).u8(0).u8(1);
    info_word(&mut s, 0xFFFF_FFF0, 2, 0);
    s.u8(TAKE);
    write("ring", "bad-length", &s.0);

    // A padding record that does not reach the end of the lap.
    let mut s = Script::default();
    s.u8(0).u8(POST).u16(8).u8(CORRUPT_QUEUED).u8(0).u8(1);
    info_word(&mut s, 64, 3, 0);
    s.u8(TAKE);
    write("ring", "short-padding", &s.0);

    // The consumer's head moved far ahead of the producer.
    let mut s = Script::default();
    s.u8(0)
        .u8(POST)
        .u16(8)
        .u8(STORE_HEADER)
        .u8(2)
        .u8(0xFF)
        .u8(2)
        .u8(POST)
        .u16(8);
    write("ring", "head-ahead", &s.0);
}

fn access_seeds() {
    for which in 0..ACCESS_TYPES {
        let archive = sample_archive(which);
        for trust in 0..2u8 {
            let mut s = Script::default();
            s.u8(which).u8(0).u8(trust).raw(&archive);
            write("access", &format!("type{which}-trust{trust}"), &s.0);
        }
        let mut s = Script::default();
        s.u8(which).u8(1).u8(0).raw(&archive);
        write("access", &format!("type{which}-mismatch"), &s.0);
    }
}

fn attachment_seeds() {
    // No descriptors, no ports.
    write("attachment", "empty", &[0, 0, 0, 0]);
    // The placeholder of a lost attachment.
    write("attachment", "lost", &[0, 2, 0, 0]);
    // One out-of-line memfd, sealed.
    let mut s = Script::default();
    s.u8(1).u8(2).blob(b"payload").u8(0).raw(&[1, 0, 0]);
    write("attachment", "ool", &s.0);
    // One port: a connected SOCK_SEQPACKET socket and a valid segment.
    let mut s = Script::default();
    s.u8(2).u8(7).u8(0).u8(5);
    s.raw(&[0, 1, 0, 1]).u64(20_000).u32(0);
    write("attachment", "port", &s.0);
    // A port whose inbox holds an out-of-line attachment.
    let mut s = Script::default();
    s.u8(3).u8(7).u8(0).u8(5).u8(2).blob(b"inner").u8(0);
    s.raw(&[0, 1, 0, 0]).u64(0).u32(1).raw(&[1, 0, 0]);
    write("attachment", "nested", &s.0);
    // A port that left with the first part of an attachment still arriving
    // on its socket (its flag byte and memfd).
    let mut s = Script::default();
    s.u8(3).u8(7).u8(0).u8(5).u8(2).blob(b"part").u8(0);
    s.raw(&[0, 1, 0, 2]).u64(0).u32(0);
    s.u8(0).u32(1).raw(&[1]).u32(1);
    write("attachment", "partial", &s.0);
    // A port whose segment has bad header words and ring positions.
    let mut s = Script::default();
    s.u8(2).u8(7).u8(0).u8(4);
    s.u8(0).u64(0xdead_beef).u8(1).u8(1).u8(1).u8(1);
    s.u8(2).u8(0).u8(1).u8(7);
    s.raw(&[0, 1, 0, 0]).u64(0).u32(0);
    write("attachment", "bad-segment", &s.0);
}

fn port_seeds() {
    use port_op::*;
    // Typed messages of every type, received and read.
    let mut s = Script::default();
    s.u8(0);
    for which in 0..ACCESS_TYPES {
        let archive = sample_archive(which);
        // The commit's first byte picks the type (modulo ACCESS_TYPES) and,
        // when a multiple of 4, a raw record: pick one that is typed.
        let pick = (0..4)
            .map(|k| which + ACCESS_TYPES * k)
            .find(|b| b % 4 != 0)
            .unwrap();
        s.u8(COMMIT).u8(pick).u8(1).u8(1).u8(1);
        s.u16(archive.len() as u16).raw(&archive);
        s.u8(RECV).u8(which).u8(1).u8(1);
    }
    write("port", "typed", &s.0);

    // An out-of-line payload: its memfd first, then its record.
    let mut s = Script::default();
    s.u8(0);
    s.u8(ATTACH)
        .u8(1)
        .u8(2)
        .blob(&sample_archive(3))
        .u8(0)
        .u8(1)
        .u8(0);
    s.u8(COMMIT).u8(3).u8(0).u8(1).u8(1).u16(8);
    s.u64(sample_archive(3).len() as u64);
    s.u8(RECV).u8(3).u8(1).u8(0);
    write("port", "out-of-line", &s.0);

    // A port in a message: socket and segment, then the record.
    let mut s = Script::default();
    s.u8(0);
    s.u8(ATTACH)
        .u8(2)
        .u8(7)
        .u8(0)
        .u8(5)
        .u8(0)
        .u8(1)
        .u8(0)
        .u16(0);
    s.u8(COMMIT)
        .u8(2)
        .u8(1)
        .u8(0)
        .u8(1)
        .u8(1)
        .u16(4)
        .raw(b"port");
    s.u8(RECV).u8(0).u8(0).u8(1);
    write("port", "port-transfer", &s.0);

    // A record whose length is rewritten after its commit.
    let mut s = Script::default();
    s.u8(0);
    s.u8(COMMIT).u8(4).u8(1).u8(1).u8(1).u16(5).raw(b"hello");
    s.u8(CORRUPT_LAST).u8(1);
    info_word(&mut s, 0x7FFF_FFFF, 2, 0);
    s.u8(RECV)
        .u8(0)
        .u8(1)
        .u8(1)
        .u8(POST)
        .u16(10)
        .u8(RECV)
        .u8(0)
        .u8(1)
        .u8(1);
    write("port", "corrupt-length", &s.0);

    // Garbage on the socket, a wake token, then a message.
    let mut s = Script::default();
    s.u8(0);
    s.u8(RAW).u8(0).blob(b"Zgarbage").u8(RAW).u8(0).blob(b"W");
    s.u8(COMMIT).u8(4).u8(1).u8(1).u8(1).u16(2).raw(b"ok");
    s.u8(RECV).u8(0).u8(1).u8(1);
    write("port", "socket-garbage", &s.0);

    // Both directions under the untrusted mode, with held messages and a
    // head rewritten in the ring header.
    let mut s = Script::default();
    s.u8(1).u8(TRUST).u8(1);
    for i in 0..8u8 {
        s.u8(COMMIT).u8(4).u8(1).u8(1).u8(1).u16(200).raw(&[i; 200]);
        s.u8(RECV).u8(4).u8(1).u8(0).u8(POST).u16(500).u8(DRAIN);
    }
    s.u8(DROP_HELD).u8(0).u8(STORE).u8(0).u16(128).u8(3).u8(1);
    s.u8(POST).u16(500).u8(RECV).u8(0).u8(1).u8(1);
    write("port", "untrusted-both-ways", &s.0);
}

fn main() {
    ring_seeds();
    access_seeds();
    attachment_seeds();
    port_seeds();
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
