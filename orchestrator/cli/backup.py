"""`orch backup`, `orch backups`, `orch restore`."""

from __future__ import annotations

import sys
from contextlib import nullcontext

import click

from orchestrator.actions import catalog
from orchestrator.actions.backup import plan, run_backups
from orchestrator.actions.restore import plan_restore, restore
from orchestrator.actions.targets import target, targets
from orchestrator.backends.remote import connect
from orchestrator.errors import ExitCode
from orchestrator.progress import suspended

from .app import json_option, pass_app, task_option
from .output import human_size, short_time, sites_progress


@click.command("backup")
@click.argument("sites", nargs=-1)
@click.option("--all", "all_sites", is_flag=True, help="Every site that has the environment and backups enabled.")
@click.option("--env", "-e", default="production", show_default=True, help="Environment to back up.")
@task_option()
@click.option("--pin", is_flag=True, help="Keep this backup out of retention until `orch unpin`.")
@click.option(
    "--init",
    is_flag=True,
    help="Create the repository if it is missing, even where earlier backups went (it was deleted).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be backed up, and where; do nothing.")
@json_option
@pass_app
def backup_cmd(app, sites, all_sites, env, task, pin, init, dry_run):
    """Back up files and database of sites into their restic repositories.

    restic runs on each site's host and writes straight to the repository; the database dump is
    streamed into it, and a failed or truncated dump fails the backup. Several sites run in parallel
    (at most hosts.X.max_parallel per host and scheduler.max_parallel in all, the hosts taking turns). Exit 1
    if any site failed, with a summary.

    \b
    Examples:
      orch backup shinglas --task 14883
      orch backup --all --task 10001 --json
      orch backup shinglas --task 14883 --pin     # keep until `orch unpin`
    """
    chosen = _chosen(app, sites, all_sites, env, task, dry_run)
    if dry_run:
        app.emit(
            [plan(t, pin) for t in chosen],
            [
                ("site", "site"),
                ("env", "env"),
                ("host", "host"),
                ("path", "path"),
                ("database", "database"),
                ("repository", "repository"),
            ],
        )
        if all_sites and app.broken_sites():
            raise click.exceptions.Exit(ExitCode.FAILED)
        return
    # on a terminal a live count of sites done (and failed); with -v a line per site instead
    live = sys.stdout.isatty() and not app.json and app.verbosity == 1

    def each(result):
        if app.verbosity > 1:
            app.say(
                f"{result['site']}/{result['env']}: {result['status']} "
                f"{result.get('backup_id') or result.get('error', '')}"
            )

    # several sites run at once: their steps' figures would fight over one line
    with (
        sites_progress(len(chosen) if live else 0, "backing up") as done,
        nullcontext() if len(chosen) == 1 else suspended(),
    ):
        results = run_backups(
            app.inventory,
            app.oplog,
            chosen,
            task=task,
            pin=pin,
            init=init,
            on_done=lambda result: (each(result), done(result)),
        )
    rows = [
        r
        | {
            "files": human_size((r.get("summary") or {}).get("files", {}).get("size")),
            "added": human_size((r.get("summary") or {}).get("added")),
        }
        for r in results
    ]
    app.emit(
        results,
        [
            ("site", "site"),
            ("env", "env"),
            ("status", "status"),
            ("backup_id", "backup"),
            ("files", "files"),
            ("added", "added"),
            ("error", "error"),
        ],
        rows=rows,
    )
    failed = [r for r in results if r["status"] != "ok"]
    for r in failed:
        app.say(f"orch: {r['site']}/{r['env']}: {r['error']}")
    if failed:
        app.say(f"{len(failed)} of {len(results)} backup(s) failed")
    skipped = app.broken_sites() if all_sites else 0  # a broken site file costs that site alone, said at the end
    if failed or skipped:
        codes = {r["exit_code"] for r in failed}
        # a lone site keeps its precise code (3 locked, 2 inventory); a fleet run says "something failed"
        raise click.exceptions.Exit(codes.pop() if len(results) == 1 and not skipped else ExitCode.FAILED)


def _chosen(app, sites, all_sites: bool, env: str, task: str, dry_run: bool) -> list:
    """Given the command's arguments, return the targets to back up; a named site that cannot be backed up
    (unknown, its site file broken) is refused, and the refusal recorded under the task."""
    if all_sites or not sites:
        return targets(app.inventory, list(sites), all_sites, env)
    chosen = []
    for name in sites:
        with app.preflight("backup", task, site=name, env=env, dry_run=dry_run):
            chosen.append(target(app.inventory, name, env))
    return chosen


@click.command("backups")
@click.argument("site")
@click.option("--env", "-e", default="production", show_default=True)
@json_option
@pass_app
def backups_cmd(app, site, env):
    """List a site's backups: id, time, task, pinned, sizes, status.

    \b
    Example:
      orch backups shinglas --json
    """
    t = target(app.inventory, site, env)
    with connect(t.host) as conn:
        backups = catalog.list_backups(t, conn, app.oplog)
    rows = [
        b
        | {
            "time": short_time(b["time"]),
            "files": human_size(b["files_size"]),
            "database": human_size(b["db_size"]),
            "pin": "pinned" if b["pinned"] else "",
        }
        for b in backups
    ]
    app.emit(
        backups,
        [
            ("backup_id", "backup"),
            ("time", "time (utc)"),
            ("task", "task"),
            ("pin", "pinned"),
            ("files", "files"),
            ("database", "database"),
            ("status", "status"),
        ],
        rows=rows,
    )


@click.command("restore")
@click.argument("site")
@click.option("--backup", "backup_id", required=True, metavar="ID|latest", help="Backup to restore.")
@click.option("--to", "to_env", required=True, metavar="ENV", help="Environment to restore into.")
@click.option("--from-env", default="production", show_default=True, help="Environment the backup was taken of.")
@task_option()
@click.option("--files-only", is_flag=True, help="Restore files, leave the database.")
@click.option("--db-only", is_flag=True, help="Restore the database, leave files.")
@click.option("--path", "path", metavar="P", help="Restore only this relative path of the docroot.")
@click.option("--yes", is_flag=True, help="Confirm restoring onto production (a safety backup is taken first).")
@click.option("--dry-run", is_flag=True, help="Show what would be restored; do nothing.")
@json_option
@pass_app
def restore_cmd(app, site, backup_id, to_env, from_env, task, files_only, db_only, path, yes, dry_run):
    """Restore a backup into an environment (files, database, or one path).

    Onto production this needs --yes and takes a safety backup of production first, under the
    same lock; its id is recorded in the oplog. The docroot keeps its own mode, owner and group; a
    --path leading out of the site through a symlink is refused.

    \b
    Examples:
      orch restore shinglas --backup 20261127-030012-3fa2 --to production --task 14883 --yes
      orch restore shinglas --backup latest --to production --path wp-content/uploads --task 14883 --yes
      orch restore shinglas --backup latest --to production --task 14883 --dry-run
    """
    if files_only and db_only:
        raise click.UsageError("--files-only and --db-only exclude each other")
    with app.preflight("restore", task, site, to_env, dry_run=dry_run):
        env = app.inventory.site(site).environments.get(to_env)
        if env is not None and env.production and not yes and not dry_run and sys.stdin.isatty():
            yes = click.confirm(f"restore {site} onto production {to_env}. Continue?", default=False)
        plan = plan_restore(
            app.oplog,
            app.inventory,
            site,
            to_env=to_env,
            from_env=from_env,
            backup_id=backup_id,
            task=task,
            files=not db_only,
            db=not files_only,
            path=path,
            yes=yes or dry_run,
        )  # a dry run changes nothing: it needs no confirmation
    if dry_run:
        app.show_plan(plan)
        return
    result = restore(app.oplog, app.inventory, plan)
    app.emit(result)
    if not app.json:
        app.say(
            f"restored backup {result['backup_id']} into {site}/{to_env}"
            + (f" (safety backup {result['safety_backup']})" if result.get("safety_backup") else "")
        )


@click.command("export")
@click.argument("site")
@click.option("--backup", "backup_id", default="latest", show_default=True, metavar="ID|latest")
@click.option("--env", "-e", default="production", show_default=True)
@click.option(
    "--expires",
    "expires_days",
    type=click.IntRange(1, 7),
    default=7,
    show_default=True,
    help="Days the download link stays valid (S3 allows at most 7).",
)
@task_option()
@click.option("--dry-run", is_flag=True, help="Show which backup would go where; do nothing.")
@json_option
@pass_app
def export_cmd(app, site, backup_id, env, expires_days, task, dry_run):
    """Export a backup (files + database dump) as one .tar.zst in the bucket, with a download link.

    The archive is streamed from the repository, through zstd, into a multipart upload: no temp
    copy on the host or here.

    \b
    Example:
      orch export shinglas --backup latest --task 14883
    """
    from orchestrator.actions.export import export, plan_export

    with app.preflight("export", task, site, env, dry_run=dry_run):
        plan = plan_export(
            target(app.inventory, site, env), backup_id=backup_id, task=task, expires_seconds=expires_days * 86400
        )
    if dry_run:
        app.show_plan(plan)
        return
    result = export(app.oplog, plan)
    app.emit(result)
    if not app.json:
        click.echo(result["url"])
        app.say(
            f"{human_size(result['size'])} in s3://{result['bucket']}/{result['key']}, link valid {expires_days} day(s)"
        )


COMMANDS = [backup_cmd, backups_cmd, restore_cmd, export_cmd]
