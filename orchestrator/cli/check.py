"""`orch check`."""

from __future__ import annotations

import click

from orchestrator.actions.check import run_check
from orchestrator.errors import ExitCode

from .app import json_option, pass_app


@click.command("check")
@click.argument("sites", nargs=-1)
@json_option
@pass_app
def check_cmd(app, sites):
    """Validate the inventory and check every host, database and storage it names.

    Connects to each environment's host (strict host keys), reports the versions of restic,
    mariadb-dump/mysqldump, pg_dump, php, rsync found there, logs in to each database and
    reaches each backup storage. Exit 1 if anything is unreachable, 2 if a host key is refused
    or a site file is broken (the other sites are still checked).

    \b
    Examples:
      orch check
      orch check shinglas --json
    """
    rows, refused = run_check(app.inventory, list(sites) or None)
    for row in rows:
        row["status"] = "ok" if row["ok"] else "FAIL"
    app.emit(
        rows,
        [
            ("site", "site"),
            ("env", "env"),
            ("host", "host"),
            ("check", "check"),
            ("status", "status"),
            ("detail", "detail"),
        ],
    )
    broken = [r for r in rows if not r["ok"]]
    if broken:
        app.say(f"{len(broken)} problem(s): " + "; ".join(f"{r['site']}/{r['env']} {r['check']}" for r in broken))
    broken_files = 0 if sites else app.broken_sites()
    if broken or broken_files:
        raise click.exceptions.Exit(ExitCode.USAGE if refused or broken_files else ExitCode.FAILED)


COMMANDS = [check_cmd]
