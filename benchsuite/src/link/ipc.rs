//! ipc-channel: a pair of byte channels (`IpcBytesSender` /
//! `IpcBytesReceiver`), bootstrapped through its one-shot server. Receiving
//! blocks in `recvmsg` and hands over an owned `Vec<u8>`.

use std::process::Command;
use std::time::Duration;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};

use super::{Link, Session};
use crate::Result;
use crate::peer::{Peer, Watchdog};

/// The one-shot server's name, for the peer.
const SERVER_ENV: &str = "SHMPORT_BENCHSUITE_IPC_SERVER";

/// What the peer sends through the one-shot server: the sender of the
/// channel towards it, and the receiver of the channel back.
type Bootstrap = (IpcBytesSender, IpcBytesReceiver);

pub struct IpcLink {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
}

pub fn parent(_session: &Session, mut cmd: Command, limit: Duration) -> Result<(IpcLink, Peer)> {
    let (server, name) = IpcOneShotServer::<Bootstrap>::new()?;
    cmd.env(SERVER_ENV, name);
    let child = cmd.spawn()?;
    drop(cmd);
    let peer = Peer::new(child, "ipc-channel".into());
    // `accept` waits for the peer with no time limit: a peer that dies
    // first would leave it waiting, so the watchdog kills and exits.
    let watchdog = Watchdog::new(
        peer.id(),
        limit,
        "ipc-channel bootstrap".into(),
        crate::cleanup::emergency,
    );
    let accepted = server.accept();
    drop(watchdog);
    let (_, (tx, rx)) = accepted.map_err(|e| format!("ipc-channel accept: {e:?}"))?;
    Ok((IpcLink { tx, rx }, peer))
}

pub fn child() -> Result<IpcLink> {
    let name = std::env::var(SERVER_ENV).map_err(|_| "no ipc-channel server name")?;
    let (to_me, rx) = ipc::bytes_channel()?;
    let (tx, to_parent) = ipc::bytes_channel()?;
    let bootstrap = IpcSender::<Bootstrap>::connect(name)?;
    bootstrap
        .send((to_me, to_parent))
        .map_err(|e| format!("ipc-channel bootstrap: {e:?}"))?;
    Ok(IpcLink { tx, rx })
}

impl Link for IpcLink {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.tx.send(payload)?;
        Ok(())
    }

    fn recv<R>(&mut self, _len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let bytes = self
            .rx
            .recv()
            .map_err(|e| format!("ipc-channel recv: {e:?}"))?;
        Ok(f(&bytes))
    }

    fn echo(&mut self, _len: usize, f: impl FnOnce(&[u8]) -> bool) -> Result<bool> {
        let bytes = self
            .rx
            .recv()
            .map_err(|e| format!("ipc-channel recv: {e:?}"))?;
        let again = f(&bytes);
        if again {
            self.tx.send(&bytes)?;
        }
        Ok(again)
    }
}
