"""Turn an oplog URL into a SQLAlchemy engine tuned for several orch processes sharing one database."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from orchestrator.errors import UsageError

BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> sa.URL:
    """Given an oplog URL (or a bare file path, meaning SQLite), return the URL with our driver chosen.

    `postgresql://` and `postgres://` get psycopg 3 (SQLAlchemy's default would be psycopg2, not installed).
    Raise UsageError if the URL cannot be parsed.
    """
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser()}"
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise UsageError(f"oplog URL {url!r} is not a database URL: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and (parsed.database or "").startswith("~"):
        parsed = parsed.set(database=str(Path(parsed.database).expanduser()))
    return parsed


def make_engine(url: str) -> sa.Engine:
    """Given an oplog URL, return an engine; for SQLite create the file's folder and set WAL + busy timeout."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    in_memory = parsed.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection, or every checkout would see its own empty database.
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    _tune_sqlite(engine, wal=not in_memory)
    return engine


def _tune_sqlite(engine: sa.Engine, *, wal: bool) -> None:
    """Given a SQLite engine, make its transactions safe for concurrent orch processes."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # We emit BEGIN ourselves (below); sqlite3's own implicit BEGIN would defer the write lock.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front, waiting out busy_timeout. A deferred transaction that
        # reads and then writes fails at once with "database is locked" when another process wrote in
        # between (WAL cannot upgrade a stale read snapshot), and no timeout helps with that.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
