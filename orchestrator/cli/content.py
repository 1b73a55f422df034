"""`orch promote --content / --content-only`: content from a staging copy, after (or without) its code."""

from __future__ import annotations

import inspect

import click

from orchestrator.actions import content, promote
from orchestrator.errors import UsageError

from .app import require_tty_or_yes

CONTENT_HELP = """

\b
Content (--content: code first, then content; --content-only):
  a three-way merge of the copy's content (pages, posts, media, menu items, modules, chosen settings)
  into production: base = the backup the copy was made from. Production's own new rows are kept;
  rows the copy added get new ids where production used theirs (references rewritten); the files
  the promoted rows use are copied; a row changed on both sides blocks it (exit 1) until resolved.
  --select KIND:ID (repeat) promotes only those items (and what they need); --prefer
  staging|production or --prefer KIND:ID=staging|production resolves conflicts; --delete also
  applies items deleted on the copy. One transaction, a backup first, a health check after; any
  failure restores production's database and files.

\b
  orch promote shinglas --from t14883 --content-only --task 14883 --dry-run
  orch promote shinglas --from t14883 --content --select page:812 --task 14883 --yes
"""


def with_content_help(text: str) -> str:
    """Given `orch promote`'s help text, return it with the content section appended."""
    return inspect.cleandoc(text) + CONTENT_HELP


def content_options(func):
    """The content options of `orch promote`."""
    for option in reversed(
        [
            click.option("--content", is_flag=True, help="Also promote content (after the code): see below."),
            click.option("--content-only", is_flag=True, help="Promote content only, no code."),
            click.option(
                "--select",
                "select",
                multiple=True,
                metavar="KIND:ID",
                help="Content items to promote (repeat; default: every item the copy added or changed).",
            ),
            click.option(
                "--prefer",
                "prefer",
                multiple=True,
                metavar="SIDE|KIND:ID=SIDE",
                help="Resolve content conflicts: staging or production (for all, or one item).",
            ),
            click.option("--delete", "delete", is_flag=True, help="Also delete items the copy deleted."),
        ]
    ):
        func = option(func)
    return func


def promote_with_content(
    app,
    site: str,
    source: str | None,
    ref: str | None,
    task: str,
    *,
    dry_run: bool,
    yes: bool,
    migrate: bool,
    content_only: bool,
    select,
    prefer,
    delete: bool,
) -> None:
    """Plan the code (unless content_only) and the content promotion; with --dry-run print both; else refuse a
    blocked content merge before anything changes, then promote the code, then the content."""
    if source is None or ref is not None:
        raise UsageError("content comes from a staging copy: give --from ENV (not --ref)")
    with app.preflight("promote-content" if content_only else "promote", task, site, "production", dry_run):
        code_plan = (
            None
            if content_only
            else promote.plan_promote(
                app.oplog, app.inventory, site, source=source, ref=None, task=task, migrate=migrate, compare=dry_run
            )
        )
        content_plan = content.plan_content(
            app.oplog,
            app.inventory,
            site,
            source=source,
            task=task,
            select=list(select),
            prefer=list(prefer),
            delete=delete,
        )
        if dry_run:
            app.show_plan([plan for plan in (code_plan, content_plan) if plan is not None])
            return
        content.refuse_conflicts(content_plan)  # before the code goes: content that cannot follow stops both
        require_tty_or_yes(
            yes, f"promote {'content' if content_only else 'code and content'} of {site} from {source} to production"
        )
    results = {}
    if code_plan is not None:
        results["code"] = code = promote.promote(app.oplog, app.inventory, code_plan)
        if not app.json:
            click.echo(
                f"{site}: code: "
                + (
                    "production already runs this code"
                    if code["status"] == "unchanged"
                    else f"revision {code['revision']} is live"
                )
            )
    results["content"] = done = content.promote_content(app.oplog, app.inventory, content_plan)
    app.emit(results if code_plan is not None else done)
    if not app.json:
        backup = f" (backup {done['backup_id']})" if done.get("backup_id") else ""
        click.echo(f"{site}: content from {source}: {done['summary']}{backup}")
