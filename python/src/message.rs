//! A received message, seen from Python.
//!
//! The Rust message (`shmport::Message`) borrows its port's receiving half;
//! here it lives in a [`MsgInner`] behind an `Arc`, beside an `Arc` of the
//! port's receiving core ([`RxCore`]), which keeps that half alive and in
//! place. The Python `Message` holds one reference; every buffer exported
//! from it (`memoryview(msg)`, `msg.buffer`, the numpy arrays `msg.data`
//! rebuilds) holds another, through a `_View` object. The message's bytes
//! stay mapped, and its ring space held, until the last of them is gone:
//! `msg.release()` (or the end of `with port.recv() as msg:`) drops the
//! message's own reference only.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::buffer;
use crate::errors;
use crate::frame;
use crate::port::{Port, RxCore};

/// A message received from a port, held until every reference to it is
/// gone.
pub(crate) struct MsgInner {
    msg: Mutex<Option<Held>>,
    core: Arc<RxCore>,
}

/// A `shmport::Message` that borrows a receiving half kept alive by an
/// [`RxCore`] (hence `'static`).
pub(crate) struct Held(pub(crate) shmport::Message<'static>);

// SAFETY: a Held message touches its port's receiving half only when it is
// dropped, and [`RxCore::dispose`] drops it only while holding the core's
// lock (the one every use of that half holds); its bytes are plain memory
// (a shared mapping or a private copy) that nobody writes while it lives.
unsafe impl Send for Held {}

impl MsgInner {
    pub(crate) fn new(msg: shmport::Message<'static>, core: Arc<RxCore>) -> MsgInner {
        MsgInner {
            msg: Mutex::new(Some(Held(msg))),
            core,
        }
    }
}

impl Drop for MsgInner {
    fn drop(&mut self) {
        let held = self
            .msg
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(held) = held {
            self.core.dispose(held);
        }
    }
}

/// What kind of payload a message carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `port.post(obj)`: a pickle and its out-of-band buffers.
    Pickle,
    /// `port.post_bytes(buf)`, or raw bytes from a Rust or C peer.
    Bytes,
    /// A typed rkyv value from a Rust peer (`MessagePort::post`).
    Typed,
}

thread_local! {
    /// The message `Message.__new__` picks up (see [`Message::into_py`]).
    static STASH: Cell<Option<Message>> = const { Cell::new(None) };
}

/// A received message. The Python class `shmport.Message` is a subclass
/// of this one with the buffer protocol added (`crate::buffer`).
#[pyclass(frozen, subclass, module = "shmport", name = "_MessageBase")]
pub(crate) struct Message {
    /// Ours; `None` once released.
    inner: Mutex<Option<Arc<MsgInner>>>,
    ptr: usize,
    len: usize,
    kind: Kind,
    fingerprint: u64,
    /// `msg.data`, once computed.
    data: Mutex<Option<Py<PyAny>>>,
    /// `msg.ports`, once taken.
    ports: Mutex<Option<Py<PyList>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Message {
    /// Wrap a message just received from `core`'s receiving half.
    pub(crate) fn into_py<'py>(
        py: Python<'py>,
        msg: shmport::Message<'static>,
        core: Arc<RxCore>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bytes = msg.bytes();
        let (ptr, len) = (bytes.as_ptr() as usize, bytes.len());
        let kind = if !msg.is_typed() {
            Kind::Bytes
        } else if msg.fingerprint() == frame::fingerprint() {
            Kind::Pickle
        } else {
            Kind::Typed
        };
        let fingerprint = msg.fingerprint();
        let m = Message {
            inner: Mutex::new(Some(Arc::new(MsgInner::new(msg, core)))),
            ptr,
            len,
            kind,
            fingerprint,
            data: Mutex::new(None),
            ports: Mutex::new(None),
        };
        // The subclass is made by its type's tp_new, which is ours
        // (`__new__` below): hand the value over through a thread local.
        STASH.with(|s| s.set(Some(m)));
        let r = buffer::message_type(py)?.call0();
        STASH.with(|s| drop(s.take()));
        r
    }

    /// Our reference to the message, or the error for a released one.
    fn inner(&self) -> PyResult<Arc<MsgInner>> {
        match &*lock(&self.inner) {
            Some(i) => Ok(i.clone()),
            None => Err(PyValueError::new_err("the message was released")),
        }
    }

    /// A new `_View` over the whole payload (for a buffer export).
    pub(crate) fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        buffer::new_view(py, self.inner()?, self.ptr as *const u8, self.len)
    }

    fn memoryview<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        buffer::memoryview(py, self.inner()?, self.ptr as *const u8, self.len)
    }

    fn payload(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: callers hold a reference to the message (`inner()`), so
        // its `len` bytes at `ptr` are mapped and unchanged.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

#[pymethods]
impl Message {
    #[new]
    fn __new__() -> PyResult<Message> {
        STASH
            .with(|s| s.take())
            .ok_or_else(|| PyTypeError::new_err("messages come from Port.recv()"))
    }

    /// The unpickled object (for a message posted with `post`), computed
    /// once. numpy arrays and other out-of-band buffers are rebuilt as
    /// read-only views of the message's shared memory: no copy. They keep
    /// the message's memory (and its ring space) until they are gone.
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(d) = &*lock(&self.data) {
            return Ok(d.clone_ref(py));
        }
        let inner = self.inner()?;
        let d = match self.kind {
            Kind::Pickle => {
                let layout = frame::parse(self.payload()).map_err(PyValueError::new_err)?;
                let mv = buffer::memoryview(py, inner, self.ptr as *const u8, self.len)?;
                let slice = |off: usize, len: usize| {
                    mv.get_item(pyo3::types::PySlice::new(
                        py,
                        off as isize,
                        (off + len) as isize,
                        1,
                    ))
                };
                let pickled = slice(layout.pickle.0, layout.pickle.1)?;
                let bufs = layout
                    .buffers
                    .iter()
                    .map(|&(o, l)| slice(o, l))
                    .collect::<PyResult<Vec<_>>>()?;
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("buffers", PyList::new(py, bufs)?)?;
                crate::pickle_loads(py)?
                    .call((pickled,), Some(&kwargs))?
                    .unbind()
            }
            Kind::Bytes => {
                return Err(PyTypeError::new_err(
                    "a raw bytes message (post_bytes, or a Rust or C peer) has no pickled data: \
                     read msg.buffer, memoryview(msg) or bytes(msg)",
                ));
            }
            Kind::Typed => {
                return Err(PyTypeError::new_err(
                    "a typed rkyv message from a Rust peer: read its archive with msg.buffer",
                ));
            }
        };
        *lock(&self.data) = Some(d.clone_ref(py));
        Ok(d)
    }

    /// The payload as a read-only `memoryview` of shared memory, in place
    /// (for a pickled message, the frame: pickle and buffers). Keeps the
    /// message's memory while it lives.
    #[getter]
    fn buffer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.memoryview(py)
    }

    /// The ports that came with the message, in the order they were
    /// posted (taken from the message on first access). Ports never taken
    /// close when the message is released.
    #[getter]
    fn ports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        if let Some(p) = &*lock(&self.ports) {
            return Ok(p.bind(py).clone());
        }
        let inner = self.inner()?;
        let taken = {
            let mut held = lock(&inner.msg);
            match held.as_mut() {
                Some(h) => h.0.take_ports(),
                None => Ok(Vec::new()),
            }
        };
        let (ports, err) = match taken {
            Ok(p) => (p, None),
            Err(e) => (e.ports, Some(e.error)),
        };
        let list = PyList::empty(py);
        for p in ports {
            list.append(Port::wrap(py, p)?)?;
        }
        *lock(&self.ports) = Some(list.clone().unbind());
        if let Some(e) = err {
            return Err(errors::os_error(format!(
                "a port that came with the message is not valid (closed): {e}; \
                 msg.ports has the valid ones"
            )));
        }
        Ok(list)
    }

    /// `"pickle"` (posted with `post`), `"bytes"` (`post_bytes`, or raw
    /// bytes from Rust or C) or `"typed"` (an rkyv value from Rust).
    #[getter]
    fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Pickle => "pickle",
            Kind::Bytes => "bytes",
            Kind::Typed => "typed",
        }
    }

    /// The sender's type fingerprint (0 for raw bytes).
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Payload size in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.len
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// Has `release()` been called (or the `with` block ended)?
    #[getter]
    fn released(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// A copy of the payload as `bytes`.
    fn tobytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let _keep = self.inner()?;
        Ok(pyo3::types::PyBytes::new(py, self.payload()))
    }

    /// Give the message back: its ring space returns to the sender once no
    /// view of it (memoryview, numpy array from `data`) is left. Ports
    /// that came with it and were not taken are closed. Idempotent.
    fn release(&self) {
        let inner = lock(&self.inner).take();
        *lock(&self.data) = None;
        drop(inner);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.release();
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.released() { ", released" } else { "" };
        format!(
            "<shmport.Message {} {} bytes{state}>",
            self.kind(),
            self.len
        )
    }
}
