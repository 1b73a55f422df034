"""Per-site locks: one row per locked site, made atomic by the PRIMARY KEY on `locks.site`.

Acquire = INSERT; a conflict means someone holds the site. A stale holder (expired, or a dead process on this
machine) is reclaimed with a DELETE that matches the stale row exactly, followed by the INSERT, in one
transaction: of two processes reclaiming the same stale lock only one deletes a row, the other retries and sees
the winner's lock.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import LockHeld, OrchError, Refused

from . import process
from .rows import lock_dict
from .schema import locks, operations

# A live holder renews its lock every TTL/3 (locked_operation's heartbeat), so the TTL only has to outlast a
# stalled heartbeat: a holder that died on another machine (where we cannot check its pid) frees the site soon.
DEFAULT_TTL = 15 * 60
_ATTEMPTS = 5  # each failed attempt means another process changed the row under us; this bounds the churn


def acquire(engine: sa.Engine, site: str, *, task: str, operation_id: int | None, ttl_seconds: int) -> None:
    """Given a site, take its lock for this process; return quietly if this process's operation holds it already.

    Reclaim the lock if its holder is stale. Raise LockHeld (saying who holds it) if a live holder has it.
    """
    for _ in range(_ATTEMPTS):
        if _insert(engine, site, task=task, operation_id=operation_id, ttl_seconds=ttl_seconds):
            return
        current = _current(engine, site)
        if current is None:
            continue  # released between our INSERT and our look: try again
        row, action = current
        if _is_mine(row, operation_id):
            return
        if not is_stale(row, process.now()):
            raise LockHeld(held_message(row, action))
        if _reclaim(engine, row, task=task, operation_id=operation_id, ttl_seconds=ttl_seconds):
            return
    raise OrchError(f"could not lock site {site!r}: the lock kept changing hands, try again")


def extend(engine: sa.Engine, site: str, operation_id: int, ttl_seconds: int) -> bool:
    """Given a site and the operation holding it, push its expiry ttl_seconds ahead; False if it is not held."""
    with engine.begin() as conn:
        updated = conn.execute(
            locks.update()
            .where(locks.c.site == site, locks.c.operation_id == operation_id)
            .values(expires_at=process.now() + timedelta(seconds=ttl_seconds))
        )
        return bool(updated.rowcount)


def release(engine: sa.Engine, site: str, operation_id: int | None) -> None:
    """Given a site and the operation that locked it, drop the lock if (and only if) that operation holds it."""
    if operation_id is not None:
        mine = locks.c.operation_id == operation_id
    else:
        mine = sa.and_(locks.c.operation_id.is_(None), locks.c.host == process.machine(), locks.c.pid == os.getpid())
    with engine.begin() as conn:
        conn.execute(locks.delete().where(locks.c.site == site, mine))


def force(engine: sa.Engine, site: str, *, live: bool = False) -> dict[str, Any] | None:
    """Given a site, remove its lock if its holder is gone (the lock is stale), or whatever holds it with
    live=True; return the removed lock's dict (`stale` says whether its holder was gone), or None if it was not
    locked. Raise Refused naming the holder if it is alive and live is False."""
    for _ in range(_ATTEMPTS):
        current = _current(engine, site)
        if current is None:
            return None
        row, action = current
        stale = is_stale(row, process.now())
        if not stale and not live:
            raise Refused(
                f"{held_message(row, action)}, and {_alive(row)}: removing the lock would let two "
                "operations run on the site at once. If you are sure it is gone, use --force"
            )
        with engine.begin() as conn:
            if conn.execute(locks.delete().where(*_same_row(row))).rowcount:
                return lock_dict(row, action=action, stale=stale)
    raise OrchError(f"could not unlock site {site!r}: the lock kept changing hands, try again")


def _alive(row: sa.Row) -> str:
    """Given a live lock row, return why we believe its holder is alive."""
    if row.host == process.machine():
        return f"process {row.pid} still runs on this machine"
    renewed = row.expires_at - timedelta(seconds=DEFAULT_TTL)
    minutes = max(0, round((process.now() - renewed).total_seconds() / 60))
    return (
        f"its heartbeat from {row.host} is fresh (renewed about {minutes} min ago; it expires "
        f"{row.expires_at.strftime('%H:%M UTC')} if the holder is gone)"
    )


def listing(engine: sa.Engine) -> list[dict[str, Any]]:
    """Return every lock as a dict, ordered by site, each flagged `stale` if it could be reclaimed now."""
    now = process.now()
    with engine.begin() as conn:
        rows = conn.execute(_with_action().order_by(locks.c.site)).all()
    return [lock_dict(row, action=row.action, stale=is_stale(row, now)) for row in rows]


def is_stale(row: sa.Row, now: datetime) -> bool:
    """Given a lock row, return whether it may be reclaimed: expired, or held by a dead process on this machine."""
    if row.expires_at <= now:
        return True
    return row.host == process.machine() and not process.pid_alive(row.pid)


def held_message(row: sa.Row, action: str | None) -> str:
    """Given a live lock row and its operation's action, return the one-line "who holds it" message."""
    since = row.acquired_at.strftime("%Y-%m-%d %H:%M UTC")
    text = f"site {row.site!r} is locked by {row.holder} (pid {row.pid}) for task {row.task} since {since}"
    if row.operation_id is not None:
        text += f" (operation {row.operation_id}, {action or 'unknown action'})"
    return text


def _insert(engine: sa.Engine, site: str, *, task: str, operation_id: int | None, ttl_seconds: int) -> bool:
    """Try to INSERT our lock row; return False if the site is already locked."""
    try:
        with engine.begin() as conn:
            conn.execute(locks.insert().values(_our_row(site, task, operation_id, ttl_seconds)))
    except sa.exc.IntegrityError:
        return False
    return True


def _reclaim(engine: sa.Engine, stale: sa.Row, *, task: str, operation_id: int | None, ttl_seconds: int) -> bool:
    """Given the stale lock row we saw, replace it by ours atomically; return False if someone beat us to it."""
    try:
        with engine.begin() as conn:
            if not conn.execute(locks.delete().where(*_same_row(stale))).rowcount:
                return False
            conn.execute(locks.insert().values(_our_row(stale.site, task, operation_id, ttl_seconds)))
    except sa.exc.IntegrityError:
        return False
    return True


def _our_row(site: str, task: str, operation_id: int | None, ttl_seconds: int) -> dict[str, Any]:
    now = process.now()
    return {
        "site": site,
        "task": str(task),
        "operation_id": operation_id,
        "holder": process.actor(),
        "host": process.machine(),
        "pid": os.getpid(),
        "acquired_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
    }


def _same_row(row: sa.Row) -> list[sa.ColumnElement[bool]]:
    """Given a lock row we read, return WHERE clauses matching exactly that row and not a newer lock."""
    return [
        locks.c.site == row.site,
        locks.c.holder == row.holder,
        locks.c.host == row.host,
        locks.c.pid == row.pid,
        locks.c.acquired_at == row.acquired_at,
    ]


def _is_mine(row: sa.Row, operation_id: int | None) -> bool:
    return row.host == process.machine() and row.pid == os.getpid() and row.operation_id == operation_id


def _with_action() -> sa.Select:
    return sa.select(locks, operations.c.action).outerjoin(operations, operations.c.id == locks.c.operation_id)


def _current(engine: sa.Engine, site: str) -> tuple[sa.Row, str | None] | None:
    """Given a site, return its lock row and the locking operation's action, or None if it is not locked."""
    with engine.begin() as conn:
        row = conn.execute(_with_action().where(locks.c.site == site)).first()
    return None if row is None else (row, row.action)
