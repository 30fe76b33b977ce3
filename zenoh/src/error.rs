//! What a failed [`connect_port`](crate::connect_port) hands back.

use std::fmt;
use std::io;

use shmport::MessagePort;

/// [`connect_port`](crate::connect_port) failed: why, and the port it was
/// given, untouched (its peer noticed nothing).
pub struct ConnectPortError {
    /// Why: as [`connect`](crate::connect)'s errors.
    pub error: io::Error,
    /// The port, as it was.
    pub port: MessagePort,
}

impl fmt::Debug for ConnectPortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectPortError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ConnectPortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect the port: {}", self.error)
    }
}

impl std::error::Error for ConnectPortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<ConnectPortError> for io::Error {
    /// The cause; the port is closed.
    fn from(e: ConnectPortError) -> io::Error {
        e.error
    }
}
