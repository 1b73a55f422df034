"""The operation log: open (and migrate) the database, start operations, reap dead ones, query, lock."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import UsageError

from . import chain, process
from . import envs as env_registry
from . import locks as site_locks
from .engine import inserted_id, make_engine
from .operation import Operation
from .rows import artifact_dict, operation_dict, seconds, step_dict
from .schema import artifacts, migrate, operations, steps
from .text import clean, clean_json

_IN_CHUNK = 500  # ids per IN (...) when loading details; stays far below any driver's parameter limit


class OperationNotFound(UsageError, LookupError):
    """No operation has the requested id."""


class Oplog:
    """The operation log of one database (a SQLite file by default, PostgreSQL for teams)."""

    def __init__(self, url: str):
        """Given a database URL (or a SQLite file path), open it and apply pending migrations.

        Raise SchemaTooNew if the database was migrated by a newer orch.
        """
        self.engine = make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        self.finish_hooks: list = []  # called with an operation's id once it finished (tracker notes)
        migrate(self.engine)

    @classmethod
    def from_inventory(cls, inventory) -> Oplog:
        """Given a loaded inventory, return the Oplog its `oplog_url` points to."""
        return cls(inventory.oplog_url)

    def close(self) -> None:
        """Release pooled connections (an Oplog must not be shared across fork())."""
        self.engine.dispose()

    def __enter__(self) -> Oplog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recording ---------------------------------------------------------------------------------------------

    def start(
        self,
        *,
        task: str,
        site: str | None,
        env: str | None,
        action: str,
        params: dict | None = None,
        catch_up: bool = False,
    ) -> Operation:
        """Given what is about to run, record it as a running operation of this process and return its handle."""
        task = str(task)
        started = process.now()
        with self.engine.begin() as conn:
            op_id = inserted_id(
                conn.execute(
                    operations.insert().values(
                        task=task,
                        site=site,
                        env=env,
                        action=action,
                        actor=process.actor(),
                        host=process.machine(),
                        pid=os.getpid(),
                        params=clean_json(params or {}),
                        started_at=started,
                        status="running",
                        catch_up=catch_up,
                    )
                )
            )
        return Operation(
            self.engine,
            op_id,
            task=task,
            site=site,
            env=env,
            action=action,
            started_at=started,
            on_finish=self.finish_hooks,
        )

    def refused(self, *, task: str, site: str | None, env: str | None, action: str, error: str) -> int:
        """Given a command that stopped before changing anything, record it as a `refused` operation with the
        reason (masked); return its id. A PM then sees what was tried under the task, and why it stopped."""
        op = self.start(task=task, site=site, env=env, action=action)
        op.finish("refused", error=error)
        return op.id

    def reap(self, leftovers: Callable[[dict[str, Any]], str | None] | None = None) -> int:
        """Mark running operations of dead processes on this machine (and their running steps) interrupted.

        Return how many operations were marked. Operations of other machines are left alone: we cannot see
        their processes. `leftovers`, given a dead operation (id, pid, host, site, env, action), stops whatever
        of it may still run on its hosts and returns a note for its error (or None).
        """
        with self.engine.begin() as conn:
            running = conn.execute(
                sa.select(
                    operations.c.id,
                    operations.c.pid,
                    operations.c.started_at,
                    operations.c.host,
                    operations.c.site,
                    operations.c.env,
                    operations.c.action,
                ).where(operations.c.status == "running", operations.c.host == process.machine())
            ).all()
        dead = [row for row in running if not process.pid_alive(row.pid)]
        for row in dead:
            self._mark_interrupted(row, leftovers(dict(row._mapping)) if leftovers else None)
        return len(dead)

    def _mark_interrupted(self, row: sa.Row, note: str | None = None) -> None:
        now = process.now()
        error = f"process {row.pid} on {process.machine()} ended without finishing the operation"
        error = clean(f"{error}; {note}" if note else error)
        with self.engine.begin() as conn:
            head = chain.lock_head(conn)
            # The status condition keeps a concurrent reaper (or a late finish) from being overwritten.
            conn.execute(
                operations.update()
                .where(operations.c.id == row.id, operations.c.status == "running")
                .values(status="interrupted", error=error, finished_at=now, duration=seconds(row.started_at, now))
            )
            conn.execute(
                steps.update()
                .where(steps.c.operation_id == row.id, steps.c.status == "running")
                .values(status="interrupted", finished_at=now)
            )
            chain.append_operation(conn, row.id, head)

    # -- querying ----------------------------------------------------------------------------------------------

    def operations(
        self,
        *,
        task: str | None = None,
        site: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
        with_details: bool = False,
    ) -> list[dict[str, Any]]:
        """Given filters, return matching operations as JSON-ready dicts, newest first unless oldest_first.

        With with_details each dict also carries its "steps" and "artifacts" lists.
        """
        query = sa.select(operations)
        if task is not None:
            query = query.where(operations.c.task == str(task))
        if site is not None:
            query = query.where(operations.c.site == site)
        if action is not None:
            query = query.where(operations.c.action == action)
        if since is not None:
            query = query.where(operations.c.started_at >= since)
        direction = sa.asc if oldest_first else sa.desc
        query = query.order_by(direction(operations.c.started_at), direction(operations.c.id))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.begin() as conn:
            result = [operation_dict(row) for row in conn.execute(query)]
            if with_details:
                self._attach_details(conn, result)
        return result

    def recent_durations(self, actions: list[str], per: int) -> dict[tuple[str, str, str], list[float]]:
        """Given actions, return {(site, env, action): durations (s) of its last `per` successful runs, newest
        first}, for every site at once: one query, however large the fleet."""
        recent = (
            sa.select(
                operations.c.site,
                operations.c.env,
                operations.c.action,
                operations.c.duration,
                sa.func.row_number()
                .over(
                    partition_by=(operations.c.site, operations.c.env, operations.c.action),
                    order_by=(operations.c.started_at.desc(), operations.c.id.desc()),
                )
                .label("n"),
            )
            .where(operations.c.action.in_(actions), operations.c.status == "ok", operations.c.duration.is_not(None))
            .subquery()
        )
        found: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        with self.engine.begin() as conn:
            for row in conn.execute(sa.select(recent).where(recent.c.n <= per).order_by(recent.c.n)):
                found[(row.site, row.env, row.action)].append(row.duration)
        return dict(found)

    def operation(self, op_id: int) -> dict[str, Any]:
        """Given an operation id, return its dict with steps and artifacts; raise OperationNotFound if none."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(operations).where(operations.c.id == op_id)).first()
            if row is None:
                raise OperationNotFound(f"no operation {op_id} in the oplog")
            result = [operation_dict(row)]
            self._attach_details(conn, result)
        return result[0]

    @staticmethod
    def _attach_details(conn: sa.Connection, ops: list[dict[str, Any]]) -> None:
        """Given operation dicts, add to each its "steps" (by seq) and "artifacts" (by creation)."""
        found_steps: dict[int, list] = defaultdict(list)
        found_artifacts: dict[int, list] = defaultdict(list)
        ids = [op["id"] for op in ops]
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            for row in conn.execute(
                sa.select(steps).where(steps.c.operation_id.in_(chunk)).order_by(steps.c.operation_id, steps.c.seq)
            ):
                found_steps[row.operation_id].append(step_dict(row))
            for row in conn.execute(
                sa.select(artifacts)
                .where(artifacts.c.operation_id.in_(chunk))
                .order_by(artifacts.c.operation_id, artifacts.c.id)
            ):
                found_artifacts[row.operation_id].append(artifact_dict(row))
        for op in ops:
            op["steps"] = found_steps[op["id"]]
            op["artifacts"] = found_artifacts[op["id"]]

    # -- locks -------------------------------------------------------------------------------------------------

    def acquire_lock(
        self, site: str, *, task: str, operation_id: int | None, ttl_seconds: int = site_locks.DEFAULT_TTL
    ) -> None:
        """Given a site, lock it for this process (reclaiming a stale lock); raise LockHeld if someone holds it."""
        site_locks.acquire(self.engine, site, task=str(task), operation_id=operation_id, ttl_seconds=ttl_seconds)

    def extend_lock(self, site: str, operation_id: int, ttl_seconds: int = site_locks.DEFAULT_TTL) -> bool:
        """Renew the lock an operation holds; return False if it does not hold it any more."""
        return site_locks.extend(self.engine, site, operation_id, ttl_seconds)

    def release_lock(self, site: str, operation_id: int | None) -> None:
        """Given a site and the operation that locked it, unlock it if that operation holds the lock."""
        site_locks.release(self.engine, site, operation_id)

    def force_unlock(self, site: str, *, task: str, live: bool = False) -> dict[str, Any] | None:
        """Given a site, remove its lock if the holder is gone (or whatever holds it, live=True) and return the
        removed lock's dict (None if it was not locked); raise Refused if the holder is alive and live is False.

        `task` is the task the unlock is done for; the caller records the `unlock` operation against it.
        """
        if not str(task).strip():
            raise UsageError("force-unlocking a site needs a task")
        return site_locks.force(self.engine, site, live=live)

    def locks(self) -> list[dict[str, Any]]:
        """Return every current lock as a dict (site, task, operation_id, action, holder, host, pid, times, stale)."""
        return site_locks.listing(self.engine)

    # -- environments made at run time ---------------------------------------------------------------------

    def record_env(self, site: str, name: str, **fields: Any) -> None:
        """Register (or re-register) a run-time environment: task, host, path, url, database, details."""
        env_registry.record(self.engine, site, name, **fields)

    def update_env(self, site: str, name: str, **details: Any) -> None:
        env_registry.update_details(self.engine, site, name, **details)

    def env_destroyed(self, site: str, name: str) -> None:
        env_registry.mark_destroyed(self.engine, site, name)

    def envs(self, site: str | None = None, *, include_destroyed: bool = False) -> list[dict[str, Any]]:
        """Return run-time environments (live ones unless include_destroyed), oldest first."""
        return env_registry.listing(self.engine, site, include_destroyed=include_destroyed)
