"""What each page shows, as plain data for the templates (the templates only lay it out)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

from orchestrator.billing import enclosing, rates_for, task_cost, total_seconds
from orchestrator.cli.output import human_duration, human_size
from orchestrator.errors import OrchError
from orchestrator.oplog import chain

from .queries import RESULTS, TaskFilter, site_artifacts
from .queries import tasks as task_rows

__all__ = ["RESULTS", "FILTERS", "parse_search", "tasks", "task", "site", "fleet"]

BACKUP_KINDS = ("backup", "pre-promotion-backup", "safety-backup", "pre-adopt-backup")
USAGE_TTL = 600  # seconds a storage reading is reused: reading a bucket or `du` over SSH is slow


# ---------------------------------------------------------------- formatting (Jinja filters)


def when(value: str | None) -> str:
    return (value or "").replace("T", " ")[:16]


def age(value: str | None, now: datetime | None = None) -> str:
    if not value:
        return ""
    seconds = ((now or datetime.now(UTC)) - datetime.fromisoformat(value)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


FILTERS = {
    "when": when,
    "age": age,
    "duration": lambda s: human_duration(s) or "-",
    "size": lambda b: human_size(b) or "-",
}


# ---------------------------------------------------------------- tasks list


def parse_search(params) -> tuple[TaskFilter, list[str]]:
    """Given the query parameters, return the search and the problems with them (shown, not fatal)."""
    problems = []

    def day(name: str) -> datetime | None:
        raw = (params.get(name) or "").strip()
        if not raw:
            return None
        try:
            return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
        except ValueError:
            problems.append(f"{name}: not a date like 2026-11-01")
            return None

    until = day("until")
    result = params.get("result", "")
    try:
        page = max(1, int(params.get("page", "1")))
    except ValueError:
        page = 1
    search = TaskFilter(
        number=params.get("task", "").strip(),
        site=params.get("site", "").strip(),
        person=params.get("person", "").strip(),
        since=day("since"),
        until=until + timedelta(days=1) if until else None,  # the whole `until` day counts
        result=result if result in RESULTS else "",
        page=page,
    )
    return search, problems


def tasks(oplog, inventory, search: TaskFilter) -> tuple[list[dict], bool]:
    rows, more = task_rows(oplog.engine, search)
    for row in rows:
        row["problem"] = any(row["statuses"].get(s) for s in ("failed", "interrupted", "rolled_back"))
    return rows, more


# ---------------------------------------------------------------- one task


def task(oplog, inventory, number: str) -> dict:
    """Given a task, return its page: operations (oldest first) with steps and artifacts, totals, cost, the
    tracker link and the chain head."""
    ops = oplog.operations(task=number, oldest_first=True, with_details=True)
    inside = enclosing(ops)
    for op in ops:
        rates = rates_for(inventory, op["site"])
        op["inside"] = inside.get(op["id"])
        op["money"] = "" if op["inside"] else rates.money(rates.time_cost(op["duration"]))
        op["items"] = [_artifact_view(a, oplog, op) for a in op["artifacts"]]
    return {
        "task": number,
        "operations": ops,
        "total_seconds": total_seconds(ops),
        "total_cost": task_cost(inventory, ops),
        "sites": sorted({op["site"] for op in ops if op["site"]}),
        "statuses": _count(op["status"] for op in ops),
        "tracker": tracker_link(inventory, ops, number),
        "head": chain.current_head(oplog.engine),
    }


def tracker_link(inventory, ops: list[dict], number: str) -> str | None:
    """Given a task's operations, return the URL of its issue in the tracker (Redmine), or None."""
    from orchestrator.tracker import tracker_for

    for site in dict.fromkeys(op["site"] for op in ops):
        try:
            tracker = tracker_for(inventory, site)
        except OrchError:
            continue
        issue = tracker.issue_for(number) if tracker else None
        if tracker is not None and issue and tracker.type == "redmine":
            return f"{tracker.url.rstrip('/')}/issues/{issue}"
    return None


def _artifact_view(artifact: dict, oplog, op: dict) -> dict:
    """Given an artifact, return what the page says of it: a label, the text, a link, extra lines."""
    kind, details = artifact["kind"], artifact.get("details") or {}
    view = {
        "kind": kind,
        "ident": artifact["ident"],
        "size": artifact.get("size"),
        "link": None,
        "lines": [],
        "created_at": artifact["created_at"],
    }
    if kind == "staging-url":
        view["link"] = artifact["ident"] or None
        view["lines"].append(f"made {age(artifact['created_at'])}" + _staging_state(oplog, op))
    elif kind == "plan":
        for sign, key in (("+", "added"), ("~", "changed"), ("-", "removed")):
            view["lines"] += [f"{sign} {name}" for name in details.get(key, []) if isinstance(name, str)]
    elif kind == "rollback" and details.get("reason"):
        view["lines"].append(f"reason: {details['reason']}")
    elif kind == "revision" and details.get("release"):
        view["lines"].append(f"release {details['release']}")
    elif kind == "verify":
        view["lines"] += [f"{k}: {v}" for k, v in details.items() if isinstance(v, str | int | float)][:8]
    return view


def _staging_state(oplog, op: dict) -> str:
    for env in oplog.envs(op["site"], include_destroyed=True):
        if env["name"] == op["env"]:
            return f", destroyed {age(env['destroyed_at'])}" if env["destroyed_at"] else ", still there"
    return ""


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


# ---------------------------------------------------------------- one site


def site(oplog, inventory, name: str) -> dict:
    """Given a site name, return its page: environments, backups, drills, staging copies, releases, storage."""
    site_ = inventory.sites[name]
    environments = [
        {
            "name": env.name,
            "host": env.host,
            "path": env.path,
            "url": env.url,
            "production": env.production,
            "engine": env.database.engine if env.database else None,
        }
        for env in site_.environments.values()
    ]
    rates = rates_for(inventory, name)
    usage = storage_usage(inventory, name)
    usage["cost"] = rates.money(rates.storage_cost(usage.get("bytes")))
    return {
        "site": site_,
        "environments": environments,
        "backups": [_backup_view(a) for a in site_artifacts(oplog.engine, name, BACKUP_KINDS)],
        "drills": site_artifacts(oplog.engine, name, ("verify", "drill"), limit=10),
        "staging": oplog.envs(name),
        "releases": site_artifacts(oplog.engine, name, ("revision", "rollback")),
        "usage": usage,
        "rates": rates,
        "recent": oplog.operations(site=name, limit=20),
    }


def _backup_view(artifact: dict) -> dict:
    details = artifact.get("details") or {}
    # a backup's details hold its parts' sizes; a promotion's only names the parts' snapshots
    files, db = (part if isinstance(part, dict) else {} for part in (details.get("files"), details.get("db")))
    return artifact | {"files_size": files.get("size"), "db_size": db.get("size")}


_usage_cache: dict[str, tuple[float, dict]] = {}
_usage_lock = threading.Lock()


def storage_usage(inventory, name: str) -> dict:
    """Given a site, return `orch usage`'s reading of its repository (bytes, objects, error), reused for a few
    minutes; never raises."""
    from orchestrator.actions.usage import site_usage

    with _usage_lock:
        cached = _usage_cache.get(name)
    if cached and cached[0] > time.monotonic():
        return dict(cached[1])
    try:
        reading = site_usage(inventory, inventory.sites[name])
    except Exception as exc:  # noqa: BLE001 - a page must render even when the storage cannot be read
        reading = {"bytes": None, "objects": None, "error": str(exc)}
    reading["measured_at"] = datetime.now(UTC).isoformat()
    with _usage_lock:
        _usage_cache[name] = (time.monotonic() + USAGE_TTL, reading)
    return dict(reading)


# ---------------------------------------------------------------- fleet


def fleet(oplog, inventory) -> list[dict]:
    """Return one row per monitored site environment with its colour: green (healthy, backup well inside its
    max age), amber (healthy but the backup nears its max age, or no drill recorded) or red (any problem)."""
    from orchestrator.actions.health import health

    rows = health(inventory, oplog)
    for row in rows:
        last = row["last_backup"]
        if not row["healthy"]:
            row["colour"] = "red"
        elif (last and last["age_hours"] > 0.75 * row["max_age_hours"]) or not row["last_drill"]:
            row["colour"] = "amber"
        else:
            row["colour"] = "green"
    order = {"red": 0, "amber": 1, "green": 2}
    return sorted(rows, key=lambda row: (order[row["colour"]], row["site"], row["env"]))
