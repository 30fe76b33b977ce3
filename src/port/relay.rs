//! What a relay needs: a process that carries a port's messages to a peer
//! elsewhere (another host) and back. It posts each message as it came, its
//! payload bytes with their type fingerprint, and passes on why the far
//! peer went away.

use super::{MessagePort, TransferError, Wait};
use crate::error::CloseReason;
use crate::shm::layout::{CLOSED, CLOSED_PEER_DIED, CLOSED_PROTOCOL_ERROR};
use crate::shm::ring::{Kind, RecordMeta};
use crate::wire::writer::RecordWriter;

impl MessagePort {
    /// Post a message received elsewhere as it was: its payload `bytes`
    /// ([`Message::bytes`](crate::Message::bytes)) and its type
    /// `fingerprint` ([`Message::fingerprint`](crate::Message::fingerprint):
    /// 0 for raw bytes, which this then posts as raw bytes), with `ports`
    /// attached. The receiver reads a typed message as if the original
    /// sender had posted it here, validated as always (the bytes are
    /// copied into the ring, aligned). Waits for room, as
    /// [`post_bytes_with_ports`](Self::post_bytes_with_ports), and fails
    /// the same ways.
    ///
    /// ```
    /// use shmport::MessageChannel;
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// let (c, d) = MessageChannel::new()?.into_ports();
    /// a.post(&(1u32, "one".to_string()))?;
    /// let msg = b.recv()?;
    /// c.post_forwarded(msg.bytes(), msg.fingerprint(), Vec::new())?;
    /// assert_eq!(d.recv()?.get::<(u32, String)>()?.1, "one");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn post_forwarded(
        &self,
        bytes: &[u8],
        fingerprint: u64,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.forward(bytes, fingerprint, ports, Wait::Forever)
    }

    /// [`post_forwarded`](Self::post_forwarded) if there is room now;
    /// [`PostError::Full`](crate::PostError::Full) (every port handed back)
    /// otherwise.
    pub fn try_post_forwarded(
        &self,
        bytes: &[u8],
        fingerprint: u64,
        ports: Vec<MessagePort>,
    ) -> Result<(), TransferError> {
        self.forward(bytes, fingerprint, ports, Wait::No)
    }

    fn forward(
        &self,
        bytes: &[u8],
        fingerprint: u64,
        ports: Vec<MessagePort>,
        wait: Wait,
    ) -> Result<(), TransferError> {
        let meta = RecordMeta {
            kind: if fingerprint == 0 {
                Kind::Raw
            } else {
                Kind::Typed
            },
            out_of_line: false,
            pool: false,
            announce: false,
            kits: false,
            nports: 0,
            fingerprint,
        };
        let fill = |w: &mut RecordWriter| w.put(bytes);
        self.tx()
            .transfer(meta, bytes.len(), wait, ports, fill, Some(self.rx()))
    }

    /// Close the port so that its peer's close event (after every message
    /// posted before, as with [`close`](Self::close)) carries `reason`, and
    /// the peer's posts fail with it: for a relay whose far peer died
    /// ([`CloseReason::PeerDied`]) or broke the protocol
    /// ([`CloseReason::ProtocolError`]). [`CloseReason::Closed`] is a plain
    /// close.
    ///
    /// ```
    /// use shmport::{CloseReason, MessageChannel, RecvError};
    ///
    /// let (a, b) = MessageChannel::new()?.into_ports();
    /// b.post_bytes(b"last words")?;
    /// b.close_with_reason(CloseReason::PeerDied);
    /// assert_eq!(a.recv()?.bytes(), b"last words");
    /// assert!(matches!(a.recv(), Err(RecvError::Closed(CloseReason::PeerDied))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close_with_reason(self, reason: CloseReason) {
        let code = match reason {
            CloseReason::PeerDied => CLOSED_PEER_DIED,
            CloseReason::ProtocolError => CLOSED_PROTOCOL_ERROR,
            CloseReason::Closed => CLOSED,
        };
        // The halves' drops publish again and keep these codes.
        if self.tx().tx.borrow().close_with(code) {
            let _ = self.tx().shared.wake_peer(self.tx().tx.borrow().woke());
        }
        if self.rx().rx.borrow_mut().close_with(code) {
            let _ = self.tx().shared.wake_peer(self.rx().wake_word());
        }
    }
}
