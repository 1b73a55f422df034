"""`orch` command line: parse, confirm, print. The work itself lives in orchestrator.actions."""
from __future__ import annotations

import signal
import sys

import click

from orchestrator import __version__
from orchestrator.errors import ExitCode, InventoryError, OrchError
from orchestrator.masking import mask

from .app import App, setup_logging

EPILOG = """\b
Examples:
  orch check                         are all hosts, databases and storages reachable?
  orch backup shinglas --task 14883  back up a site against a support task
  orch log --task 14883              everything done for that task, oldest first

Exit codes: 0 ok, 1 operation failed, 2 usage or inventory error, 3 site locked, 4 refused by a safety guard.
Shell completion: eval "$(_ORCH_COMPLETE=bash_source orch)"  (zsh_source, fish_source likewise)."""


# Each module holds related commands and lists them in its COMMANDS. Importing them sets attributes of this
# package with their names, so no function here may share a name with one of them.
COMMAND_MODULES = ("sites", "check", "log", "report", "locks", "hosts", "backup", "maintain", "staging", "promote",
                   "health", "scheduler")


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-i", "--inventory", envvar="ORCH_INVENTORY", metavar="PATH",
              help="Inventory file (default ./inventory.yaml, or $ORCH_INVENTORY).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON on stdout, nothing else there.")
@click.option("-v", "--verbose", count=True, help="More detail on stderr: every command run, secrets masked.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr, only warnings and errors.")
@click.version_option(__version__, prog_name="orch")
@click.pass_context
def cli(ctx, inventory, json_output, verbose, quiet):
    """orch keeps an agency's client sites backed up, staged and safely deployed,
    with every action logged against its support task."""
    verbosity = -1 if quiet else verbose + 1
    setup_logging(verbosity)
    ctx.obj = App(inventory, json_output, verbosity)


def _register() -> None:
    from importlib import import_module
    for name in COMMAND_MODULES:
        for command in import_module(f"{__name__}.{name}").COMMANDS:
            cli.add_command(command)


def _terminate(signum, _frame):
    # Turn SIGTERM into the same path as Ctrl-C, so the running operation is recorded as interrupted.
    raise KeyboardInterrupt(f"signal {signum}")


def show_error(error: OrchError) -> int:
    """Print an OrchError as one line per problem on stderr and return its exit code."""
    lines = error.problems if isinstance(error, InventoryError) else [str(error)]
    for line in lines:
        click.echo(f"orch: {mask(line)}", err=True)
    return int(error.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `orch` console script."""
    _register()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # without standalone mode click returns the code of a `click.exceptions.Exit` instead of exiting
        code = cli.main(args=argv, prog_name="orch", standalone_mode=False) or ExitCode.OK
    except OrchError as error:
        code = show_error(error)
    except click.ClickException as error:
        error.show()
        code = ExitCode.USAGE
    except (click.Abort, KeyboardInterrupt):
        click.echo("orch: interrupted", err=True)
        code = 130
    sys.exit(code)
