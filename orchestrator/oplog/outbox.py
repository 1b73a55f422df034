"""The outbox: tracker notes waiting for delivery, kept in the oplog so that none is lost when the tracker is
down. Rows are claimed before a delivery (so two orch processes never send the same note at once), marked
`sent` after it, or rescheduled with a growing delay when it failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from . import process
from .rows import iso
from .schema import operations, outbox
from .text import clean, clean_json

CLAIM_SECONDS = 120  # a delivery that takes longer than this may be started again by someone else
BACKOFF_BASE = 30  # seconds before the first retry; doubled after each failure...
BACKOFF_MAX = 6 * 3600  # ...up to this


def add(
    engine: sa.Engine,
    *,
    key: str,
    operation_id: int | None,
    task: str,
    site: str | None,
    tracker: str,
    issue: str,
    payload: dict,
) -> bool:
    """Given a note for a tracker issue and its unique key, queue it; return False if that key is queued already."""
    now = process.now()
    try:
        with engine.begin() as conn:
            conn.execute(
                outbox.insert().values(
                    key=key,
                    operation_id=operation_id,
                    task=str(task),
                    site=site,
                    tracker=tracker,
                    issue=str(issue),
                    payload=clean_json(payload),
                    status="pending",
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


def enclosing(engine: sa.Engine, op_id: int) -> int | None:
    """Given an operation, return the id of the operation of the same process and site that was running when
    it started and still runs (a promotion around its mandatory backup), or None. Its note tells both."""
    inner = operations.alias("inner")
    query = (
        sa.select(operations.c.id)
        .join(inner, inner.c.id == op_id)
        .where(
            operations.c.status == "running",
            operations.c.id < inner.c.id,
            operations.c.pid == inner.c.pid,
            operations.c.host == inner.c.host,
            operations.c.site == inner.c.site,
        )
        .order_by(operations.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def claim_due(engine: sa.Engine, *, everything: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """Return pending notes that are due (all pending ones with everything), each claimed for this process."""
    now = process.now()
    query = sa.select(outbox.c.id).where(
        outbox.c.status == "pending", sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now)
    )
    if not everything:
        query = query.where(outbox.c.next_attempt_at <= now)
    with engine.connect() as conn:
        ids = conn.execute(query.order_by(outbox.c.id).limit(limit)).scalars().all()
    claimed = []
    for row_id in ids:
        with engine.begin() as conn:
            # the WHERE repeats the conditions: of two processes claiming one row, one updates it, one sees 0 rows
            taken = conn.execute(
                outbox.update()
                .where(
                    outbox.c.id == row_id,
                    outbox.c.status == "pending",
                    sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
                )
                .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
            ).rowcount
            if taken:
                claimed.append(_as_dict(conn.execute(sa.select(outbox).where(outbox.c.id == row_id)).one()))
    return claimed


def sent(engine: sa.Engine, row_id: int, remote: dict) -> None:
    """Given a delivered note and what the tracker answered (note and time entry ids), mark it sent."""
    with engine.begin() as conn:
        conn.execute(
            outbox.update()
            .where(outbox.c.id == row_id)
            .values(
                status="sent",
                sent_at=process.now(),
                remote=clean_json(remote),
                claimed_until=None,
                last_error=None,
                attempts=outbox.c.attempts + 1,
            )
        )


def failed(engine: sa.Engine, row_id: int, error: str, attempts: int) -> None:
    """Given a note whose delivery failed (its attempts so far before this one), schedule the next try."""
    delay = min(BACKOFF_BASE * 2**attempts, BACKOFF_MAX)
    with engine.begin() as conn:
        conn.execute(
            outbox.update()
            .where(outbox.c.id == row_id)
            .values(
                last_error=clean(error)[:1000],
                attempts=attempts + 1,
                claimed_until=None,
                next_attempt_at=process.now() + timedelta(seconds=delay),
            )
        )


def release(engine: sa.Engine, row_id: int) -> None:
    """Given a note claimed but not tried, let anyone claim it again at once."""
    with engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.id == row_id).values(claimed_until=None))


def listing(
    engine: sa.Engine, *, status: str | None = None, task: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Return notes (newest first), optionally only those of one status or task."""
    query = sa.select(outbox).order_by(outbox.c.id.desc())
    if status:
        query = query.where(outbox.c.status == status)
    if task:
        query = query.where(outbox.c.task == str(task))
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_as_dict(row) for row in conn.execute(query)]


def _as_dict(row: sa.Row) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("created_at", "next_attempt_at", "claimed_until", "sent_at"):
        data[key] = iso(data[key])
    return data
