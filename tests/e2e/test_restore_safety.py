"""Restores that never harm: the docroot keeps its own mode, owner and group (so the web server still answers),
and nothing outside the docroot is ever written or deleted, whatever symlinks the site holds.

Site `www` lives outside the host user's 0700 home, owned `orch-web1:www-data` with mode 0750, and is served
by an nginx running as `www-data` (not the owner): the usual production setup, where a docroot that a restore
left at 0700 answers 403. A second environment `copy` (docroot `www-copy` beside it, served the same way) is where
restores into an empty or missing docroot land.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from fleet import Fleet, tree_checksums

pytestmark = pytest.mark.e2e

TASK = "14900"


def _stat(path) -> str:
    return subprocess.run(
        ["stat", "-c", "%a %U %G", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def _get(nginx, path: str = "/", host: str = "www.test") -> tuple[int, str]:
    from orchestrator.backends.envs.web import fetch

    status, _, body = fetch(f"http://{host}{path}", connect_to=nginx.listen)
    return status, body


def restore(www, *extra, expect: int | None = 0):
    """Run `orch restore www --backup <the module's backup> --to production --task TASK --yes` plus ``extra``."""
    args = ("restore", "www", "--backup", www.backup_id, "--to", "production", "--task", TASK, "--yes", *extra)
    return www.orch(*args, expect=expect)


@pytest.fixture(scope="module")
def www(fleet, ssh_hosts):
    """Site `www` (files only) on web1, served by an nginx running as www-data; an `outside` folder beside it."""
    from testbed.ports import free_port
    from testbed.webserver import start_nginx, write_user_file

    web1 = ssh_hosts["web1"]
    base = Path(tempfile.mkdtemp(prefix="orch-e2e-www-", dir="/var/tmp"))
    base.chmod(0o755)
    shutil.chown(base, web1.user, web1.user)  # the host user makes its scratch folders beside the docroot
    docroot, outside = base / "www", base / "outside"
    web1.run(
        f"mkdir -p {docroot}/wp-content/uploads/2026 {outside} && cd {docroot} && "
        "echo '<h1>restored site</h1>' > index.html && echo one > wp-content/uploads/2026/a.txt && "
        f"echo two > wp-content/uploads/2026/b.txt && echo mine > {outside}/keep.txt && "
        f"echo also mine > {outside}/a.txt"
    )
    subprocess.run(["chgrp", "www-data", str(docroot)], check=True)
    docroot.chmod(0o750)
    nginx = start_nginx(base / "nginx", free_port(web1.address), user="www-data", address=web1.address)
    copy = base / "www-copy"
    write_user_file(
        nginx.sites_dir / "www.conf",
        f"server {{ listen {nginx.listen}; server_name www.test; root {docroot}; index index.html; }}\n"
        f"server {{ listen {nginx.listen}; server_name copy.test; root {copy}; index index.html; }}\n",
        "www-data",
    )
    nginx.reload()
    environments = {"production": {"host": "web1", "path": str(docroot)}, "copy": {"host": "web1", "path": str(copy)}}
    site = {"name": "www", "task": "10020", "environments": environments}
    www = Fleet(fleet.root.parent / "www-inventory", fleet.env, fleet.hosts)
    www.write_inventory(fleet.base, {"www": site})
    www.docroot, www.outside, www.nginx, www.web1, www.copy = docroot, outside, nginx, web1, copy
    www.backup_id = www.orch_json("backup", "www", "--task", TASK)[0]["backup_id"]
    www.backed_up = tree_checksums(web1, str(docroot))
    try:
        yield www
    finally:
        nginx.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_full_restore_keeps_the_docroot_mode_owner_and_group_so_the_web_server_still_answers(www):
    before = _stat(www.docroot)
    assert before == "750 orch-web1 www-data" and _get(www.nginx)[0] == 200
    www.web1.run(f"rm {www.docroot}/index.html && echo stray > {www.docroot}/stray.txt")
    assert _get(www.nginx)[0] == 403  # no index: the web server itself shows the damage

    restore(www)

    status, body = _get(www.nginx)
    assert status == 200 and "restored site" in body  # a docroot left at 0700 answers 403
    assert _stat(www.docroot) == before
    assert not (www.docroot / "stray.txt").exists()


def test_restore_path_through_a_symlink_out_of_the_docroot_is_refused_and_the_outside_is_untouched(www):
    uploads = www.docroot / "wp-content" / "uploads"
    outside_before = tree_checksums(www.web1, str(www.outside))
    www.web1.run(f"mv {uploads} {uploads}.real && ln -s {www.outside} {uploads}")
    try:
        for path in ("wp-content/uploads", "wp-content/uploads/2026", "wp-content/uploads/2026/a.txt"):
            proc = restore(www, "--path", path, expect=2)
            assert "wp-content/uploads" in proc.stderr and "symlink" in proc.stderr and "outside" in proc.stderr
            assert "Traceback" not in proc.stderr
        assert tree_checksums(www.web1, str(www.outside)) == outside_before
        refused = [
            op for op in www.orch_json("log", "--task", TASK) if op["action"] == "restore" and op["status"] == "refused"
        ]
        assert refused and "symlink" in refused[-1]["error"]
    finally:
        www.web1.run(f"rm {uploads} && mv {uploads}.real {uploads}")


def test_a_full_restore_replaces_a_symlink_out_of_the_docroot_without_writing_through_it(www):
    uploads = www.docroot / "wp-content" / "uploads"
    outside_before = tree_checksums(www.web1, str(www.outside))
    www.web1.run(f"rm -r {uploads} && ln -s {www.outside} {uploads}")
    restore(www)
    assert tree_checksums(www.web1, str(www.outside)) == outside_before
    assert not uploads.is_symlink() and (uploads / "2026" / "a.txt").read_text() == "one\n"


def test_restore_path_inside_the_site_brings_one_folder_back(www):
    folder = www.docroot / "wp-content" / "uploads" / "2026"
    www.web1.run(f"rm {folder}/a.txt && echo changed > {folder}/b.txt && echo new > {folder}/c.txt")
    restore(www, "--path", "wp-content/uploads/2026")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]
    assert (folder / "b.txt").read_text() == "two\n"
    assert _stat(www.docroot) == "750 orch-web1 www-data"


@pytest.mark.parametrize("path", ["../../etc", "../outside", "/etc", " /etc", "wp-content/../../outside", "a\nb"])
def test_a_path_outside_the_site_is_a_clean_usage_error(www, path):
    proc = restore(www, "--path", path, expect=2)
    assert "relative path inside the site" in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(www):
    before = tree_checksums(www.web1, str(www.docroot))
    www.web1.run(f"echo stray > {www.docroot}/stray.txt")
    try:
        out = www.orch("restore", "www", "--backup", www.backup_id, "--to", "production", "--task", TASK, "--dry-run")
        assert f"restore www/production (task {TASK}):" in out.stdout
        assert "back up production www/production first" in out.stdout and www.backup_id in out.stdout
        assert "dry run: nothing changed" in out.stderr
        plan = json.loads(
            www.orch(
                "--json", "restore", "www", "--backup", "latest", "--to", "production", "--task", TASK, "--dry-run"
            ).stdout
        )
        assert plan["dry_run"] and plan["files"] and not plan["db"] and plan["into"] == str(www.docroot)
        assert (www.docroot / "stray.txt").exists()
    finally:
        www.web1.run(f"rm -f {www.docroot}/stray.txt")
    assert tree_checksums(www.web1, str(www.docroot)) == before


def test_the_safety_backup_is_taken_under_the_restore_lock_and_recorded_with_it(www):
    restore(www)
    ops = www.orch_json("log", "--task", TASK)
    done = [op for op in ops if op["action"] == "restore" and op["status"] == "ok"][-1]
    safety = next(a["ident"] for a in done["artifacts"] if a["kind"] == "safety-backup")
    step = next(s for s in done["steps"] if s["name"] == "safety backup of production")
    assert safety in step["output"]
    backup = next(op for op in ops if op["action"] == "backup" and any(a["ident"] == safety for a in op["artifacts"]))
    # the backup ran inside the restore, under its lock: it started after the restore and ended before it
    assert done["started_at"] <= backup["started_at"] and backup["finished_at"] <= done["finished_at"]


def test_restoring_without_yes_is_refused_and_recorded(www):
    proc = www.orch("restore", "www", "--backup", www.backup_id, "--to", "production", "--task", "14901", expect=4)
    assert "--yes" in proc.stderr
    [op] = www.orch_json("log", "--task", "14901")
    assert op["action"] == "restore" and op["status"] == "refused" and "--yes" in op["error"]


def test_restoring_wordpress_onto_production_keeps_its_docroot_and_it_answers_200(wp_fleet):
    wp = wp_fleet.wordpress
    backup_id = wp_fleet.orch_json("backup", "wp", "--task", TASK)[0]["backup_id"]
    root = Path(str(wp.path) + ".releases") if Path(str(wp.path) + ".releases").is_dir() else wp.path
    before = _stat(root)
    readme = wp.path / "readme.html"
    wp.host.run(f"rm {readme}")
    wp_fleet.orch("restore", "wp", "--backup", backup_id, "--to", "production", "--task", TASK, "--yes", "--files-only")
    assert _stat(root) == before and readme.exists()
    status, _, body = wp.request("GET", "/")
    assert status == 200 and wp.title in body


def restore_copy(www) -> dict:
    """Restore the module's backup of production into `copy`; return the restore's oplog step."""
    www.orch("restore", "www", "--backup", www.backup_id, "--from-env", "production", "--to", "copy", "--task", TASK)
    done = [op for op in www.orch_json("log", "--task", TASK, "--steps") if op["action"] == "restore"][-1]
    assert done["env"] == "copy" and done["status"] == "ok"
    return next(s for s in done["steps"] if s["name"] == "restore files")


def _empty_copy(www, mode: int, group: str) -> None:
    www.web1.run(f"rm -rf {www.copy} && mkdir {www.copy}")
    subprocess.run(["chgrp", group, str(www.copy)], check=True)
    www.copy.chmod(mode)


def test_a_restore_into_an_empty_docroot_moves_the_files_into_place_and_keeps_its_mode_owner_and_group(www):
    _empty_copy(www, 0o711, www.web1.user)  # others may enter, not list: the web server still serves index.html
    plan = json.loads(
        www.orch(
            *("--json", "restore", "www", "--backup", www.backup_id, "--from-env", "production", "--to", "copy"),
            *("--task", TASK, "--dry-run"),
        ).stdout
    )
    assert plan["into_empty"] and any("empty" in line for line in plan["plan"])
    try:
        step = restore_copy(www)
        assert "moved into place" in step["output"]  # restored once beside it, not copied a second time
        assert tree_checksums(www.web1, str(www.copy)) == www.backed_up
        assert _stat(www.copy) == "711 orch-web1 orch-web1"
        status, body = _get(www.nginx, host="copy.test")
        assert status == 200 and "restored site" in body
        assert not list(www.copy.parent.glob(".orch-restore.*"))  # no scratch folder left beside it
    finally:
        www.web1.run(f"rm -rf {www.copy}")


def test_an_empty_docroot_whose_group_the_user_cannot_give_is_synced_into_and_keeps_it(www):
    _empty_copy(www, 0o750, "www-data")  # orch-web1 is not in www-data: a folder of its own cannot get that group
    try:
        step = restore_copy(www)
        assert "moved into place" not in step["output"]
        assert tree_checksums(www.web1, str(www.copy)) == www.backed_up
        assert _stat(www.copy) == "750 orch-web1 www-data"
        assert _get(www.nginx, host="copy.test")[0] == 200
        assert not list(www.copy.parent.glob(".orch-restore.*"))
    finally:
        www.web1.run(f"rm -rf {www.copy}")


def test_a_restore_into_a_missing_docroot_creates_it_as_mkdir_would_and_the_site_answers_200(www):
    www.web1.run(f"rm -rf {www.copy} && mkdir {www.copy}.probe")
    made_by_mkdir = _stat(f"{www.copy}.probe")  # the host user's umask and the parent's group
    www.web1.run(f"rmdir {www.copy}.probe")
    try:
        step = restore_copy(www)
        assert "moved into place" in step["output"]
        assert tree_checksums(www.web1, str(www.copy)) == www.backed_up
        assert _stat(www.copy) == made_by_mkdir  # not the 0700 of a scratch folder: nginx could not enter it
        status, body = _get(www.nginx, host="copy.test")
        assert status == 200 and "restored site" in body
        assert not list(www.copy.parent.glob(".orch-restore.*"))
    finally:
        www.web1.run(f"rm -rf {www.copy}")


def test_a_path_excluded_since_the_backup_is_not_restored_into_an_empty_docroot_either(www):
    # as into a docroot with files (rsync --exclude), what the site's exclude names now stays out of it
    site = yaml.safe_load((www.root / "sites" / "www.yaml").read_text())
    site["backup"] = {"exclude": ["wp-content/cache", "wp-content/uploads/2026/b.txt"]}
    later = Fleet(www.root.parent / "www-excluded", www.env, www.hosts)
    later.write_inventory(yaml.safe_load(www.inventory.read_text()), {"www": site})
    _empty_copy(www, 0o711, www.web1.user)
    try:
        args = ("--backup", www.backup_id, "--from-env", "production", "--to", "copy", "--task", TASK)
        later.orch("restore", "www", *args)
        restored = tree_checksums(www.web1, str(www.copy))
        assert "./wp-content/uploads/2026/a.txt" in restored and "./wp-content/uploads/2026/b.txt" not in restored
        assert restored == {k: v for k, v in www.backed_up.items() if k != "./wp-content/uploads/2026/b.txt"}
    finally:
        www.web1.run(f"rm -rf {www.copy}")


def test_a_restore_into_a_docroot_that_is_a_symlink_to_an_empty_folder_keeps_the_symlink(www):
    target = www.copy.parent / "www-copy.real"
    www.web1.run(f"rm -rf {www.copy} {target} && mkdir {target} && chmod 755 {target} && ln -s {target} {www.copy}")
    try:
        step = restore_copy(www)
        assert "moved into place" not in step["output"]  # a symlink is never replaced by a folder
        assert www.copy.is_symlink() and tree_checksums(www.web1, str(target)) == www.backed_up
        assert _get(www.nginx, host="copy.test")[0] == 200
    finally:
        www.web1.run(f"rm -rf {www.copy} {target}")
