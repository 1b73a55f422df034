"""Make text and JSON safe to store: every secret masked, step output bounded."""

from __future__ import annotations

import html
import re
from datetime import date, datetime
from typing import Any, overload

from orchestrator.masking import mask

OUTPUT_LIMIT = 4096
_HTML_PAGE = re.compile(r"<(!doctype|html|head|body)\b", re.I)
_HIDDEN = re.compile(r"<(script|style)\b.*?(</\1\s*>|\Z)", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")


@overload
def clean(text: str) -> str: ...


@overload
def clean(text: object) -> str | None: ...


def clean(text: object) -> str | None:
    """Given any value meant for a text column, return it as masked text (None stays None)."""
    if text is None:
        return None
    return mask(str(text))


def clean_json(value: Any) -> Any:
    """Given a JSON-ish value, return a JSON-ready copy with every string (keys too) masked.

    Masking the parts rather than the serialized document matters: a secret containing a quote or a
    backslash is escaped in JSON text and would no longer match its registered value.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {mask(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_json(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return mask(str(value))


def tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Given text, return at most `limit` characters of it, keeping the end (where errors usually are)."""
    if len(text) <= limit:
        return text
    keep = limit - 40  # room for the marker line, so the result never exceeds the limit
    return f"[... {len(text) - keep} characters cut ...]\n" + text[-keep:]


def one_line(text: str | None, limit: int) -> str:
    """Given a text (an error may hold a whole HTML error page, or a traceback), return it as one line: a page
    reduced to its visible text, whitespace runs collapsed, cut to `limit` characters with an ellipsis."""
    text = text or ""
    if _HTML_PAGE.search(text):
        text = html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", text)))
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
