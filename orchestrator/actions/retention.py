"""Retention with restic `forget` semantics, applied to whole orch backups (db + files parts together).

A rule `daily: 7` keeps the newest backup of each of the 7 most recent days that HAVE a backup; a backup
is kept if any rule keeps it. On top: pinned backups and the newest complete backup are never dropped.
"""

from __future__ import annotations

import re
from datetime import datetime

BUCKETS = {
    "last": lambda t: t.isoformat(),
    "hourly": lambda t: t.strftime("%Y-%m-%d %H"),
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "%d-%02d" % t.isocalendar()[:2],
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.strftime("%Y"),
}


def parse_time(text: str) -> datetime:
    """Parse restic's RFC 3339 times (nanoseconds included)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


def decide(backups: list[dict], policy: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """Given backups (any order) and a policy, return (keep, drop), each newest first, with `reasons` set."""
    ordered = sorted(backups, key=lambda b: parse_time(b["time"]), reverse=True)
    reasons: dict[str, list[str]] = {b["backup_id"]: [] for b in ordered}
    good = [b for b in ordered if b["status"] == "ok"]
    for rule, count in policy.items():
        if rule not in BUCKETS or not count:
            continue
        seen: list[str] = []
        for backup in good:
            bucket = BUCKETS[rule](parse_time(backup["time"]))
            if bucket not in seen:
                if len(seen) >= count:
                    break
                seen.append(bucket)
                reasons[backup["backup_id"]].append(f"{rule} {bucket}")
    for backup in ordered:
        if backup.get("pinned"):
            reasons[backup["backup_id"]].append("pinned")
    if good:
        reasons[good[0]["backup_id"]].append("newest good backup")
    keep = [b | {"reasons": reasons[b["backup_id"]]} for b in ordered if reasons[b["backup_id"]]]
    drop = [
        b | {"reasons": ["incomplete" if b["status"] != "ok" else "not kept by any rule"]}
        for b in ordered
        if not reasons[b["backup_id"]]
    ]
    return keep, drop
