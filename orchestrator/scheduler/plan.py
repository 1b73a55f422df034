"""`orch scheduler plan`: every job's next run, per host, and whether each host's nightly window can hold its
work, estimated from the last durations of the same jobs in the oplog.

A host is over-subscribed when the work starting inside its window, divided by `max_parallel`, lasts longer
than the window: the last runs would wait for a slot past its end. The fleet is over-subscribed when the work
of every host's window, divided by `scheduler.max_parallel`, outlasts the longest window. Windows are read in
the scheduler's time zone. A job starting outside its host's window is reported too.

A fleet of a thousand sites shares a handful of schedules: triggers and window counts are computed once per
schedule, and the durations come from one oplog query, so the plan stays well under a second of work.
"""

from __future__ import annotations

import functools
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from tzlocal import get_localzone

from . import cron
from .jobs import KINDS, JobSpec, job_specs, problem_lines, warnings

DURATION_SAMPLES = 5
MAX_RUNS_PER_WINDOW = 500  # a seconds-field cron would otherwise list thousands of runs


def typical_durations(oplog, specs: list[JobSpec]) -> dict[str, float | None]:
    """Given specs, return {job id: median duration (s) of its last successful runs, or None if it never ran}."""
    recent = oplog.recent_durations(list(KINDS), DURATION_SAMPLES)
    return {
        spec.id: statistics.median(found) if (found := recent.get((spec.site, spec.env, spec.kind))) else None
        for spec in specs
    }


@functools.lru_cache(maxsize=512)
def _trigger(schedule: str, tz):
    return cron.trigger(schedule, timezone=tz)


def stored_next_runs(engine, table: str = "scheduler_jobs") -> dict[str, datetime]:
    """Given the oplog engine, return {job id: next run} as the daemon stored them ({} before its first start)."""
    if not sa.inspect(engine).has_table(table):
        return {}
    jobs = sa.table(table, sa.column("id"), sa.column("next_run_time"))
    with engine.begin() as conn:
        rows = conn.execute(sa.select(jobs.c.id, jobs.c.next_run_time)).all()
    return {row.id: datetime.fromtimestamp(row.next_run_time, UTC) for row in rows if row.next_run_time is not None}


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """Given `HH:MM-HH:MM` (may wrap midnight) and an aware now, return the current or next occurrence."""
    start_text, end_text = window.split("-")
    start = now.replace(hour=int(start_text[:2]), minute=int(start_text[3:]), second=0, microsecond=0)
    end = now.replace(hour=int(end_text[:2]), minute=int(end_text[3:]), second=0, microsecond=0)
    if end <= start:
        end += timedelta(days=1)
    if end - timedelta(days=1) > now:  # still inside yesterday's occurrence of a wrapping window
        start, end = start - timedelta(days=1), end - timedelta(days=1)
    if end <= now:
        start, end = start + timedelta(days=1), end + timedelta(days=1)
    return start, end


def runs_between(schedule: str, start: datetime, end: datetime, tz) -> list[datetime]:
    """Given a cron schedule and a span, return its fire times inside the span (at most MAX_RUNS_PER_WINDOW)."""
    trigger = _trigger(schedule, tz)
    runs: list[datetime] = []
    moment = trigger.get_next_fire_time(None, start)
    while moment is not None and moment < end and len(runs) < MAX_RUNS_PER_WINDOW:
        runs.append(moment)
        moment = trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))
    return runs


@functools.lru_cache(maxsize=4096)
def _runs_count(schedule: str, start: datetime, end: datetime, tz) -> int:
    return len(runs_between(schedule, start, end, tz))


def in_window(moment: datetime, window: str) -> bool:
    """Given a local time and `HH:MM-HH:MM` (may wrap midnight), return whether its time of day is inside."""
    minute = moment.hour * 60 + moment.minute
    start, end = (int(part[:2]) * 60 + int(part[3:]) for part in window.split("-"))
    return start <= minute < end if start < end else minute >= start or minute < end


def night_load(jobs: list[dict], start: datetime, end: datetime, tz) -> dict:
    """Given planned jobs and one window occurrence, return its runs, known work (s) and unknown durations."""
    load: dict[str, Any] = {
        "night": start.isoformat(timespec="minutes"),
        "window_runs": 0,
        "estimated_seconds": 0.0,
        "unknown_durations": 0,
    }
    for job in jobs:
        runs = _runs_count(job["schedule"], start, end, tz)
        load["window_runs"] += runs
        if job["estimated_seconds"] is None:
            load["unknown_durations"] += runs
        else:
            load["estimated_seconds"] += runs * job["estimated_seconds"]
    return load


def host_nights(host, jobs: list[dict], now: datetime, tz) -> list[dict]:
    """Given a Host with a nightly window and its planned jobs, return the load of its next seven windows."""
    start, end = window_bounds(host.nightly_window, now.astimezone(tz))
    nights = [night_load(jobs, start + timedelta(days=day), end + timedelta(days=day), tz) for day in range(7)]
    for night in nights:
        night["window_seconds"] = (end - start).total_seconds()
    return nights


def host_load(host, jobs: list[dict], now: datetime, tz) -> tuple[dict, list[str]]:
    """Given a Host and its planned jobs (with `estimated_seconds` and `next_run`), return its summary (the
    busiest of the next seven windows) and warnings."""
    summary = {
        "host": host.name,
        "max_parallel": host.max_parallel,
        "nightly_window": host.nightly_window,
        "jobs": len(jobs),
        "night": None,
        "window_runs": 0,
        "estimated_seconds": 0.0,
        "unknown_durations": 0,
        "window_seconds": None,
        "oversubscribed": False,
    }
    if not host.nightly_window:
        return summary, []
    nights = host_nights(host, jobs, now, tz)
    summary |= max(nights, key=lambda night: (night["estimated_seconds"], night["window_runs"]))
    found = [
        f"host {host.name}: {job['kind']} {job['site']}/{job['env']} ({job['schedule']}) starts outside the "
        f"nightly window {host.nightly_window}"
        for job in jobs
        if job["next_run"]
        and not in_window(datetime.fromisoformat(job["next_run"]).astimezone(tz), host.nightly_window)
    ]
    needed = summary["estimated_seconds"] / host.max_parallel
    if needed > summary["window_seconds"]:
        summary["oversubscribed"] = True
        unknown = f", {summary['unknown_durations']} of them without history" if summary["unknown_durations"] else ""
        found.insert(
            0,
            f"host {host.name}: nightly window {host.nightly_window} is over-subscribed on the night "
            f"of {summary['night'][:10]}: ~{needed / 60:.0f} min of work per slot "
            f"({summary['window_runs']} runs{unknown}, max_parallel {host.max_parallel}) for a "
            f"{summary['window_seconds'] / 60:.0f} min window",
        )
    return summary, found


def fleet_load(max_parallel: int, nights_by_host: list[list[dict]]) -> tuple[dict, list[str]]:
    """Given `scheduler.max_parallel` and each windowed host's next seven nights (host_nights), return the fleet's
    summary (its busiest night: the work of every host's window over the global limit, against the longest
    window) and a warning if that work outlasts the window."""
    summary: dict[str, Any] = {
        "max_parallel": max_parallel,
        "hosts": len(nights_by_host),
        "night": None,
        "window_runs": 0,
        "estimated_seconds": 0.0,
        "unknown_durations": 0,
        "window_seconds": None,
        "needed_seconds": 0.0,
        "oversubscribed": False,
    }
    if not nights_by_host:
        return summary, []
    nights = []
    for day in range(7):
        of_day = [host[day] for host in nights_by_host]
        nights.append(
            {
                "night": min(night["night"] for night in of_day),
                "window_runs": sum(night["window_runs"] for night in of_day),
                "estimated_seconds": sum(night["estimated_seconds"] for night in of_day),
                "unknown_durations": sum(night["unknown_durations"] for night in of_day),
                "window_seconds": max(night["window_seconds"] for night in of_day),
            }
        )
    summary |= max(nights, key=lambda night: (night["estimated_seconds"], night["window_runs"]))
    summary["needed_seconds"] = summary["estimated_seconds"] / max_parallel
    if summary["needed_seconds"] <= summary["window_seconds"]:
        return summary, []
    summary["oversubscribed"] = True
    unknown = f", {summary['unknown_durations']} of them without history" if summary["unknown_durations"] else ""
    return summary, [
        f"the fleet's nightly windows are over-subscribed on the night of {summary['night'][:10]}: "
        f"~{summary['needed_seconds'] / 60:.0f} min of work per slot ({summary['window_runs']} runs"
        f"{unknown} on {summary['hosts']} hosts, scheduler.max_parallel {max_parallel}) for the longest "
        f"window, {summary['window_seconds'] / 60:.0f} min"
    ]


def plan(inventory, oplog, *, now: datetime | None = None, tz=None) -> dict:
    """Given the inventory and the oplog, return {"timezone", "jobs", "hosts", "fleet", "warnings", "problems"}:
    each job with its next run (from the schedule; `stored_next_run` is what a running daemon holds, jitter
    included) and its estimated duration; per host the window load, and the fleet's under the global limit;
    the problem lines of the sites that cannot
    be scheduled (broken site files, unparsable schedules)."""
    tz = tz or get_localzone()
    now = (now or datetime.now(UTC)).astimezone(tz)
    specs, problems = job_specs(inventory)
    stored = stored_next_runs(oplog.engine)
    durations = typical_durations(oplog, specs)
    next_runs = {
        schedule: _trigger(schedule, tz).get_next_fire_time(None, now) for schedule in {spec.schedule for spec in specs}
    }
    jobs: list[dict[str, Any]] = []
    for spec in specs:
        next_run = next_runs[spec.schedule]
        jobs.append(
            {
                "id": spec.id,
                "kind": spec.kind,
                "site": spec.site,
                "env": spec.env,
                "host": spec.host,
                "schedule": spec.schedule,
                "task": spec.task,
                "next_run": next_run.isoformat() if next_run else None,
                "stored_next_run": stored[spec.id].astimezone(tz).isoformat() if spec.id in stored else None,
                "estimated_seconds": durations[spec.id],
            }
        )
    jobs.sort(key=lambda job: (job["next_run"] or "~", job["id"]))
    by_host: dict[str, list[dict]] = {}
    for job in jobs:
        by_host.setdefault(job["host"], []).append(job)
    hosts, found, windowed = [], [], []
    for host in inventory.hosts.values():
        summary, host_warnings = host_load(host, by_host.get(host.name, []), now, tz)
        hosts.append(summary)
        found += host_warnings
        if host.nightly_window:
            windowed.append(host_nights(host, by_host.get(host.name, []), now, tz))
    fleet, fleet_warnings = fleet_load(inventory.scheduler.max_parallel, windowed)
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "timezone": str(tz),
        "jobs": jobs,
        "hosts": hosts,
        "fleet": fleet,
        "warnings": warnings(inventory) + fleet_warnings + found,
        "problems": problem_lines(problems),
    }
