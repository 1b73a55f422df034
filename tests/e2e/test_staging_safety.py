"""Staging copies that never get lost or mixed up: a half-made copy is registered and destroyable, two sites'
copies of the same name keep their own credentials, and a copy with nothing to copy from says what to do."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import yaml
from fleet import Fleet, tree_checksums

pytestmark = pytest.mark.e2e


def _get(url: str, listen: str, auth=None) -> tuple[int, str]:
    from orchestrator.backends.envs.web import fetch

    status, _, body = fetch(url, connect_to=listen, auth=auth)
    return status, body


def _listen(wp) -> str:
    return "127.0.0.3:" + wp.site["environments"]["staging"]["url"].rsplit(":", 1)[1].split("/")[0]


def _variant(wp, root: Path, sites: dict, web: dict | None = None) -> Fleet:
    """Another inventory over the same hosts, storage and oplog: `sites` as given, stage1's web block changed."""
    inventory = yaml.safe_load(wp.inventory.read_text())
    inventory["hosts"]["stage1"]["web"] |= web or {}
    variant = Fleet(root, wp.env, wp.hosts)
    variant.write_inventory(inventory, sites)
    variant.wordpress, variant.mariadb, variant.stage1 = wp.wordpress, wp.mariadb, wp.stage1
    return variant


def _gone(wp, listed: dict) -> None:
    """Assert that nothing of a destroyed copy is left: files, auth file, database, its user, vhost, registry."""
    details = listed["details"]
    db = listed["database"]["name"]
    assert not Path(listed["path"]).exists() and not Path(details["auth_file"]).exists()
    assert wp.mariadb.sql(f"SHOW DATABASES LIKE '{db}'").strip() == ""
    assert wp.mariadb.sql(f"SELECT COUNT(*) FROM mysql.user WHERE user = '{db}'").strip() == "0"
    assert not Path(details["vhost"]).exists()


def test_a_staging_create_that_fails_half_way_is_listed_as_failed_and_destroy_removes_all_of_it(wp_fleet, tmp_path):
    # nginx's config test fails: files, database, user and auth file are made, the vhost is refused
    broken = _variant(wp_fleet, tmp_path / "broken", {"wp": wp_fleet.site}, web={"test": ["false"]})
    proc = broken.orch("staging", "create", "wp", "--task", "14902", expect=1)
    assert "nginx rejected the vhost" in proc.stderr
    [listed] = [e for e in wp_fleet.orch_json("staging", "list", "wp") if e["name"] == "t14902"]
    assert listed["status"] == "failed"
    assert Path(listed["path"], "wp-config.php").exists() and Path(listed["details"]["auth_file"]).exists()
    assert wp_fleet.mariadb.sql("SHOW DATABASES LIKE 'wp\\_t14902'").strip() == "wp_t14902"
    proc = wp_fleet.orch("staging", "refresh", "wp", "--env", "t14902", "--task", "14902", expect=2)
    assert "failed, not ready" in proc.stderr
    proc = wp_fleet.orch("promote", "wp", "--from", "t14902", "--task", "14902", "--dry-run", expect=2)
    assert "failed, not ready" in proc.stderr

    wp_fleet.orch("staging", "destroy", "wp", "--env", "t14902", "--task", "14902")

    _gone(wp_fleet, listed)
    assert not [e for e in wp_fleet.orch_json("staging", "list", "wp") if e["name"] == "t14902"]
    create = next(op for op in wp_fleet.orch_json("log", "--task", "14902") if op["action"] == "staging-create")
    assert create["status"] == "failed"


def test_copies_of_two_sites_with_the_same_env_name_keep_their_own_credentials(wp_fleet, tmp_path):
    # both templates put their copies in one folder: before, both copies shared `.orch-<env>.htpasswd`
    shared = f"{wp_fleet.stage1.home}/stage-shared-{secrets.token_hex(3)}"
    sites = {}
    for name in ("wp", "wpb"):
        site = json.loads(json.dumps(wp_fleet.site))
        site["name"] = name
        site["environments"]["staging"]["path"] = shared + "/{site}-{env}"
        site["environments"]["staging"]["url"] = site["environments"]["staging"]["url"].replace(
            "{env}.wp.", "{env}.{site}."
        )
        sites[name] = site
    two = _variant(wp_fleet, tmp_path / "two", sites)
    # wpb has no backup yet: the error says how to make a copy all the same, and the refusal is logged
    proc = two.orch("staging", "create", "wpb", "--task", "14904", expect=2)
    assert "--from fresh" in proc.stderr
    assert [op["status"] for op in two.orch_json("log", "--task", "14904")] == ["refused"]
    first = two.orch_json("staging", "create", "wp", "--task", "14904")
    second = two.orch_json("staging", "create", "wpb", "--task", "14904", "--from", "fresh")
    listen = _listen(wp_fleet)
    try:
        for copy in (first, second):
            creds = (copy["basic_auth"]["user"], copy["basic_auth"]["password"])
            status, body = _get(copy["url"], listen, creds)
            assert status == 200 and copy["url"] in body, (copy["site"], status)  # WordPress, at its own URL
            assert _get(copy["url"], listen)[0] == 401
        assert first["basic_auth"]["password"] != second["basic_auth"]["password"]
        assert _get(second["url"], listen, ("staging", first["basic_auth"]["password"]))[0] == 401

        two.orch("staging", "destroy", "wpb", "--env", "t14904", "--task", "14904")

        status, body = _get(first["url"], listen, (first["basic_auth"]["user"], first["basic_auth"]["password"]))
        assert status == 200 and first["url"] in body
    finally:
        for name in ("wp", "wpb"):
            two.orch("staging", "destroy", name, "--env", "t14904", "--task", "14904", expect=None)
        wp_fleet.stage1.run(f"rm -rf {shared}")
    assert not [e for e in two.orch_json("staging", "list") if e["name"] == "t14904"]


def test_dry_run_of_create_refresh_and_destroy_prints_the_plan_and_changes_nothing(wp_fleet):
    out = wp_fleet.orch("staging", "create", "wp", "--task", "14905", "--dry-run")
    assert "staging-create wp/t14905 (task 14905):" in out.stdout and "register wp/t14905" in out.stdout
    assert "dry run: nothing changed" in out.stderr
    plan = json.loads(wp_fleet.orch("--json", "staging", "create", "wp", "--task", "14905", "--dry-run").stdout)
    assert plan["dry_run"] and plan["auth_file"].endswith("/.orch-wp.t14905.htpasswd") and plan["backup_id"]
    assert not Path(plan["path"]).exists()
    assert not [e for e in wp_fleet.orch_json("staging", "list", "wp") if e["name"] == "t14905"]
    proc = wp_fleet.orch("staging", "destroy", "wp", "--env", "t14905", "--task", "14905", "--dry-run", expect=2)
    assert "not a staging environment orch made" in proc.stderr
    assert wp_fleet.orch_json("log", "--task", "14905") == []  # a dry run records nothing


@pytest.mark.parametrize("name", ["t1\n", "../t1", "t1;id", "$(id)", "T1", "production"])
def test_a_bad_or_production_env_name_is_refused_before_anything_is_made(wp_fleet, name):
    proc = wp_fleet.orch("staging", "create", "wp", "--task", "14906", "--name", name, expect=None)
    assert proc.returncode == (4 if name == "production" else 2), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert all(e["name"] != name for e in wp_fleet.orch_json("staging", "list", "wp"))


def test_a_copy_that_would_land_on_another_sites_production_is_refused_and_production_is_untouched(
    wp_fleet, fleet, tmp_path
):
    # a template without {site}: `--name blog` names the folder where site blog's production lives on stage1
    blog_path = fleet.sites["blog"]["environments"]["production"]["path"]
    site = json.loads(json.dumps(wp_fleet.site))
    site["environments"]["staging"]["path"] = str(Path(blog_path).parent)
    over = _variant(wp_fleet, tmp_path / "over", {"wp": site, "blog": fleet.sites["blog"]})
    before = tree_checksums(wp_fleet.stage1, blog_path)
    proc = over.orch("staging", "create", "wp", "--task", "14907", "--name", "blog", expect=4)
    assert "would share its docroot with blog/production" in proc.stderr
    assert tree_checksums(wp_fleet.stage1, blog_path) == before
    assert [op["status"] for op in over.orch_json("log", "--task", "14907")] == ["refused"]
