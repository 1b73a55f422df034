"""Who and where this process is, what time it is, and whether another process on this machine still lives."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


def now() -> datetime:
    """Return the current time, timezone-aware in UTC (every time the oplog stores is)."""
    return datetime.now(UTC)


def machine() -> str:
    """Return this machine's name, as recorded in `host` columns and compared by the reaper."""
    return socket.gethostname()


def user() -> str:
    """Return the login name running orch; fall back to the uid where no passwd entry exists (containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def actor() -> str:
    """Return "user@machine", the identity recorded on operations and locks."""
    return f"{user()}@{machine()}"


def pid_alive(pid: int) -> bool:
    """Given a pid on this machine, return whether that process still runs; a zombie counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Given a pid, return whether /proc says it has exited and only waits to be reaped by its parent."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False  # no /proc (not Linux) or the process just vanished: trust os.kill
    # The command name in parentheses may itself contain spaces or ")", so split at the last one.
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] in ("Z", "X")


@contextmanager
def signals_as_exit(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While inside, turn SIGTERM/SIGHUP into SystemExit(128 + signum) so `finally` blocks and the oplog run.

    Only in the main thread, and only for signals still at their default action: a handler someone else
    installed (the scheduler, an outer operation) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in signals:
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _exit_on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
