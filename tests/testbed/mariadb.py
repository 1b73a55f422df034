"""A private MariaDB server: data in a temp dir, TCP on 127.0.0.1:<free port>, root by unix socket."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, log_tail, spawn, stop_process, wait_ready
from .ports import free_port, port_open

# Global privileges mariadb-dump may need besides ALL on the database (--single-transaction, --events, ...).
GLOBAL_DUMP_PRIVILEGES = "RELOAD, PROCESS"


@dataclass
class MariaDB:
    """Handle of a running private MariaDB server."""

    port: int
    socket: Path
    host: str = "127.0.0.1"
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run ``statement`` as root over the unix socket; return stdout (-N -B: tab separated, no header)."""
        argv = ["mariadb", "--no-defaults", "-S", str(self.socket), "-u", "root", "-N", "-B", "-e", statement]
        proc = subprocess.run(argv + ([database] if database else []), capture_output=True, text=True)
        if proc.returncode:
            raise TestbedError(f"mariadb: {statement!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str, user: str, password: str) -> None:
        """Create database ``name`` and ``user``@'%' / @'localhost' (password ``password``) with ALL on it,
        plus the global privileges mariadb-dump needs. Idempotent; the password is (re)set."""
        db = _ident(name)
        stmts = [f"CREATE DATABASE IF NOT EXISTS {db}"]
        for host in ("%", "localhost"):
            account = f"{_string(user)}@{_string(host)}"
            stmts += [
                f"CREATE USER IF NOT EXISTS {account}",
                f"ALTER USER {account} IDENTIFIED BY {_string(password)}",
                f"GRANT ALL ON {db}.* TO {account}",
                f"GRANT {GLOBAL_DUMP_PRIVILEGES} ON *.* TO {account}",
            ]
        self.sql(";\n".join(stmts))

    def stop(self) -> None:
        """Shut the server down (SIGTERM: clean and quick) and reap it."""
        stop_process(self._proc, timeout=30)


def start_mariadb(workdir: Path) -> MariaDB:
    """Initialise a data dir under ``workdir`` and start mariadbd on it; returns when it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    datadir, sock, log = workdir / "data", workdir / "mysqld.sock", workdir / "mysqld.err"
    tmpdir = workdir / "tmp"  # own tmpdir: concurrent instances otherwise collide on /tmp/#sql-temptable-*
    tmpdir.mkdir(exist_ok=True)
    init = subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            "--user=root",
            f"--datadir={datadir}",
            f"--tmpdir={tmpdir}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if init.returncode:
        raise TestbedError(f"mariadb-install-db failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
    port = free_port()
    proc = spawn(
        [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={datadir}",
            f"--socket={sock}",
            f"--tmpdir={tmpdir}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={workdir / 'mysqld.pid'}",
            f"--log-error={log}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-name-resolve",
            # Debian's packaged server defaults to utf8mb4; --no-defaults alone would give latin1
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ],
        workdir / "mysqld.out",
    )
    wait_ready(proc, lambda: sock.exists() and port_open("127.0.0.1", port), "mariadbd", log)
    server = MariaDB(port=port, socket=sock, _proc=proc)
    try:
        server.sql("SELECT 1")
    except TestbedError as e:
        server.stop()
        raise TestbedError(f"{e}\n{log_tail(log)}") from e
    return server


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
