//! What the cross-host tests share: hosts as processes (this test binary
//! re-executed in a role), their zenoh sessions on 127.0.0.1, messages
//! that check themselves.

pub mod host;
pub mod roles;
