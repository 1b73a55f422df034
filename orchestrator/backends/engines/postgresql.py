"""PostgreSQL: pg_dump -Fc (custom format: compressed by pg, table-level restore possible), pg_restore back."""

from __future__ import annotations

from orchestrator.backends.remote import Command

from .base import Engine


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def qualified(table: str) -> str:
    schema, _, name = table.rpartition(".")
    return f"{ident(schema)}.{ident(name)}" if schema else ident(name)


class PostgreSQL(Engine):
    dump_filename = "database.pgdump"

    def _conn_args(self, database: str | None) -> list:
        db = self.db
        args = ["--host", db.socket or db.host or "localhost", "--port", str(db.port or 5432)]
        if db.user:
            args += ["--username", db.user]
        return args + ["--dbname", database or db.name]

    def _tool(self, tool: str, *args, database: str | None = None) -> Command:
        cmd = Command(tool, "--no-password", *self._conn_args(database), *args)
        return cmd.env(PGPASSWORD=self.db.password) if self.db.password else cmd

    def sql(self, statement: str, database: str | None = None) -> Command:
        return self._tool(
            "psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", statement, database=database
        )

    def ping(self) -> Command:
        return self.sql("SELECT 1")

    def dump(self) -> Command:
        # -Fc is already compressed by pg; -Z0 keeps it raw so restic's dedup and zstd see through it.
        return self._tool("pg_dump", "-Fc", "-Z0", "--no-owner", "--no-acl")

    def restore(self, database: str | None = None) -> Command:
        # --clean --if-exists: restoring over an existing database replaces its objects instead of failing
        return self._tool(
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-acl",
            "--exit-on-error",
            "--single-transaction",
            database=database,
        )

    def create(self, database: str) -> Command:
        return self.sql(f"CREATE DATABASE {ident(database)}", database="postgres")

    def drop(self, database: str) -> Command:
        return self.sql(f"DROP DATABASE IF EXISTS {ident(database)}", database="postgres")

    def list_tables(self, database: str | None = None) -> Command:
        return self.sql(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1",
            database,
        )

    def count_rows(self, tables: list[str], database: str | None = None) -> Command:
        query = " UNION ALL ".join(f"SELECT {literal(t)}, COUNT(*) FROM {qualified(t)}" for t in tables)
        return self.sql(query, database)

    replace_dialect = "postgres"
    ADMIN_DATABASE = "postgres"
    COLUMNS_SQL = (
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    )

    def script(self, database: str | None = None) -> Command:
        return self._tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", database=database)

    def to_plain_sql(self) -> Command:
        return Command("pg_restore", "--file=-", "--no-owner", "--no-acl")

    def provision_sql(self, database: str, user: str, password: str) -> str:
        role, pw = ident(user), literal(password)
        return (
            "\n".join(
                [
                    f"DROP DATABASE IF EXISTS {ident(database)};",
                    f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
                    f"ALTER ROLE {role} LOGIN PASSWORD {pw};",
                    f"CREATE DATABASE {ident(database)} OWNER {role};",
                ]
            )
            + "\n"
        )

    def deprovision_sql(self, database: str, user: str) -> str:
        return f"DROP DATABASE IF EXISTS {ident(database)};\nDROP ROLE IF EXISTS {ident(user)};\n"

    def is_complete(self, tail: bytes) -> bool:
        return True  # -Fc has no trailer; pg_dump's exit status and pg_restore --list in verify catch damage
