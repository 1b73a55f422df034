"""Redmine: the note becomes a journal note on the issue (PUT /issues/N.json) and, if configured, the
operation's time a time entry (POST /time_entries.json), through the REST API with the account's API key.

Idempotent: before posting, the issue's journals (and its time entries) are searched for the note's key, so a
delivery retried after a lost answer finds its note already there and posts nothing new.
"""

from __future__ import annotations

from urllib.parse import quote

from .http import DeliveryError, call, dumps

PAGE = 100


def deliver(tracker, item: dict) -> dict:
    """Given the Tracker and a claimed outbox row, make sure its note (and time entry) is on the issue; return
    what Redmine holds for it. Raise DeliveryError if Redmine does not take it."""
    base, issue, key, payload = tracker.url.rstrip("/"), quote(item["issue"], safe=""), item["key"], item["payload"]
    headers = {"X-Redmine-API-Key": tracker.api_key.reveal()}
    journal = _find_note(base, issue, key, headers, tracker.timeout)
    if journal is None:
        call(
            "PUT",
            f"{base}/issues/{issue}.json",
            body=dumps({"issue": {"notes": payload["text"]}}),
            headers=headers,
            timeout=tracker.timeout,
        )
        journal = _find_note(base, issue, key, headers, tracker.timeout)
    remote = {"issue": item["issue"], "journal": journal}
    if tracker.time_entries and payload.get("hours") is not None:
        remote["time_entry"] = _time_entry(tracker, base, issue, key, payload, headers)
    return remote


def _find_note(base: str, issue: str, key: str, headers: dict, timeout: float) -> int | None:
    _, data = call("GET", f"{base}/issues/{issue}.json?include=journals", headers=headers, timeout=timeout)
    journals = (data or {}).get("issue", {}).get("journals", [])
    return next((j["id"] for j in journals if key in (j.get("notes") or "")), None)


def _time_entry(tracker, base: str, issue: str, key: str, payload: dict, headers: dict) -> int:
    found = _find_entry(base, issue, key, headers, tracker.timeout)
    if found is not None:
        return found
    entry = {
        "issue_id": int(issue) if issue.isdigit() else issue,
        "comments": payload["comment"][:1024],
        "hours": max(round(payload["hours"], 2), 0.01),
    }  # Redmine keeps hundredths; zero is refused
    entry["activity_id"] = tracker.activity_id or _default_activity(base, headers, tracker.timeout)
    _, data = call(
        "POST", f"{base}/time_entries.json", body=dumps({"time_entry": entry}), headers=headers, timeout=tracker.timeout
    )
    return (data or {}).get("time_entry", {}).get("id")


def _find_entry(base: str, issue: str, key: str, headers: dict, timeout: float) -> int | None:
    offset = 0
    while True:
        _, data = call(
            "GET",
            f"{base}/time_entries.json?issue_id={issue}&limit={PAGE}&offset={offset}",
            headers=headers,
            timeout=timeout,
        )
        entries = (data or {}).get("time_entries", [])
        found = next((e["id"] for e in entries if key in (e.get("comments") or "")), None)
        if found is not None or len(entries) < PAGE:
            return found
        offset += PAGE


def _default_activity(base: str, headers: dict, timeout: float) -> int:
    _, data = call("GET", f"{base}/enumerations/time_entry_activities.json", headers=headers, timeout=timeout)
    activities = [a for a in (data or {}).get("time_entry_activities", []) if a.get("active", True)]
    if not activities:
        raise DeliveryError("Redmine has no time entry activity: add one, or set tracker.activity_id")
    return next((a["id"] for a in activities if a.get("is_default")), activities[0]["id"])
