"""`orch log verify`: walk the oplog's hash chain and name the first row that was changed, deleted or moved."""
from __future__ import annotations

import click

from orchestrator.errors import ExitCode

from .app import json_option, pass_app


@click.command("verify")
@json_option
@pass_app
def verify_cmd(app):
    """Check that no operation, step or artifact of the oplog was changed, deleted or reordered.

    Every final row is a link of a hash chain. Prints the chain's head (quote it: it is also in each
    tracker note and task report) and exits 0, or names the first broken row and exits 1.

    \b
    Examples:
      orch log verify
      orch log verify --json
    """
    from orchestrator.oplog import chain
    head, broken = chain.verify(app.oplog.engine)
    if app.json:
        app.emit({"ok": broken is None, "head": str(head), "links": head.seq,
                  "break": None if broken is None else {"seq": broken.seq, "kind": broken.kind,
                                                       "row_id": broken.row_id, "problem": broken.problem,
                                                       "message": str(broken)}})
    elif broken is None:
        click.echo(f"oplog chain ok: {head.seq} links, head {head}")
    else:
        click.echo(f"oplog chain broken: {broken}; the chain holds up to link {head.seq} ({head.short})",
                   err=True)
    if broken is not None:
        raise click.exceptions.Exit(ExitCode.FAILED)
