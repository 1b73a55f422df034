"""`orch` command line: parse, confirm, print. The work itself lives in orchestrator.actions.

Command modules load lazily: `orch log` imports the log command only, not paramiko, boto3 or the staging code.
`orch --help` imports none of them: it lists the short help kept in COMMANDS (a unit test checks that it
matches each command's own docstring).
"""

from __future__ import annotations

import signal
import sys
from importlib import import_module

import click

from orchestrator import __version__, progress
from orchestrator.errors import ExitCode, InventoryError, OrchError
from orchestrator.masking import mask

from .app import App, setup_logging
from .live import Terminal

EPILOG = """\b
Examples:
  orch check                         are all hosts, databases and storages reachable?
  orch backup shinglas --task 14883  back up a site against a support task
  orch log --task 14883              everything done for that task, oldest first

Exit codes: 0 ok, 1 operation failed, 2 usage or inventory error, 3 site locked, 4 refused by a safety guard.
Shell completion: eval "$(_ORCH_COMPLETE=bash_source orch)"  (zsh_source, fish_source likewise)."""

# command name -> (module of this package whose COMMANDS list holds it, its short help for `orch --help`).
# A module imported here becomes an attribute of this package, so no name here may share a module's name
# unless it is that module's own command.
COMMANDS = {
    "adopt": (
        "promote",
        "Convert an in-place production docroot to the releases layout, atomically and after a backup.",
    ),
    "backup": ("backup", "Back up files and database of sites into their restic repositories."),
    "backups": ("backup", "List a site's backups: id, time, task, pinned, sizes, status."),
    "compare": ("visual", "Compare two sets of screenshots: changed pixels per page and width, and a diff image."),
    "check": ("check", "Validate the inventory and check every host, database and storage it names."),
    "export": (
        "backup",
        "Export a backup (files + database dump) as one .tar.zst in the bucket, with a download link.",
    ),
    "health": (
        "health",
        "Backup health per site and environment, from the oplog: age of the newest good backup "
        "against backup.max_age (default 26 h), the last failure, the last successful restore "
        "drill, the size.",
    ),
    "hosts": ("hosts", "Hosts of the inventory and their SSH host keys."),
    "locks": ("locks", "List the sites currently locked by a running (or dead) operation."),
    "log": ("log", "Show what was done: operations with who, when, how long, result."),
    "notify": ("health", "Notification channels (`notify:` in the inventory)."),
    "pin": ("maintain", "Pin a backup: pinned backups are never pruned."),
    "promote": ("promote", "Send code from a test environment to production, safely."),
    "prune": ("maintain", "Apply retention (daily/weekly/monthly/yearly, restic forget semantics)."),
    "releases": ("promote", "List a site's releases: release, time, task, revision, status (current, previous, bad)."),
    "report": (
        "report",
        "Everything done for a support task, for a PM: a Markdown summary for the ticket, or one "
        "self-contained HTML page (no scripts, no external files) to mail or attach.",
    ),
    "restore": ("backup", "Restore a backup into an environment (files, database, or one path)."),
    "rollback": (
        "promote",
        "Put production back on an earlier release (releases layout) or undo the last promotion (in place).",
    ),
    "scheduler": ("scheduler", "Back up, prune and verify every site on schedule, unattended."),
    "serve": ("serve", "Web pages for project managers: every task's operations, time and cost; sites; fleet health."),
    "sites": ("sites", "List sites and their environments."),
    "snap": ("visual", "Full-page screenshots of an environment's check URLs, desktop and mobile."),
    "staging": ("staging", "Staging copies of production: create, refresh, list, destroy, gc."),
    "tracker": ("tracker", "Notes posted to the task tracker: what is queued, sent, or waiting for a retry."),
    "unlock": ("locks", "Remove a site's lock after checking its holder is really gone, and log that you did."),
    "unpin": ("maintain", "Unpin a backup: pinned backups are never pruned."),
    "usage": (
        "maintain",
        "Bytes stored per site, read from the storage (S3 bucket listing or du), for cost transparency.",
    ),
    "verify": ("maintain", "Restore drill: prove a backup restores, and that it holds what it should."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is looked up (click's lazy
    group pattern), and lists commands from COMMANDS without importing any."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = import_module(f"{__name__}.{COMMANDS[cmd_name][0]}")
        return next(command for command in module.COMMANDS if command.name == cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        rows = [(name, _short_help(text, limit)) for name, (_, text) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(text: str, limit: int) -> str:
    """Given a command's help text and a width, return click's own short form of it (its first sentence, cut
    at a word with "..."). Through a throwaway Command: click.utils.make_default_short_help is deprecated
    and goes away in click 9."""
    return click.Command(None, help=text).get_short_help_str(limit)


@click.group(
    cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option(
    "-i",
    "--inventory",
    envvar="ORCH_INVENTORY",
    metavar="PATH",
    help="Inventory file (default ./inventory.yaml, or $ORCH_INVENTORY).",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON on stdout, nothing else there.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr: every command run, secrets masked.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr, only warnings and errors.")
@click.version_option(__version__, prog_name="orch")
@click.pass_context
def cli(ctx, inventory, json_output, verbose, quiet):
    """orch keeps an agency's client sites backed up, staged and safely deployed,
    with every action logged against its support task."""
    verbosity = -1 if quiet else verbose + 1
    app = App(inventory, json_output, verbosity)
    live = Terminal(sys.stderr, when=app.live_progress)  # asked at each step: --json may come after the command
    setup_logging(verbosity, live)
    progress.use(live)
    ctx.obj = app


def _terminate(signum, _frame):
    # Turn SIGTERM into the same path as Ctrl-C, so the running operation is recorded as interrupted.
    raise KeyboardInterrupt(f"signal {signum}")


def show_error(error: OrchError) -> int:
    """Print an OrchError as one line per problem on stderr and return its exit code."""
    lines = error.problems if isinstance(error, InventoryError) else [str(error)]
    for line in lines:
        click.echo(f"orch: {mask(line)}", err=True)
    return int(error.exit_code)


def show_click_error(error: click.ClickException) -> int:
    """Print a command-line error as one line on stderr (with where to find help) and return its exit code."""
    hint = ""
    if isinstance(error, click.UsageError) and error.ctx is not None:
        hint = f" (see `{error.ctx.command_path} --help`)"
    click.echo(f"orch: {mask(error.format_message())}{hint}", err=True)
    return ExitCode.USAGE if isinstance(error, click.UsageError) else error.exit_code


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `orch` console script."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # without standalone mode click returns the code of a `click.exceptions.Exit` instead of exiting
        code = cli.main(args=argv, prog_name="orch", standalone_mode=False) or ExitCode.OK
    except OrchError as error:
        code = show_error(error)
    except click.ClickException as error:
        code = show_click_error(error)
    except (click.Abort, KeyboardInterrupt):
        click.echo("orch: interrupted", err=True)
        code = 130
    sys.exit(code)
