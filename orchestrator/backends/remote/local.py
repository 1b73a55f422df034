"""The `local` connector: commands run on the orchestrator machine itself (demo sites, local repositories)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from .base import Connector
from .command import Command
from .supervise import DEFAULT_STALL, Limits, PipeSource, Session, Sink, Source, watched_argv
from .watchdog import stop_group


class LocalConnector(Connector):
    def __init__(self, name: str = "local", stall: float | None = DEFAULT_STALL):
        self.name, self.stall = name, stall

    def _start(self, cmd: Command, limits: Limits) -> Session:
        # orch's own interpreter: always there, whatever PATH says
        return LocalSession(watched_argv(cmd, limits, python=sys.executable))

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        shutil.copyfile(local, remote)
        if mode is not None:
            Path(remote).chmod(mode)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)


class LocalSession(Session):
    """The watchdog as a child process leading its own session (and so its own process group)."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            bufsize=0,
        )
        self.pipes = (_pipe(self.proc.stdin), _pipe(self.proc.stdout), _pipe(self.proc.stderr))

    def sources(self, out: Sink, err: Sink) -> list[Source]:
        return [PipeSource(self.pipes[1].fileno(), out), PipeSource(self.pipes[2].fileno(), err)]

    def send(self, data: bytes) -> None:
        self.pipes[0].write(data)

    def wait(self, timeout: float) -> int | None:
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return status if status >= 0 else 128 - status

    def abort(self, why: str) -> None:
        """Stop the whole group (the watchdog and all it started), as the watchdog itself would."""
        stop_group(self.proc.pid, me=-1, reap=self.proc.poll)  # poll: the watchdog must not linger as a zombie
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:  # we are leaving early (an exception in a sink): leave nothing behind
            self.abort("closed")
        for pipe in self.pipes:
            try:
                pipe.close()
            except OSError:
                pass


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    """Given a stream of Popen started with PIPE, return it (Popen leaves None only where no PIPE was asked)."""
    if stream is None:
        raise RuntimeError("the watchdog process has no pipe where one was asked for")
    return stream
