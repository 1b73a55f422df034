"""Backup health from the oplog, and the daemon's watch that alarms on changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.actions.health import health
from orchestrator.oplog.schema import operations
from orchestrator.scheduler.watch import HealthWatch, digest_schedules, digest_summary

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def record(oplog, site, action, status, hours_ago, *, env="production", error=None, duration=60.0, size=1000):
    """Record a finished operation that started `hours_ago` before NOW; return its id."""
    op = oplog.start(task="700", site=site, env=env, action=action, params={})
    if action == "backup" and status == "ok":
        op.artifact("backup", f"b{op.id}", size=5, details={"files": {"size": size}, "db": {"size": 24}, "added": 5})
    op.finish(status, error)
    started = NOW - timedelta(hours=hours_ago)
    with oplog.engine.begin() as conn:
        conn.execute(
            operations.update()
            .where(operations.c.id == op.id)
            .values(started_at=started, finished_at=started + timedelta(seconds=duration), duration=duration)
        )
    return op.id


@pytest.fixture
def fleet(kit):
    kit.write(
        kit.site("fresh"),
        kit.site("stale"),
        kit.site("never"),
        kit.site("failing"),
        kit.site("drill"),
        kit.site("off", backup={"enabled": False}),
        kit.site("staged", environments={"staging": {"host": "one", "path": "/srv/s"}}),
    )
    oplog = kit.oplog()
    record(oplog, "fresh", "backup", "ok", 3)
    record(oplog, "fresh", "backup", "ok", 1, env="staging-not-monitored")
    record(oplog, "stale", "backup", "ok", 30)
    record(oplog, "never", "backup", "failed", 2, error="dump failed")
    record(oplog, "failing", "backup", "ok", 5)
    record(oplog, "failing", "backup", "failed", 1, error="Access denied")
    record(oplog, "drill", "backup", "ok", 2)
    record(oplog, "drill", "verify", "ok", 50)
    record(oplog, "drill", "verify", "failed", 1, error="table wp_orders missing")
    return kit.load(), oplog


def test_each_monitored_site_gets_a_verdict(fleet):
    rows = {row["site"]: row for row in health(*fleet, now=NOW)}
    assert set(rows) == {"fresh", "stale", "never", "failing", "drill"}, "no row for disabled or env-less sites"
    assert {site: row["status"] for site, row in rows.items()} == {
        "fresh": "ok",
        "stale": "stale",
        "never": "missing",
        "failing": "failing",
        "drill": "drill-failed",
    }
    assert [site for site, row in rows.items() if row["healthy"]] == ["fresh"]


def test_the_row_says_why_and_what_there_is(fleet):
    rows = {row["site"]: row for row in health(*fleet, now=NOW)}
    fresh = rows["fresh"]["last_backup"]
    assert fresh["age_hours"] == 3.0 and fresh["size"] == 1024 and fresh["backup_id"].startswith("b")
    assert rows["stale"]["problems"] == ["newest good backup is 30.0 h old (max 26 h)"]
    assert rows["never"]["problems"][0] == "no good backup recorded"
    assert "Access denied" in rows["failing"]["problems"][0] and rows["failing"]["last_failure"]["action"] == "backup"
    assert "wp_orders" in rows["drill"]["problems"][0]
    assert rows["drill"]["last_drill"]["at"].startswith("2026-11-25")


def test_a_site_max_age_overrides_the_default(kit):
    kit.write(kit.site("slow", backup={"max_age": 50}))
    oplog = kit.oplog()
    record(oplog, "slow", "backup", "ok", 30)
    (row,) = health(kit.load(), oplog, now=NOW)
    assert row["healthy"] and row["max_age_hours"] == 50


class Runtime:
    def __init__(self, inventory, oplog):
        self.inventory, self.oplog, self.notifier = inventory, oplog, self
        self.sent = []

    def send(self, event, channels=None):
        self.sent.append(event)
        return []


def test_the_watch_alarms_once_per_change_and_again_after_a_day(kit):
    kit.write(kit.site("a"))
    oplog = kit.oplog()
    rt = Runtime(kit.load(), oplog)
    watch = HealthWatch()
    assert [e["healthy"] for e in watch.check(rt, now=NOW)] == [False]
    assert watch.check(rt, now=NOW + timedelta(hours=1)) == []
    assert [e["healthy"] for e in watch.check(rt, now=NOW + timedelta(hours=25))] == [False]
    record(oplog, "a", "backup", "ok", -25.5)
    (event,) = watch.check(rt, now=NOW + timedelta(hours=26))
    assert event["event"] == "health" and event["healthy"] and event["site"] == "a"
    assert watch.check(rt, now=NOW + timedelta(hours=27)) == []


def test_the_digest_counts_the_day_and_lists_failures_and_unhealthy_sites(kit):
    kit.write(kit.site("a"), kit.site("b"))
    oplog = kit.oplog()
    record(oplog, "a", "backup", "ok", 2)
    record(oplog, "b", "backup", "failed", 3, error="boom")
    record(oplog, "b", "backup", "ok", 30)
    summary = digest_summary(kit.load(), oplog, now=NOW)
    assert summary["actions"] == {"backup": {"ok": 1, "failed": 1, "refused": 0}}
    assert [f["site"] for f in summary["failures"]] == ["b"] and summary["failures"][0]["error"] == "boom"
    assert [row["site"] for row in summary["unhealthy"]] == ["b"]


def test_digest_channels_are_grouped_by_their_schedule():
    channels = [
        {"type": "webhook", "url": "http://x", "on": ["digest"]},
        {"type": "webhook", "url": "http://y", "on": ["failure"]},
        {"type": "webhook", "url": "http://z", "on": ["digest"], "digest_schedule": "30 7 * * *"},
    ]
    assert digest_schedules(channels) == {"0 8 * * *": [0], "30 7 * * *": [2]}


def test_a_refused_run_neither_fails_a_site_nor_hides_the_failure_before_it(kit):
    kit.write(kit.site("locked"), kit.site("failing"))
    oplog = kit.oplog()
    record(oplog, "locked", "backup", "ok", 3)
    record(oplog, "locked", "backup", "refused", 1, error="site 'locked' is locked by ann@ops1")
    record(oplog, "failing", "backup", "ok", 5)
    record(oplog, "failing", "backup", "failed", 2, error="Access denied")
    record(oplog, "failing", "backup", "refused", 1, error="site 'failing' is locked by ann@ops1")
    rows = {row["site"]: row for row in health(kit.load(), oplog, now=NOW)}
    assert rows["locked"]["healthy"] and rows["locked"]["last_failure"] is None
    assert rows["failing"]["status"] == "failing" and "Access denied" in rows["failing"]["problems"][0]
    digest = digest_summary(kit.load(), oplog, hours=24 * 400, now=NOW)
    assert digest["actions"]["backup"] == {"ok": 2, "failed": 1, "refused": 2}
    assert [f["site"] for f in digest["failures"]] == ["failing"]
