"""Process-wide registry of secret values, so anything shown or stored can be masked as `***`.

The Command type masks the secrets it knows structurally; this registry is the second net for text that
comes back from hosts (a tool echoing its own argv, an error quoting a DSN) before it reaches logs or the oplog.
"""

from __future__ import annotations

import threading

MASK = "***"
_lock = threading.Lock()
_values: set[str] = set()


def register_secret(value: str) -> str:
    """Given a resolved secret, remember it for masking and return it unchanged."""
    if value and len(value) >= 3:  # masking 1-2 char strings would shred ordinary text
        with _lock:
            _values.add(value)
    return value


def mask(text: str | None) -> str:
    """Given any text, return it with every registered secret value replaced by `***`."""
    if not text:
        return text or ""
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text
