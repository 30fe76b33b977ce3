"""One process: the API, its errors, and the lifetime of messages."""

import ctypes
import os
import gc
import pickle
import threading
import time

import numpy as np
import pytest

import shmport
from conftest import in_shared_memory, open_fds, shared_mappings


def test_channel_and_fifo():
    ch = shmport.MessageChannel(capacity=64 * 1024, spin=0.0)
    a, b = ch
    assert (ch.port1, ch.port2) == (a, b)
    assert a.capacity == 64 * 1024 and a.spin == 0.0
    for i in range(300):  # 300 small messages fit in 64 KiB
        a.post({"i": i, "s": "x" * (i % 50)})
    for i in range(300):
        with b.recv() as m:
            assert m.kind == "pickle"
            assert m.data == {"i": i, "s": "x" * (i % 50)}
    assert b.try_recv() is None
    b.post_bytes(b"back")
    assert bytes(a.recv()) == b"back"


def test_objects_round_trip():
    a, b = shmport.MessageChannel()
    values = [None, 0, -1, 2**100, 1.5, "ünïcode", b"bytes", bytearray(b"ba"), [1, [2]],
              {"k": (1, 2)}, {1, 2}, frozenset({3}), np.arange(5), np.zeros((3, 4), np.float32).T,
              np.array(["a", "bc"]), np.arange(6).reshape(2, 3)[:, 1]]
    for v in values:
        a.post(v)
    for v in values:
        got = b.recv().data
        if isinstance(v, np.ndarray):
            assert got.dtype == v.dtype and np.array_equal(got, v)
        else:
            assert got == v and type(got) is type(v)


def test_numpy_arrays_are_read_only_views_of_shared_memory():
    a, b = shmport.MessageChannel()
    arr = np.arange(1 << 16, dtype=np.int64)  # 512 KiB: inside the ring
    big = np.ones(1 << 21, dtype=np.float64)  # 16 MiB: out of line
    a.post({"arr": arr, "big": big})
    msg = b.recv()
    d = msg.data
    for got, want in ((d["arr"], arr), (d["big"], big)):
        assert np.array_equal(got, want)
        assert not got.flags.writeable
        assert got.ctypes.data % 16 == 0
        assert in_shared_memory(got.ctypes.data), "the array is not in a shared mapping"
        with pytest.raises(ValueError):
            got[0] = 1
    assert msg.data is d  # computed once


def test_buffer_protocol_is_read_only_and_in_place():
    a, b = shmport.MessageChannel()
    a.post_bytes(bytearray(b"hello world"))
    m = b.recv()
    assert m.kind == "bytes" and len(m) == m.nbytes == 11
    mv = memoryview(m)
    assert mv.readonly and bytes(mv) == b"hello world" and bytes(m) == b"hello world"
    assert m.buffer.tobytes() == m.tobytes() == b"hello world"
    assert in_shared_memory(np.frombuffer(m, np.uint8).ctypes.data)
    with pytest.raises(ValueError):
        np.frombuffer(m, np.uint8).setflags(write=True)
    with pytest.raises((BufferError, TypeError)):
        ctypes.c_char.from_buffer(m)  # asks for a writable buffer
    with pytest.raises(TypeError):
        m.data  # raw bytes have no pickle
    # Any buffer posts: memoryview, numpy, a received message.
    a.post_bytes(memoryview(b"abcdef")[1:4])
    a.post_bytes(np.arange(4, dtype=np.uint8))
    a.post_bytes(m)
    assert bytes(b.recv()) == b"bcd"
    assert bytes(b.recv()) == bytes(range(4))
    assert bytes(b.recv()) == b"hello world"


def test_large_posts_go_out_of_line_so_held_messages_pin_little():
    a, b = shmport.MessageChannel(capacity=64 * 1024)
    assert a.inline_limit == 8 * 1024
    held = []
    for i in range(20):  # 20 x 20 KiB held at once, in a 64 KiB ring
        a.post_bytes(bytes([i]) * 20000, timeout=5)
        held.append(b.recv(timeout=5))
    assert [m.tobytes()[0] for m in held] == list(range(20))


def test_empty_messages():
    a, b = shmport.MessageChannel()
    a.post_bytes(b"")
    a.post(b"")
    assert len(b.recv()) == 0
    assert b.recv().data == b""


def test_with_releases_and_views_keep_the_message():
    a, b = shmport.MessageChannel(capacity=4096)
    room = 1500
    with a:  # a port as a context manager closes at the end
        pass
    assert a.closed
    a, b = shmport.MessageChannel(capacity=4096)
    a.inline_limit = 1 << 30  # every post in the ring, to fill it
    a.post_bytes(b"x" * room)
    with b.recv() as m:
        view = memoryview(m)
    assert m.released
    with pytest.raises(ValueError):
        m.buffer
    # The view keeps the message, and its ring space: the ring fills.
    a.post_bytes(b"y" * room)
    with pytest.raises(shmport.Full):
        a.try_post_bytes(b"z" * room)
    assert bytes(view) == b"x" * room
    view.release()
    gc.collect()
    b.recv().release()
    a.try_post_bytes(b"z" * room)  # room again
    assert bytes(b.recv()) == b"z" * room


def test_views_outlive_the_port():
    a, b = shmport.MessageChannel()
    arr = np.arange(1000, dtype=np.float64)
    a.post(arr)
    a.post_bytes(b"raw")
    d = b.recv().data
    raw = memoryview(b.recv())
    b.close()
    a.close()
    del a, b
    gc.collect()
    assert np.array_equal(d, arr) and bytes(raw) == b"raw"
    assert in_shared_memory(d.ctypes.data)
    base = len(shared_mappings())
    del d, raw
    gc.collect()
    assert len(shared_mappings()) < base  # the ring is unmapped with the last view


def test_close_event_reaches_the_peer_while_messages_are_held():
    a, b = shmport.MessageChannel()
    a.post("kept")
    msg = b.recv()
    keep = msg.data
    b.close()  # with a message still held
    with pytest.raises(shmport.Closed) as e:
        a.recv(timeout=5)
    assert e.value.reason == "closed"
    with pytest.raises(shmport.Closed):
        a.post("to nobody")
    assert keep == "kept" and msg.data == "kept"


def test_iteration_ends_at_close_and_reason_is_kept():
    a, b = shmport.MessageChannel()
    for i in range(5):
        a.post(i)
    a.close()
    assert [m.data for m in b] == list(range(5))
    assert b.close_reason == "closed"
    with pytest.raises(shmport.Closed):
        b.recv()


def test_try_and_timeouts():
    a, b = shmport.MessageChannel(capacity=4096, spin=0)
    a.inline_limit = 1 << 30
    assert b.try_recv() is None
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.1)
    assert 0.09 < time.monotonic() - t < 2
    with pytest.raises(TimeoutError):
        b.recv(timeout=0)
    a.post_bytes(b"x" * 1500)
    a.post_bytes(b"x" * 1500)
    with pytest.raises(shmport.Full):
        a.try_post_bytes(b"x" * 1500)
    with pytest.raises(shmport.Full):
        a.try_post(b"x" * 1500)
    with pytest.raises(TimeoutError):
        a.post_bytes(b"x" * 1500, timeout=0.05)
    with pytest.raises(TimeoutError):
        a.post_bytes(b"x" * 1500, timeout=0)
    assert len(b.recv()) == 1500


def test_bad_input_raises_and_loses_nothing():
    a, b = shmport.MessageChannel()
    a.post("first")
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        a.post(lambda: 1)
    with pytest.raises(TypeError):
        a.post_bytes(123)
    with pytest.raises(TypeError):
        a.post_bytes("text is not bytes")
    with pytest.raises(TypeError):
        a.post("x", ports=[1])
    with pytest.raises(ValueError):
        a.post("x", timeout=-1)
    with pytest.raises(ValueError):
        a.post("x", ports=[a])
    with pytest.raises((BufferError, ValueError)):
        a.post_bytes(np.arange(10)[::2])  # not contiguous
    with pytest.raises(TypeError):
        pickle.dumps(a)
    with pytest.raises(TypeError):
        shmport.Message()
    with pytest.raises(ValueError):
        shmport.MessageChannel(trust="sometimes")
    with pytest.raises(OSError):
        shmport.MessageChannel(capacity=1 << 31)  # over 1 GiB
    with pytest.raises(ValueError):
        shmport.MessageChannel(spin=-1)
    with pytest.raises(TypeError):
        shmport.PortSet([1])
    with pytest.raises(ValueError):
        a.reserve(1 << 40)  # larger than the ring can lend
    r = a.reserve(8)
    with pytest.raises(ValueError):
        r.commit(9)  # more than reserved: refused, the loan stays open
    r.buffer[:] = b"reserved"
    r.commit()
    a.post("last")
    assert b.recv().data == "first"
    assert bytes(b.recv()) == b"reserved"
    assert b.recv().data == "last"
    assert b.try_recv() is None


def test_huge_messages_are_refused_by_the_receiver_only():
    a, b = shmport.MessageChannel(capacity=64 * 1024, max_message_size=1 << 20)
    assert b.max_message_size == 1 << 20
    a.post_bytes(b"\0" * (2 << 20))
    a.post("after")
    with pytest.raises(shmport.Refused):
        b.recv()
    assert b.recv().data == "after"


def test_closed_port():
    a, b = shmport.MessageChannel()
    a.close()
    a.close()  # idempotent
    assert a.closed
    for call in (lambda: a.post(1), lambda: a.post_bytes(b"x"), a.recv, a.try_recv, a.fileno):
        with pytest.raises(shmport.Closed) as e:
            call()
        assert e.value.reason == "closed_here"
    with pytest.raises(shmport.Closed):
        b.recv()
    with pytest.raises(shmport.Closed):
        b.post("x")


def test_ports_travel_in_messages():
    a, b = shmport.MessageChannel()
    c, d = shmport.MessageChannel()
    c.post("queued before the move")
    a.post({"hello": 1}, ports=[d])
    assert d.closed
    with pytest.raises(shmport.Closed):
        d.recv()
    m = b.recv()
    (got,) = m.ports
    assert m.ports[0] is got
    assert got.recv().data == "queued before the move"
    got.post("back")
    assert c.recv().data == "back"
    # Refused: a port holding messages, posted twice, a peer over itself.
    c.post("x")
    held = got.recv()
    with pytest.raises(shmport.BusyError):
        a.post(1, ports=[got])
    held.release()
    with pytest.raises(ValueError):
        c.post(1, ports=[got])  # its own peer
    assert not got.closed
    a.post(2, ports=[got])
    with pytest.raises(shmport.Closed):
        a.post(3, ports=[got])
    m2 = b.recv()
    assert m2.data == 2 and len(m2.ports) == 1


def test_ports_not_taken_are_closed_with_the_message():
    a, b = shmport.MessageChannel()
    c, d = shmport.MessageChannel()
    a.post("port inside", ports=[d])
    b.recv().release()
    with pytest.raises(shmport.Closed):
        c.recv(timeout=5)


def test_two_threads_on_one_port():
    a, b = shmport.MessageChannel()
    got = []
    started = threading.Event()

    def reader():
        started.set()
        try:
            for m in b:
                got.append(m.data)
        except Exception as e:  # noqa: BLE001
            got.append(e)

    t = threading.Thread(target=reader)
    t.start()
    started.wait()
    time.sleep(0.1)
    with pytest.raises(shmport.BusyError):
        b.recv(timeout=0.1)
    with pytest.raises(shmport.BusyError):
        b.try_recv()
    b.post("posting while another thread receives is fine")
    assert a.recv().data.startswith("posting")
    a.post(1)
    # A message dropped on this thread while the reader holds the port.
    time.sleep(0.1)
    b.close()  # unblocks the reader: its iteration ends
    t.join(5)
    assert not t.is_alive()
    assert got == [1]


def test_messages_dropped_on_another_thread():
    a, b = shmport.MessageChannel(capacity=4096, spin=0)
    a.inline_limit = 1 << 30
    msgs = []
    for _ in range(2):
        a.post_bytes(b"m" * 1500)
        msgs.append(b.recv())
    done = threading.Event()

    def drop_later():
        time.sleep(0.2)
        msgs.clear()  # dropped here while the main thread waits in recv
        done.set()

    threading.Thread(target=drop_later).start()
    # The ring is full until those two are released; their release reaches
    # the ring while this thread is blocked in recv.
    def post():
        a.post_bytes(b"n" * 1500, timeout=5)
    t = threading.Thread(target=post)
    t.start()
    assert len(b.recv(timeout=5)) == 1500
    t.join()
    assert done.is_set()


def test_no_fd_leak_in_process():
    gc.collect()
    before = open_fds()
    maps = len(shared_mappings())
    for i in range(200):
        a, b = shmport.MessageChannel(capacity=4096)
        if i % 2:
            # The descriptor event loops wait on, made on demand.
            assert b.fileno() == b.fileno()
        a.post(np.arange(10))
        d = b.recv().data
        del a, b, d
    gc.collect()
    assert open_fds() == before
    assert len(shared_mappings()) == maps


def test_reserve_fills_the_ring_in_place():
    a, b = shmport.MessageChannel()
    with a.reserve(32) as buf:
        assert not buf.readonly and len(buf) == 32
        arr = np.frombuffer(buf, np.float64)
        arr[:] = [1.5, 2.5, 3.5, 4.5]
        del arr
    got = np.frombuffer(b.recv(), np.float64)
    assert list(got) == [1.5, 2.5, 3.5, 4.5]
    # An exception abandons it; the port goes on.
    with pytest.raises(KeyError):
        with a.reserve(8) as buf:
            raise KeyError("nothing is sent")
    a.post("next")
    assert b.recv().data == "next"


def test_reserve_refuses_to_commit_while_views_live():
    a, b = shmport.MessageChannel()
    r = a.reserve(10)
    part = r.buffer[2:6]
    with pytest.raises(shmport.BusyError):
        a.post("a reservation is open")
    with pytest.raises(shmport.BusyError):
        a.reserve(4)
    with pytest.raises(BufferError):
        r.commit()
    part[:] = b"abcd"
    del part
    r.commit(6)
    assert bytes(b.recv())[2:6] == b"abcd"
    with pytest.raises(ValueError):
        r.commit()
    r2 = a.reserve(4)
    del r2  # dropped: abandoned
    gc.collect()
    a.post_bytes(b"ok")
    assert bytes(b.recv()) == b"ok"
    with pytest.raises(ValueError):
        a.reserve(a.capacity)  # larger than the ring holds


def test_reserve_buffer_outlives_a_closed_port():
    a, b = shmport.MessageChannel()
    r = a.reserve(16)
    buf = r.buffer
    a.close()
    buf[:4] = b"safe"  # the ring stays mapped while the buffer lives
    assert bytes(buf[:4]) == b"safe"
    with pytest.raises(shmport.Closed):
        b.recv(timeout=5)


def fill(port):
    """Post small messages until the ring is full; how many went in."""
    n = 0
    while True:
        try:
            port.try_post_bytes(b"f" * 100)
        except shmport.Full:
            return n
        n += 1


def test_close_stops_a_post_on_another_thread_that_carries_the_port():
    # A post carrying `a` waits for room; `a.close()` meanwhile stops it
    # with Closed and closes `a`: nothing is delivered, `a`'s peer gets the
    # close event after what was queued before it.
    c, d = shmport.MessageChannel(capacity=4096, spin=0)
    n = fill(c)
    a, b = shmport.MessageChannel(spin=0)
    a.post("queued before the close")
    out = []

    def carry():
        try:
            c.post("carrying a", ports=[a], timeout=20)
            out.append("delivered")
        except Exception as e:  # noqa: BLE001
            out.append(e)

    t = threading.Thread(target=carry)
    t.start()
    time.sleep(0.2)  # the post waits for room
    a.close()
    # close() returns once the post has stopped: its outcome is known.
    assert len(out) == 1 and isinstance(out[0], shmport.Closed), out
    assert "was closed before the post could deliver it" in str(out[0])
    t.join(5)
    assert a.closed and "closed" in repr(a)
    assert b.recv(timeout=5).data == "queued before the close"
    with pytest.raises(shmport.Closed):
        b.recv(timeout=5)
    for _ in range(n):
        assert bytes(d.recv(timeout=5)) == b"f" * 100
    assert d.try_recv() is None


def test_close_racing_posts_on_other_threads_loses_nothing():
    for i in range(60):
        # The port being closed is carried by another thread's post, while
        # the carrier's reader makes room: the post either delivers the
        # port (then it works there) or fails with Closed (then its peer
        # gets the close event); close() returns after either.
        c, d = shmport.MessageChannel(capacity=4096, spin=0)
        fill(c)
        a, b = shmport.MessageChannel(spin=0)
        out = []

        def carry(c=c, a=a, out=out):
            try:
                c.post("carrying a", ports=[a], timeout=20)
                out.append("delivered")
            except shmport.Closed as e:
                out.append(e)

        t = threading.Thread(target=carry)
        t.start()
        time.sleep(0.001 * (i % 7))
        threading.Thread(target=lambda d=d: [d.recv(timeout=5) for _ in range(3)]).start()
        time.sleep(0.001 * (i % 5))
        a.close()
        assert len(out) == 1, out
        t.join(5)
        assert a.closed
        if out[0] == "delivered":
            while True:
                m = d.recv(timeout=5)
                if m.ports:
                    break
            (moved,) = m.ports
            b.post("to the new owner")
            assert moved.recv(timeout=5).data == "to the new owner"
        else:
            with pytest.raises(shmport.Closed):
                b.recv(timeout=5)
        # The same port posted on while another thread closes it: every
        # post that returned is received, in order, then the close event.
        x, y = shmport.MessageChannel(spin=0)
        sent = []

        def post_until_closed(x=x, sent=sent):
            k = 0
            while True:
                try:
                    x.post(k)
                except shmport.Closed:
                    return
                sent.append(k)
                k += 1

        t = threading.Thread(target=post_until_closed)
        t.start()
        time.sleep(0.0005 * (i % 4))
        x.close()
        t.join(5)
        assert not t.is_alive()
        assert [m.data for m in y] == sent


def test_memoryviews_travel_as_read_only_views_of_shared_memory():
    a, b = shmport.MessageChannel()
    grid = np.arange(12.0).reshape(3, 4)
    a.post({"raw": memoryview(bytearray(b"abc")), "grid": memoryview(grid),
            "rows": memoryview(grid)[::2]})  # not contiguous: sent as its copy
    d = b.recv().data
    assert d["raw"].tobytes() == b"abc" and d["raw"].readonly
    assert d["grid"].format == "d" and d["grid"].shape == (3, 4)
    assert d["grid"].tolist() == grid.tolist()
    assert d["rows"].tolist() == grid[::2].tolist()
    for v in d.values():
        assert v.readonly
        assert in_shared_memory(np.frombuffer(v, dtype=np.uint8).ctypes.data)
    # A view whose format cannot be rebuilt is refused, and nothing is lost.
    odd = np.zeros(2, dtype=[("x", "i4"), ("y", "f8")])
    with pytest.raises(TypeError):
        a.post(memoryview(odd))
    a.post("after")
    assert b.recv().data == "after"


def test_a_large_bytes_object_is_not_copied_into_the_pickle():
    import tracemalloc

    a, b = shmport.MessageChannel()
    big = os.urandom(16 << 20)
    tracemalloc.start()
    try:
        a.post(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # pickle.dumps alone would have made a 16 MiB pickle.
    assert peak < 1 << 20, peak
    got = b.recv().data
    assert type(got) is bytes and got == big
    a.post(b"small" * 10)
    assert b.recv().data == b"small" * 10


def test_held_messages_keep_their_pool_blocks_and_the_sender_waits_at_the_cap():
    a, b = shmport.MessageChannel()
    assert a.pool_limit is None
    a.pool_limit = 1 << 20
    assert a.pool_limit == 1 << 20
    big = b"x" * (600 * 1024)  # over the inline limit: a block of the pool
    a.post_bytes(big)
    held = b.recv()
    with pytest.raises(shmport.Full):
        a.try_post_bytes(big)
    del held  # the block goes back
    a.try_post_bytes(big)
    assert bytes(b.recv()) == big
