"""The scheduler end to end: real `orch scheduler run` processes, real backups on the testbed hosts, a real HTTP
receiver for notifications; schedules seconds apart (6-field cron) to keep it quick."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fleet import ORCH, Fleet
from testbed.webhook import Receiver

pytestmark = pytest.mark.e2e


def cron_at(*offsets: float) -> tuple[str, list[datetime]]:
    """Given seconds from now, return a 6-field cron firing at exactly those seconds today, and the moments.
    Moments are moved past a minute boundary if they would straddle one (the cron names one minute)."""
    base = datetime.now().replace(microsecond=0)
    if (base + timedelta(seconds=max(offsets))).minute != (base + timedelta(seconds=min(offsets))).minute:
        base += timedelta(seconds=max(offsets) + 1)
        base = base.replace(second=0) + timedelta(seconds=1) - timedelta(seconds=min(offsets))
    moments = [base + timedelta(seconds=offset) for offset in offsets]
    first = moments[0]
    return f"{','.join(str(m.second) for m in moments)} {first.minute} {first.hour} * * *", moments


def wait_for(predicate, timeout: float, what: str, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")


class Daemon:
    """One `orch scheduler run` process, its stderr in a file."""

    def __init__(self, fleet: Fleet, log: Path, *args: str):
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [*ORCH, "-i", str(fleet.inventory), "scheduler", "run", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=fleet.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        def seen():
            if self.proc.poll() is not None and needle not in self.text():
                raise AssertionError(f"scheduler exited {self.proc.returncode}:\n{self.text()[-3000:]}")
            return needle in self.text()

        try:
            wait_for(seen, timeout, f"scheduler log line {needle!r}", step=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.text()[-3000:]}") from None

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def scheduled_fleet(fleet: Fleet, root: Path, sites: dict[str, str], env: dict | None = None, **inventory) -> Fleet:
    """Given {site: cron}, return a Fleet on its own inventory and SQLite oplog running those sites' backups
    (`broken` is shop with a wrong database password)."""
    base = copy.deepcopy(fleet.base) | {
        "oplog": f"sqlite:///{root}/state/oplog.db",
        "scheduler": {"jitter": 0, "misfire_grace": 120, "max_parallel": 4},
    }
    base |= inventory
    chosen = {}
    for name, schedule in sites.items():
        site = copy.deepcopy(fleet.sites["shop" if name == "broken" else name])
        site["name"] = name
        if name == "broken":
            site["environments"]["production"]["database"]["password"] = {"env": "T_BROKEN_PW"}
        site["backup"] = {"schedule": schedule}
        chosen[name] = site
    other = Fleet(root / "inv", fleet.env | {"T_BROKEN_PW": "wrong-password"} | (env or {}), fleet.hosts)
    other.write_inventory(base, chosen)
    return other


def written(other: Fleet) -> tuple[dict, dict]:
    """The inventory and sites a Fleet wrote, to change and write back."""
    sites = {path.stem: yaml.safe_load(path.read_text()) for path in (other.root / "sites").glob("*.yaml")}
    return yaml.safe_load(other.inventory.read_text()), sites


def sqlite_ops(root: Path) -> list[dict]:
    """The oplog's operations, read straight from the SQLite file (cheap enough to poll)."""
    path = root / "state" / "oplog.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM operations ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def stored_jobs(root: Path) -> list[str]:
    """The job ids the scheduler keeps in its job store (read directly: `orch scheduler status` needs a valid
    inventory, and here it is broken on purpose)."""
    db = sqlite3.connect(root / "state" / "oplog.db", timeout=10)
    try:
        return sorted(row[0] for row in db.execute("SELECT id FROM scheduler_jobs"))
    finally:
        db.close()


def finished(ops: list[dict], action: str, count: int) -> list[dict] | None:
    done = [op for op in ops if op["action"] == action and op["status"] != "running"]
    return done if len(done) >= count else None


def test_three_sites_on_two_hosts_run_on_time_respect_max_parallel_notify_and_show_in_health(
    fleet, tmp_path, receiver, daemons
):
    when, moments = cron_at(6)
    later, _ = cron_at(7)
    hosts = copy.deepcopy(fleet.base["hosts"])
    hosts["web1"]["max_parallel"] = 1
    other = scheduled_fleet(
        fleet,
        tmp_path,
        {"shop": when, "broken": when, "blog": later},
        hosts=hosts,
        notify=[{"type": "webhook", "url": receiver.url + "/orch", "on": ["failure", "recovery", "health"]}],
    )

    plan = other.orch_json("scheduler", "plan")
    jobs = {job["id"]: job for job in plan["jobs"]}
    assert set(jobs) == {"backup:shop:production", "backup:broken:production", "backup:blog:production"}
    assert datetime.fromisoformat(jobs["backup:shop:production"]["next_run"]).replace(tzinfo=None) == moments[0]
    assert {job["host"] for job in plan["jobs"]} == {"web1", "stage1"} and all(j["next_run"] for j in plan["jobs"])

    daemon = Daemon(other, tmp_path / "scheduler.log", "--health-interval", "600")
    daemons.append(daemon)
    daemon.wait_log("scheduler active")
    ops = wait_for(lambda: finished(sqlite_ops(tmp_path), "backup", 3), 120, "three scheduled backups")
    assert daemon.stop() == 0, daemon.text()[-2000:]

    by_site = {op["site"]: op for op in ops}
    assert {site: op["status"] for site, op in by_site.items()} == {"shop": "ok", "blog": "ok", "broken": "failed"}
    assert all(op["task"] == "10001" for site, op in by_site.items() if site != "blog") and not any(
        op["catch_up"] for op in ops
    )
    first_start = min(datetime.fromisoformat(op["started_at"]) for op in ops)
    assert abs(first_start.astimezone().replace(tzinfo=None) - moments[0]) < timedelta(seconds=3)
    web1 = sorted((op["started_at"], op["finished_at"]) for op in ops if op["site"] in ("shop", "broken"))
    assert web1[0][1] <= web1[1][0], f"two backups overlapped on web1 (max_parallel 1): {web1}"

    failure = next(post for post in receiver.posts if post["event"] == "failure")
    assert failure["site"] == "broken" and "Access denied" in failure["error"]
    assert failure["operation_id"] == by_site["broken"]["id"]
    assert "wrong-password" not in json.dumps(receiver.posts)

    proc = other.orch("--json", "health", expect=1)
    rows = {row["site"]: row for row in json.loads(proc.stdout)}
    assert not rows["broken"]["healthy"] and rows["broken"]["status"] == "missing"
    assert "Access denied" in " ".join(rows["broken"]["problems"])
    assert rows["shop"]["healthy"] and rows["blog"]["healthy"]
    assert rows["shop"]["last_backup"]["size"] > 100_000


def test_a_backup_missed_while_the_scheduler_was_down_runs_once_as_a_catch_up(fleet, tmp_path, daemons):
    when, moments = cron_at(5, 6, 7)
    other = scheduled_fleet(fleet, tmp_path, {"blog": when})
    first = Daemon(other, tmp_path / "first.log")
    daemons.append(first)
    first.wait_log("scheduler active")
    assert first.stop() == 0
    time.sleep(max(0.0, (moments[-1] - datetime.now()).total_seconds()) + 1.5)
    assert sqlite_ops(tmp_path) == [], "nothing ran while the scheduler was down"

    second = Daemon(other, tmp_path / "second.log")
    daemons.append(second)
    (op,) = wait_for(lambda: finished(sqlite_ops(tmp_path), "backup", 1), 60, "the catch-up backup")
    time.sleep(2)  # room for a wrong second run to show up
    assert second.stop() == 0
    assert len([o for o in sqlite_ops(tmp_path) if o["action"] == "backup"]) == 1, "missed runs were not coalesced"
    assert op["status"] == "ok" and op["catch_up"] == 1
    assert "as a catch-up" in second.text()
    logged = other.orch_json("log", "--site", "blog")
    assert logged[0]["catch_up"] is True
    assert "(catch-up)" in other.orch("log", "--site", "blog").stdout


def test_reload_changes_jobs_and_an_invalid_inventory_keeps_them(fleet, tmp_path, daemons):
    other = scheduled_fleet(fleet, tmp_path, {"shop": "0 3 * * *"})
    daemon = Daemon(other, tmp_path / "scheduler.log")
    daemons.append(daemon)
    daemon.wait_log("scheduler active")
    assert [job["id"] for job in other.orch_json("scheduler", "status")["jobs"]] == ["backup:shop:production"]

    base, sites = written(other)
    sites["blog"] = copy.deepcopy(fleet.sites["blog"]) | {"backup": {"schedule": "0 4 * * *"}}
    other.write_inventory(base, sites)
    assert other.orch_json("scheduler", "reload")["pid"] == daemon.pid
    daemon.wait_log("added backup:blog:production", timeout=15)
    assert stored_jobs(tmp_path) == ["backup:blog:production", "backup:shop:production"]

    broken = "name: blog\nenvironments: {production: {host: nowhere, path: /x}}\n"
    (other.root / "sites" / "blog.yaml").write_text(broken)
    proc = other.orch("scheduler", "reload", expect=1)  # reloads the rest; blog keeps its jobs
    assert "unknown host 'nowhere'" in proc.stderr and "keep their current jobs" in proc.stderr
    daemon.wait_log("cannot be scheduled as written", timeout=15)
    assert "unknown host 'nowhere'" in daemon.text()
    assert stored_jobs(tmp_path) == ["backup:blog:production", "backup:shop:production"]

    other.inventory.write_text("hosts: [not, a, mapping]\n")
    proc = other.orch("scheduler", "reload", expect=2)
    assert "inventory.yaml: hosts" in proc.stderr and "keeps its current jobs" in proc.stderr
    os.kill(daemon.pid, signal.SIGHUP)  # the daemon itself must refuse it too
    daemon.wait_log("reload refused", timeout=15)
    assert stored_jobs(tmp_path) == ["backup:blog:production", "backup:shop:production"]

    del sites["blog"]
    other.write_inventory(base, sites)
    os.kill(daemon.pid, signal.SIGHUP)
    daemon.wait_log("removed backup:blog:production", timeout=15)
    assert stored_jobs(tmp_path) == ["backup:shop:production"]
    assert daemon.stop() == 0


def test_defect_5_a_cold_scheduler_runs_every_valid_site_and_alerts_about_the_broken_one(
    fleet, tmp_path, receiver, daemons
):
    when, _ = cron_at(5)
    other = scheduled_fleet(
        fleet, tmp_path, {"blog": when}, notify=[{"type": "webhook", "url": receiver.url + "/orch"}]
    )
    (other.root / "sites" / "bad.yaml").write_text("name: bad\nenvironments: {production: [unclosed\n")
    daemon = Daemon(other, tmp_path / "scheduler.log")
    daemons.append(daemon)
    daemon.wait_log("scheduler active")
    (op,) = wait_for(lambda: finished(sqlite_ops(tmp_path), "backup", 1), 90, "the valid site's backup")
    assert op["site"] == "blog" and op["status"] == "ok"
    alert = wait_for(lambda: [post for post in receiver.posts if post["event"] == "failure"], 10, "an alert")[0]
    assert alert["site"] == "bad" and "sites/bad.yaml: line" in alert["text"]
    assert daemon.stop() == 0
    assert "sites/bad.yaml" in daemon.text()


def test_a_scheduled_run_refused_by_a_held_lock_is_no_failure_of_the_site(fleet, tmp_path, receiver, daemons):
    other = scheduled_fleet(
        fleet,
        tmp_path,
        {"blog": "*/5 * * * * *"},  # every 5 s: runs keep coming
        notify=[{"type": "webhook", "url": receiver.url + "/orch", "on": ["failure", "recovery", "health"]}],
    )
    other.orch("log")  # creates the oplog
    now = datetime.utcnow()
    db = sqlite3.connect(tmp_path / "state" / "oplog.db")
    with db:  # a person's operation holds the site (this live process on this machine)
        db.execute(
            "INSERT INTO locks (site, task, holder, host, pid, acquired_at, expires_at) VALUES "
            "('blog', '4242', 'ann@ops1', ?, ?, ?, ?)",
            (socket.gethostname(), os.getpid(), str(now), str(now + timedelta(minutes=10))),
        )
    daemon = Daemon(other, tmp_path / "scheduler.log", "--health-interval", "600")
    daemons.append(daemon)
    (refused,) = wait_for(lambda: finished(sqlite_ops(tmp_path), "backup", 1), 60, "the first scheduled run")
    assert refused["status"] == "refused" and "task 4242" in refused["error"]
    with db:
        db.execute("DELETE FROM locks WHERE site = 'blog'")
    db.close()
    wait_for(lambda: [op for op in sqlite_ops(tmp_path) if op["status"] == "ok"], 90, "a run once the lock is gone")
    assert daemon.stop() == 0
    statuses = [op["status"] for op in sqlite_ops(tmp_path) if op["action"] == "backup"]
    assert statuses[0] == "refused" and "ok" in statuses and set(statuses) <= {"refused", "ok"}, statuses
    assert "refused, nothing changed" in daemon.text()
    assert [post["event"] for post in receiver.posts] == [], "no failure, so no recovery either"
    (row,) = json.loads(other.orch("--json", "health").stdout)
    assert row["healthy"] and row["last_failure"] is None
    assert "refused" in other.orch("log", "--site", "blog").stdout


def test_sigterm_during_a_backup_records_it_interrupted_and_exits_promptly(fleet, tmp_path, daemons):
    web1 = fleet.hosts["web1"]
    slow = f"{web1.home}/slow-restic-{tmp_path.name}"
    web1.run(f"printf '#!/bin/sh\\nsleep 60\\nexec restic \"$@\"\\n' > {slow} && chmod +x {slow}")
    when, _ = cron_at(4)
    other = scheduled_fleet(fleet, tmp_path, {"shop": when})
    base, sites = written(other)
    base["hosts"]["web1"]["restic"] = slow
    other.write_inventory(base, sites)
    daemon = Daemon(other, tmp_path / "scheduler.log", "--stop-grace", "1")
    daemons.append(daemon)
    daemon.wait_log("backup shop/production starts", timeout=30)
    time.sleep(1)
    started = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    (op,) = [op for op in sqlite_ops(tmp_path) if op["action"] == "backup"]
    assert op["status"] == "interrupted" and "scheduler stopped" in op["error"]
    assert other.orch_json("locks") == []
    web1.run(f"rm -f {slow}")


def test_two_schedulers_on_one_postgresql_oplog_one_runs_the_standby_takes_over_after_kill_9(
    fleet, postgres, tmp_path, daemons
):
    postgres.sql("CREATE DATABASE orch_scheduler_e2e")
    url = postgres.url("orch_scheduler_e2e").replace("+psycopg", "")
    other = scheduled_fleet(fleet, tmp_path, {"blog": "*/4 * * * * *"}, oplog=url)

    def pids_of_backups() -> list[tuple[int, str]]:
        out = (
            postgres.sql("SELECT pid, status FROM operations WHERE action = 'backup' ORDER BY id", "orch_scheduler_e2e")
            if _has_operations(postgres)
            else ""
        )
        return [(int(line.split("|")[0]), line.split("|")[1]) for line in out.split()]

    active = Daemon(other, tmp_path / "active.log", "--standby-poll", "1")
    daemons.append(active)
    active.wait_log("scheduler active")
    standby = Daemon(other, tmp_path / "standby.log", "--standby-poll", "1")
    daemons.append(standby)
    standby.wait_log("standby: another scheduler is active")
    assert f"pid {active.pid}" in standby.text()
    wait_for(lambda: [p for p, status in pids_of_backups() if status == "ok"], 60, "a backup by the active one")
    assert {pid for pid, _ in pids_of_backups()} == {active.pid}, "the standby ran a job"
    assert other.orch_json("scheduler", "status")["active"]["pid"] == active.pid

    active.proc.send_signal(signal.SIGKILL)
    active.proc.wait(10)
    killed_at = time.monotonic()
    standby.wait_log("scheduler active", timeout=30)
    assert time.monotonic() - killed_at < 30
    wait_for(lambda: (standby.pid, "ok") in pids_of_backups(), 40, "a backup by the new active scheduler")
    assert other.orch_json("scheduler", "status")["active"]["pid"] == standby.pid
    assert standby.stop() == 0
    statuses = [status for _, status in pids_of_backups()]
    assert "running" not in statuses, statuses  # the killed one's run was closed as interrupted on takeover


def _has_operations(postgres) -> bool:
    return postgres.sql("SELECT to_regclass('operations') IS NOT NULL", "orch_scheduler_e2e").strip() == "t"
