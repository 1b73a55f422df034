"""`orch staging gc --older-than 14d`: remove the staging copies older than an age, on staging hosts and on
Docker hosts alike, each by its own `destroy` (one locked operation per copy, recorded under the task).

On Docker hosts it also finds the copies that only their labels know of (a create that died before it could
register, a registry that was reset): their age is the creation time in their labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from orchestrator.ages import age_text
from orchestrator.errors import OrchError

from . import staging
from .plan import Plan


@dataclass
class GcPlan(Plan):
    """Which copies go (older than the age) and which stay."""

    older_than: timedelta = timedelta(days=14)
    remove: list[dict] = field(default_factory=list)
    keep: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"destroy {c['site']}/{c['env']} ({c['target']}, {c['age']} old, task {c['task']})" for c in self.remove
        ] or [f"nothing older than {_text(self.older_than)}"]

    def params(self) -> dict:
        return {"older_than": _text(self.older_than), "remove": [f"{c['site']}/{c['env']}" for c in self.remove]}

    def as_dict(self) -> dict:
        return {"older_than": _text(self.older_than), "remove": self.remove, "keep": self.keep, "plan": self.lines()}


def _text(age: timedelta) -> str:
    return age_text(age.total_seconds(), exact=True)


def plan_gc(oplog, inventory, *, older_than: timedelta, task: str, sites: list[str] | None = None) -> GcPlan:
    """Given an age, return which copies (of the named sites, or all) are older and go. Reads only; raise
    InventoryError for an unknown site."""
    for name in sites or []:
        inventory.site(name)
    plan = GcPlan("staging-gc", None, None, task, older_than)
    for row in staging.listing(oplog, None, inventory):
        if sites and row["site"] not in sites:
            continue
        entry = {
            "site": row["site"],
            "env": row["name"],
            "target": row["target"],
            "task": row.get("task"),
            "age": row["age"],
            "age_seconds": row["age_seconds"],
            "status": row["status"],
        }
        if row["site"] not in inventory.sites:
            plan.keep.append(entry | {"why": "its site is not in the inventory"})
        elif row["age_seconds"] is None or row["age_seconds"] < older_than.total_seconds():
            plan.keep.append(entry | {"why": f"younger than {_text(older_than)}"})
        else:
            plan.remove.append(entry)
    return plan


def gc(oplog, inventory, plan: GcPlan) -> list[dict]:
    """Destroy each copy the plan removes (each planned again and locked on its own); return one result per copy
    (`destroyed`, or `failed` with the error). A copy that fails does not stop the others."""
    results = []
    for copy in plan.remove:
        try:
            destroy = staging.plan_destroy(oplog, inventory, copy["site"], name=copy["env"], task=plan.task)
            staging.destroy(oplog, inventory, destroy)
            results.append(copy | {"result": "destroyed", "error": None})
        except OrchError as exc:
            results.append(copy | {"result": "failed", "error": str(exc)})
    return results
