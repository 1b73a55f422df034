"""What a site wrote to PHP's error log while it was checked.

A host's php-fpm pool usually has one error log for every site it serves (`hosts.X.web.php_error_log`). A
check notes the log's size first, then reads only what was appended since, and keeps the entries that name the
checked copy (its real docroot path or its database name): a fatal error names the file, a WordPress database
error names the table with its database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestrator.backends.remote import Command

READ_LIMIT = 4 * 1024 * 1024  # bytes read back at most: a flood is a flood long before this
ENTRY = re.compile(r"^\[\d{2}-\w{3}-\d{4} [\d:]+(?: [\w/+-]+)?\] ", re.MULTILINE)
FATAL = ("PHP Fatal error", "PHP Parse error", "PHP Compile error", "PHP Core error", "PHP Recoverable fatal error")
DATABASE = ("WordPress database error",)
WARNING = ("PHP Warning", "PHP Notice", "PHP Deprecated", "PHP Strict Standards")


def size(conn, path: str) -> int | None:
    """Given a log file on the host, return its size now (None if it cannot be read)."""
    result = conn.run(Command("stat", "-c", "%s", "--", path), check=False)
    return int(result.text.strip()) if result.ok and result.text.strip().isdigit() else None


def read_since(conn, path: str, offset: int) -> str:
    """Given a log file and a size noted earlier, return what was appended since (from the start if the log was
    rotated meanwhile), at most READ_LIMIT bytes."""
    now = size(conn, path)
    if now is None:
        return ""
    start = offset if now >= offset else 0
    tail = Command("tail", "-c", f"+{start + 1}", "--", path).pipe(Command("head", "-c", READ_LIMIT))
    return conn.run(tail, check=False).text


@dataclass
class Findings:
    """Entries of the log that name the checked copy, by kind."""

    fatal: list[str] = field(default_factory=list)
    database: list[str] = field(default_factory=list)
    warning: list[str] = field(default_factory=list)

    def as_dict(self, keep: int = 5) -> dict:
        return {
            kind: {"count": len(items), "first": [line[:300] for line in items[:keep]]}
            for kind, items in (("fatal", self.fatal), ("database", self.database), ("warning", self.warning))
        }


def entries(text: str) -> list[str]:
    """Given log text, return its entries (an entry starts with a `[date time zone]` stamp; stack traces and
    other continuation lines stay with theirs)."""
    starts = [m.start() for m in ENTRY.finditer(text)]
    if not starts:
        return [line for line in text.splitlines() if line.strip()]
    return [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def findings(text: str, tokens: list[str]) -> Findings:
    """Given appended log text and the strings that identify the copy, return its entries sorted by kind."""
    found = Findings()
    for entry in entries(text):
        if not any(token and token in entry for token in tokens):
            continue
        if any(mark in entry for mark in FATAL):
            found.fatal.append(entry)
        elif any(mark in entry for mark in DATABASE):
            found.database.append(entry)
        elif any(mark in entry for mark in WARNING):
            found.warning.append(entry)
    return found
