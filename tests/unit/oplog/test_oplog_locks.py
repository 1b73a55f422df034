"""Site locks and the reaper, including real processes racing, crashing and being killed."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.errors import LockHeld
from orchestrator.oplog import Oplog, locked_operation, locks, schema

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A URL to an empty oplog database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/oplog.db"
        return
    pg = request.getfixturevalue("postgres")
    name = f"oplog_{uuid.uuid4().hex[:12]}"
    pg.sql(f"CREATE DATABASE {name}")
    yield pg.url(name).replace("postgresql+psycopg://", "postgresql://", 1)
    pg.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def oplog(url):
    oplog = Oplog(url)
    yield oplog
    oplog.close()


def dead_pid() -> int:
    """Return the pid of a process that has exited and been waited for."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def plant_lock(oplog, *, site="shinglas", host="web-admin", pid=123, expires_in=timedelta(hours=1), op_id=42):
    """Write a lock as another orch process would have: alice on `host`, task 14883, operation 42 (backup)."""
    acquired = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    with oplog.engine.begin() as conn:
        if op_id is not None:
            conn.execute(
                schema.operations.insert().values(
                    id=op_id,
                    task="14883",
                    site=site,
                    env="production",
                    action="backup",
                    actor=f"alice@{host}",
                    host=host,
                    pid=pid,
                    params={},
                    started_at=acquired,
                    status="running",
                )
            )
        conn.execute(
            schema.locks.insert().values(
                site=site,
                task="14883",
                operation_id=op_id,
                holder=f"alice@{host}",
                host=host,
                pid=pid,
                acquired_at=acquired,
                expires_at=datetime.now(UTC) + expires_in,
            )
        )


def spawn(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """Start `python -c code args...` in the repo, as a separate orch process would run."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, **kwargs)


def _reap(proc: subprocess.Popen) -> str:
    """Wait for a child a little, kill it if it hangs (a failed test must leave no process behind); return its
    stderr."""
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def wait_for(paths: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {[str(p) for p in paths]}"
        time.sleep(0.01)


# -- in one process ----------------------------------------------------------------------------------------------


def test_a_lock_is_taken_listed_and_released(oplog):
    op = oplog.start(task="14883", site="shinglas", env="production", action="backup")
    oplog.acquire_lock("shinglas", task="14883", operation_id=op.id)
    [lock] = oplog.locks()
    assert (lock["site"], lock["task"], lock["operation_id"], lock["action"]) == ("shinglas", "14883", op.id, "backup")
    assert lock["pid"] == os.getpid() and lock["stale"] is False
    assert lock["holder"] == f"{lock['holder'].split('@')[0]}@{lock['host']}"
    acquired, expires = (datetime.fromisoformat(lock[k]) for k in ("acquired_at", "expires_at"))
    assert expires - acquired == timedelta(seconds=locks.DEFAULT_TTL)
    oplog.release_lock("shinglas", op.id)
    assert oplog.locks() == []


def test_a_held_lock_says_who_holds_it(oplog):
    plant_lock(oplog)
    op = oplog.start(task="1", site="shinglas", env=None, action="restore")
    with pytest.raises(LockHeld) as caught:
        oplog.acquire_lock("shinglas", task="1", operation_id=op.id)
    assert str(caught.value) == (
        "site 'shinglas' is locked by alice@web-admin (pid 123) for task 14883 "
        "since 2026-11-27 10:00 UTC (operation 42, backup)"
    )
    assert caught.value.exit_code == 3


def test_a_second_operation_of_the_same_process_is_refused_too(oplog):
    first = oplog.start(task="1", site="a", env=None, action="backup")
    second = oplog.start(task="2", site="a", env=None, action="staging")
    oplog.acquire_lock("a", task="1", operation_id=first.id)
    oplog.acquire_lock("a", task="1", operation_id=first.id)  # the holder asking again is a no-op
    with pytest.raises(LockHeld, match=rf"for task 1 since .* \(operation {first.id}, backup\)"):
        oplog.acquire_lock("a", task="2", operation_id=second.id)


def test_only_the_holder_releases_a_lock(oplog):
    holder = oplog.start(task="1", site="a", env=None, action="backup")
    other = oplog.start(task="2", site="a", env=None, action="backup")
    oplog.acquire_lock("a", task="1", operation_id=holder.id)
    oplog.release_lock("a", other.id)
    oplog.release_lock("a", None)
    assert [lock["operation_id"] for lock in oplog.locks()] == [holder.id]


def test_a_lock_without_operation_is_released_by_its_process(oplog):
    oplog.acquire_lock("a", task="1", operation_id=None)
    with pytest.raises(LockHeld, match=r"for task 1 since [0-9: -]+ UTC$"):
        oplog.acquire_lock("a", task="2", operation_id=123456)
    oplog.release_lock("a", None)
    assert oplog.locks() == []


def test_an_expired_lock_is_reclaimed(oplog):
    plant_lock(oplog, host="another-machine", expires_in=timedelta(seconds=-1))
    assert oplog.locks()[0]["stale"] is True
    op = oplog.start(task="2", site="shinglas", env=None, action="backup")
    oplog.acquire_lock("shinglas", task="2", operation_id=op.id)
    assert [(lock["operation_id"], lock["task"]) for lock in oplog.locks()] == [(op.id, "2")]


def test_a_live_lock_of_another_machine_is_not_reclaimed_even_with_a_dead_local_pid(oplog):
    # A pid means nothing across machines: only expiry frees another machine's lock.
    plant_lock(oplog, host="another-machine", pid=dead_pid())
    with pytest.raises(LockHeld):
        oplog.acquire_lock("shinglas", task="2", operation_id=None)


def test_a_lock_of_a_dead_local_process_is_reclaimed(oplog):
    from orchestrator.oplog.process import machine

    plant_lock(oplog, host=machine(), pid=dead_pid())
    oplog.acquire_lock("shinglas", task="2", operation_id=None)
    assert oplog.locks()[0]["pid"] == os.getpid()


def test_force_unlock_refuses_a_live_holder_unless_live_and_removes_a_stale_one(oplog):
    from orchestrator.errors import Refused
    from orchestrator.oplog.process import machine

    plant_lock(oplog, expires_in=timedelta(minutes=14))  # another machine, heartbeat a minute ago
    with pytest.raises(Refused, match=r"heartbeat from web-admin is fresh \(renewed about 1 min ago.*--force"):
        oplog.force_unlock("shinglas", task="777")
    assert [lock["pid"] for lock in oplog.locks()] == [123]
    removed = oplog.force_unlock("shinglas", task="777", live=True)
    assert (removed["holder"], removed["pid"], removed["operation_id"], removed["stale"]) == (
        "alice@web-admin",
        123,
        42,
        False,
    )
    assert oplog.locks() == []
    assert oplog.force_unlock("shinglas", task="777") is None

    plant_lock(oplog, host=machine(), pid=os.getpid(), op_id=None)  # this machine, a live process
    with pytest.raises(Refused, match=f"process {os.getpid()} still runs on this machine"):
        oplog.force_unlock("shinglas", task="777")
    oplog.release_lock("shinglas", None)

    plant_lock(oplog, host=machine(), pid=dead_pid(), op_id=None)  # this machine, a dead process
    assert oplog.force_unlock("shinglas", task="777")["stale"] is True
    plant_lock(oplog, expires_in=timedelta(seconds=-1), op_id=None)  # another machine, heartbeat expired
    assert oplog.force_unlock("shinglas", task="777")["stale"] is True
    assert oplog.locks() == []


# -- locked_operation ------------------------------------------------------------------------------------------


def test_locked_operation_holds_the_lock_while_it_runs(oplog):
    with locked_operation(oplog, site="a", task="5", env="production", action="backup", params={"x": 1}) as op:
        assert [lock["operation_id"] for lock in oplog.locks()] == [op.id]
    assert oplog.locks() == []
    assert oplog.operation(op.id)["status"] == "ok"


def test_locked_operation_on_a_held_site_records_a_refusal_and_keeps_the_other_lock(oplog):
    plant_lock(oplog, site="a")
    with pytest.raises(LockHeld):
        with locked_operation(oplog, site="a", task="5", env=None, action="restore", params={}):
            pytest.fail("the body must not run without the lock")
    refused = oplog.operations(action="restore")[0]
    # not `failed`: nothing was changed, and a PM's log must not show a failure for a wait
    assert refused["status"] == "refused" and refused["error"].startswith("site 'a' is locked by alice@web-admin")
    assert [lock["operation_id"] for lock in oplog.locks()] == [42]


def test_locked_operation_releases_the_lock_when_the_body_fails(oplog):
    with pytest.raises(RuntimeError):
        with locked_operation(oplog, site="a", task="5", env=None, action="backup", params={}) as op:
            raise RuntimeError("dump exited 2")
    assert oplog.locks() == []
    assert oplog.operation(op.id)["error"] == "dump exited 2"


def test_locked_operation_without_lock_takes_none(oplog):
    plant_lock(oplog, site="a")
    with locked_operation(oplog, site="a", task="5", env=None, action="report", params={}, lock=False) as op:
        pass
    assert oplog.operation(op.id)["status"] == "ok"
    assert [lock["operation_id"] for lock in oplog.locks()] == [42]


# -- real processes --------------------------------------------------------------------------------------------

RACER = """
    import pathlib, sys, time
    from orchestrator.errors import LockHeld
    from orchestrator.oplog import Oplog
    url, work, n = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    oplog = Oplog(url)  # all racers open (and migrate) the fresh database at once, too
    op = oplog.start(task="7", site="race", env=None, action=f"racer{n}")
    (work / f"ready{n}").touch()
    while not (work / "go").exists():
        if (work / "done").exists():  # the test gave up before the start: leave, never spin on as an orphan
            sys.exit(3)
        time.sleep(0.001)
    try:
        oplog.acquire_lock("race", task="7", operation_id=op.id)
        result = f"won {op.id}"
    except LockHeld as exc:
        result = f"held {exc}"
    (work / f"result{n}.tmp").write_text(result)
    (work / f"result{n}.tmp").rename(work / f"result{n}")  # atomic: the parent never reads a half-written file
    while not (work / "done").exists():  # the winner stays alive, so its lock is not stale
        time.sleep(0.01)
"""


@pytest.mark.parametrize("before", ["free", "stale"])
def test_racing_processes_get_the_lock_exactly_once(url, tmp_path, before):
    racers = 4
    if before == "stale":  # all racers find an expired lock and try to reclaim it at once
        with Oplog(url) as oplog:
            plant_lock(oplog, site="race", host="another-machine", expires_in=timedelta(seconds=-1))
    procs = [spawn(RACER, url, str(tmp_path), str(n), stderr=subprocess.PIPE) for n in range(racers)]
    try:
        wait_for([tmp_path / f"ready{n}" for n in range(racers)])
        (tmp_path / "go").touch()
        wait_for([tmp_path / f"result{n}" for n in range(racers)])
        results = [(tmp_path / f"result{n}").read_text() for n in range(racers)]
    finally:
        (tmp_path / "done").touch()
        errors = [_reap(proc) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * racers, errors
    winners = [(n, r) for n, r in enumerate(results) if r.startswith("won")]
    assert len(winners) == 1, results
    winner, won = winners[0]
    for n, result in enumerate(results):
        if n != winner:
            assert result.startswith("held site 'race' is locked by ")
            assert result.endswith(f"(operation {won.split()[1]}, racer{winner})")


CRASHER = """
    import os, signal, sys
    from orchestrator.oplog import Oplog
    oplog = Oplog(sys.argv[1])
    op = oplog.start(task="9", site="crash", env="production", action="backup")
    oplog.acquire_lock("crash", task="9", operation_id=op.id)
    op.step("dump").__enter__()
    print(op.id, flush=True)
    {death}
"""


@pytest.mark.parametrize("death", ["os._exit(9)", "os.kill(os.getpid(), signal.SIGKILL)"])
def test_a_crashed_operation_is_reaped_and_its_lock_reclaimed(oplog, url, death):
    proc = spawn(CRASHER.replace("{death}", death), url, stdout=subprocess.PIPE, text=True)
    try:
        op_id = int(proc.stdout.readline())
        # Block until the child has exited, without reaping it: it stays a zombie, which must count as dead.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert oplog.locks()[0]["stale"] is True
        assert oplog.reap() == 1
        assert oplog.reap() == 0
    finally:
        proc.wait(timeout=60)
    detail = oplog.operation(op_id)
    assert detail["status"] == "interrupted" and "ended without finishing" in detail["error"]
    assert detail["finished_at"] and detail["duration"] >= 0
    assert [step["status"] for step in detail["steps"]] == ["interrupted"]
    mine = oplog.start(task="10", site="crash", env="production", action="restore")
    oplog.acquire_lock("crash", task="10", operation_id=mine.id)
    assert oplog.locks()[0]["operation_id"] == mine.id


def test_reap_leaves_live_and_foreign_operations_alone(oplog):
    mine = oplog.start(task="1", site="a", env=None, action="backup")
    plant_lock(oplog, host="another-machine", pid=dead_pid())  # a running operation on another machine
    assert oplog.reap() == 0
    assert {op["id"]: op["status"] for op in oplog.operations()} == {mine.id: "running", 42: "running"}


def test_sigterm_records_the_operation_as_interrupted(oplog, url):
    code = """
        import os, signal, sys, time
        from orchestrator.oplog import Oplog
        oplog = Oplog(sys.argv[1])
        with oplog.start(task="3", site="a", env=None, action="backup") as op:
            with op.step("dump"):
                print(op.id, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
    """
    proc = spawn(code, url, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    detail = oplog.operation(int(out))
    assert detail["status"] == "interrupted"
    assert detail["steps"][0]["status"] == "interrupted"
