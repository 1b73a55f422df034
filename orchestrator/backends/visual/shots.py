"""Where screenshots live: a folder beside the oplog (`screenshots/` next to a SQLite oplog file, or in orch's
state folder for a PostgreSQL oplog), one sub-folder per operation. The oplog records each shot as a
`screenshot` artifact whose `file` is relative to that folder, so the folder can move with the oplog."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.backends.remote.hostkeys import state_dir

KIND = "screenshot"
DIFF_KIND = "visual-diff"


def root(oplog_url: str) -> Path:
    """Given the oplog's URL, return the screenshots folder (not created)."""
    if oplog_url.startswith("sqlite:///") and oplog_url.removeprefix("sqlite:///") not in ("", ":memory:"):
        return Path(oplog_url.removeprefix("sqlite:///")).parent / "screenshots"
    return state_dir() / "screenshots"


def slug(path: str) -> str:
    """Given a URL path, return a short file-name-safe name, unique per path."""
    words = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")[:48] or "home"
    return f"{words}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"


@dataclass
class Shot:
    """One screenshot of one check URL at one viewport, as recorded in the oplog."""

    set: str  # which set it belongs to: an environment's name, `before`, `after`...
    path: str  # the URL path shot, below the environment's URL
    viewport: str  # desktop | mobile
    file: str  # PNG, relative to the screenshots folder
    width: int
    height: int
    status: int | None = None
    error: str | None = None
    ignore: list[list[int]] = field(default_factory=list)  # boxes [x, y, w, h] of the ignored selectors

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.viewport

    @property
    def ident(self) -> str:
        return f"{self.set} {self.path} {self.viewport}"


def folder(shots_root: Path, operation_id: int, label: str) -> Path:
    """Given the screenshots folder, an operation and a set label, return (and create) the set's folder."""
    path = shots_root / f"op-{operation_id}" / re.sub(r"[^A-Za-z0-9._-]+", "-", label)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(shots_root: Path, relative: str, data: bytes) -> int:
    """Write a file below the screenshots folder; return its size."""
    target = shots_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return len(data)


def record(op, shot: Shot, size: int) -> None:
    """Record a shot as a `screenshot` artifact of the operation."""
    op.artifact(KIND, shot.ident, size=size, details=asdict(shot))


def sets_of(operation: dict) -> dict[str, list[Shot]]:
    """Given an operation with its artifacts (Oplog.operation), return its shots grouped by set, in order."""
    sets: dict[str, list[Shot]] = {}
    for artifact in operation.get("artifacts", []):
        if artifact["kind"] == KIND:
            shot = Shot(**artifact["details"])
            sets.setdefault(shot.set, []).append(shot)
    return sets


class Gallery:
    """The screenshots folder as a report shows it: a file's full path, or a small embedded picture of it."""

    def __init__(self, shots_root: Path, width: int = 360, max_height: int = 1600):
        self.root, self.width, self.max_height = shots_root, width, max_height

    def path(self, relative: str) -> str:
        return str(self.root / relative)

    def data_uri(self, relative: str) -> str | None:
        """Given a file below the folder, return a `data:` URI of its thumbnail (JPEG), or None if it is gone."""
        import base64

        from .diff import load, thumbnail

        try:
            image = load(str(self.root / relative))
        except (OSError, ValueError):
            return None
        data = thumbnail(image, self.width, self.max_height)
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()
