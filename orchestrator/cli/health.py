"""`orch health` (are backups fresh and restorable?) and `orch notify test` (do the alarm channels work?)."""

from __future__ import annotations

import click

from orchestrator.errors import ExitCode

from .app import json_option, pass_app
from .output import human_size, short_time


def _row(row: dict) -> dict:
    last, failure, drill = row["last_backup"], row["last_failure"], row["last_drill"]
    return row | {
        "backup": f"{short_time(last['at'])} ({last['age_hours']:.1f} h)" if last else "never",
        "max_age": f"{row['max_age_hours']:g} h" if row["max_age_hours"] is not None else "",
        "failure": f"{failure['action']} {short_time(failure['at'])}" if failure else "",
        "drill": short_time(drill["at"]) if drill else "never",
        "boot": _boot(row["last_boot_drill"]),
        "size": human_size((last or {}).get("size")),
        "stored": human_size(row["repository_bytes"]),
    }


def _boot(boot: dict | None) -> str:
    if boot is None:
        return "never"
    result = f"RTO {boot['rto_seconds']:.0f} s" if boot["status"] == "ok" and boot["rto_seconds"] else boot["status"]
    return f"{short_time(boot['at'])} ({boot['age_hours'] / 24:.1f} d) {result}"


@click.command("health")
@click.option("--usage", is_flag=True, help="Also read each repository's stored size from its storage (slower).")
@json_option
@pass_app
def health_cmd(app, usage):
    """Backup health per site and environment, from the oplog: age of the newest good backup against
    backup.max_age (default 26 h), the last failure, the last successful restore drill, the size.

    A site whose backup simply did not happen is unhealthy too. Exit 1 if any site is unhealthy.

    \b
    Examples:
      orch health
      orch health --json --usage
    """
    from orchestrator.actions.health import health

    rows = health(app.inventory, app.oplog, usage=usage)
    app.emit(
        rows,
        [
            ("site", "site"),
            ("env", "env"),
            ("status", "status"),
            ("backup", "newest good backup"),
            ("max_age", "max age"),
            ("failure", "last failure"),
            ("drill", "last drill"),
            ("boot", "last boot drill"),
            ("size", "backup size"),
            *([("stored", "stored")] if usage else []),
        ],
        rows=[_row(row) for row in rows],
    )
    bad = [row for row in rows if not row["healthy"]]
    for row in bad:
        where = "/".join(part for part in (row["site"], row["env"]) if part)
        app.say(f"{where}: {'; '.join(row['problems'])}")
    if bad:
        app.say(f"{len(bad)} of {len(rows)} site environment(s) unhealthy")
        raise click.exceptions.Exit(ExitCode.FAILED)


@click.group("notify")
def notify_group():
    """Notification channels (`notify:` in the inventory)."""


@notify_group.command("test")
@json_option
@pass_app
def notify_test_cmd(app):
    """Send a test message to every channel, whatever events it subscribed to. Exit 1 if any failed.

    \b
    Example:
      orch notify test
    """
    from orchestrator.notify import Notifier, events

    notifier = Notifier(app.inventory.notify, attempts=1)
    results = notifier.send(events.test(), notifier.channels)
    app.emit(results, [("channel", "channel"), ("ok", "ok"), ("error", "error")])
    if not results:
        app.say("no channels: add some under `notify:` in the inventory")
    if any(not result["ok"] for result in results):
        raise click.exceptions.Exit(ExitCode.FAILED)


COMMANDS = [health_cmd, notify_group]
