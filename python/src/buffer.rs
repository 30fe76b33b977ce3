//! The buffer protocol, both ways, under the stable ABI of CPython 3.9.
//!
//! PyO3 offers the buffer protocol to abi3 modules only from Python 3.11
//! (when `Py_buffer` joined the limited API), and this module is one abi3
//! wheel for 3.9 on. The C functions and the struct have been the same
//! since 3.3, and every CPython exports them, so this file declares them
//! itself:
//!
//! - [`Borrowed`]: the bytes of any object that exports a contiguous buffer
//!   (`bytes`, `bytearray`, `memoryview`, numpy arrays, `PickleBuffer`),
//!   held for as long as it lives (`PyObject_GetBuffer` /
//!   `PyBuffer_Release`).
//! - `shmport._View`: a read-only buffer over a received message's bytes
//!   in shared memory. Each view object owns a reference to the message
//!   (an `Arc`), so the bytes stay mapped, and the message's ring space
//!   held, while any `memoryview` or numpy array made from it lives.
//! - The `Message` class Python sees is a subclass of the Rust message
//!   class with the buffer slots added (`memoryview(msg)`, `bytes(msg)`,
//!   `numpy.frombuffer(msg)`): each export is backed by a new `_View`.
//!
//! Buffer slots in `PyType_FromSpec` work from CPython 3.9 on (before,
//! they were ignored), which is this package's floor.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::message::{Message, MsgInner};

/// CPython's `Py_buffer` (unchanged from 3.3 to 3.14; part of the limited
/// API since 3.11).
#[repr(C)]
pub(crate) struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

const PYBUF_SIMPLE: c_int = 0;
const PYBUF_WRITABLE: c_int = 0x0001;
/// Slot numbers of `typeslots.h` (CPython 3.9 to 3.14).
const PY_BF_GETBUFFER: c_int = 1;
const PY_BF_RELEASEBUFFER: c_int = 2;

unsafe extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
    fn PyBuffer_FillInfo(
        view: *mut RawBuffer,
        obj: *mut ffi::PyObject,
        buf: *mut c_void,
        len: ffi::Py_ssize_t,
        readonly: c_int,
        flags: c_int,
    ) -> c_int;
}

/// The bytes of an object that exports a contiguous buffer, borrowed until
/// this is dropped (which needs the GIL: drop it while attached).
pub(crate) struct Borrowed {
    view: RawBuffer,
}

// SAFETY: the buffer's bytes stay valid and in place while the export is
// held (the exporter may not move or free them: `bytearray` refuses to
// resize, numpy to reshape in place); the raw pointers are only read. The
// release, which touches the exporter, happens in `Drop`, which callers run
// with the GIL held (see the type's documentation).
unsafe impl Send for Borrowed {}

impl Borrowed {
    /// Borrow the contiguous bytes of `obj` (`BufferError` or `TypeError`
    /// from the exporter otherwise).
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<Borrowed> {
        let mut view = RawBuffer {
            buf: ptr::null_mut(),
            obj: ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: ptr::null_mut(),
            shape: ptr::null_mut(),
            strides: ptr::null_mut(),
            suboffsets: ptr::null_mut(),
            internal: ptr::null_mut(),
        };
        // SAFETY: `obj` is a live object (the GIL is held: `Bound`), `view`
        // a valid, writable Py_buffer.
        let r = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut view, PYBUF_SIMPLE) };
        if r != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Borrowed { view })
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.view.len <= 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE export is `len` contiguous bytes at `buf`,
        // valid until released (in our Drop).
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is released
        // once; callers drop it with the GIL held.
        unsafe { PyBuffer_Release(&mut self.view) }
    }
}

/// The instance layout of `shmport._View`.
#[repr(C)]
struct ViewObject {
    ob_base: ffi::PyObject,
    ptr: *const u8,
    len: usize,
    /// `Arc::into_raw` of the message the bytes belong to.
    owner: *const MsgInner,
}

/// The two types made at module initialisation.
struct Types {
    view: Py<PyType>,
    message: Py<PyType>,
}

static TYPES: OnceLock<Types> = OnceLock::new();

unsafe extern "C" fn view_getbuffer(
    obj: *mut ffi::PyObject,
    view: *mut RawBuffer,
    flags: c_int,
) -> c_int {
    // SAFETY: CPython calls this with the GIL held on an instance of
    // `_View`, whose layout is ViewObject.
    unsafe {
        let v = obj as *mut ViewObject;
        if flags & PYBUF_WRITABLE != 0 {
            let msg = c"a message is read-only: its bytes are the sender's, in shared memory";
            ffi::PyErr_SetString(ffi::PyExc_BufferError, msg.as_ptr());
            (*view).obj = ptr::null_mut();
            return -1;
        }
        PyBuffer_FillInfo(
            view,
            obj,
            (*v).ptr as *mut c_void,
            (*v).len as ffi::Py_ssize_t,
            1,
            flags,
        )
    }
}

unsafe extern "C" fn view_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: the last reference to a `_View` is gone (CPython calls this
    // once, with the GIL held). `owner` came from Arc::into_raw in
    // `new_view`; the type is a heap type, so its instances hold a
    // reference to it, dropped here after the memory is freed.
    unsafe {
        let v = obj as *mut ViewObject;
        let owner = std::mem::replace(&mut (*v).owner, ptr::null());
        if !owner.is_null() {
            drop(Arc::from_raw(owner));
        }
        let tp = ffi::Py_TYPE(obj);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if !free.is_null() {
            let free: ffi::freefunc = std::mem::transmute(free);
            free(obj as *mut c_void);
        }
        ffi::Py_DECREF(tp as *mut ffi::PyObject);
    }
}

unsafe extern "C" fn no_new(
    _tp: *mut ffi::PyTypeObject,
    _args: *mut ffi::PyObject,
    _kwds: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe {
        let msg = c"views are made by shmport messages";
        ffi::PyErr_SetString(ffi::PyExc_TypeError, msg.as_ptr());
    }
    ptr::null_mut()
}

/// `Message.__getbuffer__`: each export gets a new `_View` as its owner.
unsafe extern "C" fn message_getbuffer(
    obj: *mut ffi::PyObject,
    view: *mut RawBuffer,
    flags: c_int,
) -> c_int {
    // SAFETY: called with the GIL held on an instance of the message
    // subclass; `attach` only asserts that.
    Python::attach(|py| {
        // SAFETY: `obj` is a live object for the duration of the call.
        let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
        let r = any
            .cast::<Message>()
            .map_err(PyErr::from)
            .and_then(|m| m.get().view(py));
        match r {
            // SAFETY: `v` is a `_View`; its getbuffer fills `view` and takes
            // its own reference to it; ours is dropped after.
            Ok(v) => unsafe { view_getbuffer(v.as_ptr(), view, flags) },
            Err(e) => {
                e.restore(py);
                // SAFETY: CPython wants obj NULL on failure.
                unsafe { (*view).obj = ptr::null_mut() };
                -1
            }
        }
    })
}

/// `_View.__releasebuffer__`: nothing to do (the view's owner reference is
/// dropped with the view object), but present so that CPython never looks
/// for one in a base.
unsafe extern "C" fn noop_release(_obj: *mut ffi::PyObject, _view: *mut RawBuffer) {}

/// A new, zero-filled instance of the heap type `tp` (one of the buffer
/// types made by [`buffer_type`]), as an owned reference.
fn allocate(tp: &Bound<'_, PyType>) -> PyResult<*mut ffi::PyObject> {
    let py = tp.py();
    let tpp = tp.as_ptr() as *mut ffi::PyTypeObject;
    // SAFETY: `tpp` is a live type object (borrowed from `tp`); its tp_alloc
    // slot is PyType_GenericAlloc (inherited from object), which zero-fills
    // the instance and takes a reference to the type.
    unsafe {
        let alloc = ffi::PyType_GetSlot(tpp, ffi::Py_tp_alloc);
        if alloc.is_null() {
            return Err(PyBufferError::new_err("cannot allocate a buffer object"));
        }
        let alloc: ffi::allocfunc = std::mem::transmute(alloc);
        let obj = alloc(tpp, 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(obj)
    }
}

/// A heap type named `name` of `basicsize` bytes (0: its base's), from
/// `slots` (slot number, function), on `base` if given: the buffer types
/// the stable ABI below 3.11 can only make this way.
fn buffer_type<'py>(
    py: Python<'py>,
    name: &'static std::ffi::CStr,
    basicsize: usize,
    base: Option<&Bound<'py, PyType>>,
    slots: &[(c_int, *mut c_void)],
) -> PyResult<Bound<'py, PyType>> {
    let mut slots: Vec<ffi::PyType_Slot> = slots
        .iter()
        .map(|&(slot, pfunc)| ffi::PyType_Slot { slot, pfunc })
        .chain([ffi::PyType_Slot {
            slot: 0,
            pfunc: ptr::null_mut(),
        }])
        .collect();
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: basicsize as c_int,
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as _,
        slots: slots.as_mut_ptr(),
    };
    let t = match base {
        None => {
            // SAFETY: a valid spec whose slot list ends with a zero slot;
            // CPython copies what it needs from it during the call.
            unsafe { ffi::PyType_FromSpec(&mut spec) }
        }
        Some(base) => {
            let bases = pyo3::types::PyTuple::new(py, [base])?;
            // SAFETY: as above, and a tuple of one base type.
            unsafe { ffi::PyType_FromSpecWithBases(&mut spec, bases.as_ptr()) }
        }
    };
    if t.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new reference to a type object.
    unsafe { Bound::from_owned_ptr(py, t) }
        .cast_into::<PyType>()
        .map_err(Into::into)
}

/// Make `_View` and the `Message` subclass; add `Message` to the module.
pub(crate) fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let view = buffer_type(
        py,
        c"shmport._View",
        std::mem::size_of::<ViewObject>(),
        None,
        &[
            (PY_BF_GETBUFFER, view_getbuffer as *mut c_void),
            (PY_BF_RELEASEBUFFER, noop_release as *mut c_void),
            (ffi::Py_tp_dealloc, view_dealloc as *mut c_void),
            (ffi::Py_tp_new, no_new as *mut c_void),
        ],
    )?;
    let base = py.get_type::<Message>();
    // Size 0: the base's (the Rust message lives there).
    let message = buffer_type(
        py,
        c"shmport.Message",
        0,
        Some(&base),
        &[
            (PY_BF_GETBUFFER, message_getbuffer as *mut c_void),
            (PY_BF_RELEASEBUFFER, noop_release as *mut c_void),
        ],
    )?;
    m.add("Message", &message)?;
    let _ = TYPES.set(Types {
        view: view.unbind(),
        message: message.unbind(),
    });
    Ok(())
}

/// The `Message` subclass (with the buffer slots).
pub(crate) fn message_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    match TYPES.get() {
        Some(t) => Ok(t.message.bind(py)),
        None => Err(PyTypeError::new_err("shmport is not initialised")),
    }
}

/// A new `_View` over `len` bytes at `ptr`, owned by `owner`.
pub(crate) fn new_view<'py>(
    py: Python<'py>,
    owner: Arc<MsgInner>,
    ptr: *const u8,
    len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(types) = TYPES.get() else {
        return Err(PyBufferError::new_err("shmport is not initialised"));
    };
    let tp = types.view.bind(py);
    let obj = allocate(tp)?;
    // SAFETY: `obj` is a fresh, zero-filled `_View` (allocate), so its
    // struct is a ViewObject; the fields are set before any use.
    unsafe {
        let v = obj as *mut ViewObject;
        (*v).ptr = ptr;
        (*v).len = len;
        (*v).owner = Arc::into_raw(owner);
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// A read-only `memoryview` of `len` bytes at `ptr`, owned by `owner`.
pub(crate) fn memoryview<'py>(
    py: Python<'py>,
    owner: Arc<MsgInner>,
    ptr: *const u8,
    len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let v = new_view(py, owner, ptr, len)?;
    // SAFETY: `v` exports a buffer; the memoryview takes its own export.
    let mv = unsafe { ffi::PyMemoryView_FromObject(v.as_ptr()) };
    if mv.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new reference.
    Ok(unsafe { Bound::from_owned_ptr(py, mv) })
}

/// The instance layout of `shmport._Loan`: a writable buffer over a
/// reservation's ring memory.
#[repr(C)]
struct LoanObject {
    ob_base: ffi::PyObject,
    ptr: *mut u8,
    len: usize,
    /// `Arc::into_raw`: the export count and the ring's pin.
    state: *const crate::port::LoanState,
    /// A strong reference to the `Reservation`, which may not be committed
    /// or abandoned while a buffer of it is exported.
    owner: *mut ffi::PyObject,
}

static LOAN_TYPE: OnceLock<Py<PyType>> = OnceLock::new();

unsafe extern "C" fn loan_getbuffer(
    obj: *mut ffi::PyObject,
    view: *mut RawBuffer,
    flags: c_int,
) -> c_int {
    // SAFETY: called with the GIL held on a `_Loan`.
    unsafe {
        let l = obj as *mut LoanObject;
        let r = PyBuffer_FillInfo(view, obj, (*l).ptr as *mut c_void, (*l).len as _, 0, flags);
        if r == 0 {
            (*(*l).state)
                .exports
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        r
    }
}

unsafe extern "C" fn loan_releasebuffer(obj: *mut ffi::PyObject, _view: *mut RawBuffer) {
    // SAFETY: called with the GIL held on a `_Loan` whose buffer was exported.
    unsafe {
        let l = obj as *mut LoanObject;
        (*(*l).state)
            .exports
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

unsafe extern "C" fn loan_dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: the last reference to a `_Loan` is gone (GIL held); its
    // fields were set by `loan_memoryview`.
    unsafe {
        let l = obj as *mut LoanObject;
        let state = std::mem::replace(&mut (*l).state, ptr::null());
        if !state.is_null() {
            drop(Arc::from_raw(state));
        }
        let owner = std::mem::replace(&mut (*l).owner, ptr::null_mut());
        if !owner.is_null() {
            ffi::Py_DECREF(owner);
        }
        let tp = ffi::Py_TYPE(obj);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if !free.is_null() {
            let free: ffi::freefunc = std::mem::transmute(free);
            free(obj as *mut c_void);
        }
        ffi::Py_DECREF(tp as *mut ffi::PyObject);
    }
}

fn loan_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    if let Some(t) = LOAN_TYPE.get() {
        return Ok(t.bind(py));
    }
    let t = buffer_type(
        py,
        c"shmport._Loan",
        std::mem::size_of::<LoanObject>(),
        None,
        &[
            (PY_BF_GETBUFFER, loan_getbuffer as *mut c_void),
            (PY_BF_RELEASEBUFFER, loan_releasebuffer as *mut c_void),
            (ffi::Py_tp_dealloc, loan_dealloc as *mut c_void),
            (ffi::Py_tp_new, no_new as *mut c_void),
        ],
    )?;
    let _ = LOAN_TYPE.set(t.unbind());
    Ok(LOAN_TYPE.get().expect("just set").bind(py))
}

/// A writable `memoryview` of `len` bytes at `ptr` (a reservation's ring
/// memory), counted in `state.exports`, keeping `owner` alive.
pub(crate) fn loan_memoryview<'py>(
    owner: &Bound<'py, PyAny>,
    state: Arc<crate::port::LoanState>,
    ptr: *mut u8,
    len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    let tp = loan_type(py)?;
    let obj = allocate(tp)?;
    // SAFETY: `obj` is a fresh, zero-filled `_Loan` (allocate), so its
    // struct is a LoanObject; the fields are set before any use.
    unsafe {
        let l = obj as *mut LoanObject;
        (*l).ptr = ptr;
        (*l).len = len;
        (*l).state = Arc::into_raw(state);
        (*l).owner = owner.clone().into_ptr();
        let loan = Bound::from_owned_ptr(py, obj);
        let mv = ffi::PyMemoryView_FromObject(loan.as_ptr());
        if mv.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, mv))
    }
}
