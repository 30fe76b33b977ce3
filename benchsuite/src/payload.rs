//! The bytes every transport carries, and how a receiver checks them.
//!
//! A message of `len` bytes (at least [`MIN_LEN`]):
//!
//! ```text
//! 0        8        16                               len-8     len
//! | seq    | op     | pattern bytes 16..len-8         | seq     |
//! ```
//!
//! `seq` (little endian) numbers the messages of a session from 0, and
//! appears at both ends, so a message that arrives torn, out of order, or
//! twice is caught by reading two words. The pattern is the same
//! pseudo-random bytes in both processes (a function of `len`); in verify
//! mode the receiver compares every byte with it.
//!
//! Acks (from a sink) and the peer's ready message are [`CTRL_LEN`] bytes,
//! with the error count in bytes 16..24.

/// Smallest message: two stamps and the op word.
pub const MIN_LEN: usize = 24;
/// Length of control messages (ready, ack).
pub const CTRL_LEN: usize = 64;

/// What a message asks of its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A payload; an echo peer sends it back, a sink counts it.
    Data,
    /// The last payload of a one-way batch: the sink acks after it.
    Last,
    /// The session is over: the peer exits.
    Stop,
    /// From the peer: it is ready.
    Ready,
    /// From a sink: a batch arrived (seq = messages counted).
    Ack,
}

impl Op {
    fn code(self) -> u64 {
        match self {
            Op::Data => 1,
            Op::Last => 2,
            Op::Stop => 3,
            Op::Ready => 4,
            Op::Ack => 5,
        }
    }

    fn from_code(code: u64) -> Option<Op> {
        Some(match code {
            1 => Op::Data,
            2 => Op::Last,
            3 => Op::Stop,
            4 => Op::Ready,
            5 => Op::Ack,
            _ => return None,
        })
    }
}

/// The pattern bytes for messages of `len` bytes (xorshift64, seeded by the
/// length): the sender's buffer starts as this, and a verifying receiver
/// compares with it.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ len as u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Write the stamps: `seq` at both ends, `op` after the first.
pub fn stamp(buf: &mut [u8], seq: u64, op: Op) {
    let len = buf.len();
    debug_assert!(len >= MIN_LEN);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&op.code().to_le_bytes());
    buf[len - 8..].copy_from_slice(&seq.to_le_bytes());
}

/// The stamps of a message, if both ends agree and the op is known.
pub fn read(bytes: &[u8]) -> Option<(u64, Op)> {
    if bytes.len() < MIN_LEN {
        return None;
    }
    let seq = word(bytes, 0);
    if word(bytes, bytes.len() - 8) != seq {
        return None;
    }
    Some((seq, Op::from_code(word(bytes, 8))?))
}

/// Do the pattern bytes of a message match (everything but the stamps)?
pub fn body_intact(bytes: &[u8], pattern: &[u8]) -> bool {
    bytes.len() == pattern.len()
        && bytes.len() >= MIN_LEN
        && bytes[16..bytes.len() - 8] == pattern[16..pattern.len() - 8]
}

/// A control message (ready or ack): `count` as its seq, `errors` after the
/// op word.
pub fn control(op: Op, count: u64, errors: u64) -> [u8; CTRL_LEN] {
    let mut buf = [0u8; CTRL_LEN];
    stamp(&mut buf, count, op);
    buf[16..24].copy_from_slice(&errors.to_le_bytes());
    buf
}

/// Read a control message: `(op, count, errors)`.
pub fn read_control(bytes: &[u8]) -> Option<(Op, u64, u64)> {
    if bytes.len() != CTRL_LEN {
        return None;
    }
    let (count, op) = read(bytes)?;
    Some((op, count, word(bytes, 16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_damage_is_seen() {
        let pat = pattern(100);
        let mut buf = pat.clone();
        stamp(&mut buf, 42, Op::Last);
        assert_eq!(read(&buf), Some((42, Op::Last)));
        assert!(body_intact(&buf, &pat));
        buf[50] ^= 1;
        assert!(!body_intact(&buf, &pat));
        buf[99] ^= 1;
        assert_eq!(read(&buf), None);
        let ack = control(Op::Ack, 7, 1);
        assert_eq!(read_control(&ack), Some((Op::Ack, 7, 1)));
        assert_ne!(pattern(64)[..], pattern(65)[..64]);
    }
}
