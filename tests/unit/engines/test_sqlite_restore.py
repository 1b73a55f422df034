"""The SQLite engine's restore script, run as the host runs it (sh, python3, a real database file): whatever
arrives on its stdin replaces the database only when it is a whole, sound SQLite database."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess

import pytest

from orchestrator.backends.engines.sqlite import RESTORE_SCRIPT


def make_db(path, rows: int) -> bytes:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 200,)] * rows)
    db.commit()
    db.close()
    return path.read_bytes()


def rows(path) -> int:
    return sqlite3.connect(path).execute("SELECT COUNT(*) FROM t").fetchone()[0]


def restore(path, stream: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", RESTORE_SCRIPT, "orch-sqlite-restore", str(path)], input=stream, capture_output=True
    )


@pytest.fixture
def live(tmp_path):
    path = tmp_path / "site.db"
    make_db(path, 10)
    path.chmod(0o640)
    return path


@pytest.mark.parametrize("cut", ["empty", "half", "not sqlite"])
def test_a_stream_that_is_no_whole_database_leaves_the_live_one_as_it_was(live, tmp_path, cut):
    backup = make_db(tmp_path / "backup.db", 500)
    stream = {"empty": b"", "half": backup[: len(backup) // 2], "not sqlite": b"restic: repository locked\n"}[cut]
    before = live.read_bytes()
    proc = restore(live, stream)
    assert proc.returncode != 0 and b"left as it was" in proc.stderr, proc.stderr
    assert live.read_bytes() == before and rows(live) == 10
    assert [p.name for p in tmp_path.iterdir() if ".orch-restore." in p.name] == []


def test_a_whole_database_replaces_the_live_one_and_keeps_its_mode(live, tmp_path):
    proc = restore(live, make_db(tmp_path / "backup.db", 500))
    assert proc.returncode == 0, proc.stderr
    assert rows(live) == 500 and stat.S_IMODE(os.stat(live).st_mode) == 0o640


def test_a_database_restored_where_none_was_is_created(tmp_path):
    target = tmp_path / "new.db"
    assert restore(target, make_db(tmp_path / "backup.db", 3)).returncode == 0
    assert rows(target) == 3
