"""Visual checks on the real WordPress: headless Chromium shots of the check URLs, kept with the operation,
compared per page and width, and shown side by side in the task's report."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TASK = "14900"


def _shots_root(wp) -> Path:
    return Path(wp.env["ORCH_STATE_DIR"]) / "screenshots"


@pytest.fixture(scope="module")
def two_snaps(wp_fleet):
    first = wp_fleet.orch_json("snap", "wp", "--task", TASK)
    second = wp_fleet.orch_json("snap", "wp", "--task", TASK)
    return first, second


def test_a_snap_shoots_every_check_url_at_desktop_and_mobile_width(wp_fleet, two_snaps):
    first, _ = two_snaps
    paths = sorted({shot["path"] for shot in first["shots"]})
    assert "/" in paths and len(paths) >= 2, paths  # the home page plus a sample of WordPress's sitemap
    assert sorted((s["path"], s["viewport"]) for s in first["shots"]) == sorted(
        (p, v) for p in paths for v in ("desktop", "mobile")
    )
    for shot in first["shots"]:
        png = _shots_root(wp_fleet) / shot["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot["status"] == 200, shot
        assert shot["width"] == (1280 if shot["viewport"] == "desktop" else 390)
        assert shot["height"] >= 800 if shot["viewport"] == "desktop" else shot["height"] >= 844
    op = wp_fleet.orch_json("log", "--task", TASK, "--action", "snap")[0]
    assert op["status"] == "ok" and sum(a["kind"] == "screenshot" for a in op["artifacts"]) == len(first["shots"])


def test_two_snaps_of_an_unchanged_site_differ_by_less_than_a_tenth_of_a_percent(wp_fleet, two_snaps):
    first, second = two_snaps
    result = wp_fleet.orch_json(
        "compare", str(first["operation_id"]), str(second["operation_id"]), "--task", TASK, "--threshold", "0.1"
    )
    assert result["status"] == "ok" and len(result["rows"]) == len(first["shots"])
    assert all(row["percent"] < 0.1 for row in result["rows"]), result["rows"]
    assert all((_shots_root(wp_fleet) / row["diff"]).is_file() for row in result["rows"])


def test_dry_run_lists_the_pages_and_takes_no_shot(wp_fleet):
    before = len(wp_fleet.orch_json("log", "--task", TASK, "--action", "snap"))
    proc = wp_fleet.orch("snap", "wp", "--task", TASK, "--dry-run")
    assert "screenshot " + wp_fleet.wordpress.url + "/ at desktop 1280x800, mobile 390x844" in proc.stdout
    assert len(wp_fleet.orch_json("log", "--task", TASK, "--action", "snap")) == before


def test_an_unknown_environment_is_a_one_line_usage_error(wp_fleet):
    proc = wp_fleet.orch("snap", "wp", "--env", "nosuch", "--task", TASK, expect=2)
    assert proc.stderr.startswith("orch: ") and "nosuch" in proc.stderr and "Traceback" not in proc.stderr


def test_the_report_shows_the_shots_and_the_difference_side_by_side(wp_fleet, two_snaps, tmp_path):
    wp_fleet.orch("report", "--task", TASK, "--format", "html", "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Screenshots</h2>" in page and "<th>Difference</th>" in page
    assert page.count("<img src='data:image/jpeg;base64,") >= 3 * len(two_snaps[0]["shots"])
    assert "<script" not in page
    text = wp_fleet.orch("report", "--task", TASK).stdout
    assert "## Screenshots" in text and "% changed" in text
