"""The one shape of every mutating verb: plan -> lock -> re-check under the lock -> apply.

- `plan_X(...)` reads only and holds every guard. It returns a typed Plan (a dataclass per verb, subclassing
  `Plan`) or raises a refusal (UsageError, Refused...). `--dry-run` prints the plan (`Plan.lines()`) and stops:
  the same code path, stopped after the plan.
- `execute(oplog, plan, apply, recheck=...)` records the operation, takes the site lock FIRST, re-checks the
  plan under it (what the plan relied on may have changed while we waited: a backup finished, a copy was
  destroyed), and only then applies it. A failure of the re-check ends the operation `refused`: nothing changed.
- `preflight(...)` wraps the planning of a mutating command, so a plan that refuses is still recorded under its
  task as a `refused` operation: a PM sees that something was tried, and why it stopped.

The scheduler and the CLI call the same two functions; only printing differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.errors import LockHeld, OrchError
from orchestrator.oplog.operation import Operation
from orchestrator.oplog.run import locked_operation

log = logging.getLogger("orch.plan")

P = TypeVar("P", bound="Plan")
R = TypeVar("R")


@dataclass
class Plan:
    """What one verb will do to one site and environment, decided before anything changes.

    Subclasses add their typed fields and override `lines()` (one human line per change, shown by --dry-run),
    `params()` (what the oplog records with the operation) and `as_dict()` (the --json form).
    """

    action: str
    site: str | None
    env: str | None
    task: str

    def lines(self) -> list[str]:
        """Return the plan as human lines, one per change, in the order they will happen."""
        return []

    def params(self) -> dict[str, Any]:
        """Return the JSON-ready parameters recorded with the operation."""
        return {}

    def as_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data (what `--dry-run --json` prints)."""
        return {
            "action": self.action,
            "site": self.site,
            "env": self.env,
            "task": self.task,
            **self.params(),
            "plan": self.lines(),
        }


@dataclass
class SitePlan(Plan):
    """A plan on one named environment of one named site (most verbs; not the inventory-wide ones)."""

    site: str
    env: str


def execute(
    oplog,
    plan: P,
    apply: Callable[[Operation, P], R],
    *,
    recheck: Callable[[P], P] | None = None,
    lock: bool = True,
    catch_up: bool = False,
) -> R:
    """Given a plan and the function that applies it, run it as one locked operation and return what apply returns.

    The lock is taken before anything else; `recheck(plan)` then runs under it and returns the plan to apply
    (the same one, or one brought up to date); an OrchError it raises ends the operation `refused`. A lock held
    by someone else ends it `refused` too (LockHeld propagates, exit 3). Anything `apply` raises ends it
    `failed` (or `interrupted`) and propagates.
    """
    with locked_operation(
        oplog,
        site=plan.site,
        env=plan.env,
        task=plan.task,
        action=plan.action,
        params=plan.params(),
        lock=lock,
        catch_up=catch_up,
    ) as op:
        if recheck is not None:
            try:
                plan = recheck(plan)
            except OrchError as exc:
                op.finish("refused", error=str(exc))
                raise
        return apply(op, plan)


@contextmanager
def preflight(
    oplog_factory: Callable[[], Any],
    *,
    action: str,
    task: str | None,
    site: str | None = None,
    env: str | None = None,
    dry_run: bool = False,
) -> Iterator[None]:
    """Record a refusal raised while planning a mutating command as a `refused` operation of its task.

    oplog_factory returns the Oplog (called only when there is something to record, so a broken oplog never
    hides the original error). Dry runs and commands without a task record nothing; LockHeld is recorded by
    the operation that met it.
    """
    try:
        yield
    except OrchError as exc:
        if not dry_run and task is not None and not isinstance(exc, LockHeld):
            try:
                oplog_factory().refused(task=task, site=site, env=env, action=action, error=str(exc))
            except Exception:  # noqa: BLE001 -- the refusal itself is what the user must see
                log.debug("could not record the refusal of %s in the oplog", action, exc_info=True)
        raise
