"""The web pages over a real oplog (SQLite), through Starlette's test client: what a PM reads, search,
security headers, logins, the reverse-proxy prefix, and no secret on any page."""

from __future__ import annotations

import base64
import textwrap
import time

import pytest
from starlette.testclient import TestClient

from orchestrator.config import load_inventory
from orchestrator.masking import register_secret
from orchestrator.oplog import Oplog
from orchestrator.web.app import create_app
from orchestrator.web.security import hash_password, new_token

SECRET = register_secret("db-pw-5e1f0c9a77")


@pytest.fixture
def world(tmp_path):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        name: shop
        task: 10001
        billing: {{hourly_rate: 120}}
        environments:
          production: {{host: here, path: {tmp_path}/www, url: "https://shop.test",
                        database: {{engine: mysql, name: shop, user: shop, password: {SECRET}}}}}
        """)
    )
    (tmp_path / "inventory.yaml").write_text(
        textwrap.dedent("""\
        oplog: sqlite:///oplog.db
        hosts: {here: {connector: local}}
        storage: {local: {type: local, path: /nonexistent/orch-test, password: restic-pw-x}}
        defaults: {backup: {storage: local}}
        billing: {currency: EUR, hourly_rate: 60, storage_gb_month: 0.05}
        tracker: {type: redmine, url: "https://redmine.test", api_key: key-9f8e7d}
        """)
    )
    inventory = load_inventory(tmp_path / "inventory.yaml")
    oplog = Oplog(inventory.oplog_url)
    with oplog.start(task="14883", site="shop", env="production", action="backup") as op:
        with op.step("dump database") as step:
            step.output(f"mysqldump -p{SECRET} ok")
        op.artifact("backup", "20261127-113837-e011", size=2048, details={"files": {"size": 1000}, "db": {"size": 500}})
    with oplog.start(task="14883", site="shop", env="production", action="promote") as op:
        op.artifact("pre-promotion-backup", "20261127-120000-aaaa", details={"db": "3fa2c1", "files": "9bd0e4"})
        op.artifact("plan", "2 files", size=10, details={"added": ["a.php"], "changed": ["style.css"]})
        op.artifact("rollback", "r3", details={"reason": "health check: 500 on /"})
        op.finish("rolled_back", error="health check: 500 on /")
    with oplog.start(task="15000", site="shop", env="production", action="backup") as op:
        op.finish("failed", error="disk full")
    yield inventory, oplog
    oplog.close()


def client(world, **kwargs) -> TestClient:
    inventory, oplog = world
    return TestClient(create_app(oplog, inventory, **kwargs), root_path=kwargs.pop("root_path", ""))


def test_the_task_page_shows_every_operation_step_artifact_time_cost_and_tracker(world):
    page = client(world).get("/tasks/14883")
    assert page.status_code == 200
    html = page.text
    for text in (
        "Task 14883",
        "backup",
        "promote",
        "dump database",
        "20261127-113837-e011",
        "a.php",
        "style.css",
        "reason: health check: 500 on /",
        "rolled_back",
        "https://redmine.test/issues/14883",
        "Oplog chain head",
        "EUR",
    ):
        assert text in html, text
    assert SECRET not in html and "***" in html


def test_the_tasks_list_searches_by_number_site_person_dates_and_result(world):
    web = client(world)
    assert "14883" in web.get("/tasks").text and "15000" in web.get("/tasks").text
    failed = web.get("/tasks", params={"result": "failed"}).text
    assert "/tasks/15000" in failed and "/tasks/14883" not in failed
    assert "/tasks/15000" not in web.get("/tasks", params={"task": "148"}).text
    assert "No task matches" in web.get("/tasks", params={"person": "nobody-like-this"}).text
    assert "No task matches" in web.get("/tasks", params={"since": "2999-01-01"}).text
    assert "/tasks/14883" in web.get("/tasks", params={"until": "2999-01-01", "site": "shop"}).text
    assert "not a date" in web.get("/tasks", params={"since": "yesterday"}).text


def test_site_and_fleet_pages_render_and_unknown_things_are_404(world):
    web = client(world)
    site = web.get("/sites/shop").text
    assert "20261127-113837-e011" in site and "Environments" in site and "https://shop.test" in site
    assert "20261127-120000-aaaa" in site
    assert "restic-pw-x" not in site and SECRET not in site
    fleet = web.get("/fleet").text
    assert "shop" in fleet and "red" in fleet
    assert web.get("/tasks/99999").status_code == 404
    assert web.get("/sites/nope").status_code == 404


def test_every_answer_carries_security_headers(world):
    answer = client(world).get("/tasks")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_behind_a_proxy_links_carry_the_root_path(world):
    inventory, oplog = world
    web = TestClient(create_app(oplog, inventory), root_path="/orch")
    html = web.get("/tasks").text
    assert 'href="/orch/tasks/14883"' in html and 'href="/orch/static/orch.css"' in html


def test_with_accounts_a_login_is_required(world):
    token, digest = new_token()
    accounts = {"olga": {"password_hash": hash_password("correct horse")}, "ci": {"token_sha256": digest}}
    web = client(world, accounts=accounts)
    refused = web.get("/tasks/14883")
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    assert "14883" not in refused.text
    assert web.get("/tasks", auth=("olga", "wrong")).status_code == 401
    assert web.get("/tasks", auth=("olga", "correct horse")).status_code == 200
    assert web.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert web.get("/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    bad = base64.b64encode(b"\xff\xfe").decode()
    assert web.get("/tasks", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_an_operation_run_inside_another_is_shown_as_its_part_and_counted_once(world):
    inventory, oplog = world
    outer = oplog.start(task="16000", site="shop", env="production", action="promote")
    with oplog.start(task="16000", site="shop", env="production", action="backup"):
        pass
    outer.finish("ok")
    ops = oplog.operations(task="16000", oldest_first=True)
    html = client(world).get("/tasks/16000").text
    assert f'part of <a href="#op-{outer.id}">operation {outer.id}</a>' in html
    from orchestrator.billing import total_seconds

    assert total_seconds(ops) == ops[0]["duration"]


def test_the_tasks_list_counts_an_operation_inside_another_once(world):
    inventory, oplog = world
    outer = oplog.start(task="16001", site="shop", env="production", action="promote")
    with oplog.start(task="16001", site="shop", env="production", action="backup"):
        time.sleep(0.05)
    time.sleep(0.05)
    outer.finish("ok")
    from orchestrator.web.queries import TaskFilter, tasks

    (row,) = tasks(oplog.engine, TaskFilter(number="16001"))[0]
    assert row["seconds"] == oplog.operation(outer.id)["duration"]


def test_pages_read_without_taking_the_write_lock(world, tmp_path):
    import sqlalchemy as sa

    from orchestrator.web.reader import read_only

    inventory, oplog = world
    reader = read_only(oplog)
    web = TestClient(create_app(reader, inventory))
    with oplog.engine.begin() as conn:  # a writer holds the lock (BEGIN IMMEDIATE) for the whole page view
        conn.execute(sa.text("UPDATE locks SET task = task"))
        started = time.monotonic()
        assert web.get("/tasks/14883").status_code == 200
        assert time.monotonic() - started < 5
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        with reader.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM operations"))
    reader.engine.dispose()
