"""`orch staging ...`: test environments copied from production, one per task."""

from __future__ import annotations

import click

from orchestrator.actions import staging
from orchestrator.backends.envs.staging import default_name

from .app import json_option, pass_app, task_option, validate_age
from .output import human_size, short_time


@click.group("staging")
def staging_group():
    """Staging copies of production: create, refresh, list, destroy, gc.

    Content flows down from a production backup (files restored on the staging host, the dump
    streamed through the URL replacer), then the copy is made safe: sanitized, passwords reset,
    mail off, basic auth and noindex on its vhost. With `environments.staging.target: docker`
    (or `create --target docker`) the copy is made the same way in containers on a Docker host.
    """


@staging_group.command("create")
@click.argument("site")
@task_option()
@click.option("--name", help="Environment name (default: t<TASK>, e.g. t14883).")
@click.option(
    "--from",
    "source",
    default="latest",
    show_default=True,
    metavar="latest|fresh|BACKUP_ID",
    help="Production backup to copy: the newest good one, a new one taken now, or a given id.",
)
@click.option(
    "--target",
    type=click.Choice(["host", "docker"]),
    help="Where to make the copy: the staging host, or containers on a Docker host (default: the "
    "site's environments.staging.target).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be created; do nothing.")
@click.option("--snap", is_flag=True, help="Then screenshot the copy next to production, for a reviewer.")
@json_option
@pass_app
def create_cmd(app, site, task, name, source, target, dry_run, snap):
    """Create a staging copy of SITE's production for a task.

    The copy is registered (status `creating`) before anything is made, and ends `ready` or
    `failed`: `orch staging list` shows a half-made copy and `orch staging destroy` removes it.

    \b
    Examples:
      orch staging create shinglas --task 14883
      orch staging create shinglas --task 14883 --from fresh --name t14883-b
      orch staging create shinglas --task 14883 --dry-run
      orch staging create shinglas --task 14883 --target docker
      orch staging create shinglas --task 14883 --snap    # and screenshots beside production's
    """
    name = name or default_name(task)
    with app.preflight("staging-create", task, site, name, dry_run=dry_run):
        plan = staging.plan_create(
            app.oplog, app.inventory, site, task=task, name=name, source=source, copy_target=target
        )
    if dry_run:
        app.show_plan(plan)
        return
    result = staging.create(app.oplog, app.inventory, plan)
    if snap:
        from .visual import snap_copy

        result["visual"] = snap_copy(app, site, result["env"], task)
    if app.json:
        app.emit(result)
        return
    click.echo(f"staging {result['site']}/{result['env']} is ready: {result['url']}")
    click.echo(f"  basic auth:       {result['basic_auth']['user']} / {result['basic_auth']['password']}")
    if result.get("staging_password"):
        click.echo(f"  site logins:      every account's password is now {result['staging_password']}  (shown once)")
    click.echo(f"  copied from:      backup {result['backup_id']}")
    replaced = (result.get("replacements") or {}).get("replacements")
    if replaced is not None:
        click.echo(f"  URLs replaced:    {replaced}")


@staging_group.command("refresh")
@click.argument("site")
@click.option("--env", "name", required=True, help="The staging environment to refresh.")
@task_option()
@click.option("--from", "source", default="latest", show_default=True, metavar="latest|fresh|BACKUP_ID")
@click.option("--db-only", is_flag=True, help="Only the database.")
@click.option("--files-only", is_flag=True, help="Only the content files.")
@click.option("--with-code", is_flag=True, help="Also overwrite staging's code with production's.")
@click.option("--dry-run", is_flag=True, help="Show what would be refreshed; do nothing.")
@json_option
@pass_app
def refresh_cmd(app, site, name, task, source, db_only, files_only, with_code, dry_run):
    """Copy production's content down again; staging's code (your work) stays unless --with-code.

    \b
    Examples:
      orch staging refresh shinglas --env t14883 --task 14883
      orch staging refresh shinglas --env t14883 --task 14883 --db-only --from fresh
    """
    if db_only and files_only:
        raise click.UsageError("--db-only and --files-only exclude each other")
    with app.preflight("staging-refresh", task, site, name, dry_run=dry_run):
        plan = staging.plan_refresh(
            app.oplog,
            app.inventory,
            site,
            name=name,
            task=task,
            source=source,
            files=not db_only,
            db=not files_only,
            with_code=with_code,
        )
    if dry_run:
        app.show_plan(plan)
        return
    result = staging.refresh(app.oplog, app.inventory, plan)
    if app.json:
        app.emit(result)
        return
    click.echo(f"refreshed {site}/{name} from backup {result['backup_id']}")
    if result.get("staging_password"):
        click.echo(f"  site logins: every account's password is now {result['staging_password']}  (shown once)")


@staging_group.command("destroy")
@click.argument("site")
@click.option("--env", "name", required=True, help="The staging environment to remove.")
@task_option()
@click.option("--dry-run", is_flag=True, help="Show what would be removed; do nothing.")
@json_option
@pass_app
def destroy_cmd(app, site, name, task, dry_run):
    """Remove a staging environment: files, database, database user, vhost, basic-auth file.

    Works on a half-made copy too (status creating or failed). Refuses (exit 4) anything that is or
    is configured as production.

    \b
    Example:
      orch staging destroy shinglas --env t14883 --task 14883
    """
    with app.preflight("staging-destroy", task, site, name, dry_run=dry_run):
        plan = staging.plan_destroy(app.oplog, app.inventory, site, name=name, task=task)
    if dry_run:
        app.show_plan(plan)
        return
    result = staging.destroy(app.oplog, app.inventory, plan)
    app.emit(result)
    app.say(f"destroyed {site}/{name} ({result['path']})")


@staging_group.command("gc")
@click.argument("sites", nargs=-1)
@click.option(
    "--older-than",
    required=True,
    metavar="AGE",
    callback=validate_age,
    help="Remove copies older than this: 14d, 12h, 30m.",
)
@task_option()
@click.option("--dry-run", is_flag=True, help="Show which copies would go; do nothing.")
@json_option
@pass_app
def gc_cmd(app, sites, older_than, task, dry_run):
    """Remove staging copies older than AGE (of SITES, or all), on staging and Docker hosts.

    Each copy goes by its own `destroy` (locked, recorded under the task). On Docker hosts, copies
    known only by their labels (a create that died before registering) are found too.

    \b
    Examples:
      orch staging gc --older-than 14d --task 10001 --dry-run
      orch staging gc shinglas --older-than 30d --task 14883
    """
    from orchestrator.actions import staging_gc

    with app.preflight("staging-gc", task, dry_run=dry_run):
        plan = staging_gc.plan_gc(app.oplog, app.inventory, older_than=older_than, task=task, sites=list(sites))
    if dry_run:
        app.show_plan(plan)
        return
    results = staging_gc.gc(app.oplog, app.inventory, plan)
    app.emit(
        {"older_than": plan.as_dict()["older_than"], "results": results, "kept": plan.keep},
        [
            ("site", "site"),
            ("env", "env"),
            ("target", "target"),
            ("age", "age"),
            ("result", "result"),
            ("error", "error"),
        ],
        rows=results,
    )
    if any(r["result"] == "failed" for r in results):
        raise SystemExit(1)


@staging_group.command("list")
@click.argument("site", required=False)
@json_option
@pass_app
def list_cmd(app, site):
    """List staging copies: env, status, task, age, size, host, URL.

    Status is creating, ready or failed; a ready Docker copy shows what its engine says instead
    (running, stopped, degraded: ...), and copies found on a Docker host only by their labels
    are listed as unregistered.

    \b
    Example:
      orch staging list shinglas
    """
    rows = staging.listing(app.oplog, site, app.inventory)
    columns = [
        ("site", "site"),
        ("name", "env"),
        ("status", "status"),
        ("task", "task"),
        ("created", "created"),
        ("age", "age"),
        ("size", "size"),
        ("host", "host"),
        ("url", "url"),
    ]
    app.emit(
        rows,
        columns,
        rows=[
            r
            | {
                "created": short_time(r["created_at"]),
                "size": human_size(r["size"]) if r.get("size") is not None else "",
            }
            for r in rows
        ],
    )


COMMANDS = [staging_group]
