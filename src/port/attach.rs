//! Descriptors that travel with a record: the ports a post carries
//! (checked against what the receiver accepts, then taken apart), and the
//! attachment that carries them and an out-of-line payload on the socket,
//! in one socket message or several.

use std::io;
use std::sync::atomic::Ordering;

use rkyv::rancor;

use super::send::{RAW_META, typed_meta};
use super::{Half, MAX_PORTS, MessagePort, PortReceiver, PortSender, TransferError, Wait};
use crate::error::PostError;
use crate::fault;
use crate::shm::kit::KitWords;
use crate::shm::ring::{Corrupt, RecordMeta};
use crate::sys;
use crate::wire::attachment::{
    self, Attachment, MAX_ATTACH_BODY, MAX_ATTACH_FDS, MAX_DEPTH, PortParts,
};
use crate::wire::writer::{Postable, RecordWriter};

impl PortSender {
    pub(super) fn transfer_typed<T: Postable>(
        &self,
        value: &T,
        ports: Vec<MessagePort>,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), TransferError> {
        let fill = |w: &mut RecordWriter| self.serialize(value, w);
        self.transfer(typed_meta::<T>(), 0, wait, ports, fill, rx)
    }

    pub(super) fn transfer_raw(
        &self,
        bytes: &[u8],
        ports: Vec<MessagePort>,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), TransferError> {
        let fill = |w: &mut RecordWriter| w.put(bytes);
        self.transfer(RAW_META, bytes.len(), wait, ports, fill, rx)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn transfer(
        &self,
        mut meta: RecordMeta,
        size_hint: usize,
        wait: Wait,
        ports: Vec<MessagePort>,
        mut fill: impl FnMut(&mut RecordWriter) -> Result<(), rancor::Error>,
        rx: Option<&PortReceiver>,
    ) -> Result<(), TransferError> {
        let refuse = |error, ports| Err(TransferError { error, ports });
        // The peer moved this channel off its link: ports queued for the
        // peer name the segment it moved to. Follow first, so that the
        // checks below know it (a peer gone shows at the post itself).
        if self.shared.link_only().is_some() && self.shared.seg.moved_by_other(self.shared.side) {
            let from = self.tx.borrow().memory().segment().clone();
            if self.shared.take_up_move(&from).is_ok() {
                let _ = self.follow();
            }
        }
        if ports.iter().any(|p| p.is_peer_of(&self.shared)) {
            return refuse(PostError::PeerInTransfer, ports);
        }
        if ports.len() > MAX_PORTS {
            return refuse(PostError::TooManyPorts, ports);
        }
        // Ports of channels made here and not used yet travel as kits of
        // this channel: named in the record when idle kits wait, else as
        // new ones (`bind.rs`).
        let ports = match self.post_as_kits(meta, size_hint, wait, ports, &mut fill, rx) {
            Ok(None) => return Ok(()),
            Ok(Some(ports)) => ports,
            Err((error, ports)) => return refuse(error, ports),
        };
        // Each port first takes in what its socket holds (as a receive
        // would): its whole queue is then in its inbox, where this sender
        // sees it. The receiver must accept the nesting, and this port's
        // own peer must not be in there: it would travel into its own
        // socket's queue (directly, or inside a port in there), where
        // nobody can ever take it out, and the kernel's collector of
        // unreachable descriptors would close both ends of this channel
        // (ARCHITECTURE.md, failure model).
        let checked = ports.iter().try_for_each(|p| {
            if p.is_unused() {
                // Nothing was ever queued on it.
                return Ok(());
            }
            // A port on a link moves off it to travel (and a port holding
            // links its peer made re-homes): moved, or following its
            // peer's move, its queue is on its own socket. Out of
            // descriptors for that, the transfer fails.
            p.ready_to_travel().map_err(PostError::Io)?;
            p.take_in().map_err(PostError::Io)?;
            let scan = p.scan_inbox(&self.shared);
            if scan.holds_peer {
                return Err(PostError::PeerInTransfer);
            }
            if scan.depth > MAX_DEPTH {
                return Err(PostError::NestedTooDeep);
            }
            Ok(())
        });
        if let Err(e) = checked {
            return refuse(e, ports);
        }
        meta.nports = ports.len() as u16;
        let parts = ports.into_iter().map(|p| self.travel_parts(p)).collect();
        self.send_record(meta, size_hint, wait, fill, parts, rx)
            .map_err(|(error, parts)| TransferError {
                error,
                ports: reassemble(parts),
            })
    }

    /// Send a record's attachment, between the two fault-injection points
    /// of the send path.
    pub(super) fn attach(
        &self,
        att: &Attachment,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        fault::reach(fault::Point::BeforeAttachment);
        self.claim_posting()?;
        if let Err(e) = self.send_attachment(att, wait, rx) {
            self.end_posting();
            return Err(e);
        }
        fault::reach(fault::Point::AfterAttachment);
        Ok(())
    }

    /// Before descriptors or kit references go to a peer that holds a link
    /// this end made (its end may move away, re-homing the channel): take
    /// the posting claim, held until the record commits. A move already
    /// begun is [`moving`]: follow it, then post again.
    pub(super) fn claim_posting(&self) -> Result<(), PostError> {
        let sh = &self.shared;
        if self.posting.get() || sh.made_link_now().is_none() || sh.link_only().is_some() {
            return Ok(());
        }
        if !sh.seg().claim_posting(sh.side) {
            return Err(moving());
        }
        self.posting.set(true);
        Ok(())
    }

    /// The record the posting claim covered committed (or was given up).
    pub(super) fn end_posting(&self) {
        if self.posting.replace(false) {
            self.shared.seg().end_posting(self.shared.side);
        }
    }

    /// Send an attachment: one socket message, or its parts back to back
    /// (`crate::wire::attachment`). Once a part is on the socket the rest must
    /// follow whatever `wait` says (the receiver would otherwise hold half
    /// an attachment, and copies of the descriptors in it): later parts
    /// wait for room as long as it takes. Only the end of the channel stops
    /// them (`Closed`: the peer hung up, broke the protocol, or stopped
    /// reading — then the parts sent stay in its socket, holding copies of
    /// the descriptors in them, until its port is gone). A system call
    /// failing between parts leaves the channel out of step: this port is
    /// then broken (`ProtocolError`), and the error returned.
    pub(super) fn send_attachment(
        &self,
        att: &Attachment,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        // Descriptors on the socket: this port's kit, if any, is not reused.
        self.shared.descriptors_seen.store(true, Ordering::Relaxed);
        let mut body = Vec::new();
        let mut fds = Vec::new();
        att.encode(&mut body, &mut fds);
        if body.len() > MAX_ATTACH_BODY || fds.len() > MAX_ATTACH_FDS {
            // More than a receiver accepts in one attachment.
            return Err(PostError::TooManyPorts);
        }
        for (i, (part, part_fds, last)) in attachment::parts(&body, &fds).enumerate() {
            if i == 0 {
                self.send_part(part, part_fds, last, wait, rx)?;
                continue;
            }
            fault::reach(fault::Point::BetweenParts);
            match self.send_part(part, part_fds, last, Wait::Forever, rx) {
                Ok(()) => {}
                Err(e @ PostError::Closed(_)) => return Err(e),
                Err(e) => {
                    let _ = self.corrupt(Corrupt("an attachment could not be sent whole"));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Send one socket message of an attachment, waiting for room as
    /// `wait` allows, or until the peer is gone or stopped reading.
    pub(super) fn send_part(
        &self,
        body: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
        last: bool,
        wait: Wait,
        rx: Option<&PortReceiver>,
    ) -> Result<(), PostError> {
        loop {
            match sys::socket::send_attachment(self.shared.sock(), body, fds, last, false) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The peer has not taken earlier attachments in yet.
                    if matches!(wait, Wait::No) {
                        return Err(PostError::Full);
                    }
                    if wait.expired() {
                        return Err(PostError::Timeout);
                    }
                    // A peer that stopped reading takes nothing in: do not
                    // wait for it.
                    self.check_postable()?;
                    if let Some(rx) = rx {
                        // Our peer may be waiting for room we released.
                        rx.flush_releases();
                    }
                    // Until the socket takes messages again (or the peer
                    // goes): takes in what it holds meanwhile.
                    self.shared
                        .sleep(Half::Sender, wait, true)
                        .map_err(PostError::Io)?;
                    self.check_postable()?;
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.shared.hung_up.store(true, Ordering::Release);
                    return Err(PostError::Closed(self.peer_gone_reason()));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    return Err(PostError::TooManyPorts);
                }
                Err(e) => return Err(PostError::Io(e)),
            }
        }
    }
}

/// Rebuild ports that were taken apart for a transfer that failed. Their
/// segments are still mapped here: every one comes back, in order.
fn reassemble(parts: Vec<PortParts>) -> Vec<MessagePort> {
    parts.into_iter().filter_map(PortParts::rebuild).collect()
}

/// The error a post gets when its channel's move began under it: the post
/// follows the move and tries again (`PortSender::send_record`); it never
/// reaches the caller.
pub(super) fn moving() -> PostError {
    PostError::Io(std::io::Error::other(Moving))
}

/// Is `e` [`moving`]?
pub(super) fn is_moving(e: &PostError) -> bool {
    matches!(e, PostError::Io(io) if io.get_ref().is_some_and(|r| r.is::<Moving>()))
}

#[derive(Debug)]
struct Moving;

impl std::fmt::Display for Moving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the channel moved under the post")
    }
}

impl std::error::Error for Moving {}
