"""What ``port.post`` pickles beyond ``pickle.dumps``: memoryviews.

``pickle`` refuses a ``memoryview``. A post whose object holds one is
pickled again here (only after ``pickle.dumps`` refused it, so other posts
pay nothing), with each memoryview an out-of-band buffer written straight
into shared memory, like a numpy array's. The receiver gets a read-only
memoryview of that memory, of the same format and shape (no copy).
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
