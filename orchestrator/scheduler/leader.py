"""One active scheduler per oplog database; any other waits as a standby and takes over when it dies.

PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a dedicated connection held for the daemon's
life. When the holder dies, even by kill -9, its connection closes and PostgreSQL drops the lock at once. The
connection's application_name says who holds it (`orch-scheduler pid=N host=H`), for standbys, `status` and
`reload`.
SQLite (one machine by nature): an exclusive `flock` on `<oplog file>.scheduler.lock`, which the kernel drops
when the holder dies; the file's content says who holds it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from orchestrator.oplog import process

log = logging.getLogger("orch.scheduler")
LOCK_KEY = 7142002  # 7142001 serialises oplog migrations
APP_PREFIX = "orch-scheduler"


def identity() -> dict:
    return {"pid": os.getpid(), "host": process.machine(), "since": datetime.now(UTC).isoformat(timespec="seconds")}


class PostgresLeader:
    """The advisory lock on a PostgreSQL oplog."""

    def __init__(self, engine: sa.Engine):
        me = identity()
        name = f"{APP_PREFIX} pid={me['pid']} host={me['host']}"[:63]  # PostgreSQL truncates at 63 bytes
        # keepalives: a holder cut off by the network loses the lock within a minute instead of hours
        self._engine = sa.create_engine(
            engine.url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={
                "application_name": name,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
        )
        self._query_engine = engine
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        """Return whether this process now holds the lock; False (not an error) if the database is down."""
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            return bool(self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar())
        except sa.exc.DBAPIError as exc:
            log.warning("scheduler lock: database unreachable: %s", str(exc).splitlines()[0])
            self._drop()
            return False

    def alive(self) -> bool:
        """Return whether the lock's connection still works (if not, the lock may be someone else's now)."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1"))
            return True
        except (sa.exc.DBAPIError, AttributeError):
            return False

    def release(self) -> None:
        self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # closing the session releases the advisory lock
            except sa.exc.DBAPIError:
                pass
            self._conn = None

    def holder(self) -> dict | None:
        """Return {pid, host, since} of the active scheduler, or None if no scheduler holds the lock."""
        query = sa.text(
            "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        with self._query_engine.connect() as conn:
            row = conn.execute(query, {"key": LOCK_KEY}).first()
        if row is None:
            return None
        fields = dict(part.split("=", 1) for part in (row.application_name or "").split()[1:] if "=" in part)
        return {
            "pid": int(fields["pid"]) if fields.get("pid", "").isdigit() else None,
            "host": fields.get("host"),
            "since": row.backend_start.isoformat(timespec="seconds") if row.backend_start else None,
        }


class FileLeader:
    """The flock on a SQLite oplog's side file."""

    def __init__(self, path: Path):
        self.path = path
        self._file: TextIO | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self._file or open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file = file
            return False
        file.seek(0)
        file.truncate()
        file.write(json.dumps(identity()) + "\n")
        file.flush()
        self._file = file
        return True

    def alive(self) -> bool:
        return True  # a local lock cannot be lost while the process lives

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def holder(self) -> dict | None:
        """Return {pid, host, since} of the active scheduler, or None if the lock is free."""
        if not self.path.exists():
            return None
        with open(self.path, encoding="utf-8") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(probe.read() or "{}") or {"pid": None, "host": None, "since": None}
                except ValueError:
                    return {"pid": None, "host": None, "since": None}
            fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
            return None


class NoLeader:
    """An in-memory SQLite oplog: nobody else can share it, so this process always leads."""

    def try_acquire(self) -> bool:
        return True

    def alive(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def holder(self) -> dict | None:
        return None


def for_oplog(oplog):
    """Given an Oplog, return the leader lock that fits its database."""
    url = oplog.engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresLeader(oplog.engine)
    if url.database in (None, "", ":memory:"):
        return NoLeader()
    db = Path(url.database)
    return FileLeader(db.with_name(db.name + ".scheduler.lock"))
