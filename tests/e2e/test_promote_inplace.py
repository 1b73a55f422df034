"""Promotion into a legacy in-place docroot: changed files renamed into place with a rollback set."""

from __future__ import annotations

import json
import secrets

import pytest
from fleet import Fleet
from testbed.inventory import host_entry
from testbed.webserver import php_vhost

from orchestrator.backends.envs.web import fetch

pytestmark = pytest.mark.e2e
TASK = "15001"


@pytest.fixture(scope="module")
def plain(fleet, ssh_hosts, web1_web, tmp_path_factory):
    """Site `plain` (generic PHP, no database): production on web1 behind nginx, a `dev` copy on stage1."""
    web1, stage1 = ssh_hosts["web1"], ssh_hosts["stage1"]
    run = secrets.token_hex(3)
    prod, dev = f"{web1.home}/plain-{run}", f"{stage1.home}/plain-dev-{run}"
    for host, path in ((web1, prod), (stage1, dev)):
        host.run(
            f"mkdir -p {path}/lib {path}/uploads && echo '<?php echo \"plain v1\";' > {path}/index.php && "
            f"echo '<?php // old' > {path}/lib/old.php && echo 'keep' > {path}/uploads/u.txt"
        )
    nginx = web1_web.nginx
    vhost = nginx.sites_dir / f"plain-{run}.conf"
    vhost.write_text(
        php_vhost(listen=nginx.listen, root=prod, php_socket=web1_web.php.socket, server_name="plain.test")
    )
    nginx.reload()
    port = nginx.listen.rsplit(":", 1)[1]
    inventory = json.loads(json.dumps(fleet.base))
    inventory["hosts"]["web1"] = host_entry(web1) | {
        "web": {
            "sites_dir": str(nginx.sites_dir),
            "connect": nginx.listen,
            # in place, a restored file may carry the cached file's mtime second: only a reload empties OPcache
            "php_reload": ["sh", "-c", web1_web.php.reload_command],
        }
    }
    site = {
        "name": "plain",
        "playbook": "generic",
        "task": TASK,
        "layout": "inplace",
        "playbook_overrides": {"content": ["uploads/"]},
        "promote": {"health_timeout": 10},
        "environments": {
            "production": {"host": "web1", "path": prod, "url": f"http://plain.test:{port}"},
            "dev": {"host": "stage1", "path": dev},
        },
    }
    other = Fleet(tmp_path_factory.mktemp("plain"), fleet.env, fleet.hosts)
    other.write_inventory(inventory, {"plain": site})
    other.prod, other.dev, other.web1, other.stage1, other.connect = prod, dev, web1, stage1, nginx.listen
    other.url = site["environments"]["production"]["url"]
    yield other
    vhost.unlink(missing_ok=True)
    nginx.reload()


def _page(plain, path="/"):
    return fetch(plain.url + path, connect_to=plain.connect)


def test_inplace_promotion_replaces_adds_and_removes_code_but_not_content(plain):
    plain.stage1.run(
        f"cd {plain.dev} && echo '<?php echo \"plain v2\";' > index.php && "
        f"echo '<?php // new' > lib/new.php && rm lib/old.php && echo 'dev junk' > uploads/u.txt"
    )
    result = plain.orch_json("promote", "plain", "--from", "dev", "--task", TASK, "--yes")
    assert (result["added"], result["changed"], result["removed"]) == (1, 1, 1)
    assert _page(plain)[2] == "plain v2"
    assert _page(plain, "/orch-revision.php")[2] == result["revision"]
    assert plain.web1.run(f"cat {plain.prod}/uploads/u.txt").stdout.strip() == "keep"  # content stays
    assert plain.web1.run(f"test ! -e {plain.prod}/lib/old.php && test -e {plain.prod}/lib/new.php").returncode == 0


def test_inplace_breaking_change_is_undone_file_by_file(plain):
    plain.stage1.run(f"echo '<?php undefined_function_here();' > {plain.dev}/index.php")
    proc = plain.orch("promote", "plain", "--from", "dev", "--task", TASK, "--yes", expect=1)
    assert "rolled back" in proc.stderr
    assert _page(plain)[2] == "plain v2"
    ops = plain.orch_json("log", "--task", TASK, "--action", "promote")
    assert ops[-1]["status"] == "rolled_back"


def test_manual_rollback_undoes_the_last_inplace_promotion(plain):
    plain.orch("rollback", "plain", "--task", TASK, "--yes")
    assert _page(plain)[2] == "plain v1"
    proc = plain.orch("rollback", "plain", "--task", TASK, "--yes", expect=2)  # nothing left to undo
    assert "no successful in-place promotion to undo" in proc.stderr
    assert plain.web1.run(f"test -e {plain.prod}/lib/old.php && test ! -e {plain.prod}/lib/new.php").returncode == 0


def test_a_git_ref_is_promoted_as_an_archive_without_git_on_the_host(plain, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    (repo / "public" / "lib").mkdir(parents=True)
    (repo / "public" / "index.php").write_text('<?php echo "plain v3 from git";\n')
    (repo / "public" / "lib" / "old.php").write_text("<?php // old\n")
    (repo / "README.md").write_text("not deployed: outside the subdir\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v3"], check=True)
    subprocess.run([*git, "tag", "v3"], check=True)
    import yaml

    site = yaml.safe_load((plain.root / "sites" / "plain.yaml").read_text())
    site["repository"] = {"url": str(repo), "subdir": "public"}
    (plain.root / "sites" / "plain.yaml").write_text(yaml.safe_dump(site))
    plain.orch("promote", "plain", "--ref", "nope", "--task", TASK, "--yes", expect=2)
    result = plain.orch_json("promote", "plain", "--ref", "v3", "--task", TASK, "--yes")
    assert result["from"].startswith("v3@")
    assert _page(plain)[2] == "plain v3 from git"
    assert plain.web1.run(f"test ! -e {plain.prod}/README.md").returncode == 0


def _person(plain, name: str) -> Fleet:
    """Another person's orch on the same site: the same inventory with its own, fresh oplog (ids from 1)."""
    import yaml

    root = plain.root.parent / f"{plain.root.name}-{name}"
    inventory = yaml.safe_load(plain.inventory.read_text()) | {"oplog": f"sqlite:///{root}/oplog.db"}
    site = yaml.safe_load((plain.root / "sites" / "plain.yaml").read_text())
    person = Fleet(root, plain.env, plain.hosts)
    person.write_inventory(inventory, {"plain": site})
    return person


def test_inplace_rollback_data_is_not_keyed_by_operation_ids_that_repeat_across_oplogs(plain):
    """Defect 4: two people's oplogs both start at operation 1. The second promotion used to hit FileExistsError
    after files were already renamed into production, with no health check and no rollback."""
    alice, bob = _person(plain, "alice"), _person(plain, "bob")
    before = _page(plain)[2]
    plain.stage1.run(f"cd {plain.dev} && echo '<?php echo \"plain v4\";' > index.php")
    first = alice.orch_json("promote", "plain", "--from", "dev", "--task", TASK, "--yes")
    plain.stage1.run(
        f"cd {plain.dev} && echo '<?php echo \"plain v5\";' > index.php && echo '<?php // v5' > lib/v5.php"
    )
    second = bob.orch_json("promote", "plain", "--from", "dev", "--task", TASK, "--yes")
    assert [op["id"] for op in alice.orch_json("log", "--action", "promote")] == [1]
    assert [op["id"] for op in bob.orch_json("log", "--action", "promote")] == [1]
    assert _page(plain)[2] == "plain v5" and _page(plain, "/orch-revision.php")[2] == second["revision"]
    releases = alice.orch_json("releases", "plain")
    assert [r["revision"] for r in releases[:2]] == [second["revision"], first["revision"]]
    assert [r["status"] for r in releases[:2]] == ["current", "previous"] and all(r["created"] for r in releases)
    # production's host knows what to undo, whichever oplog made the promotion
    alice.orch("rollback", "plain", "--task", TASK, "--yes")
    assert _page(plain)[2] == "plain v4"
    assert plain.web1.run(f"test ! -e {plain.prod}/lib/v5.php").returncode == 0
    bob.orch("rollback", "plain", "--task", TASK, "--yes")
    assert _page(plain)[2] == before


def test_an_error_mid_apply_in_place_is_undone_from_the_journal(plain):
    """Defect 4: a rename that fails half-way through used to leave production torn (some files new, some old)
    with no rollback. Every move is journaled on the host before it is made, and undone."""
    locked = f"{plain.prod}/zz-locked"
    for host, root in ((plain.web1, plain.prod), (plain.stage1, plain.dev)):
        host.run(f"mkdir -p {root}/zz-locked && echo '<?php // old' > {root}/zz-locked/x.php")
    plain.web1.run(f"chmod 555 {locked}")  # renaming into it fails: after index.php was already replaced
    try:
        before = _page(plain)[2]
        plain.stage1.run(
            f"cd {plain.dev} && echo '<?php echo \"plain torn\";' > index.php && echo '<?php // new' > zz-locked/x.php"
        )
        proc = plain.orch("promote", "plain", "--from", "dev", "--task", TASK, "--yes", expect=1)
        assert "rolled back" in proc.stderr and "Permission denied" in proc.stderr
        assert _page(plain)[2] == before
        assert plain.web1.run(f"cat {locked}/x.php").stdout.strip() == "<?php // old"
        op = plain.orch_json("log", "--task", TASK, "--action", "promote")[-1]
        assert op["status"] == "rolled_back"
        assert [s["name"] for s in op["steps"]][-2:] == ["switch", "automatic rollback"]
        assert plain.orch_json("releases", "plain")[0]["status"] == "bad"
    finally:
        plain.web1.run(f"chmod 755 {locked}")
