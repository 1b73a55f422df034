"""`orch prune`: apply retention to a site's backups, forgetting both parts of each dropped backup."""
from __future__ import annotations

from orchestrator.backends.remote import connect
from orchestrator.oplog.run import locked_operation

from . import catalog, retention
from .targets import Target

DEFAULT_POLICY = {"daily": 7, "weekly": 4, "monthly": 6}


def prune_target(oplog, t: Target, *, task: str, dry_run: bool = False, catch_up: bool = False) -> dict:
    """Decide which backups go; unless dry_run, forget them and prune the repository. Return the decision."""
    policy = t.site.backup.retention or DEFAULT_POLICY
    with connect(t.host) as conn:
        keep, drop = retention.decide(catalog.list_backups(t, conn), policy)
        result = {"site": t.site.name, "env": t.env.name, "policy": policy, "dry_run": dry_run,
                  "keep": [_brief(b) for b in keep], "drop": [_brief(b) for b in drop]}
        if dry_run:
            return result
        with locked_operation(oplog, site=t.site.name, env=t.env.name, task=task, action="prune",
                              params={"policy": policy}, catch_up=catch_up) as op:
            t.repository.unlock_stale(conn)  # a crashed run's lock would block forget/prune forever
            with op.step(f"forget {len(drop)} backup(s) and prune") as step:
                ids = [snap for b in drop for snap in b["snapshots"].values()]
                t.repository.forget(conn, ids, prune=True)
                step.output(f"kept {len(keep)}, dropped {len(drop)}: " + ", ".join(b["backup_id"] for b in drop))
            for b in drop:
                op.artifact("forgotten-backup", b["backup_id"], details={"snapshots": b["snapshots"]})
    return result


def _brief(backup: dict) -> dict:
    return {k: backup[k] for k in ("backup_id", "time", "task", "pinned", "status", "snapshots", "reasons")}


def set_pin(oplog, t: Target, *, backup_id: str, task: str, pinned: bool) -> dict:
    """Pin or unpin a backup (the `pinned` tag on both its snapshots)."""
    with locked_operation(oplog, site=t.site.name, env=t.env.name, task=task, action="pin" if pinned else "unpin",
                          params={"backup_id": backup_id}) as op, connect(t.host) as conn:
        chosen = catalog.resolve(catalog.list_backups(t, conn), backup_id)
        ids = list(chosen["snapshots"].values())
        (t.repository.tag_add if pinned else t.repository.tag_remove)(conn, ids, "pinned")
        op.artifact("pinned" if pinned else "unpinned", chosen["backup_id"])
        return {"backup_id": chosen["backup_id"], "pinned": pinned}
