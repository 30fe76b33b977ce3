"""What ``port.post`` pickles beyond ``pickle.dumps``: memoryviews, and
large ``bytes`` out of band.

``pickle`` refuses a ``memoryview``. A post whose object holds one is
pickled again here (only after ``pickle.dumps`` refused it, so other posts
pay nothing), with each memoryview an out-of-band buffer written straight
into shared memory, like a numpy array's. The receiver gets a read-only
memoryview of that memory, of the same format and shape (no copy).

``pickle`` copies a ``bytes`` object into the pickle (it never offers it
out of band). A post of one ``bytes`` object of 64 KiB or more (the
binding's ``BYTES_OUT_OF_BAND``; smaller ones cost less in the pickle) is
pickled here as
``bytes(buffer)`` with the buffer out of band: the sender copies it once,
straight into shared memory; the receiver's ``bytes`` is its one copy.
``bytes`` inside other objects stay in the pickle.
"""

import io
import pickle


def _memoryview(buf, fmt, shape):
    """The receiver's side: the buffer in place, as the sender's view."""
    return memoryview(buf).cast("B").cast(fmt, shape)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if type(obj) is not memoryview:
            return NotImplemented
        fmt, shape = obj.format, obj.shape
        if not obj.c_contiguous:
            obj = memoryview(obj.tobytes())
        flat = obj.cast("B")
        try:
            flat.cast(fmt, shape)  # what the receiver will do
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"cannot post a memoryview of format {fmt!r} and shape {shape}: {e}"
            ) from None
        return _memoryview, (pickle.PickleBuffer(flat), fmt, shape)


def dumps(obj, buffer_callback):
    f = io.BytesIO()
    _Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(obj)
    return f.getvalue()



class _Bytes:
    __slots__ = ("b",)

    def __init__(self, b):
        self.b = b

    def __reduce__(self):
        return bytes, (pickle.PickleBuffer(self.b),)


def dumps_bytes(b, buffer_callback):
    """A large ``bytes`` object, its bytes out of band."""
    return pickle.dumps(_Bytes(b), protocol=5, buffer_callback=buffer_callback)
