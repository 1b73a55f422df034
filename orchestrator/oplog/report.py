"""A task's report for project managers: what was done, by whom, when, how long, with what result.

Rendered from `Oplog.operations(task=..., with_details=True)` as Markdown (for a ticket comment) or as one
self-contained HTML page (no scripts, no external assets: it can be mailed or attached as it is).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence

from .text import one_line

ERROR_LIMIT = 300  # characters of an error shown in a report: one line, whatever the error held (an HTML page)
SHOWN_ARTIFACTS = (
    "backup",
    "pre-promotion-backup",
    "safety-backup",
    "restored-backup",
    "source-backup",
    "staging-url",
    "revision",
    "rollback",
    "export",
    "plan",
    "url-replacements",
    "verify",
    "visual-diff",
    "drill",
)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"


def _when(iso: str | None) -> str:
    return (iso or "").replace("T", " ")[:16]


def summary(task: str, ops: list[dict]) -> dict:
    """Totals of a task: operations, time spent, statuses, sites, first and last activity."""
    from orchestrator.billing import total_seconds  # an operation run inside another is counted once

    return {
        "task": task,
        "operations": len(ops),
        "total_seconds": total_seconds(ops),
        "statuses": dict(Counter(op["status"] for op in ops)),
        "sites": sorted({op["site"] for op in ops if op["site"]}),
        "first": ops[0]["started_at"] if ops else None,
        "last": ops[-1]["started_at"] if ops else None,
    }


def _artifacts(op: dict) -> list[str]:
    return [f"{a['kind']}: {a['ident']}" for a in op.get("artifacts", []) if a["kind"] in SHOWN_ARTIFACTS]


def _visuals(op: dict) -> tuple[list[dict], dict[str, list[dict]]]:
    """Given an operation, return (its comparisons, its screenshots by set) from its artifacts' details."""
    diffs = [a["details"] for a in op.get("artifacts", []) if a["kind"] == "visual-diff"]
    sets: dict[str, list[dict]] = {}
    for a in op.get("artifacts", []):
        if a["kind"] == "screenshot":
            sets.setdefault(a["details"]["set"], []).append(a["details"])
    return diffs, sets


def _visual_markdown(ops: list[dict], gallery) -> list[str]:
    lines = []
    for op in ops:
        diffs, sets = _visuals(op)
        if not diffs and not sets:
            continue
        lines += ["", f"### Operation {op['id']}: {op['action']} {op['site'] or '-'}/{op['env'] or '-'}", ""]
        for row in diffs:
            verdict = " **above the threshold**" if row.get("exceeded") else ""
            lines.append(
                f"- {row['path']} ({row['viewport']}): {row['percent']:.2f} % changed{verdict}; before "
                f"{gallery.path(row['before'])}, after {gallery.path(row['after'])}, "
                f"diff {gallery.path(row['diff'])}"
            )
        if not diffs:
            lines += [
                f"- {shot['set']}: {shot['path']} ({shot['viewport']}) {gallery.path(shot['file'])}"
                for shots in sets.values()
                for shot in shots
            ]
    return (["", "## Screenshots"] + lines) if lines else []


def markdown(task: str, ops: list[dict], gallery=None, notes: Sequence[str] = ()) -> str:
    """Given a task and its operations (with details), return the Markdown report. A gallery (see
    backends/visual/shots.Gallery) adds the screenshots' and diff images' files; notes are extra lines under
    the summary (cost, the oplog's chain head)."""
    s = summary(task, ops)
    lines = [
        f"# Task {task}",
        "",
        f"{s['operations']} operation(s) on {', '.join(s['sites']) or '-'}, "
        f"{_when(s['first'])} to {_when(s['last'])} UTC, total time {_duration(s['total_seconds'])}; "
        + ", ".join(f"{n} {status}" for status, n in sorted(s["statuses"].items())),
        "",
        *[f"{note}  " for note in notes],
        *([""] if notes else []),
        "| when (UTC) | who | site/env | action | took | result | produced |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in ops:
        result = op["status"] + (f": {_error(op)}" if op.get("error") else "")
        lines.append(
            f"| {_when(op['started_at'])} | {op['actor']} | {op['site'] or '-'}/{op['env'] or '-'} | "
            f"{op['action']}{' (catch-up)' if op.get('catch_up') else ''} | {_duration(op['duration'])} | "
            f"{_cell(result)} | {_cell('; '.join(_artifacts(op)))} |"
        )
    if gallery is not None:
        lines += _visual_markdown(ops, gallery)
    return "\n".join(lines) + "\n"


_MARKDOWN = re.compile(r"([\\`|\[\]])")


def _cell(text: str) -> str:
    """Given text for a Markdown table cell, return it on one line with what Markdown or HTML would act on
    escaped: a `|` would add a cell, a tag would render."""
    return _MARKDOWN.sub(r"\\\1", html.escape(one_line(text, 2 * ERROR_LIMIT), quote=False))


def _error(op: dict) -> str:
    """Given an operation, return its error as the report shows it: one line, at most ERROR_LIMIT characters."""
    return one_line(op.get("error"), ERROR_LIMIT)


def data(task: str, ops: list[dict], extra: dict | None = None) -> dict:
    """Given a task and its operations (with details), return the JSON report: the summary (plus extra) and
    the operations, each error one line as in the other formats (the full text stays in `orch log --json`)."""
    return {
        "summary": summary(task, ops) | (extra or {}),
        "operations": [op | {"error": _error(op) or None} for op in ops],
    }


STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.ok{color:#176f2c}.failed,.interrupted{color:#b00020;font-weight:600}.rolled_back{color:#a15c00;font-weight:600}
.running{color:#0b57d0}.refused{color:#666}details{margin:.2em 0}small{color:#666}
.shots td{width:25%}.shots img{width:100%;border:1px solid #ccc}.over{color:#b00020;font-weight:600}"""


def _picture(gallery, file: str | None) -> str:
    e = html.escape
    if not file:
        return "<small>-</small>"
    uri = gallery.data_uri(file)
    name = e(gallery.path(file))
    return f"<img src='{uri}' alt='{name}' title='{name}'>" if uri else f"<small>{name} (missing)</small>"


def _visual_html(ops: list[dict], gallery) -> str:
    e = html.escape
    sections = []
    for op in ops:
        diffs, sets = _visuals(op)
        if not diffs and not sets:
            continue
        if diffs:
            rows = "".join(
                f"<tr><td>{e(d['path'])} <small>{e(d['viewport'])}</small><br>"
                f"<span class='{'over' if d.get('exceeded') else 'ok'}'>{d['percent']:.2f} % changed</span></td>"
                f"<td>{_picture(gallery, d['before'])}</td><td>{_picture(gallery, d['after'])}</td>"
                f"<td>{_picture(gallery, d['diff'])}</td></tr>"
                for d in diffs
            )
            head = "<tr><th>Page</th><th>Before</th><th>After</th><th>Difference</th></tr>"
        else:
            labels = list(sets)
            by_key: dict[tuple, dict] = {}
            for label, shots in sets.items():
                for shot in shots:
                    by_key.setdefault((shot["path"], shot["viewport"]), {})[label] = shot["file"]
            rows = "".join(
                f"<tr><td>{e(path)} <small>{e(viewport)}</small></td>"
                + "".join(f"<td>{_picture(gallery, files.get(label))}</td>" for label in labels)
                + "</tr>"
                for (path, viewport), files in by_key.items()
            )
            head = "<tr><th>Page</th>" + "".join(f"<th>{e(label)}</th>" for label in labels) + "</tr>"
        sections.append(
            f"<h3>Operation {op['id']}: {e(op['action'])} {e(op['site'] or '-')}/{e(op['env'] or '-')}"
            f"</h3><table class='shots'>{head}{rows}</table>"
        )
    return ("<h2>Screenshots</h2>" + "".join(sections)) if sections else ""


def html_page(task: str, ops: list[dict], gallery=None, notes: Sequence[str] = ()) -> str:
    """Given a task and its operations (with details), return the self-contained HTML report. A gallery (see
    backends/visual/shots.Gallery) embeds screenshots side by side: before, after and the difference; notes
    are extra lines under the summary (cost, the oplog's chain head)."""
    e = html.escape
    s = summary(task, ops)
    rows = []
    for op in ops:
        steps = "".join(
            f"<li>{e(step['name'])}: <span class='{e(step['status'])}'>{e(step['status'])}</span> "
            f"<small>{_duration(step.get('duration'))}</small></li>"
            for step in op.get("steps", [])
        )
        produced = "<br>".join(e(item) for item in _artifacts(op))
        error = f"<br><small>{e(_error(op))}</small>" if op.get("error") else ""
        rows.append(
            f"<tr><td>{e(_when(op['started_at']))}</td><td>{e(op['actor'])}</td>"
            f"<td>{e(op['site'] or '-')}/{e(op['env'] or '-')}</td><td>{e(op['action'])}</td>"
            f"<td>{_duration(op['duration'])}</td><td class='{e(op['status'])}'>{e(op['status'])}{error}</td>"
            f"<td>{produced}<details><summary>{len(op.get('steps', []))} steps</summary><ol>{steps}</ol>"
            f"</details></td></tr>"
        )
    statuses = ", ".join(f"{n} {e(status)}" for status, n in sorted(s["statuses"].items()))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Task {e(task)}</title>"
        f"<style>{STYLE}</style></head><body><h1>Task {e(task)}</h1>"
        f"<p>{s['operations']} operation(s) on {e(', '.join(s['sites']) or '-')}, {e(_when(s['first']))} to "
        f"{e(_when(s['last']))} UTC. Total time <b>{_duration(s['total_seconds'])}</b>; {statuses}.</p>"
        + "".join(f"<p>{e(note)}</p>" for note in notes)
        + "<table><tr><th>When (UTC)</th><th>Who</th><th>Site/env</th><th>Action</th><th>Took</th>"
        f"<th>Result</th><th>Produced</th></tr>{''.join(rows)}</table>"
        f"{_visual_html(ops, gallery) if gallery is not None else ''}</body></html>\n"
    )
