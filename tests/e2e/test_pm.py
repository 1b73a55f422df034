"""The PM's side end to end on the testbed: a real Redmine gets one note (and one spent-time entry) per operation
of a task, with results and links, and gets them once after an outage; the oplog's chain verifies; `orch serve`
shows the task to a real Chromium, with no secret on any page, and refuses strangers when not on loopback."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from fleet import ORCH, Fleet
from testbed.browser import PHONE, new_page, screenshot
from testbed.ports import free_port, port_open

pytestmark = pytest.mark.e2e

TASK, DOWN_TASK = "71001", "71002"  # Redmine issues the `redmine` fixture made; no other test uses these tasks
THEME = "wp-content/themes/twentytwentythree"
PUBLIC = "https://orch.agency.test"
SHOTS = os.environ.get("ORCH_SCREENSHOTS")  # a folder to keep the page screenshots in (the README's come from here)


@pytest.fixture(scope="module")
def pm(wp_fleet, fleet, redmine, tmp_path_factory):
    """The WordPress fleet with Redmine as its tracker (spent time on), rates, and the pages' public URL, on an
    oplog of its own: the chain it checks holds only what orch wrote (other tests plant rows in the fleet's)."""
    inventory = yaml.safe_load(wp_fleet.inventory.read_text())
    root = tmp_path_factory.mktemp("pm")
    inventory |= {
        "oplog": f"sqlite:///{root}/oplog.db",
        "tracker": {"type": "redmine", "url": redmine.url, "api_key": {"env": "T_REDMINE_KEY"}, "time_entries": True},
        "billing": {"currency": "EUR", "hourly_rate": 90, "storage_gb_month": 0.05},
        "serve": {"public_url": PUBLIC},
    }
    pm = Fleet(root, wp_fleet.env | {"T_REDMINE_KEY": redmine.api_key}, wp_fleet.hosts)
    pm.write_inventory(inventory, {"wp": wp_fleet.site})
    pm.wp, pm.redmine, pm.inventory_data = wp_fleet, redmine, inventory
    pm.secrets = [redmine.api_key, wp_fleet.wordpress.db_password, wp_fleet.env["T_WP_ADMIN_PW"], *fleet.secrets]
    return pm


@pytest.fixture(scope="module")
def worked(pm):
    """A task's work: a backup, a staging copy, a change on it, and its promotion; the copy is destroyed after."""
    done = {
        "backup": pm.orch_json("backup", "wp", "--task", TASK)[0],
        "staging": pm.orch_json("staging", "create", "wp", "--task", TASK),
    }
    pm.wp.stage1.run(f"echo '/* task {TASK} */' >> {done['staging']['path']}/{THEME}/style.css")
    done["promote"] = pm.orch_json("promote", "wp", "--from", done["staging"]["env"], "--task", TASK, "--yes")
    done["ops"] = pm.orch_json("log", "--task", TASK)
    yield done
    pm.orch("staging", "destroy", "wp", "--env", done["staging"]["env"], "--task", TASK)


# ---------------------------------------------------------------- tracker


def test_backup_staging_and_promotion_each_leave_a_note_and_spent_time_on_the_issue(pm, worked):
    redmine = pm.redmine
    notes = redmine.notes(int(TASK))
    assert len(notes) == 3, notes
    first, second, third = notes
    assert "**orch backup** of wp/production: **ok**" in first and worked["backup"]["backup_id"] in first
    assert "**orch staging-create** of wp/" in second and worked["staging"]["url"] in second
    assert "**orch promote** of wp/production: **ok**" in third and worked["promote"]["revision"] in third
    assert f"{THEME}/style.css" in third  # the promoted files are listed
    assert "backup taken before the promotion" in third
    # the promotion's mandatory backup ran inside it: one note for both, its time counted once
    ops = [op for op in worked["ops"] if op["action"] != "backup" or op["id"] == worked["ops"][0]["id"]]
    for note, op in zip(notes, ops, strict=True):
        assert f"Task page: {PUBLIC}/tasks/{TASK}" in note
        assert "EUR" in note and f"Operation {op['id']} by" in note
        assert "Oplog chain head after this operation: " in note and "orch note " in note
    entries = redmine.time_entries(int(TASK))
    assert sorted(e["hours"] for e in entries) == sorted(max(round(op["duration"] / 3600, 2), 0.01) for op in ops)
    assert pm.orch("tracker", "status").returncode == 0
    statuses = pm.orch_json("tracker", "status", "--task", TASK, "--all")
    assert [row["status"] for row in statuses] == ["sent"] * 3
    assert not any(secret in json.dumps(statuses) for secret in pm.secrets)


def test_with_redmine_down_operations_succeed_and_notes_arrive_once_it_is_back(pm):
    redmine = pm.redmine
    redmine.stop()
    try:
        result = pm.orch_json("backup", "wp", "--task", DOWN_TASK)
        assert result[0]["status"] == "ok"
        pending = pm.orch("--json", "tracker", "status", "--task", DOWN_TASK, expect=1)
        (row,) = json.loads(pending.stdout)
        assert row["status"] == "pending" and "refused" in row["error"].lower()
        pm.orch("tracker", "retry", "--task", DOWN_TASK, expect=1)  # still down: still pending
    finally:
        redmine.start()
    assert redmine.notes(int(DOWN_TASK)) == []
    pm.orch("tracker", "retry")
    pm.orch("tracker", "retry")  # nothing left: nothing posted twice
    (note,) = redmine.notes(int(DOWN_TASK))
    assert result[0]["backup_id"] in note
    assert len(redmine.time_entries(int(DOWN_TASK))) == 1


# ---------------------------------------------------------------- the chain


def test_the_oplog_chain_verifies_and_each_note_carries_a_link_of_it(pm, worked):
    out = pm.orch("log", "verify").stdout
    assert out.startswith("oplog chain ok: ")
    for note in pm.redmine.notes(int(TASK)):
        link = note.split("Oplog chain head after this operation: ")[1].split()[0]
        seq, digest = link.split(":")
        assert int(seq) <= int(out.split("head ")[1].split(":")[0]) and len(digest) == 64
        pm.orch("log", "verify", "--expect", link)  # the oplog still holds what Redmine has
    wrong = pm.orch("log", "verify", "--expect", f"{seq}:{'0' * 16}", expect=1)
    assert f"link {seq} is " in wrong.stderr and "rows were rewritten since" in wrong.stderr


# ---------------------------------------------------------------- the web pages


@pytest.fixture(scope="module")
def server(pm, worked):
    """`orch serve` on a free loopback port, as a user would start it."""
    proc, url = _serve(pm, "127.0.0.1")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    assert "Traceback" not in proc.log.read_text(), proc.log.read_text()[-3000:]


def _serve(pm, host: str, *extra: str, expect_up: bool = True):
    port = free_port()
    log = pm.root / f"serve-{port}.log"
    with open(log, "w") as out:  # a file, not a pipe nobody reads: a chatty server would block on a full pipe
        proc = subprocess.Popen(
            [*ORCH, "-i", str(pm.inventory), "serve", "--host", host, "--port", str(port), *extra],
            env=pm.env,
            stdout=out,
            stderr=out,
            text=True,
        )
    proc.log = log
    deadline = time.monotonic() + 30
    while expect_up and not port_open("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_chromium_shows_every_operation_step_and_artifact_of_the_task(pm, worked, server, browser, tmp_path):
    page = new_page(browser)
    page.goto(f"{server}/tasks/{TASK}")
    assert page.title().startswith(f"Task {TASK}")
    for summary in page.locator("summary").all():
        summary.click()
    text = page.inner_text("main")
    ops = pm.orch_json("log", "--task", TASK, "--steps")
    for op in ops:
        assert page.locator(f"#op-{op['id']}").is_visible()
        assert op["action"] in page.inner_text(f"#op-{op['id']}")
        for step in op["steps"]:
            assert step["name"] in text, step["name"]
        for artifact in op["artifacts"]:
            assert artifact["ident"] in text, artifact
    assert worked["staging"]["url"] in text and worked["promote"]["revision"] in text
    assert f"{THEME}/style.css" in text and "EUR" in text and "Total time" in text
    assert page.locator(f"a[href='{pm.redmine.url}/issues/{TASK}']").count() == 1
    screenshot(page, _shot(tmp_path, "task-page.png"))
    phone = new_page(browser, viewport=PHONE, javascript=False)  # readable without JavaScript, on a phone
    phone.goto(f"{server}/tasks/{TASK}")
    assert worked["promote"]["revision"] in phone.content()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
    screenshot(phone, _shot(tmp_path, "task-page-phone.png"))


def test_tasks_site_and_fleet_pages_show_what_a_pm_asks(pm, worked, server, browser, tmp_path):
    page = new_page(browser)
    page.goto(f"{server}/tasks?site=wp")
    assert TASK in page.inner_text("main")
    page.fill("input[name=task]", TASK)
    page.click("button[type=submit]")
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and TASK in rows.inner_text()
    screenshot(page, _shot(tmp_path, "tasks.png"))
    page.goto(f"{server}/sites/wp")
    site = page.inner_text("main")
    assert worked["backup"]["backup_id"] in site and worked["promote"]["revision"] in site
    assert "per month" in site and "EUR" in site  # storage read by `orch usage`, priced
    page.goto(f"{server}/fleet")
    assert "wp" in page.inner_text("main")
    assert page.locator("tr.green, tr.amber, tr.red").count() >= 1
    screenshot(page, _shot(tmp_path, "fleet.png"))


def test_no_page_holds_a_secret(pm, worked, server):
    pages = ["/tasks", f"/tasks/{TASK}", f"/tasks/{DOWN_TASK}", "/sites/wp", "/fleet", "/tasks?result=failed"]
    for path in pages:
        status, html = _get(server + path)
        assert status in (200, 404), path
        for secret in pm.secrets:
            assert secret not in html, (path, secret[:3])


def test_off_loopback_every_request_needs_a_login(pm):
    alone, _ = _serve(pm, "0.0.0.0", expect_up=False)
    alone.wait(timeout=60)
    assert alone.returncode == 2 and "needs logins" in alone.log.read_text()  # no accounts: it does not start
    password = "pm-" + os.urandom(6).hex()
    hashed = pm.orch("serve", "--hash-password", stdin=password + "\n").stdout.strip()
    token_out = pm.orch("serve", "--new-token").stdout
    token = token_out.split("shown once): ")[1].split()[0]
    digest = token_out.split("token_sha256: ")[1].split()[0]
    pm.write_inventory(
        pm.inventory_data
        | {
            "serve": {
                "public_url": PUBLIC,
                "accounts": {"olga": {"password_hash": hashed}, "ci": {"token_sha256": digest}},
            }
        },
        {"wp": pm.wp.site},
    )
    proc, url = _serve(pm, "0.0.0.0", "--root-path", "/orch")
    try:
        status, body = _get(f"{url}/tasks/{TASK}")
        assert status == 401 and TASK not in body
        basic = "Basic " + base64.b64encode(f"olga:{password}".encode()).decode()
        assert _get(f"{url}/tasks/{TASK}", {"Authorization": basic})[0] == 200
        assert _get(f"{url}/tasks", {"Authorization": "Basic " + base64.b64encode(b"olga:nope").decode()})[0] == 401
        status, html = _get(f"{url}/tasks", {"Authorization": f"Bearer {token}"})
        assert status == 200 and f'href="/orch/tasks/{TASK}"' in html  # links for the reverse proxy
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        pm.write_inventory(pm.inventory_data, {"wp": pm.wp.site})


def _shot(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        return Path(SHOTS) / name
    return path
