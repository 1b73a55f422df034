"""The daemon's monitors: hourly backup health (alarm on change, and again daily while it lasts) and the
daily digest. Both read the oplog only.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from orchestrator.actions.health import health
from orchestrator.notify import events, wants

log = logging.getLogger("orch.scheduler")
REALARM = timedelta(hours=24)
DEFAULT_DIGEST = "0 8 * * *"


class HealthWatch:
    """Remembers each site environment's last health verdict, to alarm on changes rather than every hour."""

    def __init__(self):
        self._state: dict[tuple[str, str], tuple[bool, datetime | None]] = {}
        self._lock = threading.Lock()

    def check(self, rt, now: datetime | None = None) -> list[dict]:
        """Given the runtime, evaluate health, send `health` events for changes (and daily reminders);
        return the events sent."""
        now = now or datetime.now(UTC)
        rows = health(rt.inventory, rt.oplog, now=now)
        sent = []
        with self._lock:
            for row in rows:
                event = self._transition(row, now)
                if event:
                    sent.append(event)
        unhealthy = [row for row in rows if not row["healthy"]]
        for row in unhealthy:
            log.warning("health: %s/%s UNHEALTHY: %s", row["site"], row["env"], "; ".join(row["problems"]))
        log.info("health: %d of %d site environment(s) healthy", len(rows) - len(unhealthy), len(rows))
        for event in sent:
            rt.notifier.send(event)
        return sent

    def _transition(self, row: dict, now: datetime) -> dict | None:
        key = (row["site"], row["env"])
        was_healthy, alarmed_at = self._state.get(key, (True, None))
        if row["healthy"]:
            self._state[key] = (True, None)
            return events.health(row) if not was_healthy else None
        if was_healthy or alarmed_at is None or now - alarmed_at >= REALARM:
            self._state[key] = (False, now)
            return events.health(row)
        return None


def digest_summary(inventory, oplog, hours: int = 24, now: datetime | None = None) -> dict:
    """Given the inventory and oplog, return what the last `hours` held: counts per action (ok, failed, refused:
    stopped before any change), failures, and the site environments unhealthy now."""
    now = now or datetime.now(UTC)
    ops = oplog.operations(since=now - timedelta(hours=hours))
    actions: dict[str, dict[str, int]] = {}
    for op in ops:
        if op["status"] != "running":
            counts = actions.setdefault(op["action"], {"ok": 0, "failed": 0, "refused": 0})
            counts[op["status"] if op["status"] in ("ok", "refused") else "failed"] += 1
    failures = [
        {key: op[key] for key in ("action", "site", "env", "task", "started_at", "error", "id")}
        for op in ops
        if op["status"] in ("failed", "interrupted")
    ]
    unhealthy = [
        {key: row[key] for key in ("site", "env", "status", "problems")}
        for row in health(inventory, oplog, now=now)
        if not row["healthy"]
    ]
    return {
        "hours": hours,
        "since": (now - timedelta(hours=hours)).isoformat(timespec="seconds"),
        "actions": dict(sorted(actions.items())),
        "failures": failures,
        "unhealthy": unhealthy,
    }


def digest_schedules(channels: list[dict]) -> dict[str, list[int]]:
    """Given the notify channels, return {digest cron schedule: [indexes of channels that want it]}."""
    found: dict[str, list[int]] = {}
    for index, channel in enumerate(channels):
        if wants(channel, "digest") and "digest" in (channel.get("on") or ()):
            found.setdefault(channel.get("digest_schedule") or DEFAULT_DIGEST, []).append(index)
    return found


def send_digest(rt, channel_indexes: list[int]) -> list[dict]:
    """Given the runtime and the channels due, build the digest and send it to them; return the results."""
    event = events.digest(digest_summary(rt.inventory, rt.oplog))
    channels = [rt.notifier.channels[i] for i in channel_indexes if i < len(rt.notifier.channels)]
    return rt.notifier.send(event, channels)
