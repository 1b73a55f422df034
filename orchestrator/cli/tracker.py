"""`orch tracker`: the notes queued for the task tracker, and sending again the ones still pending."""

from __future__ import annotations

import click

from orchestrator.errors import ExitCode

from .app import json_option, pass_app, validate_task
from .output import short_time

COLUMNS = [
    ("id", "id"),
    ("created", "queued (utc)"),
    ("task", "task"),
    ("issue", "issue"),
    ("site", "site"),
    ("tracker", "tracker"),
    ("status", "status"),
    ("attempts", "tries"),
    ("next", "next try"),
    ("note", "last error"),
]


@click.group("tracker")
def tracker_cmd():
    """Notes posted to the task tracker: what is queued, sent, or waiting for a retry.

    Each finished operation whose task maps to an issue (`tracker:` in the inventory) queues a note in
    the oplog; a tracker that is down gets it later, once.

    
    Examples:
      orch tracker status            pending notes (exit 1 if any)
      orch tracker retry             send them now
    """


@tracker_cmd.command("status")
@click.option("--task", "-t", callback=validate_task, help="Only this task's notes.")
@click.option("--all", "show_all", is_flag=True, help="Sent notes too (default: pending ones only).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@pass_app
def status_cmd(app, task, show_all, limit):
    """Show the notes waiting for the tracker (with --all, the sent ones too).

    Exits 1 if notes are pending, so a monitor can alarm on it.

    \b
    Examples:
      orch tracker status
      orch tracker status --task 14883 --all
    """
    from orchestrator.oplog import outbox

    rows = outbox.listing(app.oplog.engine, status=None if show_all else "pending", task=task, limit=limit)
    pending = sum(row["status"] == "pending" for row in rows)
    app.emit([_public(row) for row in rows], COLUMNS, rows=[_row(row) for row in rows])
    if not app.json:
        app.say(f"{pending} note(s) pending" + ("" if show_all else "; --all shows the sent ones too"))
    if pending:
        raise click.exceptions.Exit(ExitCode.FAILED)


@tracker_cmd.command("retry")
@click.option("--task", "-t", callback=validate_task, help="Only this task's notes.")
@json_option
@pass_app
def retry_cmd(app, task):
    """Send every pending note now, whatever its backoff; exit 1 if some still fail.

    \b
    Examples:
      orch tracker retry
      orch tracker retry --task 14883
    """
    from orchestrator.tracker.delivery import deliver_pending

    results = deliver_pending(app.oplog, app.inventory, everything=True, task=task)
    app.emit([_public(row) for row in results], COLUMNS, rows=[_row(row) for row in results])
    failed = [row for row in results if row["status"] != "sent"]
    if not app.json:
        app.say(f"{len(results) - len(failed)} note(s) sent, {len(failed)} still pending")
    if failed:
        raise click.exceptions.Exit(ExitCode.FAILED)


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("payload", "claimed_until")} | {
        "text": row["payload"].get("text"),
        "error": row.get("error", row.get("last_error")),
    }


def _row(row: dict) -> dict:
    error = row.get("error", row.get("last_error")) or ""
    return row | {
        "created": short_time(row["created_at"]),
        "note": error[:80],
        "next": short_time(row["next_attempt_at"]) if row["status"] == "pending" else "",
    }


COMMANDS = [tracker_cmd]
