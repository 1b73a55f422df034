"""What the pages read from the oplog: tasks (searched and summed), one task's operations, one site's history.

Read-only, and each page is a handful of indexed queries whatever the oplog's size: operations by task
(ix_operations_task), by site and time (ix_operations_site_started), steps and artifacts by operation id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from orchestrator.billing import total_seconds
from orchestrator.oplog.rows import iso
from orchestrator.oplog.schema import artifacts, operations

PAGE_SIZE = 50
RESULTS = ("ok", "failed", "interrupted", "rolled_back", "refused", "running")


@dataclass(frozen=True)
class TaskFilter:
    """The tasks list's search: task number (prefix), site, person (part of the actor), dates, result."""

    number: str = ""
    site: str = ""
    person: str = ""
    since: datetime | None = None
    until: datetime | None = None
    result: str = ""
    page: int = 1

    def where(self) -> list[sa.ColumnElement[bool]]:
        c = operations.c
        clauses = []
        if self.number:
            clauses.append(c.task.startswith(self.number, autoescape=True))
        if self.site:
            clauses.append(c.site == self.site)
        if self.person:
            clauses.append(c.actor.contains(self.person, autoescape=True))
        if self.since:
            clauses.append(c.started_at >= self.since)
        if self.until:
            clauses.append(c.started_at < self.until)
        if self.result:
            clauses.append(c.status == self.result)
        return clauses


def tasks(engine: sa.Engine, search: TaskFilter) -> tuple[list[dict], bool]:
    """Given a search, return one page of tasks, latest activity first, and whether a next page exists.

    Each task: {task, operations, first, last, seconds, sites: [...], statuses: {status: n}}, counted over the
    operations matching the search.
    """
    c = operations.c
    last = sa.func.max(c.started_at).label("last")
    query = (
        sa.select(
            c.task,
            sa.func.count().label("operations"),
            sa.func.min(c.started_at).label("first"),
            last,
            sa.func.sum(c.duration).label("seconds"),
        )
        .where(*search.where())
        .group_by(c.task)
        .order_by(last.desc(), c.task)
        .limit(PAGE_SIZE + 1)
        .offset((search.page - 1) * PAGE_SIZE)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        found = {
            row.task: {
                "task": row.task,
                "operations": row.operations,
                "first": iso(_aware(row.first)),
                "last": iso(_aware(row.last)),
                "seconds": row.seconds or 0,
                "sites": [],
                "statuses": {},
            }
            for row in rows[:PAGE_SIZE]
        }
        if found:
            # the page's tasks operation by operation (a few columns): sites, results, and the time with an
            # operation run inside another counted once, as on the task page
            detail = (
                sa.select(c.id, c.task, c.site, c.status, c.actor, c.host, c.started_at, c.finished_at, c.duration)
                .where(c.task.in_(list(found)), *search.where())
                .order_by(c.id)
            )
            ops: dict[str, list[dict]] = {}
            for row in conn.execute(detail):
                task = found[row.task]
                if row.site and row.site not in task["sites"]:
                    task["sites"].append(row.site)
                task["statuses"][row.status] = task["statuses"].get(row.status, 0) + 1
                ops.setdefault(row.task, []).append(
                    dict(row._mapping) | {"started_at": iso(row.started_at), "finished_at": iso(row.finished_at)}
                )
            for number, task_ops in ops.items():
                found[number]["seconds"] = total_seconds(task_ops)
    return list(found.values()), len(rows) > PAGE_SIZE


def _aware(value):
    """SQLite hands aggregates back as text without the column's type: turn them into aware datetimes."""
    if isinstance(value, str):
        from orchestrator.oplog.schema import as_utc

        return as_utc(datetime.fromisoformat(value))
    return value


def site_artifacts(engine: sa.Engine, site: str, kinds: tuple[str, ...], limit: int = 20) -> list[dict]:
    """Given a site and artifact kinds, return the newest such artifacts with their operation's facts."""
    query = (
        sa.select(
            artifacts.c.kind,
            artifacts.c.ident,
            artifacts.c.size,
            artifacts.c.details,
            artifacts.c.created_at,
            operations.c.id.label("operation_id"),
            operations.c.task,
            operations.c.env,
            operations.c.status,
            operations.c.action,
        )
        .join(operations, operations.c.id == artifacts.c.operation_id)
        .where(operations.c.site == site, artifacts.c.kind.in_(kinds))
        .order_by(operations.c.started_at.desc(), artifacts.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) | {"created_at": iso(row.created_at)} for row in conn.execute(query)]
