"""Oplog tables and the ordered migrations that build them; `migrate()` brings any database up to date.

To change the schema, append a function to MIGRATIONS (never edit an applied one) and update the table
definitions below. Migration 1 creates tables from these definitions, so before the first ALTER-style migration
freeze migration 1's tables as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from orchestrator.errors import UsageError


class SchemaTooNew(UsageError):
    """The oplog database was migrated by a newer orch than this one."""


class UTCDateTime(sa.TypeDecorator):
    """A timestamp that goes in and comes out timezone-aware UTC, on SQLite (no zones) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the oplog stores only timezone-aware times")
        value = value.astimezone(UTC)
        # SQLite keeps the text form; a uniform zone-less UTC text keeps comparisons in SQL correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """Given a datetime read back from the oplog (naive means UTC, as stored), return it aware, in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Plain JSON (not JSONB) on PostgreSQL too: it keeps key order as written, the same as on SQLite.
JSONDoc = sa.JSON()

metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String, nullable=False),
    sa.Column("site", sa.String),
    sa.Column("env", sa.String),
    sa.Column("action", sa.String, nullable=False),
    sa.Column("actor", sa.String, nullable=False),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("params", JSONDoc),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("duration", sa.Float),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("catch_up", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_operations_task", "task"),
    sa.Index("ix_operations_site_started", "site", "started_at"),
    sa.Index("ix_operations_started", "started_at"),
    sa.Index("ix_operations_status_host", "status", "host"),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("operation_id", sa.Integer, sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("output", sa.Text),
    sa.UniqueConstraint("operation_id", "seq", name="uq_steps_operation_seq"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("operation_id", sa.Integer, sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("ident", sa.String, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("details", JSONDoc),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_artifacts_operation", "operation_id"),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("site", sa.String, primary_key=True),  # the PRIMARY KEY is what makes acquiring atomic
    sa.Column("task", sa.String, nullable=False),
    sa.Column("operation_id", sa.Integer, sa.ForeignKey("operations.id", ondelete="SET NULL")),
    sa.Column("holder", sa.String, nullable=False),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)


# Environments orch made at run time (staging copies per task): the inventory holds only their template.
environments = sa.Table(
    "environments",
    metadata,
    sa.Column("site", sa.String, primary_key=True),
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("task", sa.String, nullable=False),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("path", sa.String, nullable=False),
    sa.Column("url", sa.String),
    sa.Column("database", JSONDoc),  # engine/name/user/host/port; never a password (derived when needed)
    sa.Column("details", JSONDoc),  # backup used, basic-auth user, vhost file, ...
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("destroyed_at", UTCDateTime),
)


# The hash chain over final operation, step and artifact rows (see chain.py); `chain_head` is its one-row head,
# locked by each writer so concurrent processes append in turn.
chain = sa.Table(
    "chain",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),  # operation, step, artifact
    sa.Column("row_id", sa.Integer, nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("link_hash", sa.String(64), nullable=False),
    sa.Column("linked_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("kind", "row_id", name="uq_chain_row"),
)

chain_head = sa.Table(
    "chain_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("link_hash", sa.String(64), nullable=False),
)

# Notes waiting for (or done with) delivery to a task tracker: written when an operation finishes, delivered
# with retries; `key` makes a second delivery recognisable, so the tracker gets each note once.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column("operation_id", sa.Integer, sa.ForeignKey("operations.id", ondelete="SET NULL")),
    sa.Column("task", sa.String, nullable=False),
    sa.Column("site", sa.String),
    sa.Column("tracker", sa.String, nullable=False),  # kind:where, e.g. redmine:https://redmine.example
    sa.Column("issue", sa.String, nullable=False),
    sa.Column("payload", JSONDoc, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, sent
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("claimed_until", UTCDateTime),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("remote", JSONDoc),  # what the tracker answered: note / time entry ids
    sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
    sa.Index("ix_outbox_task", "task"),
)


def _v1_initial(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[operations, steps, artifacts, locks])


def _v2_environments(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[environments])


def _v3_chain_and_outbox(conn: sa.Connection) -> None:
    from .chain import GENESIS, backfill

    metadata.create_all(conn, tables=[chain, chain_head, outbox])
    conn.execute(chain_head.insert().values(id=1, seq=0, link_hash=GENESIS))
    backfill(conn)  # rows finished before the chain existed join it now, operation by operation


def _v4_tasks_index(conn: sa.Connection) -> None:
    # Covers the web tasks list (GROUP BY task: first/last start, total time) without reading the table.
    # Plain DDL: an sa.Index on the table object would join migration 1's create_all and exist twice.
    conn.execute(
        sa.text("CREATE INDEX IF NOT EXISTS ix_operations_task_started ON operations (task, started_at, duration)")
    )


# Ordered; the schema version of a database is the number of these applied to it.
MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _v1_initial,
    _v2_environments,
    _v3_chain_and_outbox,
    _v4_tasks_index,
]
CURRENT_VERSION = len(MIGRATIONS)


def migrate(engine: sa.Engine) -> int:
    """Given an engine, apply pending migrations in one transaction and return the resulting version.

    Raise SchemaTooNew if the database is at a version this code does not know.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Serialise concurrent first opens; DDL is transactional on PostgreSQL, so losers see the result.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7142001)"))
        schema_version.create(conn, checkfirst=True)
        version = conn.execute(sa.select(schema_version.c.version)).scalar()
        if version is None:
            conn.execute(schema_version.insert().values(version=0))
            version = 0
        if version > CURRENT_VERSION:
            raise SchemaTooNew(
                f"the oplog database is at schema version {version}, but this orch knows only up to "
                f"{CURRENT_VERSION}: upgrade orch"
            )
        for migration in MIGRATIONS[version:]:
            migration(conn)
        if version < CURRENT_VERSION:
            conn.execute(schema_version.update().values(version=CURRENT_VERSION))
    return CURRENT_VERSION
