//! Set-up cost: between two processes that are already running, the time
//! from "make a new channel" to the end of its first 64-byte round trip.
//!
//! The peer is started once per transport and waits for each new channel by
//! trying, in a loop, to connect to (or open, or take) the next one, so
//! every transport's figure includes the same thing: the suite's side of
//! creating the channel, the peer's side of joining it, and one round trip.
//! Between two set-ups the suite pauses 2 ms (not timed) so that the peer is
//! back in its loop. The rendezvous is each transport's own: a named
//! listener (shmport, unix socket), a FIFO in the filesystem (pipe),
//! services by name (iceoryx2), or the new channel sent over an existing
//! one (shmport, ipc-channel).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::prelude::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use iceoryx2::prelude::PortFactory as _;
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use shmport::{CloseReason, ConnectError, MessageChannel, MessagePort, PostError, RecvError};

use crate::link::iox;
use crate::payload::{self, Op};
use crate::peer::{self, Cpus, Peer, Watchdog};
use crate::plan::Wait;
use crate::{Result, cleanup};

/// Ways to set up a channel, one row each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    ShmListener,
    ShmTransfer,
    Uds,
    Fifo,
    IpcChannel,
    Iceoryx2,
}

pub const SETUPS: [Setup; 6] = [
    Setup::ShmListener,
    Setup::ShmTransfer,
    Setup::Uds,
    Setup::Fifo,
    Setup::IpcChannel,
    Setup::Iceoryx2,
];

/// Unmeasured set-ups before the measured ones.
const WARM: usize = 2;
/// Pause between set-ups, not timed.
const PAUSE: Duration = Duration::from_millis(2);
/// A peer that finds no channel for this long gives up.
const PATIENCE: Duration = Duration::from_secs(30);
/// The ipc-channel one-shot server's name, for the peer.
const SERVER_ENV: &str = "SHMPORT_BENCHSUITE_IPC_SERVER";

type Pair = (IpcBytesReceiver, IpcBytesSender);

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::ShmListener => "shmport",
            Setup::ShmTransfer => "shmport",
            Setup::Uds => "unix socket",
            Setup::Fifo => "pipe",
            Setup::IpcChannel => "ipc-channel",
            Setup::Iceoryx2 => "iceoryx2",
        }
    }

    /// How the channel is made and found.
    pub fn how(self) -> &'static str {
        match self {
            Setup::ShmListener => "Listener::bind_abstract + connect_abstract",
            Setup::ShmTransfer => {
                "MessageChannel::new, port posted over a port (a slot of the link, kept from the last channel)"
            }
            Setup::Uds => "bind + listen + accept / connect (abstract name)",
            Setup::Fifo => "mkfifo x2 + open / open (named pipes)",
            Setup::IpcChannel => "bytes_channel x2, sent over an ipc channel",
            Setup::Iceoryx2 => "2 pub-sub services created / opened by name",
        }
    }

    /// How the first round trip waits.
    pub fn wait(self) -> Wait {
        match self {
            Setup::Iceoryx2 => Wait::BusyPoll,
            _ => Wait::Sleep,
        }
    }

    /// The shmport row this one is compared with: the port sent over a port
    /// for ipc-channel (which does the same), the listener for the others.
    pub fn reference(self) -> Setup {
        match self {
            Setup::IpcChannel => Setup::ShmTransfer,
            _ => Setup::ShmListener,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Setup::ShmListener => "shm-listener",
            Setup::ShmTransfer => "shm-transfer",
            Setup::Uds => "uds",
            Setup::Fifo => "fifo",
            Setup::IpcChannel => "ipc-channel",
            Setup::Iceoryx2 => "iceoryx2",
        }
    }

    fn parse(code: &str) -> Option<Setup> {
        SETUPS.into_iter().find(|s| s.code() == code)
    }
}

fn ping() -> Vec<u8> {
    let mut p = payload::pattern(payload::CTRL_LEN);
    payload::stamp(&mut p, 7, Op::Data);
    p
}

fn base(setup: Setup) -> String {
    format!(
        "shmport-benchsuite-{}-setup-{}",
        std::process::id(),
        setup.code()
    )
}

/// Measure `count` set-ups of `setup`: nanoseconds each.
pub fn measure(setup: Setup, count: usize, cpus: Cpus, limit: Duration) -> Result<Vec<u64>> {
    let total = WARM + count;
    let base = base(setup);
    let cmd = peer::command(
        &[
            "setup".into(),
            setup.code().into(),
            total.to_string(),
            base.clone(),
        ],
        cpus,
    )?;
    let ping = ping();
    let mut times = Vec::with_capacity(count);
    let mut record = |i: usize, t0: Instant, pong_ok: bool| -> Result<()> {
        let ns = t0.elapsed().as_nanos() as u64;
        if !pong_ok {
            return Err(format!("{}: set-up {i}: wrong reply", setup.name()).into());
        }
        if i >= WARM {
            times.push(ns);
        }
        Ok(())
    };
    let is_ping = |b: &[u8]| b == ping.as_slice();
    match setup {
        Setup::ShmListener => {
            let peer = spawn(cmd, setup)?;
            let dog = Watchdog::new(peer.id(), limit, setup.name().into(), cleanup::emergency);
            for i in 0..total {
                thread::sleep(PAUSE);
                let t0 = Instant::now();
                let listener = shmport::Listener::bind_abstract(format!("{base}-{i}"))?;
                let incoming = listener
                    .accept_timeout(PATIENCE)?
                    .ok_or_else(|| format!("set-up {i}: the peer did not connect"))?;
                let port = incoming.accept()?;
                port.post_bytes(&ping)?;
                let ok = is_ping(port.recv()?.bytes());
                record(i, t0, ok)?;
            }
            drop(dog);
            peer.finish()?;
        }
        Setup::ShmTransfer => {
            let (child, control) = shmport::spawn(cmd)?;
            let peer = Peer::new(child, setup.name().into());
            let dog = Watchdog::new(peer.id(), limit, setup.name().into(), cleanup::emergency);
            for i in 0..total {
                thread::sleep(PAUSE);
                let t0 = Instant::now();
                let (mine, theirs) = MessageChannel::new()?.into_ports();
                control
                    .post_bytes_with_ports(&[], vec![theirs])
                    .map_err(|e| format!("posting a port: {e}"))?;
                mine.post_bytes(&ping)?;
                let ok = is_ping(mine.recv()?.bytes());
                record(i, t0, ok)?;
            }
            drop(dog);
            drop(control);
            peer.finish()?;
        }
        Setup::Uds => {
            let peer = spawn(cmd, setup)?;
            let dog = Watchdog::new(peer.id(), limit, setup.name().into(), cleanup::emergency);
            let mut pong = vec![0u8; ping.len()];
            for i in 0..total {
                thread::sleep(PAUSE);
                let t0 = Instant::now();
                let addr = SocketAddr::from_abstract_name(format!("{base}-{i}"))?;
                let listener = UnixListener::bind_addr(&addr)?;
                if !readable(&listener, PATIENCE)? {
                    return Err(format!("set-up {i}: the peer did not connect").into());
                }
                let (mut stream, _) = listener.accept()?;
                stream.write_all(&ping)?;
                stream.read_exact(&mut pong)?;
                record(i, t0, is_ping(&pong))?;
            }
            drop(dog);
            peer.finish()?;
        }
        Setup::Fifo => {
            let peer = spawn(cmd, setup)?;
            let dog = Watchdog::new(peer.id(), limit, setup.name().into(), cleanup::emergency);
            let mut pong = vec![0u8; ping.len()];
            for i in 0..total {
                thread::sleep(PAUSE);
                let (out, back) = fifo_paths(i);
                let t0 = Instant::now();
                mkfifo(&out)?;
                mkfifo(&back)?;
                let mut to = OpenOptions::new().write(true).open(&out)?;
                let mut from = File::open(&back)?;
                to.write_all(&ping)?;
                from.read_exact(&mut pong)?;
                record(i, t0, is_ping(&pong))?;
                std::fs::remove_file(&out)?;
                std::fs::remove_file(&back)?;
            }
            drop(dog);
            peer.finish()?;
        }
        Setup::IpcChannel => {
            let (server, name) = IpcOneShotServer::<IpcSender<Pair>>::new()?;
            let mut cmd = cmd;
            cmd.env(SERVER_ENV, name);
            let peer = spawn(cmd, setup)?;
            let dog = Watchdog::new(peer.id(), limit, setup.name().into(), cleanup::emergency);
            let (_, control) = server
                .accept()
                .map_err(|e| format!("ipc-channel accept: {e:?}"))?;
            for i in 0..total {
                thread::sleep(PAUSE);
                let t0 = Instant::now();
                let (req_tx, req_rx) = ipc::bytes_channel()?;
                let (resp_tx, resp_rx) = ipc::bytes_channel()?;
                control
                    .send((req_rx, resp_tx))
                    .map_err(|e| format!("ipc-channel send: {e:?}"))?;
                req_tx.send(&ping)?;
                let pong = resp_rx
                    .recv()
                    .map_err(|e| format!("ipc-channel recv: {e:?}"))?;
                record(i, t0, is_ping(&pong))?;
            }
            drop(dog);
            drop(control);
            peer.finish()?;
        }
        Setup::Iceoryx2 => {
            let config = iox::config()?;
            let node = iox::node(&config)?;
            let peer = spawn(cmd, setup)?;
            let dog = Watchdog::new(peer.id(), limit, setup.name().into(), cleanup::emergency);
            for i in 0..total {
                thread::sleep(PAUSE);
                let name = iox_name(&base, i);
                let t0 = Instant::now();
                let out = iox::pubsub(&node, &format!("{name}/out"), 4, true)?;
                let back = iox::pubsub(&node, &format!("{name}/back"), 4, true)?;
                let publisher = iox::publisher(&out, ping.len())?;
                let subscriber = iox::subscriber(&back, 4)?;
                iox::publish(&publisher, None, &ping)?;
                let ok = is_ping(iox::next_sample(&subscriber, None)?.payload());
                record(i, t0, ok)?;
            }
            drop(dog);
            peer.finish()?;
        }
    }
    Ok(times)
}

/// Wait (asleep) until `fd` is readable; `false` after `timeout`.
fn readable(fd: &impl AsRawFd, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one pollfd, valid for the call; its descriptor is open
        // (borrowed from `fd`).
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            _ => return Err(io::Error::last_os_error().into()),
        }
    }
}

fn spawn(mut cmd: Command, setup: Setup) -> Result<Peer> {
    let child = cmd.spawn()?;
    Ok(Peer::new(child, setup.name().into()))
}

fn fifo_paths(i: usize) -> (PathBuf, PathBuf) {
    let dir = &cleanup::paths().dir;
    (
        dir.join(format!("fifo-{i}-out")),
        dir.join(format!("fifo-{i}-back")),
    )
}

fn mkfifo(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    if rc != 0 {
        return Err(format!("mkfifo {}: {}", path.display(), io::Error::last_os_error()).into());
    }
    Ok(())
}

fn iox_name(base: &str, i: usize) -> String {
    format!("{}/{i}", base.replace('-', "/"))
}

/// Try `attempt` until it gives something (`Ok(Some)`), for at most
/// [`PATIENCE`].
fn keep_trying<T>(what: &str, mut attempt: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = attempt()? {
            return Ok(v);
        }
        if t0.elapsed() > PATIENCE {
            return Err(format!("{what}: nothing to join in {PATIENCE:?}").into());
        }
        std::hint::spin_loop();
    }
}

/// The peer's side of the set-ups (`args`: code, count, base name).
pub fn serve(args: &[String]) -> Result<()> {
    let [code, count, base] = args else {
        return Err("setup peer: expected <kind> <count> <base>".into());
    };
    let setup = Setup::parse(code).ok_or("setup peer: unknown kind")?;
    let total: usize = count.parse()?;
    match setup {
        Setup::ShmListener => {
            for i in 0..total {
                let name = format!("{base}-{i}");
                let port = keep_trying(
                    "shmport connect",
                    || match shmport::connect_abstract_timeout(&name, PATIENCE) {
                        Ok(p) => Ok(Some(p)),
                        Err(ConnectError::Refused | ConnectError::NotFound) => Ok(None),
                        Err(e) => Err(e.into()),
                    },
                )?;
                echo_port(&port).map_err(|e| format!("set-up {i}: {e}"))?;
            }
        }
        Setup::ShmTransfer => {
            let control = MessagePort::from_parent()?;
            for i in 0..total {
                let port = keep_trying("shmport port", || match control.try_recv() {
                    Ok(mut msg) => {
                        let mut ports = msg.take_ports().map_err(|e| e.error)?;
                        Ok(Some(ports.pop().ok_or("no port in the message")?))
                    }
                    Err(RecvError::Empty) => Ok(None),
                    Err(e) => Err(e.into()),
                })?;
                echo_port(&port).map_err(|e| format!("set-up {i}: {e}"))?;
            }
        }
        Setup::Uds => {
            let mut buf = vec![0u8; payload::CTRL_LEN];
            for i in 0..total {
                let addr = SocketAddr::from_abstract_name(format!("{base}-{i}"))?;
                let mut stream =
                    keep_trying("unix connect", || match UnixStream::connect_addr(&addr) {
                        Ok(s) => Ok(Some(s)),
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
                        Err(e) => Err(e.into()),
                    })?;
                stream.read_exact(&mut buf)?;
                stream.write_all(&buf)?;
            }
        }
        Setup::Fifo => {
            let mut buf = vec![0u8; payload::CTRL_LEN];
            for i in 0..total {
                let (out, back) = fifo_paths(i);
                let mut from = keep_trying("fifo open", || match File::open(&out) {
                    Ok(f) => Ok(Some(f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e.into()),
                })?;
                let mut to = OpenOptions::new().write(true).open(&back)?;
                from.read_exact(&mut buf)?;
                to.write_all(&buf)?;
            }
        }
        Setup::IpcChannel => {
            let name = std::env::var(SERVER_ENV).map_err(|_| "no ipc-channel server name")?;
            let (control_tx, control): (IpcSender<Pair>, IpcReceiver<Pair>) = ipc::channel()?;
            IpcSender::<IpcSender<Pair>>::connect(name)?
                .send(control_tx)
                .map_err(|e| format!("ipc-channel bootstrap: {e:?}"))?;
            for _ in 0..total {
                let (rx, tx) = keep_trying("ipc-channel", || match control.try_recv() {
                    Ok(pair) => Ok(Some(pair)),
                    Err(TryRecvError::Empty) => Ok(None),
                    Err(e) => Err(format!("ipc-channel try_recv: {e:?}").into()),
                })?;
                let bytes = rx.recv().map_err(|e| format!("ipc-channel recv: {e:?}"))?;
                tx.send(&bytes)?;
            }
        }
        Setup::Iceoryx2 => {
            let config = iox::config()?;
            let node = iox::node(&config)?;
            for i in 0..total {
                let name = iox_name(base, i);
                let out = keep_trying("iceoryx2 open", || {
                    Ok(iox::pubsub(&node, &format!("{name}/out"), 4, false).ok())
                })?;
                let subscriber = iox::subscriber(&out, 4)?;
                let back = keep_trying("iceoryx2 open", || {
                    Ok(iox::pubsub(&node, &format!("{name}/back"), 4, false).ok())
                })?;
                let publisher = iox::publisher(&back, payload::CTRL_LEN)?;
                let sample = iox::next_sample(&subscriber, None)?;
                iox::publish(&publisher, None, sample.payload())?;
                // A sample lives in its publisher's data segment: dropping
                // the publisher before the suite's subscriber has mapped it
                // would lose the reply. Linger until the suite is done.
                keep_trying("iceoryx2 linger", || {
                    Ok((back.dynamic_config().number_of_subscribers() == 0).then_some(()))
                })?;
            }
        }
    }
    Ok(())
}

/// Receive one message on a fresh port and send its bytes back.
fn echo_port(port: &MessagePort) -> Result<()> {
    let msg = port
        .recv()
        .map_err(|e| format!("receiving the ping: {e}"))?;
    match port.post_bytes(msg.bytes()) {
        Ok(()) => Ok(()),
        // The reply is committed before the wake-up token is sent; if the
        // suite reads it and closes the port in between (it does not wait
        // for the token), sending the token fails and `post_bytes` reports
        // `Closed` for a message that was delivered. The suite checks the
        // reply it received, so this is not an error here.
        Err(PostError::Closed(CloseReason::Closed)) => Ok(()),
        Err(e) => Err(format!("sending the reply: {e}").into()),
    }
}
