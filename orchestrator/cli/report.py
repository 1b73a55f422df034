"""`orch report`: a task's report for project managers."""

from __future__ import annotations

import click

from orchestrator.oplog import report

from .app import pass_app, validate_task_query


@click.command("report")
@click.option("--task", "-t", required=True, callback=validate_task_query, help="The support task to report on.")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to a file.")
@pass_app
def report_cmd(app, task, fmt, output):
    """Everything done for a support task, for a PM: a Markdown summary for the ticket, or one
    self-contained HTML page (no scripts, no external files) to mail or attach.

    \b
    Examples:
      orch report --task 14883
      orch report --task 14883 --format html -o task-14883.html
    """
    ops = app.oplog.operations(task=task, oldest_first=True, with_details=True)
    extra = _extra(app, ops)
    if fmt == "json":
        import json

        text = json.dumps(report.data(task, ops, extra), indent=2, default=str)
    else:
        from orchestrator.backends.visual.shots import Gallery, root

        gallery = Gallery(root(app.oplog.url))  # screenshots and diffs of the task, side by side
        notes = ([f"Cost: {extra['cost']}"] if extra.get("cost") else []) + [
            f"Oplog chain head: {extra['chain_head']} (check with `orch log verify`)"
        ]
        text = (
            report.html_page(task, ops, gallery, notes) if fmt == "html" else report.markdown(task, ops, gallery, notes)
        )
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        app.say(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def _extra(app, ops: list[dict]) -> dict:
    """The task's cost at the inventory's rates and the oplog's chain head, for the report."""
    from orchestrator.billing import task_cost
    from orchestrator.oplog.chain import current_head

    return {"cost": task_cost(app.inventory, ops) or None, "chain_head": str(current_head(app.oplog.engine))}


COMMANDS = [report_cmd]
