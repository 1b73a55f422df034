"""One interface for every target: run a Command (streaming stdin/stdout), put and get files."""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from orchestrator.errors import ConnectError, RemoteError
from orchestrator.masking import mask

from .command import Command
from .supervise import DEFAULT_STALL, Limits, Session, drive

log = logging.getLogger("orch.remote")
NO_PYTHON = re.compile(r"^\S*(sh|bash)\S*: (line )?\d+: python3: (command )?not found", re.M)
STDERR_KEEP = 64 * 1024  # keep the tail of stderr for error messages; the rest is streamed to the callback


@dataclass
class Result:
    """What a finished command gave back. `stdout` is empty when it was streamed to a file object."""

    exit_status: int
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class Lines:
    """Split a byte stream into text lines for a callback: at newlines, and with `returns` also at carriage
    returns (rsync redraws its progress line with them)."""

    def __init__(self, on_line: Callable[[str], None], returns: bool = False):
        self.on_line, self.returns, self.pending = on_line, returns, b""

    def feed(self, data: bytes) -> None:
        self.pending += data.replace(b"\r", b"\n") if self.returns else data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", "replace"))

    def flush(self) -> None:
        if self.pending:
            self.on_line(self.pending.decode("utf-8", "replace"))
            self.pending = b""


class StderrTail:
    """Collect stderr lines: pass each (masked) to a callback, keep a bounded tail for error messages."""

    def __init__(self, on_line: Callable[[str], None] | None):
        self.buf = bytearray()
        self.lines = Lines(lambda line: on_line(mask(line))) if on_line else None

    def feed(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > STDERR_KEEP:
            del self.buf[: len(self.buf) - STDERR_KEEP]
        if self.lines:
            self.lines.feed(data)

    def text(self) -> str:
        if self.lines:
            self.lines.flush()
        return mask(self.buf.decode("utf-8", "replace"))


class HostLost(ConnectError):
    """The host stopped answering, or its SSH connection dropped, while a command ran."""


class Connector(ABC):
    """A place commands run: the orchestrator itself (`local`) or a host over SSH (`ssh`).

    Every command runs under the watchdog (`watchdog.py`), so it dies with its orchestrator; `stall` is how many
    seconds a command may show neither output nor progress before it is stopped."""

    name: str
    stall: float | None = DEFAULT_STALL

    def run(
        self,
        cmd: Command,
        *,
        stdin: bytes | BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        check: bool = True,
        timeout: float | None = None,
        on_stderr: Callable[[str], None] | None = None,
        on_stdout: Callable[[str], None] | None = None,
    ) -> Result:
        """Given a Command, run it and return its Result.

        stdin: bytes or a binary file object streamed to the command; stdout: a binary file object to
        stream output into (else it is collected); on_stdout: a callback given each line of stdout as well
        (lines end at a newline or a carriage return; progress parsers read them). `timeout` bounds the
        wall-clock time; past it, or past the stall rule, the command and everything it started are stopped
        and the status is 124 (stderr kept, with a line saying why). Raise RemoteError (masked) if check and
        it failed; raise HostLost if the host stopped answering or the connection dropped (whatever `check`
        says: that is no status of the command).
        """
        log.debug("%s: %s", self.name, cmd.masked())
        limits = Limits(timeout=timeout, stall=self.stall)
        tail = StderrTail(on_stderr)
        lines = Lines(on_stdout, returns=True) if on_stdout else None
        outcome = drive(self._start(cmd, limits), cmd, stdin, stdout, tail.feed, limits, lines.feed if lines else None)
        if lines:
            lines.flush()
        if outcome.expired == "silent":
            raise HostLost(
                f"host {self.name}: no sign of life for {limits.stall:g} s (host frozen or network "
                "cut); gave up on the command and closed the connection"
            )
        stderr = tail.text()
        if outcome.status == 127 and NO_PYTHON.search(stderr):
            raise HostLost(
                f"host {self.name}: has no python3, which orch needs there to supervise its commands "
                "(a standard-library script; Python 3.6 or newer)"
            )
        status = outcome.status
        if outcome.expired or status is None:  # drive() leaves the status None only when a limit stopped it
            stderr, status = f"{stderr.rstrip()}\n{outcome.note}: stopped".lstrip(), 124
        result = Result(status, outcome.stdout, stderr)
        if check and not result.ok:
            raise RemoteError(self.name, cmd.masked(), result.exit_status, result.stderr)
        return result

    def ok(self, cmd: Command) -> bool:
        """Return whether the command exits 0 (a probe; output discarded)."""
        return self.run(cmd, check=False).ok

    @abstractmethod
    def _start(self, cmd: Command, limits: Limits) -> Session:
        """Start the command under the watchdog; return its Session."""

    @abstractmethod
    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy a local file to a path on the target."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None:
        """Copy a file from the target to a local path."""

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o600) -> None:
        """Write bytes to a path on the target through stdin (no temp file here), created with `mode`."""
        umask = f"{0o777 & ~mode:03o}"
        self.run(Command("umask", umask).then(Command("cat")).to_file(remote), stdin=data)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
