"""Helpers: Python children started with shmport.spawn from code strings."""

import os
import sys
import textwrap

import pytest

import shmport


@pytest.fixture
def spawn_py(tmp_path):
    """spawn_py(code, **spawn_options) -> (process, port). The child runs
    `code` with `port = shmport.from_parent()` already done. Every child is
    killed and reaped at the end of the test."""
    started = []

    def start(code, name="child", **kw):
        path = tmp_path / f"{name}_{len(started)}.py"
        path.write_text(
            "import shmport, sys, os\nport = shmport.from_parent()\n" + textwrap.dedent(code)
        )
        proc, port = shmport.spawn([sys.executable, str(path)], **kw)
        started.append(proc)
        return proc, port

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def shared_mappings():
    """(start, end, path) of this process's mappings of memfds."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/memfd:"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, parts[5]))
    return out


def in_shared_memory(address):
    return any(lo <= address < hi for lo, hi, _ in shared_mappings())


def open_fds():
    return sorted(int(x) for x in os.listdir("/proc/self/fd"))
