"""Backups end to end: restic on the hosts, dumps streamed, S3 storage, restore, verify, prune, faults."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fleet import Fleet, tree_checksums
from testbed.inventory import host_entry

pytestmark = pytest.mark.e2e


def _rows(fleet, site):
    if site == "shop":
        out = fleet.mariadb.sql("SELECT COUNT(*), MAX(option_value) FROM wp_options", "shop")
    else:
        out = fleet.postgres.sql("SELECT COUNT(*) || '|' || MAX(title) FROM posts", "blog")
    return out.strip()


@pytest.fixture(scope="module")
def backed_up(fleet, mariadb, postgres):
    """Both sites backed up once; returns {site: backup_id} and the state they were in."""
    fleet.mariadb, fleet.postgres = mariadb, postgres
    results = fleet.orch_json("backup", "shop", "blog", "--task", "14883")
    assert [r["status"] for r in results] == ["ok", "ok"], results
    state = {
        s: (_rows(fleet, s), tree_checksums(fleet.hosts[h], fleet.sites[s]["environments"]["production"]["path"]))
        for s, h in (("shop", "web1"), ("blog", "stage1"))
    }
    return {r["site"]: r["backup_id"] for r in results}, state


def test_restore_brings_back_rows_and_files_exactly(fleet, backed_up):
    ids, before = backed_up
    web1, stage1 = fleet.hosts["web1"], fleet.hosts["stage1"]
    shop_path = fleet.sites["shop"]["environments"]["production"]["path"]
    blog_path = fleet.sites["blog"]["environments"]["production"]["path"]
    fleet.mariadb.sql("UPDATE wp_options SET option_value = 'changed' WHERE option_id = 1", "shop")
    fleet.mariadb.sql("DELETE FROM wp_options WHERE option_id > 200", "shop")
    fleet.postgres.sql("DELETE FROM posts WHERE id % 2 = 0", "blog")
    web1.run(f"rm {shop_path}/wp-content/uploads/2026/f3.bin && echo new > {shop_path}/added.txt")
    stage1.run(f"rm '{blog_path}/wp-content/uploads/2026/Файл с пробелом.txt'")
    assert _rows(fleet, "shop") != before["shop"][0]

    for site in ("shop", "blog"):
        fleet.orch("restore", site, "--backup", ids[site], "--to", "production", "--task", "14883", "--yes")

    assert _rows(fleet, "shop") == before["shop"][0]
    assert _rows(fleet, "blog") == before["blog"][0]
    assert tree_checksums(web1, shop_path) == before["shop"][1]
    assert tree_checksums(stage1, blog_path) == before["blog"][1]
    restore_op = [op for op in fleet.orch_json("log", "--task", "14883") if op["action"] == "restore"][-1]
    assert any(a["kind"] == "safety-backup" for a in restore_op["artifacts"])


def test_the_database_is_imported_beside_the_files_and_recorded_when_the_files_fail(fleet, backed_up):
    """The dump and the files restore at the same time; if the files fail, the import that ran beside them is
    still recorded (the database was replaced), and the operation fails."""
    ids, before = backed_up
    web1 = fleet.hosts["web1"]
    shop_path = fleet.sites["shop"]["environments"]["production"]["path"]
    fleet.mariadb.sql("DELETE FROM wp_options WHERE option_id > 100", "shop")
    parent = os.path.dirname(shop_path)
    mode = os.stat(parent).st_mode
    os.chmod(parent, 0o555)  # the scratch folder beside the docroot cannot be made: the files step fails
    try:
        proc = fleet.orch(
            "restore", "shop", "--backup", ids["shop"], "--to", "production", "--task", "14884", "--yes", expect=1
        )
    finally:
        os.chmod(parent, mode)
    assert "Traceback" not in proc.stderr
    op = [op for op in fleet.orch_json("log", "--task", "14884", "--steps") if op["action"] == "restore"][-1]
    steps = {s["name"]: s for s in op["steps"]}
    assert op["status"] == "failed" and steps["restore files"]["status"] == "failed"
    assert steps["restore database"]["status"] == "ok" and "beside the files" in steps["restore database"]["output"]
    assert _rows(fleet, "shop") == before["shop"][0]
    assert tree_checksums(web1, shop_path) == before["shop"][1]


def test_restoring_onto_production_without_yes_is_refused(fleet, backed_up):
    ids, _ = backed_up
    proc = fleet.orch("restore", "shop", "--backup", ids["shop"], "--to", "production", "--task", "1", expect=4)
    assert "--yes" in proc.stderr


@pytest.mark.parametrize("path", ["../etc", "/etc/passwd", "wp-content/../../x"])
def test_restore_path_traversal_is_refused(fleet, backed_up, path):
    ids, _ = backed_up
    proc = fleet.orch(
        "restore",
        "shop",
        "--backup",
        ids["shop"],
        "--to",
        "production",
        "--task",
        "1",
        "--yes",
        "--path",
        path,
        expect=2,
    )
    assert "relative path inside the site" in proc.stderr


def test_a_backup_id_that_does_not_exist_is_refused(fleet, backed_up):
    proc = fleet.orch(
        "restore", "shop", "--backup", "19990101-000000-dead", "--to", "production", "--task", "1", "--yes", expect=2
    )
    assert "no backup '19990101-000000-dead'" in proc.stderr


def test_backups_json_and_log_show_snapshot_ids_and_sizes(fleet, backed_up):
    ids, _ = backed_up
    listed = {b["backup_id"]: b for b in fleet.orch_json("backups", "shop")}
    mine = listed[ids["shop"]]
    assert mine["status"] == "ok" and mine["task"] == "14883"
    assert set(mine["snapshots"]) == {"db", "files"} and mine["files_size"] > 100_000 and mine["db_size"] > 1000
    op = next(
        op for op in fleet.orch_json("log", "--task", "14883") if op["action"] == "backup" and op["site"] == "shop"
    )
    art = next(a for a in op["artifacts"] if a["kind"] == "backup")
    assert art["ident"] == ids["shop"] and art["details"]["snapshots"] == mine["snapshots"]
    assert art["details"]["files"]["count"] >= 40 and art["details"]["db"]["size"] == mine["db_size"]


def test_verify_passes_on_a_good_backup(fleet, backed_up):
    ids, _ = backed_up
    report = fleet.orch_json("verify", "blog", "--backup", ids["blog"], "--task", "14884")
    assert report["status"] == "ok" and report["tables"]["public.posts"] == 120
    assert report["files"]["sampled"] > 0 and report["files"]["restored"] == report["files"]["sampled"]


def test_verify_fails_loudly_when_a_table_is_missing(fleet, backed_up):
    ids, _ = backed_up
    # the backup recorded one table more than its dump holds (as if the dump had silently skipped it)
    db = sqlite3.connect(fleet.root / "state" / "oplog.db")
    row = db.execute("SELECT id, details FROM artifacts WHERE kind='backup' AND ident=?", (ids["shop"],)).fetchone()
    details = json.loads(row[1])
    details["db"]["tables"]["wp_orders"] = [5, 5]
    db.execute("UPDATE artifacts SET details=? WHERE id=?", (json.dumps(details), row[0]))
    db.commit()
    proc = fleet.orch("verify", "shop", "--backup", ids["shop"], "--task", "14885", expect=1)
    assert "table wp_orders missing" in proc.stderr
    assert fleet.orch_json("log", "--task", "14885")[0]["status"] == "failed"


def test_verify_fails_loudly_when_the_stored_dump_is_corrupt(fleet, s3, mariadb):
    fleet.mariadb = mariadb
    backup_id = fleet.orch_json("backup", "shop", "--task", "14886")[0]["backup_id"]
    snap = next(b for b in fleet.orch_json("backups", "shop") if b["backup_id"] == backup_id)["snapshots"]["db"]
    # flip bytes in every data pack written by that backup's db part (the newest packs of the repository)
    packs = sorted((s3.root / "agency-backups" / "orch" / "shop" / "data").rglob("*"), key=lambda p: p.stat().st_mtime)
    newest = [p for p in packs if p.is_file()][-2:]
    for pack in newest:
        data = bytearray(pack.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
        pack.write_bytes(bytes(data))
    proc = fleet.orch("verify", "shop", "--backup", backup_id, "--task", "14886", expect=1)
    assert "FAILED" in proc.stderr, (snap, proc.stderr)


def test_a_failing_dump_fails_the_backup_and_leaves_no_good_snapshot(fleet, mariadb):
    fleet.mariadb = mariadb
    before = {b["backup_id"] for b in fleet.orch_json("backups", "shop")}
    proc = fleet.orch("backup", "shop", "--task", "14887", env={"T_SHOP_PW": "wrong-password"}, expect=1)
    assert "Access denied" in proc.stderr
    after = fleet.orch_json("backups", "shop")
    assert {b["backup_id"] for b in after} == before, "a snapshot of the failed dump survived"
    assert fleet.orch_json("log", "--task", "14887")[0]["status"] == "failed"


def test_a_dump_that_dies_half_way_fails_the_backup(fleet, mariadb):
    """A table the dump cannot read (a view over a dropped table) stops mariadb-dump mid-stream."""
    mariadb.sql("CREATE TABLE zz_tmp (id INT)", "shop")
    mariadb.sql("CREATE VIEW zz_broken AS SELECT id FROM zz_tmp", "shop")
    mariadb.sql("DROP TABLE zz_tmp", "shop")
    try:
        before = {b["backup_id"] for b in fleet.orch_json("backups", "shop")}
        proc = fleet.orch("backup", "shop", "--task", "14888", expect=1)
        assert "database shop (mysql at 127.0.0.1:" in proc.stderr and "dump failed" in proc.stderr
        assert "zz_broken" in proc.stderr
        assert {b["backup_id"] for b in fleet.orch_json("backups", "shop")} == before
    finally:
        mariadb.sql("DROP VIEW zz_broken", "shop")


def test_wrong_s3_credentials_fail_naming_the_storage(fleet):
    proc = fleet.orch("backup", "blog", "--task", "14889", env={"T_S3_SECRET": "not-the-secret"}, expect=1)
    assert "storage offsite" in proc.stderr
    assert fleet.orch_json("log", "--task", "14889")[0]["status"] == "failed"


def test_an_unreachable_host_fails_its_site_and_the_others_finish(fleet, tmp_path):
    inventory = json.loads(json.dumps(fleet.base))
    inventory["hosts"]["gone"] = host_entry(fleet.hosts["web1"]) | {"address": "127.0.0.9", "port": 1}
    ghost = json.loads(json.dumps(fleet.sites["blog"]))
    ghost["name"] = "ghost"
    ghost["environments"]["production"]["host"] = "gone"
    other = Fleet(tmp_path / "inv", fleet.env, fleet.hosts)
    other.write_inventory(inventory, {"blog": fleet.sites["blog"], "ghost": ghost})
    proc = other.orch("--json", "backup", "--all", "--task", "14890", expect=1)
    results = {r["site"]: r for r in json.loads(proc.stdout)}
    assert results["blog"]["status"] == "ok"
    assert results["ghost"]["status"] == "failed" and "unreachable" in results["ghost"]["error"]


def test_prune_dry_run_lists_what_would_go_and_keeps_pinned_and_newest(fleet, backed_up):
    ids, _ = backed_up
    fleet.orch("pin", "blog", "--backup", ids["blog"], "--task", "14891")
    for _ in range(2):
        fleet.orch("backup", "blog", "--task", "14891")
    site = json.loads(json.dumps(fleet.sites["blog"]))
    site["backup"] = {"retention": {"last": 1, "daily": 0}}
    fleet.write_inventory(fleet.base, fleet.sites | {"blog": site})
    try:
        before = fleet.orch_json("backups", "blog")
        plan = fleet.orch_json("prune", "blog", "--task", "14891", "--dry-run")[0]
        kept = {b["backup_id"] for b in plan["keep"]}
        assert ids["blog"] in kept and before[0]["backup_id"] in kept
        assert plan["drop"], plan
        assert len(fleet.orch_json("backups", "blog")) == len(before)  # dry run deleted nothing
        fleet.orch("prune", "blog", "--task", "14891")
        after = {b["backup_id"] for b in fleet.orch_json("backups", "blog")}
        assert after == kept
    finally:
        fleet.write_inventory(fleet.base, fleet.sites)


def test_usage_reports_bytes_per_site_from_the_bucket(fleet, backed_up):
    rows = {r["site"]: r for r in fleet.orch_json("usage")}
    assert rows["shop"]["bytes"] > 100_000 and rows["blog"]["bytes"] > 10_000 and not rows["shop"]["error"]


@contextmanager
def big_site(fleet, host, folder: str, files: int) -> Iterator[str]:
    """Site `big` beside `shop` on web1: `files` incompressible files of 2 MiB in ``folder`` and shop's database;
    yield its path; remove it and the site afterwards."""
    path = fleet.sites["shop"]["environments"]["production"]["path"].replace("/shop", f"/{folder}")
    host.run(
        f"rm -rf {path} && mkdir -p {path} && for i in $(seq 1 {files}); do head -c 2097152 /dev/urandom "
        f"> {path}/f$i.bin; done"
    )
    shop_db = fleet.sites["shop"]["environments"]["production"]["database"]  # files AND a database
    production = {"host": "web1", "path": path, "database": shop_db}
    big = {"name": "big", "task": "10003", "environments": {"production": production}}
    fleet.write_inventory(fleet.base, fleet.sites | {"big": big})
    try:
        yield path
    finally:
        host.run(f"rm -rf {path}")
        fleet.write_inventory(fleet.base, fleet.sites)


def test_a_second_backup_of_an_unchanged_site_adds_almost_nothing(fleet, ssh_hosts):
    """200 MB of incompressible files + a database: the second backup adds < 1 % and takes < half the time."""
    with big_site(fleet, ssh_hosts["web1"], "big", files=100):
        t0 = time.monotonic()
        first = fleet.orch_json("backup", "big", "--task", "14892")[0]["summary"]
        t1 = time.monotonic()
        second = fleet.orch_json("backup", "big", "--task", "14892")[0]["summary"]
        t2 = time.monotonic()
    size = first["files"]["size"] + first["db"]["size"]
    assert size >= 200 * 1024 * 1024
    assert second["added"] < 0.01 * size, second
    assert (t2 - t1) < 0.5 * (t1 - t0), (t1 - t0, t2 - t1)


def test_export_streams_a_tar_zst_with_files_and_dump_and_gives_a_working_link(fleet, backed_up, tmp_path):
    import io
    import tarfile
    import urllib.request

    import zstandard

    ids, _ = backed_up
    result = fleet.orch_json("export", "shop", "--backup", ids["shop"], "--task", "14893")
    assert result["key"].endswith(".tar.zst") and result["size"] > 100_000
    data = urllib.request.urlopen(result["url"], timeout=30).read()  # the presigned link, no credentials
    assert len(data) == result["size"]
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
        dump = tar.extractfile("database/database.sql").read()
    assert "files/index.php" in names and "files/wp-content/uploads/2026/f1.bin" in names
    assert b"CREATE TABLE `wp_options`" in dump and b"-- Dump completed" in dump


def test_kill_9_during_restic_leaves_interrupted_and_the_stale_repository_lock_is_handled(fleet, mariadb):
    import signal
    import subprocess

    from fleet import ORCH

    from orchestrator.backends.remote.watchdog import group_members

    fleet.mariadb = mariadb
    victim = subprocess.Popen(
        [*ORCH, "-i", str(fleet.inventory), "backup", "shop", "--task", "14894"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=fleet.env,
    )
    deadline = time.monotonic() + 60
    pids = []
    while not pids and time.monotonic() < deadline:  # wait until restic itself runs on the host
        # anchored: the `bash -c` wrapper's command line contains the same words, restic's starts with them;
        # only under this session's sshd: another test run's restic is none of our business
        pids = fleet.hosts["web1"].processes(r"^restic backup --json --host shop\.production")
    assert pids, "restic never started"
    groups = {os.getpgid(pid) for pid in pids}  # the run's process group on the host: watchdog, shell, dump, restic
    for pid in pids:  # the host's restic dies hard, as in a reboot: its repository lock stays behind...
        os.kill(pid, signal.SIGKILL)
    victim.send_signal(signal.SIGKILL)  # ...and so does the orchestrator
    victim.wait()

    def left() -> list[int]:  # the rest of the dead run (dump, shells), which its watchdog must stop
        return [pid for group in groups for pid in group_members(group, me=-1)]

    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left(), left()
    assert fleet.orch_json("log", "--task", "14894")[0]["status"] == "interrupted"
    # prune needs an exclusive repository lock: it only works if the stale one was removed
    fleet.orch("prune", "shop", "--task", "14895")
    assert fleet.orch_json("log", "--task", "14895")[0]["status"] == "ok"


def test_the_pm_report_of_a_task_lists_its_backups_and_restores(fleet, backed_up, tmp_path):
    ids, _ = backed_up
    text = fleet.orch("report", "--task", "14883").stdout
    assert text.startswith("# Task 14883") and ids["shop"] in text and "restore" in text
    page = tmp_path / "task.html"
    fleet.orch("report", "--task", "14883", "--format", "html", "-o", page)
    assert "<h1>Task 14883</h1>" in page.read_text() and ids["blog"] in page.read_text()


def test_verify_uses_the_configured_scratch_server_when_the_site_user_may_not_create_databases(
    fleet, postgres, backed_up
):
    ids, _ = backed_up
    postgres.sql("ALTER ROLE blog NOCREATEDB")
    try:
        proc = fleet.orch("verify", "blog", "--backup", ids["blog"], "--task", "14896", expect=1)
        assert "permission denied to create database" in proc.stderr
        assert "verify.scratch_database" in proc.stderr  # the error says what to configure
        site = json.loads(json.dumps(fleet.sites["blog"]))
        site["verify"] = {
            "scratch_database": {
                "engine": "postgresql",
                "host": postgres.host,
                "port": postgres.port,
                "user": "postgres",
                "password": {"env": "T_PG_SUPER"},
            }
        }
        fleet.write_inventory(fleet.base, fleet.sites | {"blog": site})
        report = fleet.orch_json(
            "verify", "blog", "--backup", ids["blog"], "--task", "14896", env={"T_PG_SUPER": postgres.password}
        )
        assert report["status"] == "ok" and report["tables"]["public.posts"] == 120
    finally:
        postgres.sql("ALTER ROLE blog CREATEDB")
        fleet.write_inventory(fleet.base, fleet.sites)


FIGURES = re.compile(r"\r((?:backup|restore) big/production: [a-z ]+?)  ([\d.]+ (?:B|KiB|MiB)) / ([\d.]+ MiB)  (\d+)%")


def test_a_long_backup_and_restore_show_live_figures_on_a_terminal_and_none_elsewhere(fleet, ssh_hosts):
    """80 MB of files and a database: on a terminal the steps draw bytes done of the total and a percentage
    on one live line, cleared at each step's end; with output to a pipe, or with -q, not a figure is printed."""
    with big_site(fleet, ssh_hosts["web1"], "progress", files=40):
        code, screen = fleet.orch_on_terminal("backup", "big", "--task", "14897")
        assert code == 0, screen
        piped = fleet.orch("backup", "big", "--task", "14897")
        code_quiet, quiet = fleet.orch_on_terminal("-q", "backup", "big", "--task", "14897")
        restored, restore_screen = fleet.orch_on_terminal(
            "restore", "big", "--backup", "latest", "--to", "production", "--task", "14897", "--yes"
        )
    drawn = FIGURES.findall(screen)
    files = [
        (done, total, int(pct)) for step, done, total, pct in drawn if step == "backup big/production: back up files"
    ]
    assert files, screen
    assert 75 <= max(float(total[:-4]) for _, total, _ in files) <= 85, screen  # restic counts the total as it scans
    assert any(0 < pct < 100 for _, _, pct in files), screen  # drawn while under way, not only at the ends
    assert "\r\x1b[K" in screen  # the line is taken off at the step's end
    assert "backup big/production: back up files...\r\n" in screen  # the step lines stay as they were
    for text in (piped.stdout + piped.stderr, quiet):
        assert "\x1b[K" not in text and not re.search(r"\d+%", text) and "MiB /" not in text, text
    assert code_quiet == 0
    # restic 0.14 says nothing while it restores: the figures are the bytes it has written of the backup's size
    assert restored == 0, restore_screen
    restoring = [
        t for step, _, t, _ in FIGURES.findall(restore_screen) if step == "restore big/production: restore files"
    ]
    assert restoring and all(75 <= float(t[:-4]) <= 85 for t in restoring), restore_screen
    steps = [s["output"] for op in fleet.orch_json("log", "--site", "big", "--steps") for s in op["steps"]]
    assert steps and not any("%" in out or "MiB" in out for out in steps)  # the oplog gets no progress
