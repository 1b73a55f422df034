"""The note about one finished operation: plain text for people (Markdown-friendly) plus the facts as data."""

from __future__ import annotations

from urllib.parse import quote

from orchestrator.billing import Rates
from orchestrator.cli.output import human_duration, human_size

# artifact kind -> how a PM reads it
LABELS = {
    "backup": "backup",
    "pre-promotion-backup": "backup taken before the promotion",
    "safety-backup": "safety backup",
    "restored-backup": "restored backup",
    "source-backup": "copied from backup",
    "staging-url": "staging URL",
    "revision": "revision",
    "plan": "files promoted",
    "rollback": "rolled back",
    "undone-promotion": "undid promotion",
    "export": "export",
    "verify": "drill of backup",
    "url-replacements": "URLs replaced",
    "pinned": "pinned",
    "unpinned": "unpinned",
    "forgotten-backup": "pruned backup",
    "pre-adopt-backup": "backup before adopting",
}
SHOWN_FILES = 20


def task_url(public_url: str | None, task: str) -> str | None:
    """Given the web pages' public URL (or None) and a task, return the task page's URL (or None)."""
    return f"{public_url.rstrip('/')}/tasks/{quote(str(task), safe='')}" if public_url else None


def build(op: dict, *, key: str, link: str | None, rates: Rates, page: str | None) -> dict:
    """Given an operation dict with steps and artifacts, the note's key, the operation's chain link
    (`seq:hash`: the chain's head as the operation finished), the rates in force and the task page URL,
    return the payload queued in the outbox."""
    cost = rates.time_cost(op["duration"])
    where = "/".join(part for part in (op["site"], op["env"]) if part) or "-"
    head = f"**orch {op['action']}** of {where}: **{op['status']}** in {human_duration(op['duration']) or '0s'}" + (
        f", {rates.money(cost)}" if cost is not None else ""
    )
    lines = [head, "", f"Operation {op['id']} by {op['actor']}, started {op['started_at'][:19].replace('T', ' ')} UTC."]
    if op.get("error"):
        lines.append(f"Error: {op['error']}")
    produced = [line for artifact in op.get("artifacts", []) for line in _artifact_lines(artifact)]
    if produced:
        lines += ["", "Produced:", *produced]
    lines.append("")
    if page:
        lines.append(f"Task page: {page}")
    if link:
        lines.append(f"Oplog chain head after this operation: {link} (check with `orch log verify`)")
    lines.append(f"orch note {key}")
    return {
        "text": "\n".join(lines),
        "hours": round((op["duration"] or 0) / 3600, 4),
        "cost": cost,
        "currency": rates.currency or None,
        "chain_head": link,
        "task_page": page,
        "operation": {
            k: op[k]
            for k in (
                "id",
                "task",
                "site",
                "env",
                "action",
                "actor",
                "started_at",
                "finished_at",
                "duration",
                "status",
                "error",
            )
        },
        "artifacts": [{k: a[k] for k in ("kind", "ident", "size")} for a in op.get("artifacts", [])],
        "comment": f"orch {op['action']} {where} ({op['status']}) [{key}]",
    }


def _artifact_lines(artifact: dict) -> list[str]:
    kind, ident, details = artifact["kind"], artifact["ident"], artifact.get("details") or {}
    label = LABELS.get(kind, kind)
    size = f" ({human_size(artifact['size'])})" if artifact.get("size") else ""
    if kind == "rollback":
        return [f"- {label}: {ident}" + (f", reason: {details['reason']}" if details.get("reason") else "")]
    if kind == "plan":
        files = [
            f"{sign} {name}"
            for sign, key in (("+", "added"), ("~", "changed"), ("-", "removed"))
            for name in details.get(key, [])
            if isinstance(name, str)
        ]
        shown = [f"  - `{line}`" for line in files[:SHOWN_FILES]]
        more = [f"  - and {len(files) - SHOWN_FILES} more"] if len(files) > SHOWN_FILES else []
        return [f"- {label}: {ident}{size}", *shown, *more]
    if kind == "revision" and details.get("release"):
        return [f"- {label}: {ident} (release {details['release']})"]
    return [f"- {label}: {ident}{size}"]
