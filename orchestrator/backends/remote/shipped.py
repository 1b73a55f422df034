"""Small standard-library Python scripts orch ships to hosts for work a shell pipeline does badly."""

from __future__ import annotations

import hashlib

from .command import Command


def ensure_script(conn, source: str, name: str) -> str:
    """Make sure `source` is on the host as ~/.cache/orch/NAME-HASH.py (written once per content); return its path."""
    data = source.encode()
    digest = hashlib.sha256(data).hexdigest()[:16]
    home = conn.run(Command("sh", "-c", 'printf %s "$HOME"')).text
    path = f"{home}/.cache/orch/{name}-{digest}.py"
    if not conn.ok(Command("test", "-s", path)):
        conn.run(Command("mkdir", "-p", f"{home}/.cache/orch"))
        conn.put_bytes(data, path, mode=0o644)
    return path
