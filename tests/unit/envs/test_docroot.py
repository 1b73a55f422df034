"""Writing into a docroot: paths resolved without escaping it through symlinks; the docroot's own attributes kept.

check_inside is the pure decider (fed the real paths a host reported); resolve_inside and sync_into run on this
machine through the local connector, against real folders and symlinks."""

from __future__ import annotations

import os
import stat

import pytest

from orchestrator.backends.envs.docroot import (
    check_inside,
    component_paths,
    is_within,
    move_into_place,
    resolve_inside,
    sync_into,
    vacancy,
)
from orchestrator.backends.remote import LocalConnector
from orchestrator.errors import UsageError

NASTY = ["with space", "it's", "$(touch x)", "a; rm -rf b", "--leading-dash", "юникод ✓", "glob * ?", "line\nbreak"]


@pytest.mark.parametrize(
    "path, root, expected",
    [
        ("/srv/site", "/srv/site", True),
        ("/srv/site/a", "/srv/site", True),
        ("/srv/site/a/b", "/srv/site/", True),
        ("/srv/site2", "/srv/site", False),  # a sibling sharing the prefix is outside
        ("/srv/sit", "/srv/site", False),
        ("/srv", "/srv/site", False),
        ("/etc/passwd", "/srv/site", False),
        ("/anything", "/", True),
    ],
)
def test_is_within_compares_whole_components(path, root, expected):
    assert is_within(path, root) is expected


def test_component_paths_lists_each_prefix_outermost_first():
    assert component_paths("/srv/site", "a/b c/d") == ["/srv/site/a", "/srv/site/a/b c", "/srv/site/a/b c/d"]


ROOT = "/srv/site"
PLAIN = {ROOT: ROOT, f"{ROOT}/up": f"{ROOT}/up", f"{ROOT}/up/2026": f"{ROOT}/up/2026"}


@pytest.mark.parametrize(
    "real, expected",
    [
        (PLAIN, f"{ROOT}/up/2026"),
        # a link inside the site is followed: the restore lands where it leads, still inside
        (
            {ROOT: ROOT, f"{ROOT}/up": f"{ROOT}/data/up", f"{ROOT}/up/2026": f"{ROOT}/data/up/2026"},
            f"{ROOT}/data/up/2026",
        ),
        # the docroot itself may be a symlink (/var/www/site -> /srv/site): its real path is the reference
        (
            {ROOT: "/data/site", f"{ROOT}/up": "/data/site/up", f"{ROOT}/up/2026": "/data/site/up/2026"},
            "/data/site/up/2026",
        ),
    ],
)
def test_check_inside_returns_the_real_path_of_a_path_that_stays_inside(real, expected):
    assert check_inside(ROOT, "up/2026", real) == expected


@pytest.mark.parametrize(
    "real, named",
    [
        ({ROOT: ROOT, f"{ROOT}/up": "/home/other", f"{ROOT}/up/2026": "/home/other/2026"}, "up"),
        ({ROOT: ROOT, f"{ROOT}/up": f"{ROOT}/up", f"{ROOT}/up/2026": "/"}, "up/2026"),
        ({ROOT: ROOT, f"{ROOT}/up": "/srv/site2", f"{ROOT}/up/2026": "/srv/site2/2026"}, "up"),
        # inside, then out through a second link: the first component that leaves is named
        ({ROOT: ROOT, f"{ROOT}/up": f"{ROOT}/x", f"{ROOT}/up/2026": "/etc"}, "up/2026"),
    ],
)
def test_check_inside_refuses_the_first_component_leading_outside(real, named):
    with pytest.raises(UsageError, match=f"^{named} in {ROOT} is a symlink to {real[ROOT + '/' + named]}, outside"):
        check_inside(ROOT, "up/2026", real)


def test_check_inside_refuses_a_path_leading_back_to_the_docroot():
    with pytest.raises(UsageError, match="site's own folder"):
        check_inside(ROOT, "self", {ROOT: ROOT, f"{ROOT}/self": ROOT})


@pytest.fixture
def local():
    return LocalConnector()


@pytest.mark.parametrize("name", NASTY)
def test_resolve_inside_follows_real_symlinks_on_the_host(local, tmp_path, name):
    root, outside = tmp_path / "site", tmp_path / "outside"
    (root / "real" / name).mkdir(parents=True)
    outside.mkdir()
    (root / "inner").symlink_to(root / "real")
    (root / "out").symlink_to(outside)
    assert resolve_inside(local, str(root), f"inner/{name}") == str(root / "real" / name)
    assert resolve_inside(local, str(root), f"missing/{name}") == str(root / "missing" / name)
    with pytest.raises(UsageError, match=r"^out in .* is a symlink to .*outside"):
        resolve_inside(local, str(root), f"out/{name}")


def test_resolve_inside_refuses_a_relative_link_climbing_out(local, tmp_path):
    root = tmp_path / "site"
    (root / "wp-content").mkdir(parents=True)
    (root / "wp-content" / "uploads").symlink_to("../../elsewhere")
    with pytest.raises(UsageError, match="wp-content/uploads in .* is a symlink to .*elsewhere"):
        resolve_inside(local, str(root), "wp-content/uploads/2026")


def test_resolve_inside_leaves_a_symlink_loop_where_it_is(local, tmp_path):
    # realpath -m cannot resolve a loop and keeps the path as written: inside, and any write there fails (ELOOP)
    root = tmp_path / "site"
    root.mkdir()
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    assert resolve_inside(local, str(root), "a/x") == str(root / "a" / "x")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o2775, 0o711])
def test_sync_into_keeps_the_docroots_own_mode_and_mirrors_the_content(local, tmp_path, mode):
    dest, scratch = tmp_path / "site", tmp_path / ".orch-restore"
    dest.mkdir()
    (dest / "old.txt").write_text("gone after the sync")
    dest.chmod(mode)
    scratch.mkdir(mode=0o700)  # what mktemp -d makes
    (scratch / "index.html").write_text("restored")
    sync_into(local, str(scratch), str(dest), "--delete")
    assert _mode(dest) == mode
    assert sorted(p.name for p in dest.iterdir()) == ["index.html"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder another group needs root here")
def test_sync_into_keeps_the_docroots_group(local, tmp_path):
    dest, scratch = tmp_path / "site", tmp_path / "scratch"
    dest.mkdir()
    scratch.mkdir(mode=0o700)
    (scratch / "a").write_text("a")
    os.chown(dest, 0, 33)
    dest.chmod(0o750)
    sync_into(local, str(scratch), str(dest))
    assert (os.stat(dest).st_gid, _mode(dest)) == (33, 0o750)


def test_sync_into_a_missing_folder_creates_it(local, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "a").write_text("a")
    sync_into(local, str(scratch), str(tmp_path / "new"))
    assert (tmp_path / "new" / "a").read_text() == "a"


def _restored(tmp_path):
    tree = tmp_path / ".orch-restore.x"
    tree.mkdir(mode=0o700)  # what mktemp -d makes
    (tree / "index.html").write_text("restored")
    return tree


def test_vacancy_tells_a_missing_or_empty_docroot_from_one_with_content_or_a_symlink(local, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".hidden").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    found = {name: vacancy(local, str(tmp_path / name)) for name in ("missing", "empty", "full", "link")}
    assert found == {"missing": "missing", "empty": "empty", "full": None, "link": None}


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o2775, 0o711])
def test_move_into_place_gives_the_tree_an_empty_docroots_mode_and_renames_it(local, tmp_path, mode):
    dest, tree = tmp_path / "site", _restored(tmp_path)
    dest.mkdir()
    dest.chmod(mode)
    assert move_into_place(local, str(tree), str(dest))
    assert _mode(dest) == mode and (dest / "index.html").read_text() == "restored" and not tree.exists()


def test_move_into_place_makes_a_missing_docroot_as_mkdir_would(local, tmp_path):
    (tmp_path / "probe").mkdir()
    dest, tree = tmp_path / "site", _restored(tmp_path)
    assert move_into_place(local, str(tree), str(dest))
    assert _mode(dest) == _mode(tmp_path / "probe") != 0o700
    assert (dest / "index.html").read_text() == "restored"


def test_move_into_place_leaves_a_docroot_with_content_or_a_symlink_alone(local, tmp_path):
    full, link, elsewhere = tmp_path / "full", tmp_path / "link", tmp_path / "elsewhere"
    full.mkdir()
    (full / "kept.txt").write_text("mine")
    elsewhere.mkdir()
    link.symlink_to(elsewhere)
    tree = _restored(tmp_path)
    assert not move_into_place(local, str(tree), str(full))
    assert not move_into_place(local, str(tree), str(link))
    assert [p.name for p in full.iterdir()] == ["kept.txt"] and link.is_symlink() and not any(elsewhere.iterdir())
    assert tree.exists() and _mode(tree) == 0o700  # the caller syncs from it, then removes it
