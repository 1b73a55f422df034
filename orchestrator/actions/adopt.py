"""`orch adopt`: convert an in-place production docroot to the releases layout."""
from __future__ import annotations

import posixpath
from dataclasses import replace

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import layouts
from orchestrator.backends.remote import connect
from orchestrator.errors import UsageError
from orchestrator.oplog.run import locked_operation

from .backup import backup_target
from .targets import Target, target


def adopt(oplog, inventory, site_name: str, *, layout: str, task: str) -> dict:
    """Convert an in-place production docroot to the releases layout (after a safety backup)."""
    if layout != "releases":
        raise UsageError("only `--layout releases` can be adopted")
    site = inventory.site(site_name)
    prod = target(inventory, site.name, "production")
    as_found = Target(replace(site, layout="inplace"), prod.env, prod.host, prod.storage)
    playbook = playbook_for_site(site)
    shared = [p.strip("/") for p in playbook.content if not any(c in p for c in "*?[")]
    shared += [c.path for c in playbook.config]
    with locked_operation(oplog, site=site.name, env="production", task=task, action="adopt",
                          params={"layout": layout}) as op, connect(prod.host) as conn:
        with op.step("safety backup") as step:
            backup = backup_target(oplog, as_found, task=task, lock=False)
            op.artifact("pre-adopt-backup", backup["backup_id"])
            step.output(backup["backup_id"])
        with op.step("move the docroot into releases/1 and switch atomically") as step:
            result = layouts.adopt(conn, prod.env.path, shared)
            step.output(str(result))
        revision = layouts.new_revision(1, task, "adopt", op.id, 0)
        layouts.Releases(conn, prod.env.path).write_revision(posixpath.join(result["root"], "releases", "1"),
                                                             revision)
        op.artifact("revision", revision["revision"], details=revision)
        note = "" if site.layout == "releases" else f"; now set `layout: releases` in sites/{site.name}.yaml"
        return {"site": site.name, **result, "backup_id": backup["backup_id"], "note": note.lstrip("; ")}
