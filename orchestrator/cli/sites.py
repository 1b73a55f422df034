"""`orch sites`: what the inventory describes."""

from __future__ import annotations

import click

from orchestrator.errors import ExitCode

from .app import json_option, pass_app


@click.command("sites")
@json_option
@pass_app
def sites_cmd(app):
    """List sites and their environments.

    A broken site file is named on stderr and its site left out (exit 1).

    \b
    Example:
      orch sites --json
    """
    rows = []
    for site in app.inventory.sites.values():
        for env in site.environments.values():
            db = env.database
            rows.append(
                {
                    "site": site.name,
                    "env": env.name,
                    "playbook": site.playbook,
                    "task": site.task,
                    "host": env.host,
                    "path": env.path,
                    "url": env.url,
                    "production": env.production,
                    "database": f"{db.engine}:{db.name or db.path}" if db else None,
                }
            )
    app.emit(
        rows,
        [
            ("site", "site"),
            ("env", "env"),
            ("playbook", "playbook"),
            ("host", "host"),
            ("path", "path"),
            ("url", "url"),
            ("database", "database"),
        ],
    )
    if app.broken_sites():
        raise click.exceptions.Exit(ExitCode.FAILED)


COMMANDS = [sites_cmd]
