"""Notification events: JSON-ready dicts with a one-line `title` and a short human `text`.

The dict is what a webhook receives as is (`text` makes it readable by Slack/Mattermost-style hooks); e-mail
uses `title` as subject and `text` as body; Telegram sends `text`. Every string is masked before it leaves.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from orchestrator.oplog.text import clean_json

KINDS = ("failure", "recovery", "health", "digest")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _event(kind: str, title: str, text: str, /, **fields) -> dict:
    return clean_json(
        {"event": kind, "title": title, "text": text, "time": _now(), "source": socket.gethostname(), **fields}
    )


def _log_hint(task: str | None, operation_id: int | None) -> str:
    hints = [f"orch log --task {task}"] if task else []
    return "details: " + " / ".join(hints + ([f"operation {operation_id}"] if operation_id else []))


def failure(run: dict) -> dict:
    """Given a scheduled run's result (site, env, kind, task, operation_id, error, catch_up), return its event."""
    what = f"{run['kind']} {run['site']}/{run['env']}"
    late = " (catch-up run)" if run.get("catch_up") else ""
    text = f"orch: {what} FAILED{late}: {run.get('error')}\n{_log_hint(run.get('task'), run.get('operation_id'))}"
    return _event("failure", f"orch: {what} FAILED", text, **_run_fields(run))


def recovery(run: dict) -> dict:
    """Given a successful run after a failed one, return its `recovery` event."""
    what = f"{run['kind']} {run['site']}/{run['env']}"
    text = f"orch: {what} works again (previous run {run.get('previous_status', 'failed')})"
    return _event("recovery", f"orch: {what} recovered", text, **_run_fields(run))


def broken_site(site: str, problems: list[str]) -> dict:
    """Given a site whose file is broken (or whose schedule cannot be read) and its problem lines, return the
    `failure` event saying its scheduled runs do not happen as written until the file is fixed."""
    title = f"orch: the site file of {site} is broken: its scheduled runs fail until it is fixed"
    text = f"{title}\n" + "\n".join(problems) + "\ncheck it with: orch check " + site
    return _event(
        "failure",
        title,
        text,
        action="inventory",
        site=site,
        env=None,
        error="; ".join(problems),
        problems=list(problems),
    )


def _run_fields(run: dict) -> dict:
    keys = ("site", "env", "host", "task", "operation_id", "status", "error", "catch_up", "backup_id")
    return {"action": run["kind"]} | {key: run.get(key) for key in keys}


def health(row: dict) -> dict:
    """Given a health row that changed (alarm or back to healthy), return its `health` event."""
    where = f"{row['site']}/{row['env']}"
    if row["healthy"]:
        title = f"orch: backups of {where} are healthy again"
        text = title
    else:
        title = f"orch: backups of {where} are UNHEALTHY"
        text = f"{title}: " + "; ".join(row["problems"])
    fields = {
        key: row.get(key) for key in ("site", "env", "host", "task", "status", "healthy", "problems", "max_age_hours")
    }
    return _event("health", title, text, **fields, last_backup=row.get("last_backup"))


def digest(summary: dict) -> dict:
    """Given a digest summary (see scheduler.watch.digest_summary), return its `digest` event."""
    counts = ", ".join(
        f"{action} {n['ok']} ok / {n['failed']} failed" + (f" / {n['refused']} refused" if n.get("refused") else "")
        for action, n in summary["actions"].items()
    )
    lines = [f"orch daily digest, last {summary['hours']} h: {counts or 'no operations'}"]
    lines += [
        f"FAILED: {f['action']} {f['site']}/{f['env']} at {f['started_at']}: {f['error']}" for f in summary["failures"]
    ]
    lines += [f"UNHEALTHY: {row['site']}/{row['env']}: {'; '.join(row['problems'])}" for row in summary["unhealthy"]]
    title = f"orch digest: {len(summary['failures'])} failed, {len(summary['unhealthy'])} unhealthy"
    return _event("digest", title, "\n".join(lines), **summary)


def test() -> dict:
    """Return the event `orch notify test` sends to every channel."""
    return _event("test", "orch: test notification", "orch: test notification: this channel works")
