"""MySQL / MariaDB: mariadb-dump (or mysqldump) with a consistent snapshot, restore with the mariadb client."""

from __future__ import annotations

from typing import Literal

from orchestrator.backends.remote import Command, Raw

from .base import Engine

# Prefer MariaDB's names, fall back to MySQL's: hosts have one or the other (Debian 12 has both).
DUMP_TOOL = Raw('"$(command -v mariadb-dump || command -v mysqldump || echo mariadb-dump)"')
CLIENT_TOOL = Raw('"$(command -v mariadb || command -v mysql || echo mariadb)"')
# --skip-dump-date: an unchanged database gives a byte-identical dump, so restic stores nothing new for it
# (the trailer still says "-- Dump completed", which the truncation check looks for).
DUMP_FLAGS = (
    "--single-transaction",
    "--quick",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--skip-dump-date",
)


def ident(name: str) -> str:
    """Quote a MySQL identifier (backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class MySQL(Engine):
    dump_filename = "database.sql"

    def _conn_args(self) -> list:
        db, args = self.db, []
        if db.socket:
            args.append(f"--socket={db.socket}")
        else:
            args += [f"--host={db.host or 'localhost'}", f"--port={db.port or 3306}"]
            if (db.host or "localhost") != "localhost":
                args.append("--protocol=TCP")
        if db.user:
            args.append(f"--user={db.user}")
        return args

    def _with_password(self, cmd: Command) -> Command:
        return cmd.env(MYSQL_PWD=self.db.password) if self.db.password else cmd

    def client(self, database: str | Literal[False] | None = None, *extra: str) -> Command:
        """Return the mysql client reading SQL from stdin, batch mode, no column names, utf8mb4 whatever the
        client's configured default is (Debian's is utf8mb4, a bare client's follows the locale: latin1 in C)."""
        args = [
            CLIENT_TOOL,
            *self._conn_args(),
            "--default-character-set=utf8mb4",
            "--batch",
            "--skip-column-names",
            *extra,
        ]
        name = None if database is False else database or self.db.name
        if name:
            args.append(name)
        return self._with_password(Command(*args))

    def sql(self, statement: str, database: str | None = None) -> Command:
        """Return the client running one statement. The statement travels in argv: never put secrets in it."""
        return self.client(database, "-e", statement)

    def ping(self) -> Command:
        return self.sql("SELECT 1")

    def dump(self) -> Command:
        return self._with_password(Command(DUMP_TOOL, *self._conn_args(), *DUMP_FLAGS, self.db.name))

    def restore(self, database: str | None = None) -> Command:
        return self.client(database)

    def dump_rows(self, tables: list[str], where: str | None = None) -> Command:
        """Return a dump of these tables' rows in primary-key order, written as dump() writes them (the same
        literals: a row dumped here reads byte for byte like the same row in a backup), each table's CREATE
        TABLE first; with `where` (trusted SQL, travels in argv: no secrets), only those rows and no CREATE."""
        flags = [flag for flag in DUMP_FLAGS if flag not in ("--routines", "--events", "--triggers")]
        extra = ["--no-create-info", "--compact", f"--where={where}"] if where else []
        return self._with_password(
            Command(
                DUMP_TOOL,
                *self._conn_args(),
                *flags,
                "--order-by-primary",
                "--skip-triggers",
                *extra,
                self.db.name,
                *tables,
            )
        )

    def create(self, database: str) -> Command:
        return self.client(False, "-e", f"CREATE DATABASE {ident(database)} CHARACTER SET utf8mb4")

    def drop(self, database: str) -> Command:
        return self.client(False, "-e", f"DROP DATABASE IF EXISTS {ident(database)}")

    def list_tables(self, database: str | None = None) -> Command:
        return self.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name",
            database,
        )

    def count_rows(self, tables: list[str], database: str | None = None) -> Command:
        query = " UNION ALL ".join(f"SELECT {literal(t)}, COUNT(*) FROM {ident(t)}" for t in tables)
        return self.sql(query, database)

    replace_dialect = "mysql"
    COLUMNS_SQL = (
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position"
    )

    def script(self, database: str | None = None) -> Command:
        return self.client(database)

    def provision_sql(self, database: str, user: str, password: str) -> str:
        db, pw = ident(database), literal(password)
        lines = [f"DROP DATABASE IF EXISTS {db};", f"CREATE DATABASE {db} CHARACTER SET utf8mb4;"]
        for host in ("%", "localhost"):
            account = f"{literal(user)}@{literal(host)}"
            lines += [
                f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {pw};",
                f"ALTER USER {account} IDENTIFIED BY {pw};",
                f"GRANT ALL ON {db}.* TO {account};",
            ]
        return "\n".join(lines) + "\n"

    def deprovision_sql(self, database: str, user: str) -> str:
        drops = [f"DROP USER IF EXISTS {literal(user)}@{literal(host)};" for host in ("%", "localhost")]
        return "\n".join([f"DROP DATABASE IF EXISTS {ident(database)};", *drops]) + "\n"

    def is_complete(self, tail: bytes) -> bool:
        # mysqldump/mariadb-dump end with this comment only when they finished writing every table.
        return b"-- Dump completed" in tail
