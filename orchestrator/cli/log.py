"""`orch log`: the operation log, the PM's view of a task."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from orchestrator.ages import parse_age
from orchestrator.errors import ExitCode

from .app import json_option, pass_app, validate_task_query
from .output import human_duration, human_size, short_time

COLUMNS = [
    ("id", "id"),
    ("started", "started (utc)"),
    ("task", "task"),
    ("site", "site"),
    ("env", "env"),
    ("action", "action"),
    ("actor", "actor"),
    ("took", "took"),
    ("status", "status"),
    ("note", "error"),
]


def parse_since(_ctx, _param, value):
    """Accept an ISO date/time, or a relative '3d', '12h', '30m'."""
    if not value:
        return None
    if (age := parse_age(value)) is not None:
        return datetime.now(timezone.utc) - age
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use a date like 2026-11-01, a time like 2026-11-01T08:00, or 3d / 12h") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.group("log", invoke_without_command=True)
@click.option("--task", "-t", callback=validate_task_query, help="Only this task, oldest first, with the total time.")
@click.option("--site", "-s", help="Only this site.")
@click.option("--action", "-a", help="Only this action (backup, restore, staging, promote, unlock...).")
@click.option("--since", callback=parse_since, help="Only operations started since DATE (or 3d, 12h).")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="At most N operations (default 50 without --task).")
@click.option("--steps", is_flag=True, help="Show each operation's steps and artifacts.")
@json_option
@pass_app
def log_cmd(app, task, site, action, since, limit, steps):
    """Show what was done: operations with who, when, how long, result.

    With --task it is the PM's view of one support task: every operation on it, oldest first,
    and the total time spent.

    \b
    Examples:
      orch log --task 14883
      orch log --site shinglas --since 7d --steps
      orch log --task 14883 --json
      orch log verify                    is the oplog as orch wrote it? (hash chain)
    """
    if click.get_current_context().invoked_subcommand:
        return
    ops = app.oplog.operations(
        task=task,
        site=site,
        action=action,
        since=since,
        limit=limit or (None if task else 50),
        oldest_first=bool(task),
        with_details=steps or app.json,
    )
    if app.json:
        app.emit(ops)
        return
    _print(ops, steps)
    if task:
        from orchestrator.billing import total_seconds

        total = total_seconds(ops)  # an operation run inside another (a promotion's backup) is counted once
        click.echo(f"\ntask {task}: {len(ops)} operation(s), total time {human_duration(total) or '0s'}")


def _note(op: dict) -> str:
    """Given an operation, return the table's last column: its error cut to one short line, and its flags."""
    from orchestrator.oplog.text import one_line

    flags = [flag for flag, on in (("(catch-up)", op.get("catch_up")), ("(forced)", op["params"].get("force"))) if on]
    return " ".join([one_line(op.get("error"), 80), *flags]).strip()


def _print(ops: list[dict], steps: bool) -> None:
    from orchestrator.oplog.text import one_line

    rows = [
        op | {"started": short_time(op["started_at"]), "took": human_duration(op["duration"]), "note": _note(op)}
        for op in ops
    ]
    if not steps:
        from .output import table

        table(rows, COLUMNS)
        return
    for row, op in zip(rows, ops, strict=True):
        click.echo(
            f"#{row['id']} {row['started']}  task {row['task']}  {row['site'] or '-'}/{row['env'] or '-'}  "
            f"{row['action']}  by {row['actor']}  {row['took']}  {row['status'].upper()}"
        )
        if op.get("error"):
            click.echo(f"    error: {one_line(op['error'], 1000)}")
        steps_ = op.get("steps", [])
        width = max([32, *(len(step["name"]) for step in steps_)])  # one column per operation, however long a name
        for step in steps_:
            click.echo(
                f"    {step['seq']:>2}. {step['name']:<{width}} {step['status']:<11} "
                f"{human_duration(step.get('duration'))}"
            )
            for line in (step.get("output") or "").strip().splitlines()[-3:]:
                click.echo(f"          {line}")
        for art in op.get("artifacts", []):
            click.echo(f"    -> {art['kind']}: {art['ident']} {human_size(art.get('size'))}".rstrip())


@click.command("verify")
@click.option(
    "--expect",
    "expected",
    multiple=True,
    metavar="SEQ:HASH",
    help="A head quoted by a tracker note or a report: this oplog must still hold it (repeatable).",
)
@json_option
@pass_app
def verify_cmd(app, expected):
    """Check that no operation, step or artifact of the oplog was changed, deleted or reordered.

    Every final row is a link of a hash chain. Prints the chain's head (quote it: it is also in each
    tracker note and task report) and exits 0, or names the first broken row and exits 1. With --expect,
    a head quoted elsewhere must still be in the chain: an oplog rewritten after that note fails.

    \b
    Examples:
      orch log verify
      orch log verify --expect 1843:9c1e0f5a2b7d4e61
      orch log verify --json
    """
    from orchestrator.oplog import chain

    head, broken = chain.verify(app.oplog.engine)
    problems = [str(broken)] if broken else []
    problems += [found for quoted in expected if (found := chain.mismatch(app.oplog.engine, quoted))]
    if app.json:
        app.emit(
            {
                "ok": not problems,
                "head": str(head),
                "links": head.seq,
                "problems": problems,
                "break": None
                if broken is None
                else {
                    "seq": broken.seq,
                    "kind": broken.kind,
                    "row_id": broken.row_id,
                    "problem": broken.problem,
                    "message": str(broken),
                },
            }
        )
    elif not problems:
        click.echo(f"oplog chain ok: {head.seq} links, head {head}")
    else:
        for problem in problems:
            click.echo(f"oplog chain broken: {problem}; the chain holds up to link {head.seq} ({head.short})", err=True)
    if problems:
        raise click.exceptions.Exit(ExitCode.FAILED)


log_cmd.add_command(verify_cmd)
COMMANDS = [log_cmd]
