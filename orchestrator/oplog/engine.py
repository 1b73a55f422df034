"""Turn an oplog URL into a SQLAlchemy engine tuned for several orch processes sharing one database, whose
failures to reach, open or write the database arrive as one clear OplogError line (not a driver traceback)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from orchestrator.errors import OrchError, UsageError
from orchestrator.masking import mask

BUSY_TIMEOUT_MS = 30_000  # default; a SQLite oplog URL may say otherwise with `?timeout=SECONDS`


class OplogError(OrchError):
    """The oplog database cannot be used: unreachable, damaged, not a database, or locked by another writer."""


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
        parsed = parsed.set(database=str(Path(parsed.database or "").expanduser()))
    return parsed


def inserted_id(result: sa.CursorResult) -> int:
    """Given the result of a one-row INSERT, return the new row's primary key."""
    key = result.inserted_primary_key
    if key is None:  # only an executemany or a statement other than INSERT has none
        raise OrchError("the oplog did not return the id of the row it inserted")
    return key[0]


def make_engine(url: str) -> sa.Engine:
    """Given an oplog URL, return an engine; for SQLite create the file's folder and set WAL + busy timeout
    (`?timeout=SECONDS` in the URL, as SQLAlchemy's SQLite URLs have it; default 30 s).

    Raise UsageError if the timeout is not a number of seconds. Raise OplogError if a SQLite path is a folder or
    an empty file; database errors of the engine's later use
    (cannot connect, not a database, damaged, locked for longer than the busy timeout) raise OplogError too.
    """
    parsed = normalize_url(url)
    where = parsed.render_as_string(hide_password=True)
    busy_ms = BUSY_TIMEOUT_MS
    if parsed.get_backend_name() == "sqlite":
        busy_ms, parsed = _busy_timeout(parsed), parsed.difference_update_query(["timeout"])
    if parsed.get_backend_name() != "sqlite":
        engine = sa.create_engine(parsed, pool_pre_ping=True)
    elif parsed.database in (None, "", ":memory:"):
        # One shared connection, or every checkout would see its own empty database.
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
        _tune_sqlite(engine, busy_ms, wal=False)
    else:
        where = parsed.database
        _check_file(Path(parsed.database))
        engine = sa.create_engine(parsed, connect_args={"timeout": busy_ms / 1000})
        _tune_sqlite(engine, busy_ms, wal=True)
    _explain_errors(engine, where, busy_ms)
    return engine


def _busy_timeout(url: sa.URL) -> int:
    """Given a SQLite oplog URL, return how long (ms) a writer waits for another's lock; raise UsageError if its
    `timeout` is not a positive number of seconds."""
    value = url.query.get("timeout")
    if value is None:
        return BUSY_TIMEOUT_MS
    try:
        seconds = float(value if isinstance(value, str) else value[-1])
    except ValueError:
        seconds = 0
    if not 0 < seconds <= 86_400:
        raise UsageError(f"oplog URL: timeout={value!r} is not a number of seconds (1 to 86400)")
    return round(seconds * 1000)


def _check_file(path: Path) -> None:
    """Given a SQLite oplog path, create its folder; raise OplogError if the path is a folder or an empty file
    (SQLite would silently start a new, empty oplog in it: a truncated oplog must not pass for a new one)."""
    if path.is_dir():
        raise OplogError(f"oplog {path}: is a folder, not a database file (see `oplog` in the inventory)")
    try:
        if path.exists() and path.stat().st_size == 0:
            raise OplogError(
                f"oplog {path}: the file is empty (0 bytes), not an oplog: restore it from a backup, "
                "or delete it to start a new oplog"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OplogError(f"oplog {path}: {exc.strerror or exc}") from None


# SQLAlchemy error classes that mean "this database cannot be used now", as opposed to a bug in a query or a
# constraint that callers expect and catch (IntegrityError: a lock row that already exists).
_UNUSABLE = (sa.exc.OperationalError, sa.exc.InterfaceError)


def _explain_errors(engine: sa.Engine, where: str, busy_ms: int = BUSY_TIMEOUT_MS) -> None:
    """Given an engine, how to name its database and its busy timeout, make its unusable-database errors raise
    OplogError."""

    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> None:
        error = context.sqlalchemy_exception
        if context.is_pre_ping or not (isinstance(error, _UNUSABLE) or type(error) is sa.exc.DatabaseError):
            return  # a pre-ping reconnects on its own; other errors are the caller's to handle
        raise OplogError(f"oplog {where}: {explain(context.original_exception, busy_ms)}") from (
            context.original_exception
        )


def explain(error: BaseException, busy_ms: int = BUSY_TIMEOUT_MS) -> str:
    """Given a driver error of an oplog database (and the busy timeout it waited out), return one line saying what
    is wrong and what to do."""
    text = " ".join(str(error).split())
    lowered = text.lower()
    if "database is locked" in lowered:
        return (
            f"locked by another writer for more than {busy_ms / 1000:g} s; try again when it is done "
            "(a long transaction of another orch, or a program holding the file open)"
        )
    if "file is not a database" in lowered or "malformed" in lowered:
        return f"not a readable oplog database (damaged or truncated: {text}); restore it from a backup"
    if "unable to open database file" in lowered or "readonly database" in lowered:
        return f"cannot open or write the database file ({text}): check the path and its permissions"
    if "connection" in lowered or "connect" in lowered:
        return f"cannot connect to the database: {mask(text)[:300]}"
    return mask(text)[:300]


def _tune_sqlite(engine: sa.Engine, busy_ms: int, *, wal: bool) -> None:
    """Given a SQLite engine and how long (ms) to wait for another writer, make its transactions safe for
    concurrent orch processes."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # We emit BEGIN ourselves (below); sqlite3's own implicit BEGIN would defer the write lock.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
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
