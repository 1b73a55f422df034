"""`orch snap` and `orch compare`: screenshots of a site's check URLs, and how much two sets of them differ; and
`orch promote --dry-run --visual`, which compares a test environment with production; and the output of boot drills
(`orch verify --boot`), which request the same URLs of a restored copy."""

from __future__ import annotations

import click

from orchestrator.errors import ExitCode

from .app import json_option, pass_app, task_option

DIFF_COLUMNS = [
    ("path", "url"),
    ("viewport", "width"),
    ("changed", "changed"),
    ("verdict", "verdict"),
    ("diff", "diff image"),
]


@click.command("snap")
@click.argument("site")
@click.option(
    "--env",
    "-e",
    default="production",
    show_default=True,
    help="Environment to shoot: one of the inventory's or a staging copy.",
)
@task_option()
@click.option("--dry-run", is_flag=True, help="List the pages and widths that would be shot; take none.")
@json_option
@pass_app
def snap_cmd(app, site, env, task, dry_run):
    """Full-page screenshots of an environment's check URLs, desktop and mobile.

    The check URLs are `verify.urls`, or the home page plus a sample of the sitemap. Headless
    Chromium takes each shot with a fixed viewport, animations off and the network idle; the
    PNGs are kept beside the oplog with the operation (see `orch log`, `orch report`).

    \b
    Examples:
      orch snap shinglas --task 14883
      orch snap shinglas --env t14883 --task 14883
      orch compare 412 415 --task 14883     # then diff two snaps
    """
    from orchestrator.actions.snap import plan_snap, snap

    with app.preflight("snap", task, site, env, dry_run):
        plan = plan_snap(app.oplog, app.inventory, site, env, task=task)
    if dry_run:
        app.show_plan(plan)
        return
    result = snap(app.oplog, plan)
    app.emit(
        result,
        [("path", "url"), ("viewport", "width"), ("size", "size"), ("status", "http"), ("file", "file")],
        rows=[shot | {"size": f"{shot['width']}x{shot['height']}"} for shot in result["shots"]],
    )
    app.say(f"{len(result['shots'])} screenshot(s) in {result['folder']} (operation {result['operation_id']})")


@click.command("compare")
@click.argument("before", metavar="BEFORE")
@click.argument("after", metavar="AFTER")
@task_option()
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    metavar="PERCENT",
    help="Fail when a page changed more than this (default: the site's promote.visual_threshold).",
)
@json_option
@pass_app
def compare_cmd(app, before, after, task, threshold):
    """Compare two sets of screenshots: changed pixels per page and width, and a diff image.

    BEFORE and AFTER are operations that took screenshots (`orch snap`, a promotion), as
    OPERATION or OPERATION:SET when it holds several (a promotion holds `before` and `after`).
    Regions matching `visual.ignore` selectors do not count. Exit 1 when a page changed more
    than the threshold.

    \b
    Examples:
      orch compare 412 415 --task 14883
      orch compare 420:before 420:after --task 14883 --threshold 5
    """
    from orchestrator.actions.compare import compare

    result = compare(app.oplog, app.inventory, before, after, task=task, threshold=threshold)
    show(app, result)


def show(app, result: dict) -> None:
    """Print a comparison's rows (table or JSON) and exit 1 when a page changed more than its threshold."""
    from orchestrator.backends.visual import shots

    root = shots.root(app.oplog.url)
    rows = [
        row
        | {
            "changed": f"{row['percent']:.2f} %",
            "diff": str(root / row["diff"]),
            "verdict": "TOO MUCH" if row["exceeded"] else "ok",
        }
        for row in result["rows"]
    ]
    app.emit(result, DIFF_COLUMNS, rows=rows)
    if result.get("error"):
        app.say(f"orch: {result['error']}")
        raise click.exceptions.Exit(ExitCode.FAILED)


def preview_promotion(app, site: str, source: str | None, task: str, dry_run: bool, make_plan) -> None:
    """`orch promote --from ENV --dry-run --visual`: the promotion's plan, then ENV and production screenshot on
    the same pages and compared (one `compare` operation of the task). Exit 1 above the threshold."""
    if not dry_run or not source:
        raise click.UsageError(
            "--visual goes with --dry-run and --from ENV (promote.visual_threshold checks real promotions)"
        )
    from orchestrator.actions.compare import compare_envs

    with app.preflight("promote", task, site, "production", dry_run=True):
        plan = make_plan()
    result = compare_envs(app.oplog, app.inventory, site, "production", source, task=task)
    if app.json:
        app.emit({"plan": plan.as_dict() | {"dry_run": True}, "visual": result})
        if result.get("error"):
            raise click.exceptions.Exit(ExitCode.FAILED)
        return
    app.show_plan(plan)
    show(app, result)


def snap_copy(app, site: str, env: str, task: str) -> dict:
    """`orch staging create --snap`: screenshot a new copy and production on the same pages and compare them
    (a `compare` operation of the task, for a reviewer: informative, never failing the copy). Return the rows."""
    from orchestrator.actions.compare import compare_envs
    from orchestrator.errors import OperationFailed, OrchError

    try:
        result = compare_envs(app.oplog, app.inventory, site, "production", env, task=task, threshold=None)
    except OrchError as exc:
        raise OperationFailed(f"{site}/{env} is ready, but its screenshots failed: {exc}") from exc
    largest = max(result["rows"], key=lambda row: row["percent"], default=None)
    if largest:
        app.say(
            f"screenshots of {env}: {len(result['rows'])} beside production's, largest change "
            f"{largest['percent']:.2f} % ({largest['path']} {largest['viewport']}); "
            f"orch report --task {task} --format html"
        )
    return result


def boot_drill(app, site: str, env: str, backup_id: str, task: str, dry_run: bool) -> None:
    """`orch verify SITE --boot`: plan (or run) a boot drill of a production backup and print its outcome."""
    from orchestrator.actions import drill
    from orchestrator.errors import UsageError
    from orchestrator.notify import Notifier

    if env != "production":
        raise UsageError("--boot drills restore production's backups (leave out --env)")
    with app.preflight("drill", task, site, env, dry_run):
        plan = drill.plan_drill(app.oplog, app.inventory, site, backup_id=backup_id, task=task)
    if dry_run:
        app.show_plan(plan)
        return
    report = drill.boot_drill(app.oplog, app.inventory, plan, notifier=Notifier(app.inventory.notify))
    app.emit(
        report,
        [("path", "url"), ("status", "http"), ("seconds", "seconds"), ("verdict", "verdict")],
        rows=[row | {"verdict": "ok" if row["ok"] else row["problem"]} for row in report["urls"]],
    )
    app.say(
        f"backup {report['backup_id']}: boot drill passed, RTO {report['rto_seconds']:.1f} s "
        f"({len(report['urls'])} URL(s) ok, copy {report['copy']} removed)"
    )


COMMANDS = [snap_cmd, compare_cmd]
