"""The CLI's context object: global options, and the inventory and oplog opened lazily on first use."""

from __future__ import annotations

import logging
import os
import sys
from functools import cached_property
from pathlib import Path

import click

from orchestrator.ages import parse_age
from orchestrator.errors import UsageError
from orchestrator.masking import mask
from orchestrator.tasks import UNATTENDED, is_task

from . import output
from .live import LineSafeHandler, Terminal


class MaskingFormatter(logging.Formatter):
    """Every log line passes through the secret mask, whatever a library put into it."""

    def format(self, record):
        return mask(super().format(record))


def setup_logging(verbosity: int, live: Terminal | None = None) -> None:
    """Log to stderr at the level `verbosity` asks for; with `live`, each line first takes the live progress
    line off the terminal."""
    handler = LineSafeHandler(sys.stderr, live) if live else logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter("%(message)s" if verbosity < 2 else "%(name)s: %(message)s"))
    root = logging.getLogger("orch")
    root.handlers[:] = [handler]
    # -q: warnings and errors only; default: progress (INFO); -v: every command run, masked (DEBUG)
    root.setLevel(logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    root.propagate = False


class App:
    """Holds what every command needs; commands reach it with `@pass_app`."""

    def __init__(self, inventory_path: str | None, json_output: bool, verbosity: int):
        self.inventory_path = Path(inventory_path or os.environ.get("ORCH_INVENTORY") or "inventory.yaml")
        self.json = json_output
        self.verbosity = verbosity

    @cached_property
    def inventory(self):
        """The inventory with every valid site; a broken site file costs that site alone (see `broken_sites`)."""
        from orchestrator.config import load_inventory

        return load_inventory(self.inventory_path, partial=True)

    @cached_property
    def oplog(self):
        """The oplog the inventory file names. Only the inventory file is read, not the site files: `orch log`
        stays quick on a large fleet and works while a site file is broken."""
        from orchestrator.config.load import load_oplog_url
        from orchestrator.oplog import Oplog

        oplog = Oplog(load_oplog_url(self.inventory_path))
        # a crashed earlier run shows as `interrupted`, its lock becomes reclaimable, nothing of it runs on
        if oplog.reap(leftovers=self._stop_leftovers):
            from orchestrator.actions.rollback import settle_interrupted

            settle_interrupted(oplog, self.inventory, self.say)  # a promotion cut short is checked or undone
        from orchestrator.tracker import attach

        attach(oplog, lambda: self.inventory)  # finished operations queue a note for the tracker, if one is set
        return oplog

    def _stop_leftovers(self, operation: dict) -> str | None:
        from orchestrator.backends.remote.leftovers import stop_leftovers

        return stop_leftovers(lambda: self.inventory, operation)

    def broken_sites(self) -> int:
        """For a command over the whole fleet: print the problems of each broken site file (stderr) and return
        how many files were skipped (the command then exits 1 once the valid sites are done)."""
        broken = self.inventory.broken
        for line in self.inventory.problems:
            click.echo(f"orch: {mask(line)}", err=True)
        if broken:
            click.echo(
                f"orch: skipped {len(broken)} site(s) whose file is broken: {', '.join(sorted(broken))}", err=True
            )
        return len(broken)

    def emit(self, data, columns: list[tuple[str, str]] | None = None, rows=None) -> None:
        """Print `data` as JSON with --json, else `rows` (default: data) as a table of `columns`."""
        if self.json:
            output.emit_json(data)
        elif columns is not None:
            output.table(data if rows is None else rows, columns)

    def show_plan(self, plans) -> None:
        """--dry-run output, one style for every verb: per plan a header and its lines, then a closing line
        (stderr); with --json, the plans' data on stdout."""
        plans = plans if isinstance(plans, list) else [plans]
        if self.json:
            data = [plan.as_dict() | {"dry_run": True} for plan in plans]
            output.emit_json(data[0] if len(data) == 1 else data)
            return
        for plan in plans:
            where = "/".join(part for part in (plan.site, plan.env) if part)
            click.echo(f"{plan.action} {where} (task {plan.task}):")
            for line in plan.lines() or ["nothing to do"]:
                click.echo(f"  {mask(line)}")
        self.say("dry run: nothing changed")

    def preflight(
        self, action: str, task: str | None, site: str | None = None, env: str | None = None, dry_run: bool = False
    ):
        """A context for planning a mutating command: a refusal raised inside is recorded under the task.

        A site or environment argument that cannot be a name at all (`../x`, `a;b`, a newline) is a usage error
        raised here, before the context: typing noise is not recorded in the oplog.
        """
        from orchestrator.actions.plan import preflight
        from orchestrator.config.load import check_name

        for what, value in (("site", site), ("environment", env)):
            if value is not None:
                check_name(value, what)
        return preflight(lambda: self.oplog, action=action, task=task, site=site, env=env, dry_run=dry_run)

    def live_progress(self) -> bool:
        """Whether steps show a live progress line: on a terminal (stdout and stderr), without -q or --json."""
        return self.verbosity >= 1 and not self.json and sys.stdout.isatty() and sys.stderr.isatty()

    def say(self, message: str) -> None:
        """Tell a human something (stderr, so --json stdout stays clean)."""
        if self.verbosity >= 0:
            click.echo(mask(message), err=True)


pass_app = click.make_pass_decorator(App)


def json_option(func):
    """`--json` on a subcommand, same as the global flag (`orch log --json` and `orch --json log` both work)."""

    def callback(ctx, _param, value):
        if value:
            ctx.find_object(App).json = True

    return click.option(
        "--json",
        "json_flag",
        is_flag=True,
        expose_value=False,
        callback=callback,
        help="Machine-readable JSON on stdout.",
    )(func)


def validate_task(_ctx, _param, value):
    """A task option's callback: a task number (digits only), else a usage error (exit 2)."""
    if value is not None and not is_task(value):
        raise click.BadParameter(f"{value!r} is not a task number: give the support task's number, such as 14883")
    return value


def validate_task_query(ctx, param, value):
    """Like validate_task, for reading the log: also accepts the task of unattended runs (`scheduler`)."""
    return value if value == UNATTENDED else validate_task(ctx, param, value)


def validate_age(_ctx, param, value):
    """A click callback: an age like 14d (see parse_age)."""
    if value is None:
        return None
    age = parse_age(value)
    if age is None:
        raise click.BadParameter(f"{value!r}: write a number and a unit, e.g. 14d, 12h, 30m (s m h d w)")
    return age


def task_option(required: bool = True):
    return click.option(
        "--task",
        "-t",
        required=required,
        callback=validate_task,
        metavar="N",
        help="Support task this action is logged against" + (" (required)." if required else "."),
    )


def require_tty_or_yes(yes: bool, what: str) -> None:
    """Refuse a dangerous action without --yes when nobody can confirm it interactively."""
    if yes:
        return
    if not sys.stdin.isatty():
        from orchestrator.errors import Refused

        raise Refused(f"{what}: refusing without --yes (no terminal to confirm on)")
    if not click.confirm(f"{what}. Continue?", default=False):
        raise UsageError("aborted by user")
