"""Staging copies end to end: a real WordPress on web1 copied to stage1, served by real nginx + php-fpm."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from fleet import tree_checksums

pytestmark = pytest.mark.e2e

TASK = "14883"


def _prod_state(wp):
    dump = subprocess.run(
        ["mariadb-dump", "-S", str(wp.mariadb.socket), "--skip-dump-date", "--skip-comments", wp.wordpress.db_name],
        capture_output=True,
        check=True,
    ).stdout
    return dump, tree_checksums(wp.wordpress.host, str(wp.wordpress.path), exclude="wp-content/cache")


@pytest.fixture(scope="module")
def staged(wp_fleet):
    before = _prod_state(wp_fleet)
    result = wp_fleet.orch_json("staging", "create", "wp", "--task", TASK)
    return result, before


def _get(result, path="/", auth=True):
    from orchestrator.backends.envs.web import fetch

    listen = result["url"].rsplit(":", 1)[1]
    return fetch(
        result["url"].rstrip("/") + path,
        connect_to=f"127.0.0.3:{listen}",
        auth=(result["basic_auth"]["user"], result["basic_auth"]["password"]) if auth else None,
    )


def test_the_staging_url_serves_the_copy_behind_basic_auth_with_noindex(wp_fleet, staged):
    result, _ = staged
    status, headers, body = _get(result)
    assert status == 200 and "Dachdeckerei Muster Shop" in body
    assert "noindex" in headers.get("X-Robots-Tag", "")
    assert _get(result, auth=False)[0] == 401
    links = re.findall(r'(?:href|src)="(https?://[^"]+)"', body)
    # every link to the site itself points at the staging URL; the theme's credit link to wordpress.org stays
    own = [link for link in links if "wordpress.org" not in link]
    assert len(own) > 5 and all(link.startswith(result["url"].rstrip("/")) for link in own), own
    assert not [link for link in links if wp_fleet.wordpress.url in link]


def test_production_is_untouched(wp_fleet, staged):
    _, before = staged
    assert _prod_state(wp_fleet) == before


def test_serialized_and_json_values_are_valid_after_replacement(wp_fleet, staged):
    result, _ = staged
    db = f"wp_{result['env']}"
    raw = wp_fleet.mariadb.sql("SELECT option_value FROM wp_options WHERE option_name='orch_test_widget'", db)
    value = raw.strip().replace("\\\\", "\\")
    out = subprocess.run(
        ["php", "-r", "var_export(unserialize(stream_get_contents(STDIN)));"],
        input=value,
        capture_output=True,
        text=True,
    ).stdout
    assert result["url"].rstrip("/") in out and "false" != out.strip() and wp_fleet.wordpress.url not in out
    assert "Кровля" in out
    js = wp_fleet.mariadb.sql("SELECT option_value FROM wp_options WHERE option_name='orch_test_json'", db)
    assert result["url"].rstrip("/").replace("/", "\\\\/") in js
    assert result["replacements"]["replacements"] > 0


def test_no_production_email_survives_and_the_admin_logs_in_with_the_staging_password(wp_fleet, staged):
    result, _ = staged
    db = f"wp_{result['env']}"
    emails = wp_fleet.mariadb.sql("SELECT user_email FROM wp_users", db).split()
    assert emails and not set(emails) & set(wp_fleet.wordpress.users.values())
    assert all(e.endswith("@staging.invalid") for e in emails)
    from urllib.parse import urlencode

    body = urlencode(
        {"log": "admin", "pwd": result["staging_password"], "wp-submit": "Log In", "testcookie": "1"}
    ).encode()
    import urllib.request

    listen = result["url"].rsplit(":", 1)[1]
    req = urllib.request.Request(
        f"http://127.0.0.3:{listen}/wp-login.php",
        data=body,
        headers={
            "Host": result["url"].split("//")[1].rstrip("/"),
            "Cookie": "wordpress_test_cookie=WP%20Cookie%20check",
            "Authorization": "Basic "
            + __import__("base64").b64encode(f"staging:{result['basic_auth']['password']}".encode()).decode(),
        },
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(req, timeout=10)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 302, "admin login with the staging password failed"


def test_the_oplog_shows_every_step_and_the_artifacts(wp_fleet, staged):
    ops = wp_fleet.orch_json("log", "--task", TASK)
    create = next(op for op in ops if op["action"] == "staging-create")
    assert create["status"] == "ok" and all(s["status"] == "ok" for s in create["steps"])
    kinds = {a["kind"] for a in create["artifacts"]}
    assert {"source-backup", "staging-url", "url-replacements"} <= kinds
    assert staged[0]["basic_auth"]["password"] not in json.dumps(ops)
    listed = wp_fleet.orch_json("staging", "list", "wp")
    assert [(e["name"], e["status"]) for e in listed] == [(staged[0]["env"], "ready")]


def test_refresh_brings_new_production_content_down_and_keeps_staging_code(wp_fleet, staged):
    result, _ = staged
    stage1, wp = wp_fleet.stage1, wp_fleet.wordpress
    theme = f"{result['path']}/wp-content/themes/orch-test-theme.txt"
    stage1.run(f"echo 'work in progress' > {theme}")
    upload = f"{wp.path}/wp-content/uploads/2026/11/after-staging.txt"
    wp.host.run(f"echo 'uploaded later' > {upload}")
    wp_fleet.mariadb.sql(
        "UPDATE wp_options SET option_value = 'Refreshed Title' WHERE option_name = 'blogname'", wp.db_name
    )
    mode = stage1.run(f"chmod 0751 {result['path']} && stat -c '%a %U %G' {result['path']}").stdout
    try:
        out = wp_fleet.orch_json("staging", "refresh", "wp", "--env", result["env"], "--task", TASK, "--from", "fresh")
        assert out["staging_password"]
        # the copy's folder keeps its own mode, owner and group (a scratch folder's 0700 locked nginx out)
        assert stage1.run(f"stat -c '%a %U %G' {result['path']}").stdout == mode
        assert (
            stage1.run(f"cat {result['path']}/wp-content/uploads/2026/11/after-staging.txt").stdout.strip()
            == "uploaded later"
        )
        assert stage1.run(f"cat {theme}").stdout.strip() == "work in progress"
        assert _get(result | {"basic_auth": result["basic_auth"]})[2].count("Refreshed Title") >= 1
    finally:
        wp.host.run(f"rm -f {upload}")
        wp_fleet.mariadb.sql(
            "UPDATE wp_options SET option_value = 'Dachdeckerei Muster Shop' WHERE option_name = 'blogname'", wp.db_name
        )


def test_the_template_and_staging_copies_are_not_targets_for_raw_restores(wp_fleet, staged):
    result, _ = staged
    proc = wp_fleet.orch("restore", "wp", "--backup", "latest", "--to", result["env"], "--task", TASK, expect=2)
    assert "staging refresh" in proc.stderr  # a raw restore would skip URL replacement and sanitizing
    proc = wp_fleet.orch("restore", "wp", "--backup", "latest", "--to", "staging", "--task", TASK, expect=2)
    assert "template" in proc.stderr
    proc = wp_fleet.orch("promote", "wp", "--from", "staging", "--task", TASK, "--dry-run", expect=2)
    assert "no environment 'staging'" in proc.stderr


def test_destroy_refuses_production_and_removes_everything(wp_fleet, staged):
    result, before = staged
    proc = wp_fleet.orch("staging", "destroy", "wp", "--env", "production", "--task", TASK, expect=4)
    assert "production" in proc.stderr
    assert _prod_state(wp_fleet) == before
    wp_fleet.orch("staging", "destroy", "wp", "--env", result["env"], "--task", TASK)
    assert not subprocess.run(["test", "-e", result["path"]]).returncode == 0
    assert wp_fleet.mariadb.sql(f"SHOW DATABASES LIKE 'wp\\_{result['env']}'").strip() == ""
    assert wp_fleet.mariadb.sql(f"SELECT COUNT(*) FROM mysql.user WHERE user = 'wp_{result['env']}'").strip() == "0"
    assert not list(__import__("pathlib").Path(result["vhost"]).parent.glob(f"orch-wp-{result['env']}.conf"))
    assert wp_fleet.orch_json("staging", "list", "wp") == []


# a step alone: `name  12.0 MiB / 72.7 MiB  16%  ...`; two side by side: `name 16% | name 30%`
FIGURES = re.compile(
    r"(restore files on the staging host|load the dump, replacing production URLs)"
    r"(?:  [\d.]+ (?:B|KiB|MiB) / ([\d.]+) MiB  | )(\d+)%"
)


def test_a_staging_copy_shows_live_figures_on_a_terminal_and_none_elsewhere(wp_fleet):
    """20 MB more files and 40 MB more rows in production: on a terminal the files restore and the dump's load
    draw bytes done of the backup's sizes on one live line, cleared at the end; through a pipe, not a figure."""
    wp, uploads = wp_fleet.wordpress, f"{wp_fleet.wordpress.path}/wp-content/uploads/orch-ballast"
    wp.host.run(f"mkdir -p {uploads} && for i in $(seq 1 10); do head -c 2097152 /dev/urandom > {uploads}/f$i; done")
    wp_fleet.mariadb.sql(
        "CREATE TABLE orch_ballast (id INT AUTO_INCREMENT PRIMARY KEY, v LONGTEXT);"
        "INSERT INTO orch_ballast (v) SELECT REPEAT(MD5(RAND()), 32768) FROM seq_1_to_40",
        wp.db_name,
    )
    before = {e["name"] for e in wp_fleet.orch_json("staging", "list", "wp")}
    try:
        code, screen = wp_fleet.orch_on_terminal("staging", "create", "wp", "--task", TASK, "--from", "fresh")
        piped = wp_fleet.orch("staging", "create", "wp", "--task", TASK)
    finally:
        wp.host.run(f"rm -rf {uploads}")
        wp_fleet.mariadb.sql("DROP TABLE IF EXISTS orch_ballast", wp.db_name)
        for env in {e["name"] for e in wp_fleet.orch_json("staging", "list", "wp")} - before:
            wp_fleet.orch("staging", "destroy", "wp", "--env", env, "--task", TASK)
    assert code == 0, screen
    drawn: dict[str, list[tuple[float, int]]] = {}
    for step, total, pct in FIGURES.findall(screen):
        drawn.setdefault(step, []).append((float(total or "nan"), int(pct)))
    # the backup's sizes are the totals: restic 0.14 and the dump's pipe say nothing of their own
    files, load = drawn.get("restore files on the staging host"), drawn.get("load the dump, replacing production URLs")
    assert files and load and all(pct <= 100 for _, pct in files + load), screen
    for figures in (files, load):  # never back: the load's figures outlast the `restic dump` feeding it
        assert [pct for _, pct in figures] == sorted(pct for _, pct in figures), screen
    assert any(t == t for t, _ in files + load), screen  # MiB of a total, drawn when a step runs alone
    assert all(t >= 20 for t, _ in files if t == t) and all(40 <= t <= 50 for t, _ in load if t == t), screen
    assert screen.rstrip().count("\r\x1b[K") >= 2  # the line is taken off at each step's end
    assert "staging-create wp/" in screen and "restore files on the staging host...\r\n" in screen
    for text in (piped.stdout, piped.stderr):
        assert "\x1b[K" not in text and not re.search(r"\d+%", text) and "MiB /" not in text, text
