"""The Engine interface shared by MySQL/MariaDB, PostgreSQL and SQLite."""

from __future__ import annotations

from abc import ABC, abstractmethod

from orchestrator.backends.remote import Command, Connector

TableCounts = dict[str, int]


class Engine(ABC):
    """Commands for one database. `db` is an inventory Database; `name` may be overridden for scratch copies."""

    dump_filename: str  # name of the dump inside the backup

    def __init__(self, db, env_path: str | None = None):
        self.db, self.env_path = db, env_path

    def describe(self) -> str:
        """Return how errors name this database: `database NAME (ENGINE at WHERE)`."""
        db = self.db
        where = db.socket or f"{db.host or 'localhost'}{f':{db.port}' if db.port else ''}"
        return f"database {db.name} ({db.engine} at {where})"

    @abstractmethod
    def ping(self) -> Command:
        """Return a command that exits 0 iff we can log in to the database."""

    @abstractmethod
    def dump(self) -> Command:
        """Return a command that writes a consistent dump to stdout and exits non-zero on any failure."""

    @abstractmethod
    def restore(self, database: str | None = None) -> Command:
        """Return a command that loads a dump from stdin into `database` (default: this one)."""

    @abstractmethod
    def create(self, database: str) -> Command:
        """Return a command creating an empty database (a scratch for drills)."""

    @abstractmethod
    def drop(self, database: str) -> Command:
        """Return a command dropping a database if it exists."""

    @abstractmethod
    def list_tables(self, database: str | None = None) -> Command:
        """Return a command printing one table name per line."""

    @abstractmethod
    def count_rows(self, tables: list[str], database: str | None = None) -> Command:
        """Return a command printing `table<TAB>rows` for each table."""

    def table_counts(self, conn: Connector, database: str | None = None) -> TableCounts:
        """Given a connector, return {table: exact row count} for the database."""
        tables = [t for t in conn.run(self.list_tables(database)).text.splitlines() if t]
        if not tables:
            return {}
        counts = {}
        for line in conn.run(self.count_rows(tables, database)).text.splitlines():
            table, _, rows = line.rpartition("\t")
            counts[table] = int(rows)
        return counts

    def is_complete(self, tail: bytes) -> bool:
        """Given the last bytes of a dump, return whether it looks complete (not truncated)."""
        return True

    # -- staging copies: only MySQL/MariaDB and PostgreSQL implement these --------------------------------------
    replace_dialect: str | None = None  # the URL replacer's dialect for this engine's plain SQL
    ADMIN_DATABASE: str | None = None  # where an admin connects when the template names no database
    COLUMNS_SQL: str  # prints `table<TAB>column` per column of the current database

    def sql(self, statement: str, database: str | None = None) -> Command:
        """Return a client running one SQL statement, printing rows tab-separated without headers."""
        raise NotImplementedError(f"{type(self).__name__} cannot run SQL statements for staging copies")

    def script(self, database: str | None = None) -> Command:
        """Return a client that runs the SQL script on its stdin, stopping at the first error."""
        raise NotImplementedError(f"{type(self).__name__} cannot run SQL scripts for staging copies")

    def to_plain_sql(self) -> Command | None:
        """Return a filter turning a stored dump into plain SQL (None: it already is)."""
        return None

    def provision_sql(self, database: str, user: str, password: str) -> str:
        """Return admin SQL creating (or resetting) a database owned by a user with that password."""
        raise NotImplementedError

    def deprovision_sql(self, database: str, user: str) -> str:
        """Return admin SQL dropping the database and its user."""
        raise NotImplementedError

    def columns(self, conn: Connector, database: str | None = None) -> dict[str, set[str]]:
        """Return {table: {column, ...}} of the database (plain table names)."""
        out = conn.run(self.sql(self.COLUMNS_SQL, database)).text
        schema: dict[str, set[str]] = {}
        for line in out.splitlines():
            table, _, column = line.partition("\t")
            schema.setdefault(table, set()).add(column)
        return schema
