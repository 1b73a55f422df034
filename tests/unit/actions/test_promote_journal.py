"""What makes a promotion undoable: the host-side journal (release_tool, run here on temp folders), the point of
no return, the verdict on a promotion whose orch died, the health check's fast decision, typed options."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from types import SimpleNamespace

import pytest

from orchestrator.actions import release as rel
from orchestrator.actions.rollback import settle_verdict
from orchestrator.backends.cms.playbook import load_playbook
from orchestrator.backends.envs import release_tool as tool
from orchestrator.backends.envs.layouts import Journal
from orchestrator.config.load import definition, fill_defaults
from orchestrator.errors import OperationFailed, RemoteError
from orchestrator.oplog import Oplog


def snapshot(root) -> dict:
    """{relative path: content} of every file, and every folder as a key ending in /."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root) + "/"] = None
        for name in files:
            with open(os.path.join(folder, name)) as fh:
                found[os.path.relpath(os.path.join(folder, name), root)] = fh.read()
    return found


def write(root, files: dict) -> None:
    for relpath, text in files.items():
        path = os.path.join(root, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)


@pytest.fixture
def site(tmp_path):
    """A docroot, and a journal whose incoming/ holds a new version of it."""
    docroot, journal = str(tmp_path / "www"), str(tmp_path / "www.orch-promotions" / "20261127-030012-3fa2c1")
    write(docroot, {"index.php": "v1", "lib/old.php": "old", "uploads/u.txt": "content"})
    tool.begin({"journal": journal, "meta": {"release": "x"}})
    write(os.path.join(journal, "incoming"), {"index.php": "v2", "lib/new/deep/a.php": "new"})
    return SimpleNamespace(docroot=docroot, journal=journal, before=snapshot(docroot))


def apply(site, changed=("index.php", "lib/new/deep/a.php"), removed=("lib/old.php",)):
    return tool.inplace(
        {"path": site.docroot, "journal": site.journal, "changed": list(changed), "removed": list(removed)}
    )


def undo(site):
    return tool.undo({"path": site.docroot, "journal": site.journal})


def test_an_inplace_promotion_and_its_undo_give_back_the_exact_tree(site):
    done = apply(site)
    assert done == {"replaced": ["index.php"], "added": ["lib/new/deep/a.php"], "removed": ["lib/old.php"]}
    assert snapshot(site.docroot)["index.php"] == "v2" and "lib/old.php" not in snapshot(site.docroot)
    assert tool.read_state(site.journal) == "switched"
    assert not os.path.exists(os.path.join(site.journal, "incoming"))
    assert undo(site) == {"restored": ["index.php", "lib/old.php"], "deleted": ["lib/new/deep/a.php"]}
    assert snapshot(site.docroot) == site.before  # the folders it made are gone too
    assert tool.read_state(site.journal) == "undone"


def test_a_failure_half_way_leaves_a_journal_that_undoes_what_was_done(site):
    with pytest.raises(FileNotFoundError):  # the second file never arrived in incoming/
        apply(site, changed=("index.php", "lib/missing.php", "lib/new/deep/a.php"))
    assert snapshot(site.docroot)["index.php"] == "v2" and tool.read_state(site.journal) == "switching"
    undo(site)
    assert snapshot(site.docroot) == site.before


def test_undo_is_safe_to_run_again(site):
    apply(site)
    undo(site)
    assert undo(site) == {"restored": [], "deleted": []}
    assert snapshot(site.docroot) == site.before


def test_moves_announced_but_never_made_are_left_alone(site):
    """A crash right after a journal line: the file was linked but not replaced, or announced but not added."""
    os.makedirs(os.path.join(site.journal, "files"))
    os.link(os.path.join(site.docroot, "index.php"), os.path.join(site.journal, "files", "index.php"))
    with open(os.path.join(site.journal, "JOURNAL"), "w") as fh:
        fh.write(
            json.dumps({"replace": "index.php"})
            + "\n"
            + json.dumps({"add": "lib/new/deep/a.php"})
            + "\n"
            + '{"remove": "lib/ol'
        )  # a line cut by the crash: its move never happened
    assert undo(site) == {"restored": [], "deleted": []}
    assert snapshot(site.docroot) == site.before


def test_a_journal_is_never_reused(site):
    with pytest.raises(FileExistsError):
        tool.begin({"journal": site.journal, "meta": {}})


def test_journals_are_listed_oldest_first_with_their_state(site, tmp_path):
    root = os.path.dirname(site.journal)
    os.mkdir(os.path.join(root, "20261126-000000-aaaaaa"))  # begin died before writing anything
    found = tool.journals({"root": root})["journals"]
    assert [(j["id"], j["state"]) for j in found] == [
        ("20261126-000000-aaaaaa", "prepared"),
        ("20261127-030012-3fa2c1", "prepared"),
    ]
    assert found[1]["meta"] == {"release": "x"}
    assert tool.journals({"root": str(tmp_path / "none")}) == {"journals": []}


def test_tree_refuses_a_missing_folder_instead_of_reading_it_as_empty(tmp_path):
    with pytest.raises(FileNotFoundError):
        tool.tree({"path": str(tmp_path / "gone")})


@pytest.mark.parametrize(
    ("state", "meta", "verdict"),
    [
        ("prepared", {}, "abandon"),
        ("switching", {}, "undo"),
        ("switched", {"migration": True}, "undo"),
        ("switched", {"migration": False}, "check"),
        ("migrating", {"migration": True}, "undo"),
        ("migrated", {"migration": True}, "check"),
        ("undoing", {}, "undo"),
        ("verified", {}, "none"),
        ("undone", {}, "none"),
        ("abandoned", {}, "none"),
    ],
)
def test_settle_verdict(state, meta, verdict):
    assert settle_verdict(Journal("j", state, meta)) == verdict


# -- the point of no return ----------------------------------------------------------------------------------


@pytest.fixture
def op(tmp_path):
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        with oplog.start(task="1", site="shop", env="production", action="promote") as operation:
            yield operation


@pytest.mark.parametrize(
    "error",
    [
        RemoteError("web1", "php-fpm reload", 1, "refused"),
        ValueError("URL can't contain control characters"),
        ConnectionResetError("reset by peer"),
        AttributeError("'NoneType' object has no attribute 'rstrip'"),
    ],
)
def test_any_exception_after_the_first_change_is_undone(op, error):
    undone = []
    with pytest.raises(OperationFailed, match="promotion rolled back"):
        with rel.point_of_no_return(op, lambda reason: undone.append(reason) or "switched back"):
            raise error
    assert len(undone) == 1 and str(error) in undone[0]
    assert op.status == "rolled_back"


def test_an_interrupt_is_undone_then_re_raised(op):
    undone = []
    with pytest.raises(KeyboardInterrupt):
        with rel.point_of_no_return(op, lambda reason: undone.append(reason) or "switched back"):
            raise KeyboardInterrupt("signal 15")
    assert undone == ["interrupted (signal 15)"] and op.status == "rolled_back"


def test_an_undo_that_fails_is_said_and_recorded_failed(op):
    def broken(_reason):
        raise RemoteError("web1", "mv", 1, "host gone")

    with pytest.raises(OperationFailed, match="not rolled back"):
        with rel.point_of_no_return(op, broken):
            raise ValueError("boom")
    assert op.status == "failed"


# -- the health check ----------------------------------------------------------------------------------------


class _Site(http.server.ThreadingHTTPServer):
    """Answers each GET with the next (status, body) of a script per path; the last one repeats."""

    def __init__(self, script: dict[str, list[tuple[int, str]]]):
        self.script, self.asked = script, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                server.asked.append(self.path)
                answers = server.script[self.path]
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _prod(url: str, php_reload: bool = False, timeout: float = 3.0):
    block = fill_defaults(definition("promote"), {"health_timeout": timeout})
    return SimpleNamespace(
        env=SimpleNamespace(url=url),
        host=SimpleNamespace(web={"php_reload": ["true"]} if php_reload else None),
        site=SimpleNamespace(promote=block),
        label="shop/production",
    )


def _check(prod, revision="r7"):
    return rel.health_check(prod, rel.options(prod), load_playbook("generic"), revision)


def test_a_php_fatal_is_rolled_back_after_three_500s_without_waiting_for_the_timeout():
    site = _Site({"/": [(500, "Fatal error")], "/orch-revision.php": [(200, "r7")]})
    started = time.monotonic()
    with pytest.raises(rel.HealthFailed, match="answered 500.*3 definite failures"):
        _check(_prod(site.url, timeout=30))
    assert time.monotonic() - started < 10 and site.asked.count("/") == 3
    site.shutdown()


def test_a_gateway_without_php_yet_is_waited_for():
    site = _Site({"/": [(502, "Bad Gateway"), (503, "reloading"), (200, "ok")], "/orch-revision.php": [(200, "r7")]})
    assert "revision r7 live" in _check(_prod(site.url))
    site.shutdown()


def test_no_answer_at_all_is_waited_for_until_the_timeout():
    started = time.monotonic()
    with pytest.raises(rel.HealthFailed, match="still after 1s"):
        _check(_prod("http://127.0.0.1:9", timeout=1))  # nothing listens on the discard port
    assert time.monotonic() - started < 8


@pytest.mark.parametrize(("php_reload", "match"), [(True, "definite"), (False, "still after")])
def test_the_old_revision_is_definite_only_once_opcache_was_emptied(php_reload, match):
    site = _Site({"/": [(200, "ok")], "/orch-revision.php": [(200, "r6")]})
    with pytest.raises(rel.HealthFailed, match=match):
        _check(_prod(site.url, php_reload=php_reload, timeout=1.5))
    site.shutdown()


def test_options_come_from_the_schema_defaults():
    opts = rel.PromoteOptions.from_block(fill_defaults(definition("promote"), {"keep_releases": 3}))
    assert opts == rel.PromoteOptions(
        keep_releases=3,
        health_paths=("/",),
        expect_status=200,
        health_timeout=30.0,
        restore_db_on_rollback=False,
        visual_threshold=None,
    )
