"""asyncio (on the port's descriptor) and PortSet."""

import asyncio
import selectors
import threading
import time

import numpy as np
import pytest

import shmport


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def voluntary_switches():
    """How often this thread went to sleep (waited in the kernel)."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/thread-self/status")


class BlockedPost:
    """Port `b` of a channel with a post waiting for room on another thread
    (the ring towards `a` is full and `a` does not read): that post sleeps
    on the port's socket, where the wake-ups for `b`'s receiving side
    arrive too, and takes in whatever comes."""

    def __init__(self):
        self.a, self.b = shmport.MessageChannel(capacity=4096, spin=0)
        while True:
            try:
                self.b.try_post_bytes(bytes(512))
            except shmport.Full:
                break
        self.thread = threading.Thread(target=self.b.post_bytes, args=(bytes(512),))
        self.thread.start()
        time.sleep(0.1)  # asleep on the socket by now

    def let_it_take_the_wake_up(self):
        # The waiter is not polling for this long; the blocked post, asleep
        # on the same socket, reads the wake-up first.
        time.sleep(0.2)

    def finish(self):
        while self.thread.is_alive():
            m = self.a.recv(timeout=5)
            del m
            self.thread.join(0.05)
        self.a.close()
        self.b.close()


def test_arecv_and_async_for():
    a, b = shmport.MessageChannel(spin=0)

    async def main():
        async def producer():
            for i in range(100):
                a.post(i)
                if i % 10 == 0:
                    await asyncio.sleep(0.001)
            a.close()

        task = asyncio.ensure_future(producer())
        first = await b.arecv()
        got = [first.data] + [m.data async for m in b]
        await task
        return got

    assert run(main()) == list(range(100))
    assert b.close_reason == "closed"


def test_arecv_wakes_on_a_post_from_another_thread():
    a, b = shmport.MessageChannel(spin=0)

    def later():
        time.sleep(0.2)
        a.post(np.arange(3))

    async def main():
        threading.Thread(target=later).start()
        t = time.monotonic()
        m = await b.arecv()
        return m.data, time.monotonic() - t

    data, waited = run(main())
    assert list(data) == [0, 1, 2] and 0.15 < waited < 5


def test_arecv_raises_the_close_event_and_is_cancel_safe():
    a, b = shmport.MessageChannel(spin=0)

    async def main():
        t = asyncio.ensure_future(b.arecv())
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        a.post("not lost")
        assert (await b.arecv()).data == "not lost"
        # A second waiter on the same port is refused.
        t1 = asyncio.ensure_future(b.arecv())
        await asyncio.sleep(0.01)
        with pytest.raises(shmport.BusyError):
            await b.arecv()
        a.close()
        with pytest.raises(shmport.Closed):
            await t1

    run(main())


def test_port_set_round_robin_and_close_events():
    chans = [shmport.MessageChannel(spin=0) for _ in range(3)]
    senders = [c.port1 for c in chans]
    ports = shmport.PortSet(c.port2 for c in chans)
    assert len(ports) == 3 and chans[0].port2 in ports
    for i, s in enumerate(senders):
        for j in range(3):
            s.post((i, j))
    order = [ports.recv(timeout=5)[1].data for _ in range(9)]
    # Fair: no port's third message before every port's first.
    firsts = [order.index((i, 0)) for i in range(3)]
    thirds = [order.index((i, 2)) for i in range(3)]
    assert max(firsts) < min(thirds)
    assert ports.try_recv() is None
    with pytest.raises(TimeoutError):
        ports.recv(timeout=0.05)
    senders[1].close()
    with pytest.raises(shmport.Closed) as e:
        ports.recv(timeout=5)
    assert e.value.port is chans[1].port2 and len(ports) == 2
    senders[2].post("still here")
    port, msg = ports.recv(timeout=5)
    assert port is chans[2].port2 and msg.data == "still here"


def test_port_set_waits_without_spinning():
    a, b = shmport.MessageChannel(spin=0)
    ports = shmport.PortSet([b])

    def later():
        time.sleep(0.3)
        a.post("late")

    threading.Thread(target=later).start()
    cpu = time.process_time()
    port, msg = ports.recv(timeout=5)
    assert msg.data == "late" and port is b
    assert time.process_time() - cpu < 0.2


def test_port_set_arecv():
    chans = [shmport.MessageChannel(spin=0) for _ in range(4)]
    ports = shmport.PortSet(c.port2 for c in chans)

    async def main():
        async def post_later(i):
            await asyncio.sleep(0.01 * i)
            chans[i].port1.post(i)

        tasks = [asyncio.ensure_future(post_later(i)) for i in range(4)]
        got = sorted([(await ports.arecv())[1].data for _ in range(4)])
        await asyncio.gather(*tasks)
        return got

    assert run(main()) == [0, 1, 2, 3]


def test_async_worker_with_many_clients(spawn_py):
    # A child serves its clients on asyncio: one task per client port.
    proc, ctl = spawn_py("""
import asyncio

async def serve(p):
    async for msg in p:
        p.post(msg.data * 2)

async def main():
    tasks = []
    async for msg in port:
        tasks += [asyncio.ensure_future(serve(p)) for p in msg.ports]
    await asyncio.gather(*tasks)

asyncio.run(main())
""")
    clients = []
    for _ in range(5):
        mine, theirs = shmport.MessageChannel()
        ctl.post("client", ports=[theirs])
        clients.append(mine)
    for i, c in enumerate(clients):
        c.post(i)
    assert [c.recv(timeout=30).data for c in clients] == [0, 2, 4, 6, 8]
    for c in clients:
        c.close()
    ctl.close()
    assert proc.wait(timeout=30) == 0


def test_a_loop_on_fileno_is_woken_while_a_post_on_the_same_port_waits_for_room():
    bp = BlockedPost()
    with selectors.DefaultSelector() as sel:
        sel.register(bp.b.fileno(), selectors.EVENT_READ)
        assert bp.b.prepare_poll()
        bp.a.post("for the loop")
        bp.let_it_take_the_wake_up()
        assert sel.select(timeout=30), "the wake-up was lost"
        assert not bp.b.prepare_poll()
        assert bp.b.try_recv().data == "for the loop"
    bp.finish()


def test_arecv_is_woken_while_a_post_on_the_same_port_waits_for_room():
    bp = BlockedPost()

    async def main():
        task = asyncio.ensure_future(bp.b.arecv())
        await asyncio.sleep(0.05)  # the task awaits the port's descriptor
        bp.a.post("for the task")
        bp.let_it_take_the_wake_up()  # the loop is busy meanwhile
        return (await task).data

    assert run(main()) == "for the task"
    bp.finish()


def test_port_set_is_woken_while_a_post_on_a_member_waits_for_room():
    bp = BlockedPost()
    other_a, other_b = shmport.MessageChannel(spin=0)
    ports = shmport.PortSet([other_b, bp.b])

    async def main():
        task = asyncio.ensure_future(ports.arecv())
        await asyncio.sleep(0.05)
        bp.a.post("for the set")
        bp.let_it_take_the_wake_up()
        port, msg = await task
        return port is bp.b, msg.data

    assert run(main()) == (True, "for the set")
    bp.finish()


def test_closing_the_awaited_port_ends_the_wait():
    a, b = shmport.MessageChannel(spin=0)

    async def main():
        task = asyncio.ensure_future(b.arecv())
        await asyncio.sleep(0.05)
        b.close()  # another task closes the port the first one awaits
        with pytest.raises(shmport.Closed) as e:
            await task
        return e.value.reason

    assert run(main()) == "closed_here"
    # And a port set's blocking wait, closed from another thread.
    c, d = shmport.MessageChannel(spin=0)
    ports = shmport.PortSet([d])
    threading.Timer(0.2, d.close).start()
    with pytest.raises(shmport.Closed) as e:
        ports.recv(timeout=30)
    assert e.value.port is d and len(ports) == 0


SPINNING_PEER = """
import time
port.recv()
time.sleep(0.05)
port.post("while it spins")
for _ in port:
    pass
"""


def test_port_set_spins_before_it_sleeps(spawn_py):
    # A message that comes within the ports' spin time is taken without a
    # sleep in the kernel.
    proc, port = spawn_py(SPINNING_PEER, spin=10.0)
    ports = shmport.PortSet([port])
    port.post("go")
    before = voluntary_switches()
    got, msg = ports.recv(timeout=30)
    assert voluntary_switches() == before
    assert got is port and msg.data == "while it spins"
    port.close()
    assert proc.wait(timeout=30) == 0


def test_arecv_spins_before_it_awaits(spawn_py):
    proc, port = spawn_py(SPINNING_PEER, spin=10.0)

    async def main():
        port.post("go")
        before = voluntary_switches()
        msg = await port.arecv()
        return voluntary_switches() - before, msg.data

    assert run(main()) == (0, "while it spins")
    port.close()
    assert proc.wait(timeout=30) == 0


def test_closing_a_port_ends_a_port_sets_spin():
    # However long the spin time, a close here ends it.
    a, b = shmport.MessageChannel(spin=3600.0)
    ports = shmport.PortSet([b])
    out = []

    def wait():
        try:
            ports.recv()
        except shmport.Closed as e:
            out.append(e.port)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.2)  # spinning
    b.close()
    t.join(30)
    assert not t.is_alive() and out == [b]
