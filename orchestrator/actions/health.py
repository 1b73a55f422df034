"""`orch health`: is every site's newest good backup recent enough, and does the last restore drill pass?

Read from the oplog, the local catalog of every run (backup operations and their `backup` artifacts), never
by listing remote repositories: a fleet's health is one quick query per site, so the daemon can ask hourly.
A site whose backup did not happen at all is as unhealthy as one whose backup failed (Spatie's monitor,
not only failure hooks: a job that never ran sends no failure).
"""

from __future__ import annotations

from datetime import UTC, datetime

HISTORY = 100  # backup operations looked at per site: far more than the failures in a row anyone tolerates
FAILED = ("failed", "interrupted")
# A run that ended: a `refused` one changed nothing (the site was locked, a guard stopped it), so it neither
# fails a site nor hides the failure before it.
RAN = ("ok", *FAILED, "rolled_back")


def monitored_envs(site) -> list:
    """Given a Site, return the environments whose backups are expected: production ones, backups enabled."""
    if not site.backup.enabled:
        return []
    return [env for env in site.environments.values() if env.production]


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _of_env(ops: list[dict], env: str) -> list[dict]:
    return [op for op in ops if op["env"] == env]


def _first(ops: list[dict], *statuses: str) -> dict | None:
    return next((op for op in ops if op["status"] in statuses), None)


def _last_backup(oplog, op: dict | None, now: datetime) -> dict | None:
    """Given the newest good backup operation, return what health shows of it (id, time, age, sizes)."""
    if op is None:
        return None
    art = next((a for a in oplog.operation(op["id"])["artifacts"] if a["kind"] == "backup"), None)
    details = (art or {}).get("details") or {}
    size = ((details.get("files") or {}).get("size") or 0) + ((details.get("db") or {}).get("size") or 0)
    at = datetime.fromisoformat(op["started_at"])  # the data is as old as the moment the dump began
    return {
        "backup_id": art["ident"] if art else None,
        "at": op["started_at"],
        "operation_id": op["id"],
        "task": op["task"],
        "catch_up": op["catch_up"],
        "age_hours": round((now - at).total_seconds() / 3600, 2),
        "size": size or None,
        "added": details.get("added"),
    }


def _brief(op: dict | None, *keys: str) -> dict | None:
    if op is None:
        return None
    return {
        "action": op["action"],
        "at": op["started_at"],
        "operation_id": op["id"],
        **{key: op.get(key) for key in keys},
    }


def env_health(oplog, site, env, now: datetime | None = None) -> dict:
    """Given a Site and one of its environments, return its health row (see `health`)."""
    now = now or datetime.now(UTC)
    ops = {
        action: _of_env(oplog.operations(site=site.name, action=action, limit=HISTORY), env.name)
        for action in ("backup", "verify", "prune", "drill")
    }
    backups, verifies = ops["backup"], ops["verify"]
    good = _first(backups, "ok")
    attempt = _first(backups, *RAN)
    drill, drill_run = _first(verifies, "ok"), _first(verifies, *RAN)
    failures = [op for action_ops in ops.values() for op in [_first(action_ops, *RAN)] if op and op["status"] in FAILED]
    row = {
        "site": site.name,
        "env": env.name,
        "host": env.host,
        "task": site.task,
        "max_age_hours": site.backup.max_age_hours,
        "last_backup": _last_backup(oplog, good, now),
        "last_failure": _brief(max(failures, key=lambda op: op["started_at"], default=None), "status", "error"),
        "last_drill": _brief(drill, "params"),
        "last_boot_drill": _boot_drill(oplog, _first(ops["drill"], *RAN), now),
        "running": _brief(
            next((op for action_ops in ops.values() for op in action_ops if op["status"] == "running"), None)
        ),
        "repository_bytes": None,
    }
    row["problems"], row["status"] = _judge(row, attempt, drill_run)
    row["healthy"] = not row["problems"]
    return row


def _boot_drill(oplog, op: dict | None, now: datetime) -> dict | None:
    """Given the newest finished boot drill (`orch verify --boot`), return its age, result and RTO."""
    if op is None:
        return None
    art = next((a for a in oplog.operation(op["id"])["artifacts"] if a["kind"] == "drill"), None)
    return {
        "at": op["started_at"],
        "operation_id": op["id"],
        "status": op["status"],
        "error": op.get("error"),
        "age_hours": round((now - datetime.fromisoformat(op["started_at"])).total_seconds() / 3600, 2),
        "rto_seconds": ((art or {}).get("details") or {}).get("rto_seconds"),
    }


def _judge(row: dict, attempt: dict | None, drill_run: dict | None) -> tuple[list[str], str]:
    """Given a health row, the newest finished backup and verify runs, return (problems, status word)."""
    problems, status = [], "ok"
    last, boot = row["last_backup"], row["last_boot_drill"]
    if boot and boot["status"] in FAILED:
        problems.append(f"last boot drill {boot['status']} at {boot['at'][:19]}: {boot['error'] or 'no message'}")
        status = "drill-failed"
    if drill_run and drill_run["status"] in FAILED:
        problems.append(
            f"last restore drill {drill_run['status']} at {drill_run['started_at'][:19]}: "
            f"{drill_run.get('error') or 'no message'}"
        )
        status = "drill-failed"
    if attempt and attempt["status"] in FAILED and (last is None or attempt["id"] > last["operation_id"]):
        problems.insert(
            0,
            f"last backup {attempt['status']} at {attempt['started_at'][:19]}: {attempt.get('error') or 'no message'}",
        )
        status = "failing"
    if last is None:
        problems.insert(0, "no good backup recorded")
        status = "missing"
    elif last["age_hours"] > row["max_age_hours"]:
        problems.insert(0, f"newest good backup is {last['age_hours']:.1f} h old (max {row['max_age_hours']:g} h)")
        status = "stale"
    return problems, status


def broken_health(site: str, problems: list[str]) -> dict:
    """Given a site whose file is broken and its problem lines, return its health row: unhealthy, status
    `broken` (nothing is backed up as written until the file is fixed)."""
    return {
        "site": site,
        "env": None,
        "host": None,
        "task": None,
        "max_age_hours": None,
        "last_backup": None,
        "last_failure": None,
        "last_drill": None,
        "last_boot_drill": None,
        "running": None,
        "repository_bytes": None,
        "problems": list(problems),
        "status": "broken",
        "healthy": False,
    }


def health(inventory, oplog, *, now: datetime | None = None, usage: bool = False) -> list[dict]:
    """Given the inventory and the oplog, return one row per monitored site environment, and one per broken
    site file (status `broken`, env None):

    {site, env, host, task, healthy, status (ok|missing|stale|failing|drill-failed|broken), problems,
     max_age_hours, last_backup {backup_id, at, age_hours, size, added, ...} | None, last_failure, last_drill,
     last_boot_drill {at, age_hours, status, rto_seconds, error, operation_id} | None, running,
     repository_bytes (read from the storage only with usage=True)}.
    """
    rows = [env_health(oplog, site, env, now) for site in inventory.sites.values() for env in monitored_envs(site)]
    rows += [broken_health(site, problems) for site, problems in sorted(inventory.broken.items())]
    if usage:
        from .usage import site_usage

        sizes = {
            name: site_usage(inventory, inventory.sites[name])
            for name in {row["site"] for row in rows}
            if name in inventory.sites
        }
        for row in rows:
            row["repository_bytes"] = sizes[row["site"]]["bytes"] if row["site"] in sizes else None
    return rows
