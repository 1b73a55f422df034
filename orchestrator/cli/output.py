"""Printing for humans (aligned tables on stdout) and machines (`--json`: JSON on stdout and nothing else)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterable

import click


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit_json(data) -> None:
    """Write data as JSON to stdout."""
    click.echo(json.dumps(data, indent=2, default=_default, ensure_ascii=False))


def human_size(size: int | float | None) -> str:
    """Given bytes, return '12.3 MiB' style text ('' for None)."""
    if size is None:
        return ""
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def human_duration(seconds: float | None) -> str:
    """Given seconds, return '1h02m', '3m05s' or '4.2s' ('' for None)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def short_time(value: str | datetime | None) -> str:
    """Given an ISO time, return 'YYYY-MM-DD HH:MM:SS' (UTC as stored)."""
    if not value:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text.replace("T", " ")[:19]


def table(rows: Iterable[dict], columns: list[tuple[str, str]], *, file=None) -> None:
    """Print rows as an aligned table. columns: (key, header) pairs; values are str()-ed."""
    rows = list(rows)
    out = file or sys.stdout
    if not rows:
        click.echo("(nothing)", file=out)
        return
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    line = "  ".join(h.upper().ljust(w) for (_, h), w in zip(columns, widths, strict=True))
    click.echo(line.rstrip(), file=out)
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


@contextmanager
def sites_progress(total: int, label: str, file=None) -> Iterator[Callable[[dict], None]]:
    """Given how many sites a fleet run covers, yield the callback each finished site's result goes to: on a
    terminal a live `label [###   ] 12/1000 2 failed ETA` line (click's progress bar); elsewhere nothing.
    Safe to call from worker threads."""
    file = file or sys.stderr
    if not (file.isatty() and total > 1):
        yield lambda result: None
        return
    lock, failed = threading.Lock(), [0]
    bar: Any = click.progressbar(
        length=total,
        label=label,
        file=file,
        show_pos=True,
        show_eta=True,
        item_show_func=lambda _: f"{failed[0]} failed" if failed[0] else None,
    )
    with bar:

        def done(result: dict) -> None:
            with lock:
                failed[0] += result.get("status") != "ok"
                bar.update(1, result)

        yield done
