//! Where things live on the zenoh key space, and the endpoint ids that name
//! bridged port ends there.
//!
//! - `shmport/port/<id>`: frames addressed to endpoint `<id>` (its
//!   subscriber).
//! - `shmport/alive/<id>`: endpoint `<id>`'s liveliness token, present
//!   while it runs; its peer watches it.
//!
//! `<id>` is 32 hex digits: the high half from the session's zenoh id
//! (random per session), the low half a counter of this process.

use std::sync::atomic::{AtomicU64, Ordering};

use zenoh::Session;

use crate::frame::EndpointId;

/// Key of the frames addressed to endpoint `id`.
pub fn port_key(id: EndpointId) -> String {
    format!("shmport/port/{id:032x}")
}

/// Key of endpoint `id`'s liveliness token.
pub fn alive_key(id: EndpointId) -> String {
    format!("shmport/alive/{id:032x}")
}

/// A fresh endpoint id, unique among the sessions that can meet.
pub fn new_id(session: &Session) -> EndpointId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let zid = session.zid().to_le_bytes();
    let mut high = [0u8; 8];
    high.copy_from_slice(&zid[..8]);
    // Relaxed: only uniqueness matters.
    let low = NEXT.fetch_add(1, Ordering::Relaxed);
    (u128::from(u64::from_le_bytes(high)) << 64) | u128::from(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_the_whole_id() {
        assert_eq!(
            port_key(0xab << 64 | 1),
            "shmport/port/00000000000000ab0000000000000001"
        );
        assert_eq!(
            alive_key(u128::MAX),
            format!("shmport/alive/{}", "f".repeat(32))
        );
    }
}
