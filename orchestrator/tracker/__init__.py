"""Tracker posting: when an operation with a task finishes, a note goes to that task in the tracker.

`attach(oplog, inventory)` adds a finish hook to the oplog: it writes the note into the oplog's outbox (a quick
INSERT: the operation is never held up or failed by the tracker) and starts a delivery of every due note in a
thread that the process waits for at exit. Delivery (`delivery.py`) claims each note, posts it through its kind
(`redmine.py`, `webhook.py`) and marks it sent, or schedules a retry with backoff. Both kinds are idempotent:
a note carries its unique key, and a delivery that finds its key already at the tracker does not post again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.errors import InventoryError

DEFAULT_PATTERN = r"^(\d+)$"
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Tracker:
    """The tracker in force for one site: the inventory's `tracker`, with the site's own block merged over it."""

    type: str
    url: str
    api_key: object = None  # Secret (redmine)
    secret: object = None  # Secret (webhook)
    issue_pattern: str = DEFAULT_PATTERN
    time_entries: bool = False
    activity_id: int | None = None
    actions: tuple[str, ...] | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def identity(self) -> str:
        """Where notes go, without secrets: `redmine:https://redmine.example` (kept with each queued note)."""
        return f"{self.type}:{self.url.rstrip('/')}"

    def issue_for(self, task: str) -> str | None:
        """Given a task, return the tracker's issue for it (the pattern's first group), or None if it does not
        match."""
        found = re.search(self.issue_pattern, str(task))
        if not found:
            return None
        return found.group(1) if found.groups() else found.group(0)

    def wants(self, action: str) -> bool:
        return self.actions is None or action in self.actions


def tracker_for(inventory, site: str | None) -> Tracker | None:
    """Given the inventory and a site name (or None), return the Tracker notes of that site go to, or None when
    there is none (or it is turned off). Raise InventoryError if the merged settings lack what their type needs."""
    merged = dict(getattr(inventory, "tracker", None) or {})
    known = inventory.sites.get(site) if site else None
    if known is not None:
        merged |= known.raw.get("tracker") or {}
    if not merged or merged.get("enabled") is False:
        return None
    where = f"site {site!r}: tracker" if known is not None and known.raw.get("tracker") else "tracker"
    missing = [
        key
        for key in ("type", "url", {"redmine": "api_key", "webhook": "secret"}.get(merged.get("type") or ""))
        if key and not merged.get(key)
    ]
    if missing:
        raise InventoryError(f"{where}: {', '.join(missing)} must be set")
    return Tracker(
        type=merged["type"],
        url=merged["url"],
        api_key=merged.get("api_key"),
        secret=merged.get("secret"),
        issue_pattern=merged.get("issue_pattern") or DEFAULT_PATTERN,
        time_entries=bool(merged.get("time_entries")),
        activity_id=merged.get("activity_id"),
        actions=tuple(merged["actions"]) if merged.get("actions") else None,
        timeout=float(merged.get("timeout") or DEFAULT_TIMEOUT),
    )


def configured(inventory) -> bool:
    """Return whether the inventory or any site names a tracker."""
    return bool(getattr(inventory, "tracker", None)) or any(
        site.raw.get("tracker") for site in inventory.sites.values()
    )


def attach(oplog, inventory) -> None:
    """Given an oplog and the inventory (or a function returning it, called when the first operation finishes,
    so a command that finishes none never reads the site files), queue and start delivering a note whenever an
    operation finishes, if a tracker is configured."""
    hook = None

    def on_finish(op_id: int) -> None:  # delivery (urllib, the note) is imported when an operation finishes,
        nonlocal hook  # not by every command that opens the oplog (`orch log` starts faster)
        if hook is None:
            from .delivery import NoteHook

            hook = NoteHook(oplog, inventory)
        hook(op_id)

    on_finish.__name__ = "tracker note"
    oplog.finish_hooks.append(on_finish)
