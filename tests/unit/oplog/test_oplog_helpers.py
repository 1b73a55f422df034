"""Helpers of the oplog that need no database: text cleaning, process liveness, exit statuses."""

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from orchestrator.errors import UsageError
from orchestrator.masking import register_secret
from orchestrator.oplog.engine import OplogError, make_engine
from orchestrator.oplog.operation import exit_status
from orchestrator.oplog.process import pid_alive
from orchestrator.oplog.text import clean_json, tail


def test_tail_keeps_short_text_and_cuts_long_text_from_the_front():
    assert tail("short", 100) == "short"
    cut = tail("a" * 50 + "b" * 100, 100)
    assert len(cut) <= 100 and cut.endswith("b" * 60) and cut.startswith("[... 90 characters cut ...]")


def test_clean_json_masks_keys_and_values_and_stringifies_the_rest():
    secret = register_secret('we"ird\\secret')
    value = {"a": [secret, 1, 2.5, True, None], secret: {"p": f"x{secret}y"}, "t": (1, 2)}
    assert clean_json(value) == {"a": ["***", 1, 2.5, True, None], "***": {"p": "x***y"}, "t": [1, 2]}
    assert clean_json({"path": os.sep}) == {"path": "/"}


def test_this_process_is_alive_and_a_reaped_one_is_not():
    assert pid_alive(os.getpid())
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not pid_alive(int(proc.stdout))
    assert not pid_alive(0)


def test_a_zombie_counts_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, but not reaped: a zombie
        os.kill(proc.pid, 0)  # the kernel still knows the pid: only the zombie check can tell
        assert not pid_alive(proc.pid)
    finally:
        proc.wait()


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (None, "ok"),
        (RuntimeError("x"), "failed"),
        (KeyboardInterrupt(), "interrupted"),
        (SystemExit(0), "ok"),
        (SystemExit(None), "ok"),
        (SystemExit(143), "interrupted"),
        (SystemExit("message"), "interrupted"),
    ],
)
def test_how_a_block_ended_decides_its_status(exc, status):
    assert exit_status(exc) == status


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "100000"])
def test_a_sqlite_busy_timeout_that_is_no_number_of_seconds_is_a_usage_error(tmp_path, timeout):
    with pytest.raises(UsageError, match=f"timeout={timeout!r}"):
        make_engine(f"sqlite:///{tmp_path}/oplog.db?timeout={timeout}")


def test_a_writer_waits_the_urls_busy_timeout_and_names_it(tmp_path):
    path = tmp_path / "oplog.db"
    engine = make_engine(f"sqlite:///{path}?timeout=0.3")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(OplogError, match=r"locked by another writer for more than 0\.3 s"):
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert 0.25 < time.monotonic() - started < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
