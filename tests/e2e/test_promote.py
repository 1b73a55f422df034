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
from fleet import releases_layout, tree_checksums

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
    """Production in the releases layout (adopted here, or by test_promote_faults on this testbed before),
    its release then as `.first_release`, and a staging copy t14883 to work on."""
    wp = wp_fleet
    wp.first_release = releases_layout(wp, TASK)
    wp.site = wp.site | {"promote": {"health_timeout": 20}}
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
    stage.run(
        f"echo '/* orch promo v2 */' >> {promo.staging_path}/{THEME}/style.css && "
        f"echo 'promoted' > {promo.staging_path}/{THEME}/orch-promo.txt"
    )
    before, releases = _live(promo), _releases(promo)
    plan = promo.orch_json("promote", "wp", "--from", "t14883", "--task", TASK, "--dry-run")
    assert plan["added"] == [f"{THEME}/orch-promo.txt"] and plan["changed"] == [f"{THEME}/style.css"]
    assert plan["removed"] == []
    text = promo.orch("promote", "wp", "--from", "t14883", "--task", TASK, "--dry-run")
    assert text.stdout.splitlines() == [
        f"promote wp/production (task {TASK}):",
        f"  code from t14883 into the releases layout: 1 added, 1 changed, 0 removed ({plan['bytes']} bytes)",
        f"  + {THEME}/orch-promo.txt",
        f"  ~ {THEME}/style.css",
    ]
    assert "dry run: nothing changed" in text.stderr
    assert _live(promo) == before and _releases(promo) == releases


class _Load:
    """Load while a block runs: a request due every 20 ms (50/s), run by 16 workers (a browser-like bound on
    concurrency: when answers are slow, due requests wait here rather than pile up on the server). Records each
    answer: when it was due, the path, the status (None when there was no answer within 5 s)."""

    RATE = 50

    def __init__(self, url: str, paths: list[str]):
        self.url, self.paths = url, paths
        self.answers: list[tuple[float, str, int | None]] = []
        self.sent = 0
        self._done = threading.Event()

    def __enter__(self) -> _Load:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=16)
        self.started = time.time()
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)
        self._scheduler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.window = time.time() - self.started  # draining the last answers is not part of the window
        self._done.set()
        self._scheduler.join()
        self._pool.shutdown(wait=True)

    def _schedule(self) -> None:
        while not self._done.is_set():
            due = int((time.time() - self.started) * self.RATE) + 1  # a slow loop catches up: the rate holds
            while self.sent < due:
                self._pool.submit(
                    self._one, self.paths[self.sent % len(self.paths)], self.started + self.sent / self.RATE
                )
                self.sent += 1
            time.sleep(0.01)

    def _one(self, path: str, due: float) -> None:
        try:
            status = _get(self.url + path, timeout=5)[0]
        except OSError:
            status = None
        self.answers.append((due, path, status))

    def failed(self, after: float = 0.0) -> list[tuple[float, str, int | None]]:
        return [a for a in self.answers if a[2] != 200 and a[0] >= after]


def _when(failed: list, op: dict) -> str:
    """Failed requests (when due, from the switch's start) next to the promotion's steps: what was going on."""
    zero = next(_epoch(s["started_at"]) for s in op["steps"] if s["name"] == "switch")
    steps = ", ".join(f"{s['name']} {_epoch(s['started_at']) - zero:+.1f}..{s['duration']}s" for s in op["steps"])
    return (
        f"{len(failed)} failed, due {failed[0][0] - zero:+.1f}..{failed[-1][0] - zero:+.1f}s from the switch: "
        f"{failed[:3]}; steps: {steps}"
    )


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_promotion_serves_the_new_revision_and_keeps_newer_content_under_load(promo):
    wp = promo.wordpress
    # content made on production AFTER the staging copy must survive the promotion
    wp.run_php("wp_insert_post(['post_title' => 'Written after staging', 'post_status' => 'publish']);")
    wp.host.run(f"echo 'late upload' > {wp.path}/wp-content/uploads/2026/11/late.txt")
    # half through PHP, half static, as a browser's page view mixes them
    with _Load(wp.url, ["/", f"/{THEME}/style.css"]) as load:
        result = promo.orch_json("promote", "wp", "--from", "t14883", "--task", TASK, "--yes")
    assert load.failed() == [] and len(load.answers) == load.sent, _when(load.failed(), _last_promotion(promo))
    assert load.sent >= 0.8 * load.RATE * load.window, (load.sent, load.window)
    assert _get(f"{wp.url}/orch-revision.php")[1].strip() == result["revision"]
    assert _get(f"{wp.url}/{THEME}/orch-promo.txt")[1].strip() == "promoted"
    assert "orch promo v2" in _get(f"{wp.url}/{THEME}/style.css")[1]
    titles = wp.run_php("echo json_encode(wp_list_pluck(get_posts(['numberposts' => 50]), 'post_title'));")
    assert "Written after staging" in titles
    assert _get(f"{wp.url}/wp-content/uploads/2026/11/late.txt")[1].strip() == "late upload"
    op = _last_promotion(promo)
    assert op["status"] == "ok"
    assert {"pre-promotion-backup", "plan", "revision"} <= {a["kind"] for a in op["artifacts"]}


def test_a_release_that_fatals_is_rolled_back_in_seconds_not_after_the_health_timeout(promo):
    """Defect 6: a PHP fatal used to stay live for the whole health_timeout (20 s here: ~1,000 failed requests at
    50/s). Definite failures (500s) roll back at once: ~1-2 s on a quiet machine (bench/promote.py: goal <= 3 s).
    The health check's requests queue behind the visitors' for PHP, so on a machine loaded 4x over (shared CI)
    it takes longer: the bound is half the timeout, which the old behaviour could never meet."""
    wp = promo.wordpress
    good = _get(f"{wp.url}/orch-revision.php")[1].strip()
    fatal = "<?php\\nthis_function_does_not_exist();\\n"
    promo.stage1.run(f"printf '{fatal}' > {promo.staging_path}/{THEME}/functions.php")
    with _Load(wp.url, ["/", f"/{THEME}/style.css"]) as load:
        proc = promo.orch("promote", "wp", "--from", "t14883", "--task", TASK, "--yes", expect=1)
    assert "rolled back" in proc.stderr
    assert _get(f"{wp.url}/orch-revision.php")[1].strip() == good
    assert _get(wp.url + "/")[0] == 200
    op = _last_promotion(promo)
    assert op["status"] == "rolled_back" and "health check failed" in op["error"]
    assert "answered 500" in op["error"]
    steps = {step["name"]: step for step in op["steps"]}
    switched, back = _epoch(steps["switch"]["started_at"]), _epoch(steps["automatic rollback"]["finished_at"])
    took = {step["name"]: step["duration"] for step in op["steps"]}
    assert back - switched <= 10, (back - switched, took)  # production back on the good release
    # half the load is PHP ('/'): the time bound above in failed requests (10 s x 25/s); the old behaviour failed
    # ~500 (20 s). The goal on a quiet machine (<= 150) is bench/promote.py's (bench/README.md).
    assert len(load.failed()) <= 250, (len(load.failed()), load.failed()[:5])
    assert any(a["kind"] == "pre-promotion-backup" for a in op["artifacts"])
    assert [r["status"] for r in _releases(promo)][0] == "bad"
    promo.stage1.run(f"rm {promo.staging_path}/{THEME}/functions.php")


def test_a_promotion_that_cannot_take_its_backup_changes_nothing(promo):
    promo.stage1.run(f"echo 'v3' > {promo.staging_path}/{THEME}/orch-promo.txt")
    before, releases = _live(promo), _releases(promo)
    proc = promo.orch(
        "promote", "wp", "--from", "t14883", "--task", TASK, "--yes", env={"T_S3_SECRET": "storage-is-down"}, expect=1
    )
    assert "backup failed" in proc.stderr and "storage offsite" in proc.stderr
    assert _live(promo) == before and _releases(promo) == releases


def test_manual_rollback_goes_back_to_the_previous_good_release(promo):
    wp = promo.wordpress
    rows = _releases(promo)
    current = next(r for r in rows if r["status"] == "current")["release"]
    out = promo.orch_json("rollback", "wp", "--task", TASK, "--yes")
    assert out["from"] == current and out["to"] == promo.first_release
    assert json.loads(_get(f"{wp.url}/REVISION")[1])["release"] == int(promo.first_release)
    promo.orch("rollback", "wp", "--task", TASK, "--yes", "--to", current)
