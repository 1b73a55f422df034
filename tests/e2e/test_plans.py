"""One dry-run style for every verb, and refusals recorded under the task: verify and export are planned first
(`--dry-run` prints the plan and changes nothing), and a plan that stops is a `refused` operation of the task."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e

TASK = "14910"


@pytest.fixture(scope="module")
def shop(fleet, mariadb):
    fleet.mariadb = mariadb
    fleet.backup_id = fleet.orch_json("backup", "shop", "--task", TASK)[0]["backup_id"]
    return fleet


@pytest.mark.parametrize("verb, header, says", [
    (("verify", "shop"), "verify shop/production", ["scratch database", "restic check --read-data-subset="]),
    (("export", "shop", "--expires", "2"), "export shop/production", [".tar.zst to s3://agency-backups/",
                                                                     "valid 2 day(s)"]),
])
def test_dry_run_prints_the_plan_in_the_one_style_and_records_nothing(shop, verb, header, says):
    out = shop.orch(*verb, "--backup", shop.backup_id, "--task", "14911", "--dry-run")
    assert out.stdout.startswith(f"{header} (task 14911):\n") and shop.backup_id in out.stdout
    assert all(text in out.stdout for text in says), out.stdout
    assert "dry run: nothing changed" in out.stderr
    plan = json.loads(shop.orch("--json", *verb, "--backup", shop.backup_id, "--task", "14911", "--dry-run").stdout)
    assert plan["dry_run"] and plan["backup_id"] == shop.backup_id and plan["plan"]
    assert shop.orch_json("log", "--task", "14911") == []


@pytest.mark.parametrize("verb", [("verify", "shop"), ("export", "shop"),
                                  ("restore", "shop", "--to", "production", "--yes")])
def test_a_plan_that_stops_is_a_refused_operation_of_the_task(shop, verb):
    proc = shop.orch(*verb, "--backup", "19990101-000000-dead", "--task", "14912", expect=2)
    assert "no backup '19990101-000000-dead'" in proc.stderr
    op = shop.orch_json("log", "--task", "14912", "--action", verb[0])[0]
    assert op["status"] == "refused" and "19990101-000000-dead" in op["error"] and op["site"] == "shop"


def test_verify_drills_the_planned_backup(shop):
    report = shop.orch_json("verify", "shop", "--backup", shop.backup_id, "--task", TASK)
    assert report["status"] == "ok" and report["backup_id"] == shop.backup_id
    op = shop.orch_json("log", "--task", TASK, "--action", "verify")[0]
    assert op["status"] == "ok" and op["params"]["backup_id"] == shop.backup_id
