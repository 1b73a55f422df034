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
    if fmt == "json":
        import json
        text = json.dumps({"summary": report.summary(task, ops), "operations": ops}, indent=2, default=str)
    else:
        from orchestrator.backends.visual.shots import Gallery, root
        gallery = Gallery(root(app.oplog.url))  # screenshots and diffs of the task, side by side
        text = (report.html_page(task, ops, gallery) if fmt == "html" else report.markdown(task, ops, gallery))
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        app.say(f"wrote {output}")
    else:
        click.echo(text, nl=False)


COMMANDS = [report_cmd]
