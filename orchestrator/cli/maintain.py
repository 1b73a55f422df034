"""`orch verify`, `orch prune`, `orch pin`/`unpin`, `orch usage`: keeping backups trustworthy and affordable."""

from __future__ import annotations

import click

from orchestrator.actions.prune import plan_pin, prune_target, set_pin
from orchestrator.actions.targets import target, targets
from orchestrator.actions.usage import usage
from orchestrator.actions.verify import plan_verify, run_verify
from orchestrator.errors import ExitCode, OrchError

from .app import json_option, pass_app, task_option
from .output import human_size, short_time


@click.command("verify")
@click.argument("site")
@click.option("--backup", "backup_id", default="latest", show_default=True, metavar="ID|latest")
@click.option("--env", "-e", default="production", show_default=True)
@task_option()
@click.option(
    "--boot",
    is_flag=True,
    help="Boot drill: restore into a throwaway copy on the staging host, request "
    "the check URLs, record the RTO, remove the copy.",
)
@click.option("--dry-run", is_flag=True, help="Show which backup would be drilled, and how; do nothing.")
@json_option
@pass_app
def verify_cmd(app, site, backup_id, env, task, boot, dry_run):
    """Restore drill: prove a backup restores, and that it holds what it should.

    Restores the dump into a scratch database on the host and compares tables and row counts with
    what the backup recorded; restores a sample of files (content-verified) and compares checksums;
    runs `restic check` on a rotating slice of the data. Exit 1 on any mismatch. A site user that
    may not create databases needs verify.scratch_database.

    With --boot, proves the site itself comes back: the backup becomes a throwaway copy on the
    staging host (as `staging create` makes them), whose check URLs must answer 200 with their
    markers, in time, without PHP fatals or database errors; the restore time to the first good
    answer (RTO) is recorded, the copy removed, and a failure alerts the notify channels.

    \b
    Examples:
      orch verify shinglas --task 10001
      orch verify shinglas --boot --task 10001
      orch verify shinglas --boot --backup 20261127-030012-3fa2 --task 14883 --dry-run
    """
    if boot:
        from .visual import boot_drill

        return boot_drill(app, site, env, backup_id, task, dry_run)
    with app.preflight("verify", task, site, env, dry_run=dry_run):
        plan = plan_verify(app.oplog, target(app.inventory, site, env), backup_id=backup_id, task=task)
    if dry_run:
        app.show_plan(plan)
        return
    report = run_verify(app.oplog, plan)
    app.emit(report)
    if not app.json:
        app.say(
            f"backup {report['backup_id']}: drill passed ({len(report.get('tables', {}))} tables, "
            f"{report['files'].get('sampled', 0)} files sampled, data subset {report['read_data_subset']})"
        )


@click.command("prune")
@click.argument("sites", nargs=-1)
@click.option("--all", "all_sites", is_flag=True, help="Every site with backups enabled.")
@click.option("--env", "-e", default="production", show_default=True)
@task_option()
@click.option("--dry-run", is_flag=True, help="List what would be kept and what would go; delete nothing.")
@json_option
@pass_app
def prune_cmd(app, sites, all_sites, env, task, dry_run):
    """Apply retention (daily/weekly/monthly/yearly, restic forget semantics).

    Never drops the newest complete backup or a pinned one. Try --dry-run first.

    \b
    Examples:
      orch prune shinglas --task 10001 --dry-run
      orch prune --all --task 10001
    """
    results, failed = [], 0
    for t in targets(app.inventory, list(sites), all_sites, env):
        try:
            results.append(prune_target(app.oplog, t, task=task, dry_run=dry_run))
        except OrchError as exc:
            failed += 1
            results.append({"site": t.site.name, "env": t.env.name, "error": str(exc), "keep": [], "drop": []})
    rows = [
        {
            "site": r["site"],
            "backup": b["backup_id"],
            "time": short_time(b["time"]),
            "verdict": verdict,
            "why": ", ".join(b["reasons"]),
        }
        for r in results
        for verdict, key in (("keep", "keep"), ("DROP", "drop"))
        for b in r[key]
    ]
    app.emit(
        results,
        [("site", "site"), ("backup", "backup"), ("time", "time"), ("verdict", "verdict"), ("why", "why")],
        rows=rows,
    )
    for r in results:
        if r.get("error"):
            app.say(f"{r['site']}: {r['error']}")
    if failed or (all_sites and app.broken_sites()):
        raise click.exceptions.Exit(ExitCode.FAILED)


def _pin_command(name: str, pinned: bool):
    @click.command(name)
    @click.argument("site")
    @click.option("--backup", "backup_id", required=True, metavar="ID")
    @click.option("--env", "-e", default="production", show_default=True)
    @task_option()
    @json_option
    @pass_app
    def command(app, site, backup_id, env, task):
        with app.preflight(name, task, site=site, env=env):  # no such backup: recorded under the task
            plan = plan_pin(target(app.inventory, site, env), backup_id=backup_id, task=task, pinned=pinned)
        result = set_pin(app.oplog, plan)
        app.emit(result)
        app.say(f"backup {result['backup_id']} {'pinned' if pinned else 'unpinned'}")

    command.help = (
        f"{'Pin' if pinned else 'Unpin'} a backup: pinned backups are never pruned.\n\n"
        f"\b\nExample:\n  orch {name} shinglas --backup 20261127-030012-3fa2 --task 14883"
    )
    return command


@click.command("usage")
@json_option
@pass_app
def usage_cmd(app):
    """Bytes stored per site, read from the storage (S3 bucket listing or du), for cost transparency.

    \b
    Example:
      orch usage --json
    """
    from orchestrator.billing import rates_for

    rows, shown = usage(app.inventory), []
    for row in rows:  # priced at billing.storage_gb_month, when the inventory gives it
        rates = rates_for(app.inventory, row["site"])
        row |= {"monthly_cost": rates.storage_cost(row["bytes"]), "currency": rates.currency or None}
        shown.append(row | {"size": human_size(row["bytes"]), "cost": rates.money(row["monthly_cost"])})
    app.emit(
        rows,
        [
            ("site", "site"),
            ("storage", "storage"),
            ("size", "stored"),
            ("objects", "objects"),
            ("cost", "per month"),
            ("error", "error"),
        ],
        rows=shown,
    )
    if app.broken_sites():
        raise click.exceptions.Exit(ExitCode.FAILED)


COMMANDS = [verify_cmd, prune_cmd, _pin_command("pin", True), _pin_command("unpin", False), usage_cmd]
