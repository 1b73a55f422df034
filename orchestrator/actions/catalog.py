"""The backups of a site, read from its repository (restic tags) and enriched from the oplog."""

from __future__ import annotations

from collections import defaultdict

from orchestrator.errors import UsageError

from .targets import Target


def _tag(snapshot: dict, key: str) -> str | None:
    prefix = key + "="
    return next((t[len(prefix) :] for t in snapshot.get("tags") or [] if t.startswith(prefix)), None)


def group_backups(snapshots: list[dict], env: str | None = None, has_db: bool = True) -> list[dict]:
    """Given restic snapshots, return orch backups (newest first): parts joined by their `backup=` tag."""
    groups: dict[str, dict] = defaultdict(lambda: {"parts": {}})
    for snap in snapshots:
        backup_id = _tag(snap, "backup")
        if not backup_id or (env and _tag(snap, "env") != env):
            continue
        group = groups[backup_id]
        group["parts"][_tag(snap, "part") or "files"] = snap
        group.update(backup_id=backup_id, env=_tag(snap, "env"), task=_tag(snap, "task"))
        group["time"] = min(group.get("time", snap["time"]), snap["time"])
        group["pinned"] = group.get("pinned", False) or "pinned" in (snap.get("tags") or [])
    backups = []
    for group in groups.values():
        complete = "files" in group["parts"] and ("db" in group["parts"] or not has_db)
        group["status"] = "ok" if complete else "incomplete"
        group["snapshots"] = {part: snap["id"][:8] for part, snap in group["parts"].items()}  # as restic prints them
        backups.append(group)
    return sorted(backups, key=lambda b: b["time"], reverse=True)


def list_backups(t: Target, conn, oplog=None) -> list[dict]:
    """Return the backups of the target's environment, newest first, with sizes from the oplog."""
    snaps = t.repository.snapshots(conn, f"site={t.site.name}")
    backups = group_backups(snaps, t.env.name, has_db=t.env.database is not None)
    recorded = _recorded(oplog, t.site.name) if oplog else {}
    for backup in backups:
        details = recorded.get(backup["backup_id"], {})
        backup["files_size"] = (details.get("files") or {}).get("size")
        backup["db_size"] = (details.get("db") or {}).get("size")
        backup["tables"] = (details.get("db") or {}).get("tables")
        backup.pop("parts")
    return backups


def _recorded(oplog, site: str) -> dict[str, dict]:
    """Map backup id -> the details its backup operation recorded."""
    out = {}
    for op in oplog.operations(site=site, action="backup", with_details=True):
        for art in op.get("artifacts", []):
            if art["kind"] == "backup":
                out[art["ident"]] = art.get("details") or {}
    return out


def resolve(backups: list[dict], backup_id: str) -> dict:
    """Given listed backups and an id (or 'latest', or a unique prefix), return the complete backup."""
    good = [b for b in backups if b["status"] == "ok"]
    if backup_id == "latest":
        if not good:
            raise UsageError("no complete backup exists yet")
        return good[0]
    matches = [b for b in backups if b["backup_id"].startswith(backup_id)] if len(backup_id) >= 4 else []
    if not matches:
        raise UsageError(f"no backup '{backup_id}' (see `orch backups SITE`)")
    if len(matches) > 1:
        raise UsageError(f"backup id '{backup_id}' is ambiguous: {', '.join(b['backup_id'] for b in matches)}")
    if matches[0]["status"] != "ok":
        raise UsageError(f"backup {matches[0]['backup_id']} is incomplete and cannot be restored")
    return matches[0]
