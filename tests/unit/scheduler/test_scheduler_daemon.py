"""The daemon in-process: real APScheduler, real SQLite oplog and job store, fake (but oplog-recording) actions."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml
from schedkit import cron_at, wait_for

from orchestrator.oplog import Oplog
from orchestrator.scheduler import Daemon, leader


def start(kit, daemons, **options) -> Daemon:
    daemon = Daemon(kit.path, **({"health_interval": 3600, "stop_grace": 5} | options))
    daemon.start(kit.load(), kit.oplog())
    daemons.append(daemon)
    return daemon


def backups(oplog: Oplog, count: int | None = None):
    ops = [op for op in oplog.operations(oldest_first=True) if op["action"] == "backup"]
    return ops if count is None or len(ops) >= count and all(op["status"] != "running" for op in ops) else None


def spans(ops):
    return [(datetime.fromisoformat(op["started_at"]), datetime.fromisoformat(op["finished_at"])) for op in ops]


def overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_jobs_run_at_their_time_one_at_a_time_on_a_max_parallel_1_host(kit, fake_actions, daemons):
    fake_actions.duration = 0.6
    when = cron_at(2)
    kit.write(
        kit.site("a", "one", when), kit.site("b", "one", when), kit.site("c", "one", when), kit.site("d", "two", when)
    )
    daemon = start(kit, daemons)
    ops = wait_for(lambda: backups(daemon.runtime.oplog, 4), timeout=12)
    assert {op["site"] for op in ops} == {"a", "b", "c", "d"}
    assert all(op["status"] == "ok" and op["task"] == "700" and not op["catch_up"] for op in ops)
    on_one = spans([op for op in ops if op["site"] != "d"])
    assert not any(overlap(x, y) for i, x in enumerate(on_one) for y in on_one[i + 1 :]), on_one
    (on_two,) = spans([op for op in ops if op["site"] == "d"])
    assert any(overlap(on_two, x) for x in on_one), "host two should not wait for host one"


def test_the_global_limit_holds_across_hosts(kit, fake_actions, daemons):
    when = cron_at(2)
    kit.write(
        kit.site("a", "two", when),
        kit.site("b", "two", when),
        kit.site("c", "one", when),
        scheduler={"jitter": 0, "misfire_grace": 60, "max_parallel": 1},
    )
    daemon = start(kit, daemons)
    found = spans(wait_for(lambda: backups(daemon.runtime.oplog, 3), timeout=12))
    assert not any(overlap(x, y) for i, x in enumerate(found) for y in found[i + 1 :]), found


def test_a_run_missed_while_down_is_caught_up_once_and_marked(kit, fake_actions, daemons):
    kit.write(kit.site("a", "one", cron_at(1, 2, 3)))
    first = start(kit, daemons)
    first.stop()
    time.sleep(4.2)  # three scheduled times pass while no scheduler runs
    second = start(kit, daemons)
    (op,) = wait_for(lambda: backups(second.runtime.oplog, 1), timeout=8)
    time.sleep(1)
    assert op["catch_up"] is True and len(backups(second.runtime.oplog)) == 1


def test_a_run_missed_beyond_the_grace_window_is_skipped(kit, fake_actions, daemons):
    kit.write(kit.site("a", "one", cron_at(1)), scheduler={"jitter": 0, "misfire_grace": 1, "max_parallel": 4})
    start(kit, daemons).stop()
    time.sleep(3)
    second = start(kit, daemons)
    time.sleep(1)
    assert backups(second.runtime.oplog) == []


def test_reload_adds_changes_and_removes_jobs_and_keeps_a_broken_sites_jobs(kit, fake_actions, daemons):
    kit.write(kit.site("a", "one", "0 3 * * *"), kit.site("b", "one", "0 3 * * *"))
    daemon = start(kit, daemons)
    ids = lambda: sorted(job.id for job in daemon.scheduler.get_jobs(jobstore="default"))  # noqa: E731
    assert ids() == ["backup:a:production", "backup:b:production"]

    kit.write(kit.site("a", "one", "0 4 * * *"), kit.site("c", "two", "0 3 * * *"))
    assert daemon.reload()
    assert ids() == ["backup:a:production", "backup:c:production"]
    assert "0 4 * * *" in daemon.scheduler.get_job("backup:a:production").name

    (kit.root / "sites" / "c.yaml").write_text("name: c\nenvironments: {production: {host: nowhere, path: /x}}\n")
    (kit.root / "sites" / "d.yaml").write_text(yaml.safe_dump(kit.site("d", "two", "0 5 * * *")))
    assert not daemon.reload(), "a broken site file is reported"
    assert ids() == ["backup:a:production", "backup:c:production", "backup:d:production"], "the rest reloads"
    assert "c" in daemon.runtime.inventory.broken

    kit.write(kit.site("a", "one", "0 99 * * *"))
    assert not daemon.reload(), "an impossible cron is a problem of its site"
    assert ids() == ["backup:a:production"], "c and d are gone from the folder: their jobs go"
    assert "0 4 * * *" in daemon.scheduler.get_job("backup:a:production").name, "a keeps its last good job"

    kit.path.write_text("hosts: [not, a, mapping]\n")
    assert not daemon.reload(), "a broken inventory file changes nothing"
    assert ids() == ["backup:a:production"]


def test_a_broken_site_file_is_alerted_at_start_and_its_stored_jobs_fail_loudly(kit, fake_actions, daemons):
    server, received = receiver()
    try:
        when = cron_at(4)  # after the first daemon stored the jobs and stopped, even on a busy machine
        kit.write(
            kit.site("a", "one", when),
            kit.site("b", "two", when),
            notify=[{"type": "webhook", "url": f"http://127.0.0.1:{server.server_address[1]}/h"}],
        )
        first = start(kit, daemons)
        first.stop()
        (kit.root / "sites" / "b.yaml").write_text("name: b\nenvironments: {production: [broken\n")
        second = Daemon(kit.path, health_interval=3600, stop_grace=5)
        second.start(kit.load(), kit.oplog())
        daemons.append(second)
        wait_for(lambda: backups(second.runtime.oplog, 1), timeout=15)
        wait_for(lambda: len([e for e in received if e["event"] == "failure"]) >= 2, timeout=8)
    finally:
        server.shutdown()
    alert, failed_run = [event for event in received if event["event"] == "failure"][:2]
    assert alert["site"] == "b" and alert["action"] == "inventory" and "sites/b.yaml: line" in alert["text"]
    assert failed_run["site"] == "b" and failed_run["action"] == "backup" and "sites/b.yaml" in failed_run["error"]
    assert [op["site"] for op in backups(second.runtime.oplog)] == ["a"], "the valid site ran"


def test_stopping_records_a_run_that_did_not_finish_as_interrupted_and_frees_its_lock(kit, fake_actions, daemons):
    fake_actions.release = threading.Event()
    kit.write(kit.site("a", "one", cron_at(1)))
    daemon = start(kit, daemons, stop_grace=0.3)
    oplog = daemon.runtime.oplog
    wait_for(lambda: oplog.locks(), timeout=6)
    assert daemon.stop() is False and daemon.threads_left
    (op,) = backups(oplog)
    assert op["status"] == "interrupted" and "scheduler stopped" in op["error"]
    assert oplog.locks() == []
    fake_actions.release.set()


def test_stopping_waits_for_a_run_that_finishes_within_the_grace(kit, fake_actions, daemons):
    fake_actions.duration = 1.0
    kit.write(kit.site("a", "one", cron_at(1)))
    daemon = start(kit, daemons, stop_grace=5)
    wait_for(lambda: daemon.runtime.oplog.locks(), timeout=6)
    assert daemon.stop() is True
    assert [op["status"] for op in backups(daemon.runtime.oplog)] == ["ok"]


def test_only_one_daemon_holds_the_scheduler_lock_of_a_sqlite_oplog(kit):
    kit.write(kit.site("a", "one", "0 3 * * *"))
    oplog = kit.oplog()
    first, second = leader.for_oplog(oplog), leader.for_oplog(oplog)
    try:
        assert first.try_acquire() and not second.try_acquire()
        assert first.holder()["pid"] > 0
        first.release()
        assert second.try_acquire()
    finally:
        first.release()
        second.release()
    assert leader.for_oplog(oplog).holder() is None


def receiver() -> tuple[ThreadingHTTPServer, list[dict]]:
    """A real HTTP server on 127.0.0.1 that keeps every JSON body posted to it."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def test_a_failed_run_notifies_failure_and_the_next_good_one_recovery(kit, fake_actions, daemons):
    server, received = receiver()
    try:
        fake_actions.failing.add("a")
        kit.write(
            kit.site("a", "one", cron_at(1, 3)),
            notify=[
                {"type": "webhook", "url": f"http://127.0.0.1:{server.server_address[1]}/h"},
                {"type": "webhook", "url": "http://127.0.0.1:9/refused"},
            ],
        )
        daemon = start(kit, daemons)
        wait_for(lambda: backups(daemon.runtime.oplog, 1), timeout=6)
        fake_actions.failing.clear()
        wait_for(lambda: len(received) >= 2, timeout=8)
    finally:
        server.shutdown()
    failure, recovery = received
    assert failure["event"] == "failure" and failure["site"] == "a" and "Access denied" in failure["error"]
    assert failure["operation_id"] == backups(daemon.runtime.oplog)[0]["id"]
    assert recovery["event"] == "recovery" and recovery["status"] == "ok"
    assert [op["status"] for op in backups(daemon.runtime.oplog)] == ["failed", "ok"], "a dead channel broke nothing"


def test_a_run_refused_by_a_held_lock_is_logged_not_alerted_and_no_recovery_follows(kit, fake_actions, daemons):
    server, received = receiver()
    try:
        kit.write(
            kit.site("a", "one", cron_at(2, 4)),
            notify=[{"type": "webhook", "url": f"http://127.0.0.1:{server.server_address[1]}/h"}],
        )
        oplog = kit.oplog()
        oplog.acquire_lock("a", task="1", operation_id=None)  # a person's backup holds the site
        daemon = start(kit, daemons)
        wait_for(lambda: backups(daemon.runtime.oplog, 1), timeout=10)
        oplog.release_lock("a", None)
        wait_for(lambda: backups(daemon.runtime.oplog, 2), timeout=10)
        time.sleep(0.5)
    finally:
        server.shutdown()
    assert [op["status"] for op in backups(daemon.runtime.oplog)] == ["refused", "ok"]
    assert received == [], "neither a failure nor a recovery: nothing failed"


def test_the_daemon_raises_health_alarms_and_sends_the_digest(kit, fake_actions, daemons):
    server, received = receiver()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        kit.write(
            kit.site("never", "one", "0 3 * * *"),
            notify=[
                {"type": "webhook", "url": url + "/alarms", "on": ["health"]},
                {"type": "webhook", "url": url + "/digest", "on": ["digest"], "digest_schedule": cron_at(3)},
            ],
        )  # room for a slow start on a busy machine
        start(kit, daemons, health_interval=1)
        wait_for(lambda: {event["event"] for event in received} >= {"health", "digest"}, timeout=12)
    finally:
        server.shutdown()
    health = next(event for event in received if event["event"] == "health")
    assert health["site"] == "never" and not health["healthy"] and health["problems"] == ["no good backup recorded"]
    digest = next(event for event in received if event["event"] == "digest")
    assert [row["site"] for row in digest["unhealthy"]] == ["never"]
    assert len([event for event in received if event["event"] == "health"]) == 1, "alarm once, not every check"
