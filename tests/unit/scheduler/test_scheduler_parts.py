"""The scheduler's small parts: cron translation, job specs, slots, catch-up detection, the plan."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from test_scheduler_health import record

from orchestrator.scheduler import cron, plan
from orchestrator.scheduler.executor import is_catch_up
from orchestrator.scheduler.jobs import job_specs, warnings
from orchestrator.scheduler.plan import fleet_load, host_load, host_nights, window_bounds
from orchestrator.scheduler.slots import Slots, Stopping

JAN1 = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def fires(expr: str, count: int = 3) -> list[str]:
    trigger, moment, found = cron.trigger(expr, timezone="UTC"), None, []
    for _ in range(count):
        moment = trigger.get_next_fire_time(
            moment, (moment or JAN1) + (timedelta(seconds=1) if moment else timedelta())
        )
        found.append(moment.strftime("%a %H:%M:%S"))
    return found


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 3 * * *", ["Thu 03:00:00", "Fri 03:00:00", "Sat 03:00:00"]),
        ("0 5 * * 0", ["Sun 05:00:00", "Sun 05:00:00", "Sun 05:00:00"]),  # crontab: 0 is Sunday
        ("0 5 * * 7", ["Sun 05:00:00", "Sun 05:00:00", "Sun 05:00:00"]),
        ("0 5 * * 1-5", ["Thu 05:00:00", "Fri 05:00:00", "Mon 05:00:00"]),
        ("0 5 * * 5-7", ["Fri 05:00:00", "Sat 05:00:00", "Sun 05:00:00"]),
        ("0 5 * * */3", ["Sat 05:00:00", "Sun 05:00:00", "Wed 05:00:00"]),  # 0,3,6 = Sun, Wed, Sat
        ("0 5 * * mon,FRI", ["Fri 05:00:00", "Mon 05:00:00", "Fri 05:00:00"]),
        ("15,45 0 3 * * *", ["Thu 03:00:15", "Thu 03:00:45", "Fri 03:00:15"]),  # six fields: seconds first
    ],
)
def test_cron_follows_crontab_meaning(expr, expected):
    assert fires(expr) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 3 * *", "expected 5 fields"),
        ("61 3 * * *", "higher than the maximum"),
        ("0 3 * * 8", "not 0-7"),
        ("0 3 * * 5-1", "runs backwards"),
        ("1 2 3 4 5 6 7", "got 7"),
    ],
)
def test_bad_cron_is_refused_with_a_reason(expr, message):
    with pytest.raises(cron.CronError, match=message):
        cron.trigger(expr)


def test_job_specs_follow_schedules_defaults_and_production_envs(kit):
    kit.write(
        kit.site(
            "a",
            "one",
            "0 3 * * *",
            verify={"schedule": "0 5 * * 0"},
            environments={"production": {"host": "one", "path": "/a"}, "staging": {"host": "two", "path": "/s"}},
        ),
        kit.site("b", "two"),
        kit.site("off", "one", "0 3 * * *", backup={"enabled": False}),
        defaults={"backup": {"storage": "local", "schedule": "30 2 * * *"}, "prune": {"schedule": "0 6 * * 0"}},
    )
    specs, problems = job_specs(kit.load())
    assert problems == {}
    assert sorted((s.id, s.schedule, s.host, s.task) for s in specs) == [
        ("backup:a:production", "0 3 * * *", "one", "700"),
        ("backup:b:production", "30 2 * * *", "two", "700"),
        ("prune:a:production", "0 6 * * 0", "one", "700"),
        ("prune:b:production", "0 6 * * 0", "two", "700"),
        ("verify:a:production", "0 5 * * 0", "one", "700"),
    ]


def test_a_site_without_task_is_scheduled_against_a_fallback_and_warned_about(kit):
    site = kit.site("a", "one", "0 3 * * *")
    del site["task"]
    kit.write(site, kit.site("manual", "one"))
    inventory = kit.load()
    (spec,), _ = job_specs(inventory)
    assert spec.task == "scheduler"
    found = warnings(inventory)
    assert any("a: no `task`" in line for line in found) and any(
        "manual: backups enabled but no" in line for line in found
    )


def test_a_busy_host_does_not_hold_a_global_slot():
    slots, stop = Slots(2, {"busy": 1, "free": 1}), threading.Event()
    order = []

    def job(host, name, hold):
        with slots.hold(host, stop):
            order.append(name)
            time.sleep(hold)

    threads = [
        threading.Thread(target=job, args=args)
        for args in (("busy", "b1", 0.4), ("busy", "b2", 0.1), ("free", "f1", 0.1))
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert order == ["b1", "f1", "b2"]


def test_a_job_waiting_for_a_slot_gives_up_when_the_daemon_stops():
    slots, stop = Slots(1, {"h": 1}), threading.Event()
    with slots.hold("h", stop):
        stop.set()
        with pytest.raises(Stopping), slots.hold("h", stop, poll=0.05):
            pass


def test_catch_up_is_a_run_due_before_the_daemon_started_or_late_or_coalesced():
    now = datetime(2026, 1, 1, 3, 0, 5, tzinfo=UTC)
    since = datetime(2026, 1, 1, 3, 0, 0, tzinfo=UTC)
    assert not is_catch_up([now - timedelta(seconds=1)], now, since)
    assert is_catch_up([since - timedelta(seconds=1)], now, since)
    assert is_catch_up([now - timedelta(minutes=5)], now, since - timedelta(hours=1))
    assert is_catch_up([now - timedelta(seconds=2), now - timedelta(seconds=1)], now, since)


def test_window_bounds_find_the_current_or_next_window():
    at = lambda h, m=0: datetime(2026, 1, 1, h, m, tzinfo=UTC)  # noqa: E731
    assert window_bounds("01:00-06:00", at(0)) == (at(1), at(6))
    assert window_bounds("01:00-06:00", at(3)) == (at(1), at(6))
    assert window_bounds("01:00-06:00", at(7)) == (at(1) + timedelta(days=1), at(6) + timedelta(days=1))
    assert window_bounds("23:00-02:00", at(1)) == (at(23) - timedelta(days=1), at(2))
    assert window_bounds("23:00-02:00", at(12)) == (at(23), at(2) + timedelta(days=1))


class Host:
    name, max_parallel, nightly_window = "web1", 2, "02:00-03:00"


def job(site, schedule, seconds, next_run="2026-01-02T02:00:00+00:00"):
    return {
        "kind": "backup",
        "site": site,
        "env": "production",
        "schedule": schedule,
        "estimated_seconds": seconds,
        "next_run": next_run,
    }


def test_a_window_is_over_subscribed_when_its_runs_outlast_it():
    jobs = [job(f"s{i}", "0 2 * * *", 1800) for i in range(4)]
    jobs += [
        job("weekly", "30 2 * * 0", 1800, "2026-01-04T02:30:00+00:00"),  # Sunday: the busiest night
        job("new", "0 2 * * *", None),
        job("late", "0 12 * * *", None, "2026-01-01T12:00:00+00:00"),
    ]
    summary, found = host_load(Host(), jobs, datetime(2026, 1, 1, tzinfo=UTC), UTC)
    assert summary["oversubscribed"] and summary["night"].startswith("2026-01-04")
    assert (summary["window_runs"], summary["estimated_seconds"], summary["unknown_durations"]) == (6, 9000, 1)
    assert (
        "on the night of 2026-01-04: ~75 min of work per slot (6 runs, 1 of them without history, max_parallel 2) "
        "for a 60 min window"
    ) in found[0]
    assert found[1:] == ["host web1: backup late/production (0 12 * * *) starts outside the nightly window 02:00-03:00"]
    summary, found = host_load(Host(), jobs[:2], datetime(2026, 1, 1, tzinfo=UTC), UTC)
    assert not summary["oversubscribed"] and found == []


def test_the_plan_lists_every_job_with_its_next_run_and_typical_duration(kit):
    kit.write(
        kit.site("a", "one", "0 3 * * *"),
        kit.site("b", "two", "30 1 * * *"),
        hosts={
            "one": {"connector": "local", "max_parallel": 1, "nightly_window": "02:00-04:00"},
            "two": {"connector": "local"},
        },
    )
    oplog = kit.oplog()
    for hours, duration in ((1, 100.0), (2, 300.0), (3, 200.0)):
        record(oplog, "a", "backup", "ok", hours, duration=duration)
    result = plan(kit.load(), oplog, now=datetime(2026, 1, 1, 12, tzinfo=UTC), tz=UTC)
    assert [(job["id"], job["next_run"], job["estimated_seconds"]) for job in result["jobs"]] == [
        ("backup:b:production", "2026-01-02T01:30:00+00:00", None),
        ("backup:a:production", "2026-01-02T03:00:00+00:00", 200.0),
    ]
    one = next(host for host in result["hosts"] if host["host"] == "one")
    assert one["window_runs"] == 1 and one["estimated_seconds"] == 200.0 and not one["oversubscribed"]
    assert result["problems"] == [] and result["warnings"] == []


def test_typical_durations_are_the_median_of_each_jobs_last_five_successful_runs(kit):
    kit.write(
        kit.site("a", "one", "0 3 * * *"), kit.site("b", "one", "0 3 * * *"), hosts={"one": {"connector": "local"}}
    )
    oplog = kit.oplog()
    for hours, duration in enumerate((10.0, 20.0, 30.0, 40.0, 50.0, 900.0, 900.0), start=1):  # newest first
        record(oplog, "a", "backup", "ok", hours, duration=duration)
    record(oplog, "a", "backup", "failed", 0.5, duration=5000.0)  # a failure says nothing of the typical run
    record(oplog, "a", "verify", "ok", 0.5, duration=7.0)  # another kind of job
    record(oplog, "a", "backup", "ok", 0.5, env="staging", duration=1.0)  # another environment
    jobs = {job["id"]: job["estimated_seconds"] for job in plan(kit.load(), oplog, now=JAN1, tz=UTC)["jobs"]}
    assert jobs == {"backup:a:production": 30.0, "backup:b:production": None}


def test_the_fleet_is_over_subscribed_when_its_windows_outlast_the_global_limit():
    class Wide(Host):
        nightly_window, max_parallel = "02:00-04:00", 10

    hosts = [[job(f"h{n}s{i}", "0 2 * * *", 900) for i in range(8)] for n in range(3)]  # 3 x 8 x 15 min
    nights = [host_nights(Wide(), jobs, JAN1, UTC) for jobs in hosts]
    for jobs in hosts:  # every host alone fits: 120 min of work over 10 slots
        assert not host_load(Wide(), jobs, JAN1, UTC)[0]["oversubscribed"]
    summary, found = fleet_load(4, nights)  # 360 min of work over 4 global slots: 90 min, fits in 120
    assert not summary["oversubscribed"] and found == [] and summary["needed_seconds"] == 5400
    summary, found = fleet_load(2, nights)  # over 2 slots: 180 min, does not
    assert summary["oversubscribed"] and summary["window_runs"] == 24
    assert found == [
        "the fleet's nightly windows are over-subscribed on the night of 2026-01-01: ~180 min of work "
        "per slot (24 runs on 3 hosts, scheduler.max_parallel 2) for the longest window, 120 min"
    ]
    assert fleet_load(2, []) == (
        {
            "max_parallel": 2,
            "hosts": 0,
            "night": None,
            "window_runs": 0,
            "estimated_seconds": 0.0,
            "unknown_durations": 0,
            "window_seconds": None,
            "needed_seconds": 0.0,
            "oversubscribed": False,
        },
        [],
    )
