"""`orch locks` and `orch unlock`: see and clear per-site locks."""

from __future__ import annotations

import click

from orchestrator.errors import Refused

from .app import json_option, pass_app, task_option
from .output import short_time


@click.command("locks")
@json_option
@pass_app
def locks_cmd(app):
    """List the sites currently locked by a running (or dead) operation.

    \b
    Example:
      orch locks
    """
    app.emit(
        app.oplog.locks(),
        [
            ("site", "site"),
            ("task", "task"),
            ("holder", "holder"),
            ("pid", "pid"),
            ("operation_id", "operation"),
            ("acquired_at", "since"),
        ],
        rows=[lk | {"acquired_at": short_time(lk["acquired_at"])} for lk in app.oplog.locks()],
    )


@click.command("unlock")
@click.argument("site")
@task_option()
@click.option("--force", is_flag=True, help="Remove the lock even though its holder looks alive (recorded).")
@pass_app
def unlock_cmd(app, site, task, force):
    """Remove a site's lock after checking its holder is really gone, and log that you did.

    The holder is alive while its process runs (same machine) or its heartbeat is fresh (another
    machine: renewed every 5 min, expiring 15 min after the last renewal); then the lock stays and
    unlock exits 4, unless --force, which the log records. A stale lock would be reclaimed by the
    next operation anyway; unlock frees it now and says whose it was.

    \b
    Examples:
      orch unlock shinglas --task 14883
      orch unlock shinglas --task 14883 --force   # the holder is gone, but its heartbeat is recent
    """
    with app.preflight("unlock", task, site=site):
        if site not in app.inventory.broken:  # a broken site file may still leave a lock behind
            app.inventory.site(site)  # an unknown site name is a usage error, not a silent no-op
    with app.oplog.start(task=task, site=site, env=None, action="unlock", params={"force": force}) as op:
        try:
            removed = app.oplog.force_unlock(site, task=task, live=force)
        except Refused as exc:
            op.finish("refused", error=str(exc))
            raise
        if removed:
            forced = not removed["stale"]
            op.artifact("lock", f"{removed['holder']} task {removed['task']}", details=removed | {"forced": forced})
            app.say(
                f"removed lock on {site} held by {removed['holder']} (pid {removed['pid']}) for task "
                f"{removed['task']} since {short_time(removed['acquired_at'])}"
                + (": FORCED while its holder looked alive" if forced else ": its holder was gone")
            )
        else:
            app.say(f"{site} was not locked")


COMMANDS = [locks_cmd, unlock_cmd]
