"""Closing the books when the daemon stops before its running operations finished.

The operations run in worker threads that cannot be interrupted from outside; the daemon exits without them.
Before it does, their rows say `interrupted` (with why), their running steps too, and their site locks are
released, so the oplog never shows a `running` operation of a process that is gone, and the next run of
the site is not refused by a lock nobody holds.
"""

from __future__ import annotations

import os

import sqlalchemy as sa

from orchestrator.oplog import chain, process
from orchestrator.oplog.schema import locks, operations, steps
from orchestrator.oplog.text import clean


def interrupt_own_operations(oplog, reason: str) -> list[int]:
    """Given the oplog and why, mark this process's running operations (and steps) interrupted and release
    their locks; return their ids."""
    mine = sa.and_(
        operations.c.status == "running", operations.c.host == process.machine(), operations.c.pid == os.getpid()
    )
    now = process.now()
    with oplog.engine.begin() as conn:
        head = chain.lock_head(conn)
        rows = conn.execute(sa.select(operations.c.id, operations.c.started_at).where(mine)).all()
        for row in rows:
            # the status condition keeps an operation that finished meanwhile as it finished
            conn.execute(
                operations.update()
                .where(operations.c.id == row.id, operations.c.status == "running")
                .values(
                    status="interrupted",
                    error=clean(reason),
                    finished_at=now,
                    duration=round((now - row.started_at).total_seconds(), 3),
                )
            )
            conn.execute(
                steps.update()
                .where(steps.c.operation_id == row.id, steps.c.status == "running")
                .values(status="interrupted", finished_at=now)
            )
            conn.execute(locks.delete().where(locks.c.operation_id == row.id))
            head = chain.append_operation(conn, row.id, head)
    return [row.id for row in rows]
