"""spawn: a child process with a connected port."""

import os
import signal
import subprocess
import time

from ._shmport import _spawn


class Process:
    """A child started by ``spawn``: the parts of ``subprocess.Popen`` that
    apply (``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``,
    ``terminate``, ``kill``, ``stdin``/``stdout``/``stderr`` when piped,
    ``with``)."""

    def __init__(self, args, pid, stdin, stdout, stderr, text):
        self.args = args
        self.pid = pid
        self.returncode = None
        mode = {"encoding": "utf-8"} if text else {}
        self.stdin = os.fdopen(stdin, "w" if text else "wb", **mode) if stdin is not None else None
        self.stdout = os.fdopen(stdout, "r" if text else "rb", **mode) if stdout is not None else None
        self.stderr = os.fdopen(stderr, "r" if text else "rb", **mode) if stderr is not None else None

    def _reaped(self, status):
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self):
        """The exit code if the child has ended (negative: killed by that
        signal), else None."""
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.returncode = 0 if self.returncode is None else self.returncode
            return self.returncode
        if pid == 0:
            return None
        return self._reaped(status)

    def wait(self, timeout=None):
        """Wait for the child to end; its exit code. ``subprocess.TimeoutExpired``
        after ``timeout`` seconds."""
        if self.returncode is not None:
            return self.returncode
        if timeout is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                except ChildProcessError:
                    self.returncode = 0
                    return 0
                return self._reaped(status)
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            if self.poll() is not None:
                return self.returncode
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, left, 0.05))
            delay *= 2

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.wait()
        return False

    def __repr__(self):
        return f"<shmport.Process pid={self.pid} returncode={self.returncode}>"


def _std(spec):
    if spec is None or spec in (subprocess.PIPE, subprocess.DEVNULL):
        return spec
    if isinstance(spec, int):
        return spec
    if hasattr(spec, "fileno"):
        return spec.fileno()
    raise ValueError("stdin/stdout/stderr: None, subprocess.PIPE, subprocess.DEVNULL, a descriptor or a file")


def spawn(args, *, capacity=None, spin=None, trust=None, max_message_size=None,
          cwd=None, env=None, stdin=None, stdout=None, stderr=None, text=False):
    """Start ``args`` (e.g. ``[sys.executable, "worker.py"]``) with a new
    channel's other port passed to it; returns ``(process, port)``. The
    child calls ``shmport.from_parent()``.

    The child inherits its standard streams (or ``subprocess.PIPE`` /
    ``DEVNULL`` / a file, as with ``Popen``) and the port's two
    descriptors, nothing else. Channel options as for ``MessageChannel``.
    """
    if isinstance(args, (str, bytes, os.PathLike)):
        args = [args]
    argv = [os.fsdecode(a) for a in args]
    if env is not None:
        env = [(os.fsdecode(k), os.fsdecode(v)) for k, v in env.items()]
    if cwd is not None:
        cwd = os.fsdecode(cwd)
    pid, port, i, o, e = _spawn(
        argv, capacity=capacity, spin=spin, trust=trust, max_message_size=max_message_size,
        cwd=cwd, env=env, stdin=_std(stdin), stdout=_std(stdout), stderr=_std(stderr),
    )
    return Process(argv, pid, i, o, e, text), port
