"""A private PostgreSQL 15 cluster run as the ``postgres`` OS user.

TCP on 127.0.0.1:<free port> requires a real password (scram-sha-256); the unix socket trusts everyone, which
is how :meth:`Postgres.sql` talks to it as the superuser.
"""

from __future__ import annotations

import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, spawn, stop_process, wait_ready
from .ports import free_port

# Debian's server binaries, explicitly: /usr/local/bin may hold an unrelated `postgres`.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"


@dataclass
class Postgres:
    """Handle of a running private cluster. ``password`` is the superuser's (for TCP logins)."""

    port: int
    password: str
    socket_dir: Path
    host: str = "127.0.0.1"
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _root: Path | None = field(default=None, repr=False)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run ``statement`` with psql -At as the superuser over the unix socket; return stdout."""
        argv = [
            str(PG_BIN / "psql"),
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-c",
            statement,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode:
            raise TestbedError(f"psql: {statement!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str, user: str, password: str) -> None:
        """Create login role ``user`` with ``password`` and database ``name`` owned by it."""
        self.sql(f"CREATE ROLE {_ident(user)} LOGIN PASSWORD {_string(password)}")
        self.sql(f"CREATE DATABASE {_ident(name)} OWNER {_ident(user)}")  # not inside a transaction block

    def url(self, database: str) -> str:
        """SQLAlchemy URL logging in as the superuser over TCP."""
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        """Fast shutdown (SIGINT; SIGTERM would wait for clients to leave) and delete the cluster."""
        stop_process(self._proc, sig=signal.SIGINT)
        if self._root:
            shutil.rmtree(self._root, ignore_errors=True)


def start_postgres(workdir: Path) -> Postgres:
    """Create and start a cluster; returns once it accepts connections.

    The cluster lives in a fresh /tmp dir owned by ``postgres`` (deleted by ``stop()``) rather than in
    ``workdir``: pytest's temp dirs are root-only (0700), which the ``postgres`` user cannot traverse. The server
    log goes to ``workdir/postgres.log`` (opened by us, so the permissions do not matter).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pw = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="orch-testbed-pg-"))
    shutil.chown(root, pw.pw_uid, pw.pw_gid)
    as_postgres = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": root}
    datadir, log, password = root / "data", workdir / "postgres.log", secrets.token_hex(16)
    proc = None
    try:
        (root / "pwfile").write_text(password + "\n")
        shutil.chown(root / "pwfile", pw.pw_uid)
        init = subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(datadir),
                "-U",
                SUPERUSER,
                f"--pwfile={root / 'pwfile'}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            **as_postgres,
        )
        if init.returncode:
            raise TestbedError(f"initdb failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
        (root / "pwfile").unlink()
        port = free_port()
        proc = spawn(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(datadir),
                "-p",
                str(port),
                "-k",
                str(root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ],
            log,
            **as_postgres,
        )
        wait_ready(proc, lambda: _accepting(datadir), "postgres", log)
    except BaseException:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Postgres(port=port, password=password, socket_dir=root, _proc=proc, _root=root)


def _accepting(datadir: Path) -> bool:
    """The postmaster writes "ready" as line 8 of postmaster.pid once it accepts connections (PG >= 10)."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
