"""`orch prune`: apply retention to a site's backups, forgetting both parts of each dropped backup."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.backends.remote import connect

from . import catalog, retention
from .plan import Plan, execute
from .targets import Target

DEFAULT_POLICY = {"daily": 7, "weekly": 4, "monthly": 6}


@dataclass
class PrunePlan(Plan):
    """Which backups of one environment retention keeps and which it drops."""

    target: Target
    policy: dict[str, int]
    keep: list[dict]
    drop: list[dict]

    def lines(self) -> list[str]:
        return [f"keep {b['backup_id']}  ({', '.join(b['reasons'])})" for b in self.keep] + [
            f"DROP {b['backup_id']}  (not kept by any rule)" for b in self.drop
        ]

    def params(self) -> dict:
        return {"policy": self.policy}

    def as_dict(self) -> dict:
        return {
            "site": self.site,
            "env": self.env,
            "policy": self.policy,
            "keep": [_brief(b) for b in self.keep],
            "drop": [_brief(b) for b in self.drop],
        }


def plan_prune(t: Target, *, task: str) -> PrunePlan:
    """Given a target, return the retention decision over its backups as they are listed now (reads only)."""
    policy = t.site.backup.retention or DEFAULT_POLICY
    with connect(t.host) as conn:
        keep, drop = retention.decide(catalog.list_backups(t, conn), policy)
    return PrunePlan("prune", t.site.name, t.env.name, task, t, policy, keep, drop)


def prune_target(oplog, t: Target, *, task: str, dry_run: bool = False, catch_up: bool = False) -> dict:
    """Decide which backups go; unless dry_run, forget them and prune the repository. Return the decision
    actually applied: it is decided again under the site lock, so a backup that finished meanwhile counts."""
    plan = plan_prune(t, task=task)
    if dry_run:
        return plan.as_dict() | {"dry_run": True}
    applied = execute(oplog, plan, _apply_prune, recheck=lambda p: plan_prune(p.target, task=p.task), catch_up=catch_up)
    return applied.as_dict() | {"dry_run": False}


def _apply_prune(op, plan: PrunePlan) -> PrunePlan:
    t = plan.target
    with connect(t.host) as conn:
        t.repository.unlock_stale(conn)  # a crashed run's lock would block forget/prune forever
        with op.step(f"forget {len(plan.drop)} backup(s) and prune") as step:
            ids = [snap for b in plan.drop for snap in b["snapshots"].values()]
            t.repository.forget(conn, ids, prune=True)
            step.output(
                f"kept {len(plan.keep)}, dropped {len(plan.drop)}: " + ", ".join(b["backup_id"] for b in plan.drop)
            )
    for b in plan.drop:
        op.artifact("forgotten-backup", b["backup_id"], details={"snapshots": b["snapshots"]})
    return plan


def _brief(backup: dict) -> dict:
    return {k: backup[k] for k in ("backup_id", "time", "task", "pinned", "status", "snapshots", "reasons")}


@dataclass
class PinPlan(Plan):
    """Pin (or unpin) one backup: the `pinned` tag on each of its snapshots."""

    target: Target
    backup: dict
    pinned: bool

    def lines(self) -> list[str]:
        return [f"{'pin' if self.pinned else 'unpin'} backup {self.backup['backup_id']}"]

    def params(self) -> dict:
        return {"backup_id": self.backup["backup_id"]}


def plan_pin(t: Target, *, backup_id: str, task: str, pinned: bool) -> PinPlan:
    """Given a backup id (or prefix, or `latest`), return the pin plan; raise UsageError if no such backup."""
    with connect(t.host) as conn:
        chosen = catalog.resolve(catalog.list_backups(t, conn), backup_id)
    return PinPlan("pin" if pinned else "unpin", t.site.name, t.env.name, task, t, chosen, pinned)


def set_pin(oplog, plan: PinPlan) -> dict:
    """Given a pin plan (see plan_pin), pin or unpin its backup (the `pinned` tag on both its snapshots)."""
    t = plan.target

    def recheck(plan: PinPlan) -> PinPlan:  # it may have been pruned while we waited for the lock
        return plan_pin(t, backup_id=plan.backup["backup_id"], task=plan.task, pinned=plan.pinned)

    def apply(op, plan: PinPlan) -> dict:
        ids = list(plan.backup["snapshots"].values())
        with connect(t.host) as conn:
            (t.repository.tag_add if plan.pinned else t.repository.tag_remove)(conn, ids, "pinned")
        op.artifact("pinned" if plan.pinned else "unpinned", plan.backup["backup_id"])
        return {"backup_id": plan.backup["backup_id"], "pinned": plan.pinned}

    return execute(oplog, plan, apply, recheck=recheck)
