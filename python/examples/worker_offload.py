"""Worker offloading: a main process hands apps direct channels to a hidden
worker, which serves all of them at once (shmport.PortSet); one app is
killed with SIGKILL mid-run, the worker sees PeerDied for that app only and
goes on. Requests carry numpy arrays, which the worker reads in place (no
copy) and answers with a small result.

    python worker_offload.py [--apps N] [--requests N] [--size FLOATS]

Roles (one file): the main process (no argument), "worker", "app".
"""

import argparse
import os
import signal
import sys
import time

import numpy as np

import shmport


def worker():
    control = shmport.from_parent()
    clients = shmport.PortSet([control])
    served = 0
    while len(clients) > 0:
        try:
            port, msg = clients.recv()
        except shmport.ClosedError as e:
            if e.port is control:  # the main process is done
                break
            print(f"worker: an app left ({e.reason})", flush=True)
            continue
        if port is control:  # a new app's channel
            for p in msg.ports:
                clients.add(p)
            continue
        arr = msg.data  # a read-only view of shared memory
        port.post((float(arr.sum()), float(arr.std())))
        served += 1
    print(f"worker: served {served} requests", flush=True)


def app():
    port = shmport.from_parent()
    channel = port.recv().ports[0]  # our direct line to the worker
    n, size = port.recv().data
    data = np.random.default_rng(os.getpid()).random(size)
    t = time.perf_counter()
    for _ in range(n):
        channel.post(data)
        total, _std = channel.recv().data
        assert abs(total - data.sum()) < 1e-6 * size
    port.post((n, time.perf_counter() - t))


def main(args):
    me = [sys.executable, os.path.abspath(__file__)]
    worker_proc, control = shmport.spawn(me + ["worker"])
    apps = []
    for i in range(args.apps):
        proc, port = shmport.spawn(me + ["app"])
        to_worker, to_app = shmport.MessageChannel()
        control.post("new app", ports=[to_worker])  # the worker's end
        port.post("your channel", ports=[to_app])  # the app's end
        apps.append((proc, port))
    # One more app that is killed with SIGKILL while it works.
    victim, vport = shmport.spawn(me + ["app"])
    a, b = shmport.MessageChannel()
    control.post("new app", ports=[a])
    vport.post("your channel", ports=[b])
    vport.post((10**9, args.size))

    t = time.perf_counter()
    for proc, port in apps:
        port.post((args.requests, args.size))
    time.sleep(0.05)
    victim.kill()
    total = 0
    for proc, port in apps:
        n, _secs = port.recv().data
        total += n
        proc.wait()
    secs = time.perf_counter() - t
    assert victim.wait() == -signal.SIGKILL
    control.close()  # the worker's loop ends
    worker_proc.wait()
    print(f"{args.apps} apps, {total} requests of {args.size * 8} bytes: "
          f"{total / secs:,.0f} requests/s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker()
    elif sys.argv[1:2] == ["app"]:
        app()
    else:
        p = argparse.ArgumentParser()
        p.add_argument("--apps", type=int, default=4)
        p.add_argument("--requests", type=int, default=2000)
        p.add_argument("--size", type=int, default=1024, help="floats per request")
        main(p.parse_args())
