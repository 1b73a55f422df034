"""One interface for every target: run a Command (streaming stdin/stdout), put and get files."""
from __future__ import annotations

import io
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from orchestrator.errors import RemoteError
from orchestrator.masking import mask

from .command import Command

log = logging.getLogger("orch.remote")
CHUNK = 1 << 16
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


class StdinFeeder(threading.Thread):
    """Write the secret prefix and then the caller's stdin to a sink, then close it, in the background.

    A thread, because the command may fill its stdout pipe before it reads all of stdin (a dump piped
    through), and a single-threaded writer would deadlock against it.
    """

    def __init__(self, prefix: bytes, stdin: bytes | BinaryIO | None, write: Callable[[bytes], object],
                 close: Callable[[], object]):
        super().__init__(daemon=True)
        self.prefix, self.stdin, self.write_, self.close_ = prefix, stdin, write, close
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.prefix:
                self.write_(self.prefix)
            source = io.BytesIO(self.stdin) if isinstance(self.stdin, bytes) else self.stdin
            while source is not None and (chunk := source.read(CHUNK)):
                self.write_(chunk)
        except (BrokenPipeError, OSError, EOFError) as exc:  # the command exited early: its status says why
            self.error = exc
        finally:
            try:
                self.close_()
            except OSError:
                pass


class StderrTail:
    """Collect stderr lines: pass each (masked) to a callback, keep a bounded tail for error messages."""

    def __init__(self, on_line: Callable[[str], None] | None):
        self.on_line, self.buf, self.pending = on_line, bytearray(), b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > STDERR_KEEP:
            del self.buf[: len(self.buf) - STDERR_KEEP]
        if self.on_line:
            self.pending += data
            *lines, self.pending = self.pending.split(b"\n")
            for line in lines:
                self.on_line(mask(line.decode("utf-8", "replace")))

    def text(self) -> str:
        if self.on_line and self.pending:
            self.on_line(mask(self.pending.decode("utf-8", "replace")))
            self.pending = b""
        return mask(self.buf.decode("utf-8", "replace"))


class Connector(ABC):
    """A place commands run: the orchestrator itself (`local`) or a host over SSH (`ssh`)."""

    name: str

    def run(self, cmd: Command, *, stdin: bytes | BinaryIO | None = None, stdout: BinaryIO | None = None,
            check: bool = True, timeout: float | None = None,
            on_stderr: Callable[[str], None] | None = None) -> Result:
        """Given a Command, run it and return its Result.

        stdin: bytes or a binary file object streamed to the command; stdout: a binary file object to
        stream output into (else it is collected). Raise RemoteError (masked) if check and it failed.
        """
        log.debug("%s: %s", self.name, cmd.masked())
        result = self._run(cmd, stdin, stdout, timeout, StderrTail(on_stderr))
        if check and not result.ok:
            raise RemoteError(self.name, cmd.masked(), result.exit_status, result.stderr)
        return result

    def ok(self, cmd: Command) -> bool:
        """Return whether the command exits 0 (a probe; output discarded)."""
        return self.run(cmd, check=False).ok

    @abstractmethod
    def _run(self, cmd: Command, stdin, stdout, timeout, stderr: StderrTail) -> Result: ...

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
