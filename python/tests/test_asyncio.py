"""asyncio (on the port's descriptor) and PortSet."""

import asyncio
import threading
import time

import numpy as np
import pytest

import shmport


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


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
