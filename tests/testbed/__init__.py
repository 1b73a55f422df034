"""Real daemons on loopback for the test suite (sshd, MariaDB, PostgreSQL, S3).

Each module starts one kind of daemon in its own temp dir on a free port and returns a small handle with a
``stop()`` method. Start-up failures raise :class:`TestbedError` carrying the tail of the daemon's log, so a
broken testbed fails loudly instead of skipping tests. Everything here expects to run as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class TestbedError(RuntimeError):
    """A daemon of the testbed could not be started or used."""

    __test__ = False  # not a pytest test class despite the name


def log_tail(path: Path, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file, or a placeholder if it does not exist (yet)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def spawn(argv: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Start a daemon in the foreground of its own process group, stdout/stderr appended to ``log``.

    Its own session lets :func:`stop_process` kill helpers it forks, and keeps Ctrl-C of pytest away from it.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], what: str, log: Path, timeout: float = 30) -> None:
    """Poll ``ready()`` until it is true; raise TestbedError (after stopping ``proc``) if the daemon exits or
    the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise TestbedError(f"{what} exited with code {proc.returncode} during start-up\n{log_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            stop_process(proc)
            raise TestbedError(f"{what} not ready after {timeout:.0f} s\n{log_tail(log)}")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Send ``sig`` to the daemon's process group, SIGKILL it if it lingers, and always reap it (no zombies)."""
    if proc is None or proc.returncode is not None:
        return
    _signal_group(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
