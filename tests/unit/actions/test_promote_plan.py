"""promote.make_plan: the pure decider of which code files a promotion adds, changes and removes."""

from __future__ import annotations

import pytest

from orchestrator.actions.promote import FilePlan, make_plan
from orchestrator.backends.cms.playbook import load_playbook

WORDPRESS = load_playbook("wordpress")


def entries(*pairs: tuple[str, str]) -> dict:
    """{path: (sha, size)} with the size taken from the sha's length, so bytes are easy to follow."""
    return {path: (sha, len(sha)) for path, sha in pairs}


CASES = [
    pytest.param(entries(("index.php", "a")), entries(("index.php", "a")), FilePlan(), id="identical trees"),
    pytest.param(
        entries(("index.php", "b")),
        entries(("index.php", "a")),
        FilePlan(changed=("index.php",), bytes=1),
        id="a changed file counts its new size",
    ),
    pytest.param(
        entries(("wp-content/themes/t/new.css", "xyz")),
        {},
        FilePlan(added=("wp-content/themes/t/new.css",), bytes=3),
        id="added",
    ),
    pytest.param(
        {},
        entries(("wp-content/plugins/p/old.php", "a")),
        FilePlan(removed=("wp-content/plugins/p/old.php",)),
        id="removed files send no bytes",
    ),
    pytest.param(
        entries(("wp-content/uploads/2026/a.jpg", "new"), ("wp-config.php", "staging")),
        entries(("wp-content/uploads/2026/b.jpg", "live"), ("wp-config.php", "production")),
        FilePlan(),
        id="content and config never flow up, and are never removed",
    ),
    pytest.param(
        entries(("wp-content/cache/page.html", "x"), ("wp-content/debug.log", "y")),
        {},
        FilePlan(),
        id="caches and logs stay out",
    ),
    pytest.param(
        entries(("REVISION", "new"), ("orch-revision.php", "new")),
        entries(("REVISION", "old"), ("orch-revision.php", "old")),
        FilePlan(),
        id="orch's own revision files are written by orch, not promoted",
    ),
    pytest.param(
        entries(("dump.sql", "x"), ("backup.tar.gz", "y")),
        entries(("old.zip", "z")),
        FilePlan(),
        id="files of no class (dumps, archives) are neither sent nor removed",
    ),
    pytest.param(
        entries(
            ("wp-content/themes/t/a b.php", "1"),
            ("wp-content/themes/t/-rf.php", "2"),
            ("wp-content/themes/t/line\nbreak.php", "3"),
            ("wp-content/themes/t/Файл.php", "4"),
            ("wp-content/themes/t/$(reboot).php", "5"),
            ("wp-content/themes/t/q'\"uote.php", "6"),
        ),
        {},
        FilePlan(
            added=(
                "wp-content/themes/t/$(reboot).php",
                "wp-content/themes/t/-rf.php",
                "wp-content/themes/t/a b.php",
                "wp-content/themes/t/line\nbreak.php",
                "wp-content/themes/t/q'\"uote.php",
                "wp-content/themes/t/Файл.php",
            ),
            bytes=6,
        ),
        id="nasty names are plain names, sorted",
    ),
    pytest.param(
        entries(("wp-content/themes/t/x.php\udcff", "1")),
        {},
        FilePlan(added=("wp-content/themes/t/x.php\udcff",), bytes=1),
        id="a name that is not UTF-8 (surrogate-escaped) is kept as it is",
    ),
    pytest.param(
        entries(("b.php", "2"), ("a.php", "1"), ("c.php", "3")),
        entries(("c.php", "x"), ("d.php", "4"), ("a.php", "1")),
        FilePlan(added=("b.php",), changed=("c.php",), removed=("d.php",), bytes=2),
        id="all three at once",
    ),
]


@pytest.mark.parametrize(("source", "live", "expected"), CASES)
def test_make_plan(source, live, expected):
    assert make_plan(WORDPRESS, source, live) == expected


def test_a_file_that_became_code_by_its_path_is_compared_by_content_only():
    same = entries(("wp-includes/version.php", "v61"))
    assert make_plan(WORDPRESS, same, dict(same)).empty


def test_plan_lines_and_oplog_form():
    plan = FilePlan(added=("a.php",), changed=("b.php", "c.php"), removed=("d.php",), bytes=10)
    assert plan.lines() == ["+ a.php", "~ b.php", "~ c.php", "- d.php"]
    assert plan.counts == {"added": 1, "changed": 2, "removed": 1}
    assert plan.as_dict(limit=1) == {
        "added": ["a.php"],
        "changed": ["b.php"],
        "removed": ["d.php"],
        "counts": {"added": 1, "changed": 2, "removed": 1},
        "bytes": 10,
    }
    assert plan.sent == ["a.php", "b.php", "c.php"]
