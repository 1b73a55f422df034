"""A read-only view of the oplog for the pages: on SQLite, page views never take (or wait for) the write lock.

The oplog's own engine starts every SQLite transaction with BEGIN IMMEDIATE, which is right for orch's writers but
would make each page view hold the database's write lock while it reads, so a backup finishing a step would wait
for a PM's page. The pages read through a second engine instead: the file opened read-only (`mode=ro`), each
query a WAL snapshot that neither blocks nor waits for writers. PostgreSQL readers never block writers: the
oplog's engine serves as it is.
"""

from __future__ import annotations

import copy

import sqlalchemy as sa

from orchestrator.oplog.engine import BUSY_TIMEOUT_MS


def read_only(oplog):
    """Given an open (migrated) Oplog, return an Oplog on the same database for reading only."""
    url = oplog.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return oplog
    reader = copy.copy(oplog)
    reader.finish_hooks = []
    reader.engine = sa.create_engine(
        f"sqlite:///file:{url.database}?mode=ro&uri=true",
        connect_args={"uri": True, "timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    return reader
