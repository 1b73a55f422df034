"""The registry of environments orch created at run time (per-task staging copies)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .process import now
from .rows import iso
from .schema import environments
from .text import clean_json


def record(
    engine: sa.Engine,
    site: str,
    name: str,
    *,
    task: str,
    host: str,
    path: str,
    url: str | None,
    database: dict | None,
    details: dict | None,
) -> None:
    """Create or replace the registry row of an environment (a re-created env starts fresh)."""
    values = {
        "task": str(task),
        "host": host,
        "path": path,
        "url": url,
        "database": clean_json(database),
        "details": clean_json(details),
        "updated_at": now(),
        "destroyed_at": None,
    }
    with engine.begin() as conn:
        where = (environments.c.site == site) & (environments.c.name == name)
        if conn.execute(sa.select(environments.c.site).where(where)).first():
            conn.execute(environments.update().where(where).values(**values))
        else:
            conn.execute(environments.insert().values(site=site, name=name, created_at=now(), **values))


def update_details(engine: sa.Engine, site: str, name: str, **details: Any) -> None:
    """Merge keys into an environment's details."""
    with engine.begin() as conn:
        where = (environments.c.site == site) & (environments.c.name == name)
        current = conn.execute(sa.select(environments.c.details).where(where)).scalar() or {}
        conn.execute(environments.update().where(where).values(details=clean_json(current | details), updated_at=now()))


def mark_destroyed(engine: sa.Engine, site: str, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            environments.update()
            .where((environments.c.site == site) & (environments.c.name == name))
            .values(destroyed_at=now(), updated_at=now())
        )


def listing(engine: sa.Engine, site: str | None = None, *, include_destroyed: bool = False) -> list[dict]:
    """Return registered environments (live ones unless include_destroyed), oldest first."""
    query = sa.select(environments).order_by(environments.c.created_at)
    if site:
        query = query.where(environments.c.site == site)
    if not include_destroyed:
        query = query.where(environments.c.destroyed_at.is_(None))
    with engine.connect() as conn:
        return [_as_dict(row) for row in conn.execute(query)]


def _as_dict(row) -> dict:
    data = dict(row._mapping)
    for key in ("created_at", "updated_at", "destroyed_at"):
        data[key] = iso(data[key])
    return data
