"""`orch promote`, `orch rollback`, `orch releases`, `orch adopt`."""

from __future__ import annotations

import click

from orchestrator.actions import adopt, promote, rollback

from .app import json_option, pass_app, require_tty_or_yes, task_option
from .content import content_options, promote_with_content, with_content_help
from .output import short_time


def _planned(app, action: str, site: str, task: str, dry_run: bool, yes: bool, what: str, make_plan):
    """Given how to plan a change of production, plan it (a refusal is recorded under the task); with
    --dry-run print the plan and return None, else require --yes (or a terminal's confirmation) and return it."""
    with app.preflight(action, task, site, "production", dry_run):
        plan = make_plan()
        if dry_run:
            app.show_plan(plan)
            return None
        require_tty_or_yes(yes, what)
    return plan


@click.command("promote")
@click.argument("site")
@click.option("--from", "source", metavar="ENV", help="Test environment to take code from.")
@click.option("--ref", metavar="TAG_OR_SHA", help="Or a ref of the site's git `repository` (sent as an archive).")
@task_option()
@click.option("--dry-run", is_flag=True, help="Print the exact file plan and stop; nothing changes.")
@click.option("--yes", is_flag=True, help="Confirm changing production (required without a terminal).")
@click.option("--no-migrate", is_flag=True, help="Skip the playbook's database migrations.")
@click.option(
    "--visual",
    is_flag=True,
    help="With --dry-run: screenshot the test environment and production, and compare them page by page.",
)
@content_options
@json_option
@pass_app
def promote_cmd(
    app, site, source, ref, task, dry_run, yes, no_migrate, visual, content, content_only, select, prefer, delete
):
    """Send code from a test environment to production, safely.

    Content never flows up: only files the playbook calls code. A production backup is taken first
    (no backup, no promotion); then the plan, a new release, an atomic switch, migrations and a health
    check that must see the NEW revision answered by PHP. Any failure after the switch rolls back
    automatically and the operation is logged as `rolled_back`.

    \b
    Examples:
      orch promote shinglas --from t14883 --task 14883 --dry-run
      orch promote shinglas --from t14883 --task 14883 --yes
      orch promote shinglas --ref v2.4.1 --task 14883 --yes
      orch promote shinglas --from t14883 --task 14883 --dry-run --visual

    With promote.visual_threshold set, production is also screenshot before and after (see `orch
    snap`); a page that changed more than the threshold rolls the promotion back.
    """
    if content or content_only:
        return promote_with_content(
            app,
            site,
            source,
            ref,
            task,
            dry_run=dry_run,
            yes=yes,
            migrate=not no_migrate,
            content_only=content_only,
            select=select,
            prefer=prefer,
            delete=delete,
        )

    def make_plan():
        return promote.plan_promote(
            app.oplog, app.inventory, site, source=source, ref=ref, task=task, migrate=not no_migrate, compare=dry_run
        )

    if visual:
        from .visual import preview_promotion

        return preview_promotion(app, site, source, task, dry_run, make_plan)
    plan = _planned(
        app, "promote", site, task, dry_run, yes, f"promote {site} from {source or ref} to production", make_plan
    )
    if plan is None:
        return
    result = promote.promote(app.oplog, app.inventory, plan)
    app.emit(result)
    if not app.json:
        if result["status"] == "unchanged":
            click.echo(f"{site}: production already runs this code; nothing changed")
        else:
            click.echo(
                f"{site}: revision {result['revision']} is live ({result['added']} added, "
                f"{result['changed']} changed, {result['removed']} removed; backup {result['backup_id']})"
            )


@click.command("rollback")
@click.argument("site")
@task_option()
@click.option("--to", "to", metavar="RELEASE", help="Release to go back to (default: the one before the live one).")
@click.option("--dry-run", is_flag=True, help="Print what would be switched or undone and stop.")
@click.option("--yes", is_flag=True, help="Confirm changing production (required without a terminal).")
@json_option
@pass_app
def rollback_cmd(app, site, task, to, dry_run, yes):
    """Put production back on an earlier release (releases layout) or undo the last promotion (in place).

    In place, --to RELEASE undoes every promotion after it (see `orch releases`). A promotion that never
    finished (its orch died after the switch) is what a rollback takes back first.

    \b
    Examples:
      orch rollback shinglas --task 14883 --dry-run
      orch rollback shinglas --task 14883 --yes
      orch rollback shinglas --task 14883 --to 6 --yes
    """
    plan = _planned(
        app,
        "rollback",
        site,
        task,
        dry_run,
        yes,
        f"roll back {site} production",
        lambda: rollback.plan_rollback(app.inventory, site, task=task, to=to),
    )
    if plan is None:
        return
    result = rollback.rollback(app.oplog, app.inventory, plan)
    app.emit(result)
    where = f"release {result['to']}" if result["to"] else "the code from before its first recorded promotion"
    app.say(f"{site}: rolled back to {where}; live revision {result.get('revision') or 'unknown'}")


@click.command("releases")
@click.argument("site")
@json_option
@pass_app
def releases_cmd(app, site):
    """List a site's releases: release, time, task, revision, status (current, previous, bad).

    `unverified`: live, but the promotion that made it live never ended (its orch died after the switch and
    it was not settled yet): `orch rollback` takes it back. In place, releases are the promotions journaled
    on the host.

    \b
    Example:
      orch releases shinglas
    """
    rows = rollback.releases(app.oplog, app.inventory, site)
    app.emit(
        rows,
        [
            ("release", "release"),
            ("time", "created (utc)"),
            ("task", "task"),
            ("revision", "revision"),
            ("status", "status"),
        ],
        rows=[r | {"time": short_time(r.get("created"))} for r in rows],
    )


@click.command("adopt")
@click.argument("site")
@click.option("--layout", type=click.Choice(["releases"]), required=True)
@task_option()
@click.option("--dry-run", is_flag=True, help="Print what would be moved and stop.")
@click.option("--yes", is_flag=True, help="Confirm changing production (required without a terminal).")
@json_option
@pass_app
def adopt_cmd(app, site, layout, task, dry_run, yes):
    """Convert an in-place production docroot to the releases layout, atomically and after a backup.

    The docroot path becomes a symlink into PATH.releases/ (releases/1, shared/, current), so the
    web server configuration does not change.

    \b
    Example:
      orch adopt shinglas --layout releases --task 14883 --yes
    """
    plan = _planned(
        app,
        "adopt",
        site,
        task,
        dry_run,
        yes,
        f"convert {site} production to the {layout} layout",
        lambda: adopt.plan_adopt(app.inventory, site, layout=layout, task=task),
    )
    if plan is None:
        return
    result = adopt.adopt(app.oplog, app.inventory, plan)
    app.emit(result)
    app.say(
        f"{site}: now in the releases layout at {result['root']}" + (f"; {result['note']}" if result["note"] else "")
    )


promote_cmd.help = with_content_help(promote_cmd.help or "")
COMMANDS = [promote_cmd, rollback_cmd, releases_cmd, adopt_cmd]
