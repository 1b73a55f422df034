"""Turn oplog rows into the JSON-ready dicts the CLI, reports and the web page print.

The keys here are a contract: add keys if needed, never rename or drop one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa


def iso(value: datetime | None) -> str | None:
    """Given an aware datetime (or None), return its ISO 8601 text (or None)."""
    return value.isoformat() if value else None


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    """Given two datetimes, return the seconds between them rounded to ms, or None if either is missing."""
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def operation_dict(row: sa.Row) -> dict[str, Any]:
    """Given an `operations` row, return its public dict."""
    return {
        "id": row.id,
        "task": row.task,
        "site": row.site,
        "env": row.env,
        "action": row.action,
        "actor": row.actor,
        "host": row.host,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "duration": row.duration,
        "status": row.status,
        "error": row.error,
        "catch_up": bool(row.catch_up),
        "params": row.params or {},
    }


def step_dict(row: sa.Row) -> dict[str, Any]:
    """Given a `steps` row, return its public dict."""
    return {
        "seq": row.seq,
        "name": row.name,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "duration": seconds(row.started_at, row.finished_at),
        "status": row.status,
        "output": row.output or "",
    }


def artifact_dict(row: sa.Row) -> dict[str, Any]:
    """Given an `artifacts` row, return its public dict."""
    return {
        "kind": row.kind,
        "ident": row.ident,
        "size": row.size,
        "details": row.details or {},
        "created_at": iso(row.created_at),
    }


def lock_dict(row: sa.Row, *, action: str | None = None, stale: bool = False) -> dict[str, Any]:
    """Given a `locks` row (plus its operation's action and whether it is stale), return its public dict."""
    return {
        "site": row.site,
        "task": row.task,
        "operation_id": row.operation_id,
        "action": action,
        "holder": row.holder,
        "host": row.host,
        "pid": row.pid,
        "acquired_at": iso(row.acquired_at),
        "expires_at": iso(row.expires_at),
        "stale": stale,
    }
