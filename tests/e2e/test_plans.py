"""One dry-run style for every verb, and refusals recorded under the task: verify and export are planned first
(`--dry-run` prints the plan and changes nothing), and a plan that stops is a `refused` operation of the task."""

from __future__ import annotations

import json

import pytest
from fleet import Fleet

pytestmark = pytest.mark.e2e

TASK = "14910"


@pytest.fixture(scope="module")
def plans(fleet, tmp_path_factory):
    """The fleet's shop under another name: its own repository, whatever other tests did to shop's."""
    site = json.loads(json.dumps(fleet.sites["shop"])) | {"name": "plans"}
    plans = Fleet(tmp_path_factory.mktemp("plans"), fleet.env, fleet.hosts)
    plans.write_inventory(fleet.base, {"plans": site})
    plans.backup_id = plans.orch_json("backup", "plans", "--task", TASK)[0]["backup_id"]
    return plans


@pytest.mark.parametrize(
    "verb, header, says",
    [
        (("verify", "plans"), "verify plans/production", ["scratch database", "restic check --read-data-subset="]),
        (
            ("export", "plans", "--expires", "2"),
            "export plans/production",
            [".tar.zst to s3://agency-backups/", "valid 2 day(s)"],
        ),
    ],
)
def test_dry_run_prints_the_plan_in_the_one_style_and_records_nothing(plans, verb, header, says):
    out = plans.orch(*verb, "--backup", plans.backup_id, "--task", "14911", "--dry-run")
    assert out.stdout.startswith(f"{header} (task 14911):\n") and plans.backup_id in out.stdout
    assert all(text in out.stdout for text in says), out.stdout
    assert "dry run: nothing changed" in out.stderr
    plan = json.loads(plans.orch("--json", *verb, "--backup", plans.backup_id, "--task", "14911", "--dry-run").stdout)
    assert plan["dry_run"] and plan["backup_id"] == plans.backup_id and plan["plan"]
    assert plans.orch_json("log", "--task", "14911") == []


@pytest.mark.parametrize(
    "verb", [("verify", "plans"), ("export", "plans"), ("restore", "plans", "--to", "production", "--yes")]
)
def test_a_plan_that_stops_is_a_refused_operation_of_the_task(plans, verb):
    proc = plans.orch(*verb, "--backup", "19990101-000000-dead", "--task", "14912", expect=2)
    assert "no backup '19990101-000000-dead'" in proc.stderr
    op = plans.orch_json("log", "--task", "14912", "--action", verb[0])[0]
    assert op["status"] == "refused" and "19990101-000000-dead" in op["error"] and op["site"] == "plans"


def test_verify_drills_the_planned_backup(plans):
    report = plans.orch_json("verify", "plans", "--backup", plans.backup_id, "--task", TASK)
    assert report["status"] == "ok" and report["backup_id"] == plans.backup_id
    op = plans.orch_json("log", "--task", TASK, "--action", "verify")[0]
    assert op["status"] == "ok" and op["params"]["backup_id"] == plans.backup_id
