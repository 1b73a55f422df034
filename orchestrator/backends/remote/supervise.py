"""orch's side of a running command: how it starts under the watchdog (`watchdog.py`), what goes down its stdin,
and the one pump that reads its stdout and stderr under one clock.

Both connectors run every command this way; they differ only in how a `Session` is opened (a local process or
an SSH channel), read and ended (kill the process group, or close the channel and let the host's watchdog do it).
"""

from __future__ import annotations

import io
import os
import selectors
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import watchdog
from .command import Command

CHUNK = 1 << 16
WATCHDOG_SOURCE = Path(watchdog.__file__).read_text(encoding="utf-8")
DEFAULT_STALL = 600.0  # the schema's default for hosts.X.stall_timeout
Sink = Callable[[bytes], object]


def owner(machine: str | None = None, pid: int | None = None) -> str:
    """Return the tag a watchdog puts on everything it starts for an orchestrator process (this one by
    default): `machine:pid`, as the oplog records an operation's host and pid."""
    return f"{machine or socket.gethostname()}:{pid or os.getpid()}"


@dataclass(frozen=True)
class Limits:
    """How long a command may run: `timeout` (wall clock, None: no limit) and `stall` (seconds without output
    and without progress; None: no limit)."""

    timeout: float | None = None
    stall: float | None = DEFAULT_STALL

    @property
    def beat(self) -> float:
        """Seconds between heartbeats, each way: a few per stall period, so one late beat is no alarm."""
        return min(15.0, max(0.2, (self.stall or DEFAULT_STALL) / 4))

    @property
    def silence(self) -> float:
        """Seconds the host's watchdog waits for a word from orch before it stops the command itself. Longer
        than the stall, so that orch, when alive, decides first and says why."""
        return (self.stall or DEFAULT_STALL) * 1.5 + self.beat


def watched_argv(cmd: Command, limits: Limits, python: str = "python3") -> list[str]:
    """Given a Command, return the argv that runs it under the watchdog (no secret in it: those go on stdin)."""
    return [
        python,
        "-I",
        "-S",
        "-c",
        WATCHDOG_SOURCE,
        "run",
        owner(),
        f"{limits.beat:g}",
        f"{limits.silence:g}",
        "--",
        *cmd.argv(),
    ]


def sweep_command(dead_owner: str) -> Command:
    """Return the command that stops what a dead orchestrator (`machine:pid`) left running on a host and prints
    `pid args` of each process it stopped."""
    return Command("python3", "-I", "-S", "-c", WATCHDOG_SOURCE, "sweep", dead_owner)


class Uplink:
    """Write the watchdog's stdin: the command's stdin as `D` frames (secrets first), `E`, then a heartbeat `H`
    every `beat` seconds until stopped. Threads, because the command may fill its stdout before it reads all of
    its stdin (a dump piped through), and because the stdin source itself may be slow (a relay).

    For a session without a watchdog (`end` given), the stdin goes as it is, then `end()` closes it."""

    def __init__(
        self,
        prefix: bytes,
        stdin: bytes | BinaryIO | None,
        send: Sink,
        beat: float,
        end: Callable[[], object] | None = None,
    ):
        self.prefix, self.stdin, self.send, self.beat, self.end = prefix, stdin, send, beat, end
        self.lock, self.stopped, self.broken = threading.Lock(), threading.Event(), False
        self.threads = [threading.Thread(target=self._feed, daemon=True)]
        if end is None:
            self.threads.append(threading.Thread(target=self._heartbeat, daemon=True))

    def start(self) -> Uplink:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self, wait: float = 5) -> None:
        """Stop writing. On return no thread will write again (unless a write hung for `wait` seconds), so the
        caller may close what `send` writes to."""
        self.stopped.set()
        if self.lock.acquire(timeout=wait):  # a write in flight ends promptly: the command is gone by now
            self.broken = True
            self.lock.release()

    def _write(self, frame: bytes, call: Callable[[bytes], object] | None = None) -> bool:
        with self.lock:
            if self.broken or self.stopped.is_set():
                return False
            try:
                (call or self.send)(frame)
                return True
            except (OSError, EOFError):  # the command has ended (or is being stopped): its status says why
                self.broken = True
                return False

    def _feed(self) -> None:
        source = io.BytesIO(self.stdin) if isinstance(self.stdin, bytes) else self.stdin
        read = getattr(source, "read1", None) or getattr(source, "read", None)  # read1: what is there, now
        data = self.prefix
        while True:
            frame = data if self.end else b"D" + len(data).to_bytes(4, "big") + data
            if data and not self._write(frame):
                return
            data = read(CHUNK) if read else b""
            if not data:
                break
        end = self.end
        if end:
            self._write(b"", lambda _: end())
        else:
            self._write(b"E")

    def _heartbeat(self) -> None:
        while not self.stopped.wait(self.beat):
            if not self._write(b"H"):
                return


class Beats:
    """Strip the watchdog's beats from stderr (they may arrive split across reads); say if one was progress."""

    MARKERS = (watchdog.ALIVE, watchdog.PROGRESS)

    def __init__(self):
        self.held = b""

    def strip(self, data: bytes) -> tuple[bytes, bool, bool]:
        """Given a stderr chunk, return (the command's own bytes, a beat came, a progress beat came)."""
        data, self.held = self.held + data, b""
        beat, progress = any(m in data for m in self.MARKERS), watchdog.PROGRESS in data
        for marker in self.MARKERS:
            data = data.replace(marker, b"")
        cut = data.rfind(b"\x00", max(0, len(data) - max(map(len, self.MARKERS))))
        if cut >= 0 and any(m.startswith(data[cut:]) for m in self.MARKERS):
            data, self.held = data[:cut], data[cut:]
        return data, beat, progress


class Clock:
    """One wall-clock deadline and one stall rule for a running command.

    `expired()` names the first limit passed: "timeout" (the wall clock), "silent" (not even the watchdog's
    heartbeat arrived for `stall` seconds: the host or the network froze) or "stuck" (heartbeats, but no output
    and no progress for `stall` seconds)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.start = self.alive = self.progress = time.monotonic()

    def heard(self, progress: bool) -> None:
        self.alive = time.monotonic()
        if progress:
            self.progress = self.alive

    def _ends(self) -> dict[str, float]:
        ends = {}
        if self.limits.timeout is not None:
            ends["timeout"] = self.start + self.limits.timeout
        if self.limits.stall is not None:
            ends["silent"] = self.alive + self.limits.stall
            ends["stuck"] = self.progress + self.limits.stall
        return ends

    def expired(self) -> str | None:
        now = time.monotonic()
        return next((why for why, end in self._ends().items() if now >= end), None)

    def wait(self, cap: float = 1.0) -> float:
        """Seconds to wait for I/O before looking at the clock again."""
        return max(0.0, min([cap, *(end - time.monotonic() for end in self._ends().values())]))

    def describe(self, why: str) -> str:
        if why == "timeout":
            return f"timed out after {self.limits.timeout:g} s"
        return f"no output and no progress for {self.limits.stall:g} s"


class Source(ABC):
    """Something the pump selects on: a pipe, or an SSH channel carrying both streams."""

    @abstractmethod
    def fileno(self) -> int: ...

    @abstractmethod
    def read(self) -> bool:
        """Read what is ready into the sinks; return False at end of stream."""


class PipeSource(Source):
    def __init__(self, fd: int, sink: Sink):
        self.fd, self.sink = fd, sink

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bool:
        data = os.read(self.fd, CHUNK)
        if data:
            self.sink(data)
        return bool(data)


def pump(sources: list[Source], clock: Clock) -> str | None:
    """Given sources, read them all until each ends. Return None, or why the clock stopped it first."""
    with selectors.DefaultSelector() as selector:
        for source in sources:
            selector.register(source.fileno(), selectors.EVENT_READ, source)
        while selector.get_map():
            expired = clock.expired()
            if expired:
                return expired
            for key, _ in selector.select(clock.wait()):
                if not key.data.read():
                    selector.unregister(key.fileobj)
    return None


class Session(ABC):
    """One command started under the watchdog, seen from orch. A session without one (`watched` False: a
    container's `docker exec`) gets its stdin as it is, closed by `end_stdin()`, and no stall rule."""

    watched = True

    def end_stdin(self) -> None:
        """Close the command's stdin (sessions without a watchdog only)."""

    @abstractmethod
    def sources(self, out: Sink, err: Sink) -> list[Source]:
        """Return what to pump: stdout into `out`, stderr into `err`."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write to the watchdog's stdin (blocking); raise OSError once it is gone."""

    @abstractmethod
    def wait(self, timeout: float) -> int | None:
        """Return the exit status once output has ended, or None if it did not come within `timeout`."""

    @abstractmethod
    def abort(self, why: str) -> None:
        """Stop the command and everything it started, because the clock said `why`."""

    def close(self) -> None:
        pass


@dataclass
class Outcome:
    """What `drive` saw: the exit status (None when the clock stopped the command), the collected stdout, and
    which limit stopped it (`expired`, see Clock) with a sentence saying so (`note`)."""

    status: int | None
    stdout: bytes
    expired: str | None = None
    note: str = ""


def drive(
    session: Session,
    cmd: Command,
    stdin,
    stdout: BinaryIO | None,
    on_stderr: Sink,
    limits: Limits,
    on_stdout: Sink | None = None,
) -> Outcome:
    """Given a started Session, feed its stdin, pump its output under one clock and wait for its status.

    stdout goes to the file object `stdout` (or is collected), and to `on_stdout` as well if given; stderr,
    without the watchdog's beats, to `on_stderr`. On expiry the session is aborted (its whole process group
    stopped) and status is None."""
    clock, beats, collected = Clock(limits), Beats(), bytearray()
    sink = stdout.write if stdout is not None else collected.extend

    def out(data: bytes) -> None:
        clock.heard(progress=True)
        sink(data)
        if on_stdout is not None:
            on_stdout(data)

    def err(data: bytes) -> None:
        own, beat, progress = beats.strip(data)
        if own or beat:
            clock.heard(progress=bool(own) or progress)
        if own:
            on_stderr(own)

    uplink = Uplink(
        cmd.stdin_prefix(), stdin, session.send, limits.beat, end=None if session.watched else session.end_stdin
    ).start()
    try:
        expired = pump(session.sources(out, err), clock)
        status = None
        while expired is None and status is None:  # output ended; the status follows within moments
            status = session.wait(clock.wait())
            expired = None if status is not None else clock.expired()
        if expired:
            session.abort(expired)
    finally:
        uplink.stop()
        session.close()
    return Outcome(status, bytes(collected), expired, clock.describe(expired) if expired else "")
