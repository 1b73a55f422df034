"""`orch locks` and `orch unlock`: see and clear per-site locks."""
from __future__ import annotations

import click

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
    app.emit(app.oplog.locks(), [("site", "site"), ("task", "task"), ("holder", "holder"), ("pid", "pid"),
                                 ("operation_id", "operation"), ("acquired_at", "since")],
             rows=[lk | {"acquired_at": short_time(lk["acquired_at"])} for lk in app.oplog.locks()])


@click.command("unlock")
@click.argument("site")
@task_option()
@pass_app
def unlock_cmd(app, site, task):
    """Remove a site's lock (after checking its holder is really gone), and log that you did.

    \b
    Example:
      orch unlock shinglas --task 14883
    """
    app.inventory.site(site)  # an unknown site name is a usage error, not a silent no-op
    with app.oplog.start(task=task, site=site, env=None, action="unlock") as op:
        removed = app.oplog.force_unlock(site, task=task)
        if removed:
            op.artifact("lock", f"{removed['holder']} task {removed['task']}", details=removed)
            app.say(f"removed lock on {site} held by {removed['holder']} for task {removed['task']} "
                    f"since {short_time(removed['acquired_at'])}")
        else:
            app.say(f"{site} was not locked")


COMMANDS = [locks_cmd, unlock_cmd]
