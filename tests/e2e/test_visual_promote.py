"""Visual checks around promotion on the real WordPress: production is screenshot before the switch and after
the health check; a change of a text colour passes under a 5 % threshold, a stylesheet that breaks the layout is
rolled back naming the page and the share, with the diff images kept and shown in the task's report; a dry run
compares the staging copy with production, and `staging create --snap` shoots a new copy next to production."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

TASK = "14960"
COPY = "vis14960"
THEME = "wp-content/themes/twentytwentythree"
# twentytwentythree is a block theme without functions.php: the promoted code adds one that loads a stylesheet
FUNCTIONS = (
    "<?php\nadd_action('wp_enqueue_scripts', function () {\n"
    "    $css = get_stylesheet_directory() . '/orch-visual.css';\n"
    "    wp_enqueue_style('orch-visual', get_stylesheet_directory_uri() . '/orch-visual.css', [],"
    " (string) filemtime($css));\n});\n"
)
COLOUR = ".wp-block-post-title, .wp-block-post-title a { color: #b00020 !important; }\n"
BROKEN = "body { display: none !important; }\n"


@pytest.fixture(scope="module")
def visual(wp_fleet):
    """wp with promote.visual_threshold 5 and a staging copy whose theme loads orch-visual.css (promoted once)."""
    wp = wp_fleet
    saved, site = wp.inventory.read_text(), wp.site
    promote = (site.get("promote") or {}) | {"visual_threshold": 5, "health_timeout": 20}
    wp.write_inventory(yaml.safe_load(saved), {"wp": site | {"promote": promote}})
    wp.copy = Path(wp.orch_json("staging", "create", "wp", "--task", TASK, "--name", COPY)["path"])
    stylesheet("/* orch visual: nothing yet */\n", wp)
    wp.stage1.run(f"printf %s {_q(FUNCTIONS)} > {wp.copy}/{THEME}/functions.php")
    promoted = wp.orch_json("promote", "wp", "--from", COPY, "--task", TASK, "--yes")
    assert promoted["status"] == "ok", promoted
    yield wp
    live = wp.wordpress.path
    wp.wordpress.host.run(f"rm -f {live}/{THEME}/functions.php {live}/{THEME}/orch-visual.css")
    wp.orch("staging", "destroy", "wp", "--env", COPY, "--task", TASK)
    wp.site = site
    wp.inventory.write_text(saved)


def stylesheet(css: str, wp) -> None:
    wp.stage1.run(f"printf %s {_q(css)} > {wp.copy}/{THEME}/orch-visual.css")


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def last_promotion(wp) -> dict:
    return wp.orch_json("log", "--task", TASK, "--action", "promote")[-1]


def diffs(op: dict) -> list[dict]:
    return [a["details"] for a in op["artifacts"] if a["kind"] == "visual-diff"]


def live_css(wp) -> str:
    return wp.wordpress.get(f"/{THEME}/orch-visual.css")[2]


def test_a_promotion_that_changes_a_text_colour_passes_under_five_percent(visual):
    stylesheet(COLOUR, visual)
    result = visual.orch_json("promote", "wp", "--from", COPY, "--task", TASK, "--yes")
    assert result["status"] == "ok" and "#b00020" in live_css(visual)
    op = last_promotion(visual)
    rows = diffs(op)
    assert op["status"] == "ok" and rows and all(row["percent"] <= 5 for row in rows), rows
    assert any(row["percent"] > 0 for row in rows if row["path"] == "/"), rows  # the change was seen
    sets = {a["details"]["set"] for a in op["artifacts"] if a["kind"] == "screenshot"}
    assert sets == {"before", "after"}


def test_a_stylesheet_that_breaks_the_layout_is_rolled_back_with_its_diff_images(visual):
    before = live_css(visual)
    stylesheet(BROKEN, visual)
    proc = visual.orch("promote", "wp", "--from", COPY, "--task", TASK, "--yes", expect=1)
    assert "rolled back" in proc.stderr and "visual check failed" in proc.stderr and "%" in proc.stderr
    assert live_css(visual) == before and visual.wordpress.get("/")[0] == 200
    op = last_promotion(visual)
    assert op["status"] == "rolled_back" and "visual check failed" in op["error"]
    over = [row for row in diffs(op) if row["exceeded"]]
    assert over and all(row["percent"] > 5 for row in over)
    assert f"{over[0]['path']} ({over[0]['viewport']}) {over[0]['percent']:.1f} %" in op["error"]
    shots = Path(visual.env["ORCH_STATE_DIR"]) / "screenshots"
    assert all((shots / row["diff"]).is_file() for row in diffs(op))
    stylesheet(COLOUR, visual)


def test_the_report_shows_before_after_and_the_difference(visual, tmp_path):
    visual.orch("report", "--task", TASK, "--format", "html", "-o", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    rolled_back = last_promotion(visual)["id"]
    section = page.split(f"<h3>Operation {rolled_back}: promote")[1].split("</table>")[0]
    assert "<th>Before</th><th>After</th><th>Difference</th>" in section
    assert section.count("<img src='data:image/jpeg;base64,") == 3 * len(diffs(last_promotion(visual)))
    assert "class='over'" in section


def test_a_dry_run_with_visual_compares_the_copy_with_production_and_changes_nothing(visual):
    stylesheet(BROKEN, visual)
    before = live_css(visual)
    proc = visual.orch("--json", "promote", "wp", "--from", COPY, "--task", TASK, "--dry-run", "--visual", expect=1)
    out = json.loads(proc.stdout)
    assert out["plan"]["dry_run"] and out["visual"]["status"] == "failed"
    assert {row["path"] for row in out["visual"]["rows"]} >= {"/"}
    assert max(row["percent"] for row in out["visual"]["rows"]) > 5
    assert live_css(visual) == before
    compare = visual.orch_json("log", "--task", TASK, "--action", "compare")[-1]
    assert {a["details"]["set"] for a in compare["artifacts"] if a["kind"] == "screenshot"} == {"production", COPY}
    stylesheet(COLOUR, visual)


def test_staging_create_can_snap_the_new_copy_next_to_production(visual):
    out = visual.orch_json("staging", "create", "wp", "--task", TASK, "--name", "snap14960", "--snap")
    try:
        rows = out["visual"]["rows"]
        assert out["visual"]["status"] == "ok" and {row["viewport"] for row in rows} == {"desktop", "mobile"}
        assert "/" in {row["path"] for row in rows}
        compare = visual.orch_json("log", "--task", TASK, "--action", "compare")[-1]
        assert {a["details"]["set"] for a in compare["artifacts"] if a["kind"] == "screenshot"} == {
            "production",
            "snap14960",
        }
    finally:
        visual.orch("staging", "destroy", "wp", "--env", "snap14960", "--task", TASK)
