//! The Python binding of shmport: the extension module `shmport._shmport`,
//! which the Python package `shmport` (in `python/shmport/`) re-exports and
//! completes (asyncio, port sets, the `spawn` process object).
//!
//! Build and install it with `pip install ./python` (maturin). The pieces:
//! `port` (ports, posting, receiving, threads), `message` (received
//! messages and their lifetime), `frame` (the pickle frame in shared
//! memory), `buffer` (the buffer protocol under the stable ABI), `process`
//! (spawn, rendezvous), `waiting` (the descriptor event loops wait on,
//! the spin before it), `errors` (the exceptions).

#![cfg(target_os = "linux")]

mod buffer;
mod errors;
mod frame;
mod message;
mod port;
mod process;
mod waiting;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `pickle.dumps`, looked up once.
pub(crate) fn pickle_dumps(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    DUMPS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("pickle")?.getattr("dumps")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// `pickle.loads`, looked up once.
pub(crate) fn pickle_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOADS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("pickle")?.getattr("loads")?.unbind())
        })
        .map(|f| f.bind(py))
}

pub(crate) fn parse_trust(t: &str) -> PyResult<shmport::Trust> {
    match t {
        "validated" => Ok(shmport::Trust::Validated),
        "untrusted" => Ok(shmport::Trust::Untrusted),
        _ => Err(PyValueError::new_err(
            "trust is \"validated\" (the default) or \"untrusted\"",
        )),
    }
}

#[pymodule]
fn _shmport(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<port::Port>()?;
    m.add_class::<port::Reservation>()?;
    m.add_class::<message::Message>()?;
    m.add_class::<process::Listener>()?;
    m.add_class::<process::Incoming>()?;
    m.add_function(wrap_pyfunction!(process::_channel, m)?)?;
    m.add_function(wrap_pyfunction!(process::_spawn, m)?)?;
    m.add_function(wrap_pyfunction!(process::from_parent, m)?)?;
    m.add_function(wrap_pyfunction!(process::connect, m)?)?;
    m.add_function(wrap_pyfunction!(port::_spin, m)?)?;
    m.add("MAX_MESSAGE_SIZE", shmport::MAX_MESSAGE_SIZE)?;
    m.add("MAX_PORTS", shmport::MAX_PORTS)?;
    m.add("DEFAULT_CAPACITY", shmport::DEFAULT_CAPACITY)?;
    buffer::init(m)?;
    Ok(())
}
