//! Processes and rendezvous: `spawn` (a child with a connected port),
//! `from_parent` (in the child), `Listener` / `connect` (unrelated
//! processes meeting on a Unix socket, with the connector's credentials).

use std::ffi::OsString;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyFileNotFoundError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use shmport::{ChannelBuilder, ConnectError, Credentials};

use crate::errors;
use crate::port::{Here, Port, SLICE};

/// Channel settings from keyword arguments.
pub(crate) fn builder(
    capacity: Option<usize>,
    spin: Option<f64>,
    trust: Option<&str>,
    max_message_size: Option<usize>,
) -> PyResult<ChannelBuilder> {
    // Every Python port is split at its first use and may be waited on
    // through its descriptor (asyncio): a socket of its own from the start
    // (kits, not links: no move per channel).
    let mut b = ChannelBuilder::new().own_sockets(true);
    if let Some(c) = capacity {
        b = b.capacity(c);
    }
    if let Some(s) = spin {
        let d = Duration::try_from_secs_f64(s)
            .map_err(|_| PyValueError::new_err("spin must be a non-negative number of seconds"))?;
        b = b.spin(d);
    }
    if let Some(t) = trust {
        b = b.trust(crate::parse_trust(t)?);
    }
    if let Some(m) = max_message_size {
        b = b.max_message_size(m);
    }
    Ok(b)
}

/// `subprocess`'s PIPE and DEVNULL.
const PIPE: i64 = -1;
const DEVNULL: i64 = -3;

fn stdio(spec: Option<i64>) -> PyResult<Stdio> {
    match spec {
        None => Ok(Stdio::inherit()),
        Some(PIPE) => Ok(Stdio::piped()),
        Some(DEVNULL) => Ok(Stdio::null()),
        Some(fd) if fd >= 0 => {
            // SAFETY: dup of a descriptor number the caller passed; the
            // copy is ours.
            let copy = unsafe { libc::fcntl(fd as RawFd, libc::F_DUPFD_CLOEXEC, 3) };
            if copy < 0 {
                return Err(errors::io(std::io::Error::last_os_error()));
            }
            // SAFETY: a new descriptor that nothing else owns.
            Ok(Stdio::from(unsafe { OwnedFd::from_raw_fd(copy) }))
        }
        Some(_) => Err(PyValueError::new_err(
            "stdin/stdout/stderr: None, subprocess.PIPE, subprocess.DEVNULL or a descriptor",
        )),
    }
}

/// Start `args` with a new channel's other port passed to it. Returns
/// `(pid, port, stdin, stdout, stderr)`, the last three descriptors of
/// pipes or `None`. The Python `shmport.spawn` wraps this.
#[pyfunction]
#[pyo3(signature = (args, *, capacity = None, spin = None, trust = None, max_message_size = None,
                    cwd = None, env = None, stdin = None, stdout = None, stderr = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn _spawn<'py>(
    py: Python<'py>,
    args: Vec<OsString>,
    capacity: Option<usize>,
    spin: Option<f64>,
    trust: Option<&str>,
    max_message_size: Option<usize>,
    cwd: Option<OsString>,
    env: Option<Vec<(OsString, OsString)>>,
    stdin: Option<i64>,
    stdout: Option<i64>,
    stderr: Option<i64>,
) -> PyResult<(
    u32,
    Bound<'py, Port>,
    Option<RawFd>,
    Option<RawFd>,
    Option<RawFd>,
)> {
    let b = builder(capacity, spin, trust, max_message_size)?;
    let Some((prog, rest)) = args.split_first() else {
        return Err(PyValueError::new_err(
            "spawn needs a command: [program, args...]",
        ));
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    if let Some(vars) = env {
        cmd.env_clear();
        cmd.envs(vars);
    }
    cmd.stdin(stdio(stdin)?)
        .stdout(stdio(stdout)?)
        .stderr(stdio(stderr)?);
    let (mut child, port) = py.detach(|| b.spawn(cmd)).map_err(errors::io)?;
    let fds = (
        child.stdin.take().map(IntoRawFd::into_raw_fd),
        child.stdout.take().map(IntoRawFd::into_raw_fd),
        child.stderr.take().map(IntoRawFd::into_raw_fd),
    );
    // The child is reaped by the Python side (os.waitpid); dropping the
    // handle neither waits nor kills.
    let pid = child.id();
    drop(child);
    Ok((pid, Port::wrap(py, port)?, fds.0, fds.1, fds.2))
}

/// In a process started by `spawn`: the port its parent passed.
#[pyfunction]
pub(crate) fn from_parent(py: Python<'_>) -> PyResult<Bound<'_, Port>> {
    let port = shmport::MessagePort::from_parent().map_err(|e| errors::os_error(e.to_string()))?;
    Port::wrap(py, port)
}

/// A new channel's two ports.
#[pyfunction]
#[pyo3(signature = (*, capacity = None, spin = None, trust = None, max_message_size = None))]
pub(crate) fn _channel<'py>(
    py: Python<'py>,
    capacity: Option<usize>,
    spin: Option<f64>,
    trust: Option<&str>,
    max_message_size: Option<usize>,
) -> PyResult<(Bound<'py, Port>, Bound<'py, Port>)> {
    let b = builder(capacity, spin, trust, max_message_size)?;
    let ch = b.build().map_err(errors::io)?;
    let (a, c) = ch.into_ports();
    Ok((Port::wrap(py, a)?, Port::wrap(py, c)?))
}

fn connect_error(e: ConnectError) -> PyErr {
    match e {
        ConnectError::NotFound => PyFileNotFoundError::new_err("no listener at that address"),
        ConnectError::Timeout => PyTimeoutError::new_err("timed out connecting"),
        ConnectError::Refused => {
            pyo3::exceptions::PyConnectionRefusedError::new_err("nobody listens at that address")
        }
        ConnectError::Rejected => {
            pyo3::exceptions::PyConnectionRefusedError::new_err("the listener rejected us")
        }
        ConnectError::PermissionDenied => {
            pyo3::exceptions::PyPermissionError::new_err(e.to_string())
        }
        e => errors::os_error(e.to_string()),
    }
}

/// Get a port from the `Listener` at `path` (or the abstract socket
/// `abstract_name`), waiting at most `timeout` seconds (default 5).
#[pyfunction]
#[pyo3(signature = (path = None, *, abstract_name = None, timeout = None))]
pub(crate) fn connect<'py>(
    py: Python<'py>,
    path: Option<std::path::PathBuf>,
    abstract_name: Option<Vec<u8>>,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, Port>> {
    let t = match timeout {
        None => shmport::DEFAULT_CONNECT_TIMEOUT,
        Some(t) => Duration::try_from_secs_f64(t)
            .map_err(|_| PyValueError::new_err("timeout must be a non-negative number"))?,
    };
    let port = match (path, abstract_name) {
        (Some(p), None) => py.detach(|| shmport::connect_timeout(p, t)),
        (None, Some(n)) => py.detach(|| shmport::connect_abstract_timeout(n, t)),
        _ => {
            return Err(PyValueError::new_err(
                "give a path or abstract_name=, not both",
            ));
        }
    }
    .map_err(connect_error)?;
    Port::wrap(py, port)
}

/// A rendezvous point: a Unix socket (mode 0600) that hands a port to each
/// process that connects, after the listener has seen its credentials.
#[pyclass(frozen, module = "shmport")]
pub(crate) struct Listener {
    inner: Mutex<Option<shmport::Listener>>,
}

/// A process waiting for a port: `accept()` it or `reject()` it.
#[pyclass(frozen, module = "shmport")]
pub(crate) struct Incoming {
    inner: Mutex<Option<shmport::Incoming>>,
    creds: Credentials,
}

#[pymethods]
impl Listener {
    /// Listen at `path` (a new socket file, removed on close), or on the
    /// abstract socket `abstract_name`.
    #[new]
    #[pyo3(signature = (path = None, *, abstract_name = None))]
    fn new(path: Option<std::path::PathBuf>, abstract_name: Option<Vec<u8>>) -> PyResult<Self> {
        let l = match (path, abstract_name) {
            (Some(p), None) => shmport::Listener::bind(p),
            (None, Some(n)) => shmport::Listener::bind_abstract(n),
            _ => {
                return Err(PyValueError::new_err(
                    "give a path or abstract_name=, not both",
                ));
            }
        }
        .map_err(errors::io)?;
        Ok(Listener {
            inner: Mutex::new(Some(l)),
        })
    }

    /// The next process that connects (at most `timeout` seconds:
    /// `TimeoutError`).
    #[pyo3(signature = (timeout = None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Incoming> {
        let deadline = match timeout {
            None => None,
            Some(t) => Some(
                Instant::now()
                    + Duration::try_from_secs_f64(t)
                        .map_err(|_| PyValueError::new_err("timeout must be non-negative"))?,
            ),
        };
        let guard = self
            .inner
            .try_lock()
            .map_err(|_| errors::busy("another thread is accepting on this listener"))?;
        let Some(l) = guard.as_ref() else {
            return Err(errors::closed_here("the listener is closed"));
        };
        loop {
            let slice = match deadline {
                None => SLICE,
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            };
            let lh = Here::new(l);
            let r = py.detach(move || Here::new(lh.get().accept_timeout(slice)));
            match r.get().map_err(errors::io)? {
                Some(inc) => {
                    let creds = inc.credentials();
                    return Ok(Incoming {
                        inner: Mutex::new(Some(inc)),
                        creds,
                    });
                }
                None => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(PyTimeoutError::new_err("no connection"));
                    }
                }
            }
        }
    }

    /// The socket's path (`None` for an abstract socket).
    #[getter]
    fn path(&self) -> Option<std::path::PathBuf> {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_ref().and_then(|l| l.path().map(|p| p.to_path_buf()))
    }

    /// The listening socket (readable when a process connects).
    fn fileno(&self) -> PyResult<RawFd> {
        use std::os::fd::{AsFd, AsRawFd};
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.as_ref()
            .map(|l| l.as_fd().as_raw_fd())
            .ok_or_else(|| errors::closed_here("the listener is closed"))
    }

    /// Stop listening (the socket file is removed).
    fn close(&self) -> PyResult<()> {
        let l = self
            .inner
            .try_lock()
            .map_err(|_| errors::busy("another thread is accepting on this listener"))?
            .take();
        drop(l);
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }
}

#[pymethods]
impl Incoming {
    /// `(pid, uid, gid)` of the connecting process, as the kernel saw it.
    #[getter]
    fn credentials(&self) -> (u32, u32, u32) {
        (self.creds.pid, self.creds.uid, self.creds.gid)
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.creds.pid
    }

    #[getter]
    fn uid(&self) -> u32 {
        self.creds.uid
    }

    #[getter]
    fn gid(&self) -> u32 {
        self.creds.gid
    }

    /// Hand the process a port (of a new channel with these settings).
    #[pyo3(signature = (*, capacity = None, spin = None, trust = None, max_message_size = None))]
    fn accept<'py>(
        &self,
        py: Python<'py>,
        capacity: Option<usize>,
        spin: Option<f64>,
        trust: Option<&str>,
        max_message_size: Option<usize>,
    ) -> PyResult<Bound<'py, Port>> {
        let b = builder(capacity, spin, trust, max_message_size)?;
        let inc = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| PyValueError::new_err("already accepted or rejected"))?;
        let port = py.detach(|| inc.accept_with(&b)).map_err(errors::io)?;
        Port::wrap(py, port)
    }

    /// Refuse: the connector gets `ConnectionRefusedError`.
    fn reject(&self) {
        let inc = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(i) = inc {
            i.reject();
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmport.Incoming pid={} uid={} gid={}>",
            self.creds.pid, self.creds.uid, self.creds.gid
        )
    }
}
