"""The `local` connector: commands run on the orchestrator machine itself (demo sites, local repositories)."""
from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

from .base import CHUNK, Connector, Result, StderrTail, StdinFeeder
from .command import Command


class LocalConnector(Connector):
    def __init__(self, name: str = "local"):
        self.name = name

    def _run(self, cmd: Command, stdin, stdout, timeout, stderr: StderrTail) -> Result:
        proc = subprocess.Popen(cmd.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        feeder = StdinFeeder(cmd.stdin_prefix(), stdin, proc.stdin.write, proc.stdin.close)
        feeder.start()
        err_reader = threading.Thread(target=_drain, args=(proc.stderr, stderr.feed), daemon=True)
        err_reader.start()
        collected = bytearray()
        sink = stdout.write if stdout is not None else collected.extend
        _drain(proc.stdout, sink)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        err_reader.join()
        feeder.join(timeout=5)
        return Result(status, bytes(collected), stderr.text())

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        shutil.copyfile(local, remote)
        if mode is not None:
            Path(remote).chmod(mode)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)


def _drain(pipe, sink) -> None:
    while chunk := pipe.read1(CHUNK) if hasattr(pipe, "read1") else pipe.read(CHUNK):
        sink(chunk)
    pipe.close()
