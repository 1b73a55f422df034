"""Bad input, end to end: each gets one clear line naming what is wrong and its exit code, never a traceback,
and nothing is lost or changed."""

from __future__ import annotations

import contextlib
import copy
import sqlite3
import time

import pytest
from fleet import Fleet

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def own_fleet(fleet: Fleet, root, **sites: dict) -> Fleet:
    """Given the e2e fleet, return one on its own inventory folder (same hosts, oplog and secrets) with these
    sites (default: shop and blog)."""
    other = Fleet(root, fleet.env, fleet.hosts)
    other.write_inventory(copy.deepcopy(fleet.base), sites or copy.deepcopy(fleet.sites))
    return other


def alias_bomb(levels: int = 9, fan_out: int = 9) -> str:
    """A site file whose `sanitize` block is tiny as written and fan_out**levels strings once expanded."""
    lines = [
        "name: bomb",
        "environments:",
        "  production: {host: web1, path: /srv/bomb}",
        "sanitize:",
        "  a0: &a0 [" + ", ".join(['"lol"'] * fan_out) + "]",
    ]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orch: ") and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_defect_3_a_yaml_alias_bomb_is_refused_at_once_in_little_memory_naming_its_file(fleet, tmp_path):
    other = own_fleet(fleet, tmp_path / "inv")
    normal = other.orch_measured("backup", "shop", "--task", "3003", "--dry-run")
    assert normal.returncode == 0, normal.stderr
    (other.root / "sites" / "bomb.yaml").write_text(alias_bomb())
    assert (other.root / "sites" / "bomb.yaml").stat().st_size < 1000

    # a limit keeps today's 14 GB runaway from taking the machine down: it then dies of MemoryError
    bomb = other.orch_measured("backup", "bomb", "--task", "3003", memory_limit=normal.max_rss + 1024 * MIB)
    assert bomb.returncode == 2, bomb.stderr[-2000:]
    line = one_error_line(bomb.stderr)
    assert line.startswith("orch: sites/bomb.yaml: ") and "alias" in line
    assert bomb.max_rss - normal.max_rss < 100 * MIB, f"{bomb.max_rss / MIB:.0f} MiB vs {normal.max_rss / MIB:.0f}"
    assert bomb.seconds < normal.seconds + 1.0, f"{bomb.seconds:.2f} s vs {normal.seconds:.2f} s normally"

    # the same file in a fleet command costs that site alone
    listed = other.orch_measured("sites", memory_limit=normal.max_rss + 1024 * MIB)
    assert listed.returncode == 1 and "sites/bomb.yaml" in listed.stderr and "Traceback" not in listed.stderr
    assert {"shop", "blog"} <= {line.split()[0] for line in listed.stdout.splitlines()[1:]}


def recorded(fleet: Fleet, task: str) -> list[tuple]:
    """The operations stored under exactly this task, read straight from the fleet's SQLite oplog."""
    db = sqlite3.connect(fleet.base["oplog"].removeprefix("sqlite:///"))
    try:
        return db.execute("SELECT id, task, status FROM operations WHERE task = ?", (task,)).fetchall()
    finally:
        db.close()


def test_defect_17_a_task_number_with_a_trailing_newline_is_refused_and_never_stored(fleet):
    proc = fleet.orch("unlock", "shop", "--task", "777\n", expect=2)
    assert "'777\\n' is not a task number" in one_error_line(proc.stderr)
    assert recorded(fleet, "777\n") == []
    fleet.orch("unlock", "shop", "--task", "777")
    assert [op["action"] for op in fleet.orch_json("log", "--task", "777")] == ["unlock"]


@pytest.mark.parametrize("task", ["-1", "abc", "14883; rm -rf /", "1 2", "$(id)"])
def test_a_task_that_is_not_a_number_is_one_line_and_exit_2(fleet, task):
    for command in (("backup", "shop"), ("unlock", "shop"), ("log",), ("report",)):
        proc = fleet.orch(*command, "--task", task, expect=2)
        assert f"{task!r} is not a task number" in one_error_line(proc.stderr)
    assert recorded(fleet, task) == []


@pytest.mark.parametrize("name", ["../etc", "shop;id", "$(id)", "shop\n", "../../shop", "Shop"])
def test_a_site_or_env_name_that_cannot_be_a_name_is_one_line_and_exit_2_and_not_recorded(fleet, name):
    task = "8801"
    for args in (("backup", name), ("backup", "shop", "--env", name), ("unlock", name), ("pin", name, "--backup", "x")):
        proc = fleet.orch(*args, "--task", task, expect=2)
        line = one_error_line(proc.stderr)
        assert repr(name) in line and "name" in line, line
    assert recorded(fleet, task) == []


def test_a_site_file_that_is_not_utf8_is_one_line_naming_it(fleet, tmp_path):
    other = own_fleet(fleet, tmp_path / "inv")
    (other.root / "sites" / "blog.yaml").write_bytes(
        (other.root / "sites" / "blog.yaml").read_bytes().replace(b"playbook: generic", b"playbook: g\xe9n\xe9ric")
    )
    proc = other.orch("backup", "blog", "--task", "8802", expect=2)
    assert one_error_line(proc.stderr) == "orch: sites/blog.yaml: line 2: not UTF-8 text (byte 0xe9)"


def test_a_missing_secret_is_one_line_naming_file_key_and_variable(fleet):
    env = {k: v for k, v in fleet.env.items() if k != "T_BLOG_PW"}
    other = Fleet(fleet.root, env, fleet.hosts)
    proc = other.orch("backup", "blog", "--task", "8803", expect=2)
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("orch: ")]  # besides progress
    assert "sites/blog.yaml: environments.production.database.password" in line and "T_BLOG_PW" in line
    assert "Traceback" not in proc.stderr


def with_oplog(fleet: Fleet, root, url: str) -> Fleet:
    other = Fleet(root, fleet.env, fleet.hosts)
    other.write_inventory(copy.deepcopy(fleet.base) | {"oplog": url}, copy.deepcopy(fleet.sites))
    return other


def good_oplog(fleet: Fleet, path) -> bytes:
    """Given a path, make a real oplog there (one recorded operation) and return its bytes, every page in the
    file: a WAL file left beside it (its writer's connection not closed at exit) would still hold the pages a
    test truncates from the file."""
    with_oplog(fleet, path.parent / "maker", f"sqlite:///{path}").orch("unlock", "shop", "--task", "1601")
    with contextlib.closing(sqlite3.connect(path)) as db:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # every page into the file
    wal = path.with_name(path.name + "-wal")
    assert not busy and (not wal.exists() or wal.stat().st_size == 0)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "folder", "empty"])
def test_defect_16_a_damaged_oplog_file_is_one_line_and_exit_1(fleet, tmp_path, damage):
    path = tmp_path / "state" / "oplog.db"
    if damage == "garbage":
        path.parent.mkdir()
        path.write_bytes(b"this is no database\n" * 500)
    elif damage == "truncated":
        data = good_oplog(fleet, path)
        path.write_bytes(data[: len(data) // 2])
    elif damage == "folder":
        path.mkdir(parents=True)
    else:
        path.parent.mkdir()
        path.touch()
    other = with_oplog(fleet, tmp_path / "inv", f"sqlite:///{path}")
    for args in (("log", "--task", "1601"), ("report", "--task", "1601"), ("unlock", "shop", "--task", "1602")):
        proc = other.orch(*args, expect=1)
        assert one_error_line(proc.stderr).startswith(f"orch: oplog {path}: "), proc.stderr
    if damage == "empty":
        assert path.stat().st_size == 0, "a zero-byte file was silently made a new oplog"
        assert "empty" in proc.stderr


def test_defect_16_an_unreachable_postgresql_oplog_is_one_line_and_exit_1(fleet, tmp_path):
    from testbed.ports import free_port

    other = with_oplog(fleet, tmp_path / "inv", f"postgresql://orch:pg-secret-1601@127.0.0.1:{free_port()}/oplog")
    proc = other.orch("log", "--task", "1601", expect=1)
    line = one_error_line(proc.stderr)
    assert "cannot connect to the database" in line and "pg-secret-1601" not in proc.stderr


def test_defect_16_an_oplog_locked_by_another_writer_is_one_line_and_exit_1_after_its_timeout(fleet, tmp_path):
    path = tmp_path / "state" / "oplog.db"
    good_oplog(fleet, path)
    other = with_oplog(fleet, tmp_path / "inv", f"sqlite:///{path}?timeout=2.5")  # the default 30 s, shortened
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, in the middle of a long transaction
    try:
        started = time.monotonic()
        proc = other.orch("unlock", "shop", "--task", "1603", expect=1)
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked by another writer for more than 2.5 s" in one_error_line(proc.stderr)
    assert 2.4 < waited < 60
    other.orch("unlock", "shop", "--task", "1603")  # free again: works
