"""The examples in python/examples run as real programs and exit 0."""

import ast
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def run(args, timeout=120):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def example(name):
    return os.path.join(EXAMPLES, name)


def test_reply_stream():
    out = run([sys.executable, example("reply_stream.py")])
    assert "alpha: ['alpha #0', 'alpha #1', 'alpha #2'] (stream ended: closed)" in out


def test_forward():
    out = run([sys.executable, example("forward.py"), "5000"])
    assert "read up to 4999, in order" in out


def test_worker_offload():
    out = run([sys.executable, example("worker_offload.py"), "--apps", "3", "--requests", "300"])
    assert "worker: an app left (peer_died)" in out
    assert "3 apps, 900 requests" in out


def cargo_build(*args):
    if shutil.which("cargo") is None:
        pytest.skip("no cargo: the Rust and C examples are built with it")
    subprocess.run(["cargo", "build", "--release", "-q", *args], cwd=ROOT, check=True, timeout=900)


def test_python_and_rust_raw_bytes():
    cargo_build("--example", "python_peer")
    binary = os.path.join(ROOT, "target", "release", "examples", "python_peer")
    out = run([sys.executable, example("rust_peer.py"), binary])
    assert out.count("(from Rust)") == 3


def test_python_and_c_raw_bytes(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    cargo_build("-p", "shmport-ffi")
    lib = os.path.join(ROOT, "target", "release")
    host = tmp_path / "c_host"
    subprocess.run(["cc", os.path.join(ROOT, "examples", "c_host", "host.c"),
                    "-I" + os.path.join(ROOT, "include"), "-L" + lib,
                    "-Wl,-rpath," + lib, "-lshmport", "-o", str(host)], check=True, timeout=120)
    sock = tmp_path / "host.sock"
    server = subprocess.Popen([str(host), str(sock), "1"], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        out = run([sys.executable, example("c_host_client.py"), str(sock)])
        assert "upper: HELLO FROM PYTHON" in out and "sum: 46" in out
        assert "stream ended: closed" in out and "count: 3" in out
        assert server.wait(timeout=30) == 0  # it served its one client
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait()


def test_readme_python_example(tmp_path):
    # The complete program of the README's Python section, as a user saves
    # and runs it.
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("\n## Python\n"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    script = tmp_path / "offload.py"
    script.write_text(code)
    out = run([sys.executable, str(script)]).splitlines()
    answers = [ast.literal_eval(line) for line in out[:3]]
    assert [a["id"] for a in answers] == [0, 1, 2]
    assert all(0 < a["max"] <= 1 and 0 < a["sum"] < 1_000_000 for a in answers)
    assert out[3:] == ["worker gone: peer_died"]
