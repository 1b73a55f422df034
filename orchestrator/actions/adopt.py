"""`orch adopt`: convert an in-place production docroot to the releases layout."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import layouts
from orchestrator.backends.remote import Command, connect
from orchestrator.errors import UsageError

from .backup import backup_target
from .plan import Plan, execute
from .targets import Target, target


@dataclass
class AdoptPlan(Plan):
    """Move production's docroot into PATH.releases/releases/1, with content and config in shared/."""

    target: Target
    shared: tuple[str, ...]  # content and config paths moved to shared/ (when the docroot has them)

    @property
    def root(self) -> str:
        return layouts.releases_root(self.target.path)

    def lines(self) -> list[str]:
        path = self.target.path
        return [
            f"safety backup of {path}",
            f"copy {path} into {self.root}/releases/1",
            *[f"share {rel} (moved to {self.root}/shared/, linked back)" for rel in self.shared],
            f"swap {path} for a link to {self.root}/current (one atomic rename)",
        ]

    def params(self) -> dict:
        return {"layout": "releases"}


def plan_adopt(inventory, site_name: str, *, layout: str, task: str) -> AdoptPlan:
    """Given a site, return the plan converting its production to `layout` (reads only); raise UsageError if
    the layout is not `releases` or production is in it already."""
    if layout != "releases":
        raise UsageError("only `--layout releases` can be adopted")
    prod = target(inventory, site_name, "production")
    playbook = playbook_for_site(prod.site)
    shared = [p.strip("/") for p in playbook.content if not any(c in p for c in "*?[")]
    shared += [c.path for c in playbook.config]
    with connect(prod.host) as conn:
        if conn.ok(Command("test", "-L", prod.path)):
            raise UsageError(f"{prod.path} is already a symlink (releases layout?)")
        if not conn.ok(Command("test", "-d", prod.path)):
            raise UsageError(f"{prod.label}: {prod.path} is not a folder on {prod.host.name}")
    return AdoptPlan("adopt", prod.site.name, "production", task, prod, tuple(shared))


def adopt(oplog, inventory, plan: AdoptPlan) -> dict:
    """Given a plan, convert production (after a safety backup, under the lock); return what was done."""

    def recheck(p: AdoptPlan) -> AdoptPlan:  # another adopt may have finished while we waited
        return plan_adopt(inventory, p.target.site.name, layout="releases", task=p.task)

    return execute(oplog, plan, lambda op, p: _apply_adopt(oplog, op, p), recheck=recheck)


def _apply_adopt(oplog, op, plan: AdoptPlan) -> dict:
    prod = plan.target
    as_found = Target(replace(prod.site, layout="inplace"), prod.env, prod.host, prod.storage)
    with connect(prod.host) as conn:
        with op.step("safety backup") as step:
            backup = backup_target(oplog, as_found, task=plan.task, lock=False)
            op.artifact("pre-adopt-backup", backup["backup_id"])
            step.output(backup["backup_id"])
        with op.step("move the docroot into releases/1 and switch atomically") as step:
            result = layouts.adopt(conn, prod.path, list(plan.shared))
            step.output(str(result))
        revision = layouts.new_revision("1", plan.task, "adopt", op.id, 0)
        layouts.Releases(conn, prod.path).write_revision(posixpath.join(result["root"], "releases", "1"), revision)
    op.artifact("revision", revision["revision"], details=revision)
    note = "" if prod.site.layout == "releases" else f"now set `layout: releases` in sites/{prod.site.name}.yaml"
    return {"site": prod.site.name, **result, "backup_id": backup["backup_id"], "note": note}
