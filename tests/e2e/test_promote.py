"""Promotion end to end on the real WordPress: adopt the releases layout, promote a theme change made on a
staging copy, survive a breaking change by rolling back automatically, refuse when the backup cannot be taken,
and keep serving under load during the switch."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from fleet import tree_checksums

pytestmark = pytest.mark.e2e

TASK = "14883"
THEME = "wp-content/themes/twentytwentythree"


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback test URL
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def promo(wp_fleet):
    """Production adopted into the releases layout, and a staging copy t14883 to work on."""
    wp = wp_fleet
    out = wp.orch_json("adopt", "wp", "--layout", "releases", "--task", TASK, "--yes")
    assert out["release"] == "1"
    wp.site = wp.site | {"layout": "releases", "promote": {"health_timeout": 20}}
    wp.write_inventory(_inventory(wp), {"wp": wp.site})
    assert _get(wp.wordpress.url)[0] == 200
    staging = wp.orch_json("staging", "create", "wp", "--task", TASK)
    wp.staging_path = staging["path"]
    return wp


def _inventory(wp):
    import yaml
    return yaml.safe_load(wp.inventory.read_text())


def _live(wp) -> dict:
    host = wp.wordpress.host
    return tree_checksums(host, str(wp.wordpress.path) + "/", exclude="wp-content/cache")


def _last_promotion(wp) -> dict:
    return [op for op in wp.orch_json("log", "--task", TASK, "--action", "promote")][-1]


def _releases(wp) -> list[dict]:
    return wp.orch_json("releases", "wp")


def test_dry_run_prints_the_exact_plan_and_changes_nothing(promo):
    stage = promo.stage1
    stage.run(f"echo '/* orch promo v2 */' >> {promo.staging_path}/{THEME}/style.css && "
              f"echo 'promoted' > {promo.staging_path}/{THEME}/orch-promo.txt")
    before, releases = _live(promo), _releases(promo)
    plan = promo.orch_json("promote", "wp", "--from", "t14883", "--task", TASK, "--dry-run")
    assert plan["added"] == [f"{THEME}/orch-promo.txt"] and plan["changed"] == [f"{THEME}/style.css"]
    assert plan["removed"] == []
    assert _live(promo) == before and _releases(promo) == releases


def test_promotion_serves_the_new_revision_and_keeps_newer_content_under_load(promo):
    wp = promo.wordpress
    # content made on production AFTER the staging copy must survive the promotion
    wp.run_php("wp_insert_post(['post_title' => 'Written after staging', 'post_status' => 'publish']);")
    wp.host.run(f"echo 'late upload' > {wp.path}/wp-content/uploads/2026/11/late.txt")
    failures, results, submitted, done = [], [], [0], threading.Event()
    paths = ["/", f"/{THEME}/style.css"]  # half through PHP, half static, as a browser's page view mixes them

    def one(path):
        status, _ = _get(wp.url + path, timeout=5)
        results.append(status)
        if status != 200:
            failures.append((path, status))

    def load():  # open loop: a request every 20 ms (50/s), whatever the answers take
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=16) as pool:
            start = time.monotonic()
            while not done.is_set():
                due = int((time.monotonic() - start) * 50) + 1  # a slow loop catches up, so the rate holds
                while submitted[0] < due:
                    pool.submit(one, paths[submitted[0] % 2])
                    submitted[0] += 1
                time.sleep(0.01)
    loader = threading.Thread(target=load)
    loader.start()
    started = time.monotonic()
    try:
        result = promo.orch_json("promote", "wp", "--from", "t14883", "--task", TASK, "--yes")
    finally:
        done.set()
        loader.join()
    elapsed = time.monotonic() - started
    assert failures == [] and len(results) == submitted[0], failures
    assert submitted[0] >= 0.8 * 50 * elapsed, (submitted, elapsed)
    assert _get(f"{wp.url}/orch-revision.php")[1].strip() == result["revision"]
    assert _get(f"{wp.url}/{THEME}/orch-promo.txt")[1].strip() == "promoted"
    assert "orch promo v2" in _get(f"{wp.url}/{THEME}/style.css")[1]
    titles = wp.run_php("echo json_encode(wp_list_pluck(get_posts(['numberposts' => 50]), 'post_title'));")
    assert "Written after staging" in titles
    assert _get(f"{wp.url}/wp-content/uploads/2026/11/late.txt")[1].strip() == "late upload"
    op = _last_promotion(promo)
    assert op["status"] == "ok"
    assert {"pre-promotion-backup", "plan", "revision"} <= {a["kind"] for a in op["artifacts"]}


def test_a_breaking_change_rolls_back_automatically_within_30_seconds(promo):
    wp = promo.wordpress
    good = _get(f"{wp.url}/orch-revision.php")[1].strip()
    fatal = "<?php\\nthis_function_does_not_exist();\\n"
    promo.stage1.run(f"printf '{fatal}' > {promo.staging_path}/{THEME}/functions.php")
    started = time.monotonic()
    proc = promo.orch("promote", "wp", "--from", "t14883", "--task", TASK, "--yes", expect=1)
    assert time.monotonic() - started < 60 and "rolled back" in proc.stderr
    assert _get(f"{wp.url}/orch-revision.php")[1].strip() == good
    assert _get(wp.url + "/")[0] == 200
    op = _last_promotion(promo)
    assert op["status"] == "rolled_back" and "health check failed" in op["error"]
    steps = {step["name"]: step for step in op["steps"]}
    from datetime import datetime
    switched = datetime.fromisoformat(steps["switch"]["finished_at"])
    back = datetime.fromisoformat(steps["automatic rollback"]["finished_at"])
    assert (back - switched).total_seconds() < 30  # production on the previous release within 30 s
    assert any(a["kind"] == "pre-promotion-backup" for a in op["artifacts"])
    assert [r["status"] for r in _releases(promo)][0] == "bad"
    promo.stage1.run(f"rm {promo.staging_path}/{THEME}/functions.php")


def test_a_promotion_that_cannot_take_its_backup_changes_nothing(promo):
    promo.stage1.run(f"echo 'v3' > {promo.staging_path}/{THEME}/orch-promo.txt")
    before, releases = _live(promo), _releases(promo)
    proc = promo.orch("promote", "wp", "--from", "t14883", "--task", TASK, "--yes",
                      env={"T_S3_SECRET": "storage-is-down"}, expect=1)
    assert "backup failed" in proc.stderr and "storage offsite" in proc.stderr
    assert _live(promo) == before and _releases(promo) == releases


def test_manual_rollback_goes_back_to_the_previous_good_release(promo):
    wp = promo.wordpress
    rows = _releases(promo)
    current = next(r for r in rows if r["status"] == "current")["release"]
    out = promo.orch_json("rollback", "wp", "--task", TASK, "--yes")
    assert out["from"] == current and out["to"] == "1"
    assert json.loads(_get(f"{wp.url}/REVISION")[1])["release"] == 1
    promo.orch("rollback", "wp", "--task", TASK, "--yes", "--to", current)
