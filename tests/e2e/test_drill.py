"""Boot drills on the real WordPress: a backup restored into a throwaway copy on stage1, its check URLs
requested through nginx, the RTO recorded; a backup whose site fatals, or lacks a table, fails with an alert to
a real webhook receiver; and the copy is gone afterwards, also when the drill is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml
from fleet import ORCH
from testbed.webhook import Receiver

pytestmark = pytest.mark.e2e

TASK = "14950"
PLUGIN = "wp-content/plugins/orch-probe/orch-probe.php"
GOOD_PLUGIN = "<?php\n/* Plugin Name: orch probe */\nadd_action('wp_footer', function () { echo '<!-- probe -->'; });\n"


@pytest.fixture(scope="module")
def drills(wp_fleet, stage1_web):
    """wp_fleet whose stage1 names its PHP error log and whose notify goes to a real webhook receiver."""
    wp = wp_fleet
    saved = wp.inventory.read_text()
    receiver = Receiver()
    inventory = yaml.safe_load(saved)
    inventory["hosts"]["stage1"]["web"]["php_error_log"] = str(stage1_web.php.php_error_log)
    inventory["notify"] = [{"type": "webhook", "url": receiver.url, "on": ["failure"]}]
    wp.write_inventory(inventory, {"wp": wp.site | {"drill": {"response_time": 10, "timeout": 60}}})
    wp.receiver = receiver
    yield wp
    receiver.stop()
    wp.inventory.write_text(saved)


def copies_left(wp) -> dict[str, list]:
    """Everything a drill copy consists of that still exists: registry rows, folders, databases, vhosts."""
    stage = wp.site["environments"]["staging"]["path"]
    folders = wp.stage1.run(f"ls -d {stage}/drill-* 2>/dev/null || true").stdout.split()
    databases = [d for d in wp.mariadb.sql("SHOW DATABASES").split() if d.startswith("wp_drill_")]
    sites_dir = yaml.safe_load(wp.inventory.read_text())["hosts"]["stage1"]["web"]["sites_dir"]
    vhosts = wp.stage1.run(f"ls {sites_dir} | grep '^orch-wp-drill-' || true").stdout.split()
    registered = [e["name"] for e in wp.orch_json("staging", "list", "wp") if e["name"].startswith("drill-")]
    return {
        k: v
        for k, v in {"registered": registered, "folders": folders, "databases": databases, "vhosts": vhosts}.items()
        if v
    }


def backup_while(wp, broken, repaired) -> str:
    """Break production (a callable), take a backup, repair it (a callable); return the backup's id."""
    broken()
    try:
        return wp.orch_json("backup", "wp", "--task", TASK)[0]["backup_id"]
    finally:
        repaired()


def last_drill(wp) -> dict:
    return wp.orch_json("log", "--task", TASK, "--action", "drill")[-1]


def test_dry_run_shows_the_plan_and_makes_nothing(drills):
    proc = drills.orch("verify", "wp", "--boot", "--task", TASK, "--dry-run")
    assert "into the throwaway copy drill-" in proc.stdout and "php-errors.log" in proc.stdout
    assert "remove the copy" in proc.stdout and copies_left(drills) == {}


def test_a_good_backup_boots_with_its_rto_recorded_and_leaves_nothing_behind(drills):
    report = drills.orch_json("verify", "wp", "--boot", "--task", TASK)
    assert report["problems"] == [] and 0 < report["rto_seconds"] < 60
    paths = [row["path"] for row in report["urls"]]
    assert paths[0] == "/" and len(paths) >= 2 and all(row["ok"] and row["status"] == 200 for row in report["urls"])
    assert report["php"]["fatal"]["count"] == 0 and report["php"]["database"]["count"] == 0
    assert copies_left(drills) == {}
    op = last_drill(drills)
    assert op["status"] == "ok"
    kinds = [a["kind"] for a in op["artifacts"]]
    assert kinds.count("check-url") == len(paths) and "drill" in kinds
    drill = next(a for a in op["artifacts"] if a["kind"] == "drill")
    assert drill["details"]["rto_seconds"] == report["rto_seconds"] and "RTO" in drill["ident"]
    assert drills.receiver.posts == []


def test_a_backup_taken_while_a_plugin_was_broken_fails_and_alerts(drills):
    wp = drills.wordpress
    wp.host.run(f"mkdir -p {wp.path}/{os.path.dirname(PLUGIN)} && printf %s {_quote(GOOD_PLUGIN)} > {wp.path}/{PLUGIN}")
    wp.run_php(
        "require_once ABSPATH . 'wp-admin/includes/plugin.php'; var_dump(activate_plugin('orch-probe/orch-probe.php'));"
    )
    try:
        backup = backup_while(
            drills,
            lambda: wp.host.run(f"echo '<?php this is not php' > {wp.path}/{PLUGIN}"),
            lambda: wp.host.run(f"printf %s {_quote(GOOD_PLUGIN)} > {wp.path}/{PLUGIN}"),
        )
        assert wp.get("/")[0] == 200  # production itself is fine again
        proc = drills.orch("verify", "wp", "--boot", "--backup", backup, "--task", TASK, expect=1)
    finally:
        wp.run_php(
            "require_once ABSPATH . 'wp-admin/includes/plugin.php'; deactivate_plugins('orch-probe/orch-probe.php');"
        )
        wp.host.run(f"rm -rf {wp.path}/wp-content/plugins/orch-probe")
    assert "boot drill of backup" in proc.stderr and "FAILED" in proc.stderr and "Traceback" not in proc.stderr
    assert "answered 500" in proc.stderr and "PHP" in proc.stderr
    op = last_drill(drills)
    assert op["status"] == "failed" and backup in op["error"]
    alert = _alert_for(drills, op["id"])
    assert alert["event"] == "failure" and alert["action"] == "drill" and alert["site"] == "wp"
    assert copies_left(drills) == {}


def test_a_backup_missing_a_table_the_home_page_needs_fails_and_alerts(drills):
    db, sql = drills.wordpress.db_name, drills.mariadb.sql
    backup = backup_while(
        drills,
        lambda: sql("RENAME TABLE wp_posts TO wp_posts_away", db),
        lambda: sql("RENAME TABLE wp_posts_away TO wp_posts", db),
    )
    assert drills.wordpress.get("/")[0] == 200
    proc = drills.orch("verify", "wp", "--boot", "--backup", backup, "--task", TASK, expect=1)
    assert "database error" in proc.stderr and "wp_posts" in proc.stderr
    op = last_drill(drills)
    assert op["status"] == "failed"
    assert _alert_for(drills, op["id"])["backup_id"] == backup
    assert copies_left(drills) == {}


def test_a_drill_killed_with_sigkill_leaves_no_copy_behind(drills):
    proc = subprocess.Popen(
        [*ORCH, "-i", str(drills.inventory), "verify", "wp", "--boot", "--task", TASK],
        env=drills.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while "databases" not in copies_left(drills):  # killed mid-restore: files there, database loading
            assert proc.poll() is None and time.monotonic() < deadline, "the drill ended before it could be killed"
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 120
    while (left := copies_left(drills)) and time.monotonic() < deadline:
        time.sleep(1)
    assert left == {}
    ops = drills.orch_json("log", "--task", TASK)
    assert [op for op in ops if op["action"] == "drill"][-1]["status"] == "interrupted"
    cleanup = [op for op in ops if op["action"] == "staging-destroy"][-1]
    assert cleanup["status"] == "ok" and cleanup["env"].startswith("drill-")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _alert_for(drills, operation_id: int) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [post for post in drills.receiver.posts if post.get("operation_id") == operation_id]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no alert for operation {operation_id}: {drills.receiver.posts}")
