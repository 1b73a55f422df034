"""The plan -> lock -> re-check -> apply shape (orchestrator/actions/plan.py) on a real SQLite oplog."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from orchestrator.actions.plan import Plan, execute, preflight
from orchestrator.errors import LockHeld, Refused, UsageError
from orchestrator.oplog import Oplog


@pytest.fixture
def oplog(tmp_path):
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as log:
        yield log


@dataclass
class TouchPlan(Plan):
    files: list[str]

    def lines(self) -> list[str]:
        return [f"touch {name}" for name in self.files]

    def params(self) -> dict:
        return {"files": self.files}


def test_execute_rechecks_under_the_lock_and_applies_the_rechecked_plan(oplog):
    seen = {}

    def recheck(plan):
        seen["lock_during_recheck"] = [lock["site"] for lock in oplog.locks()]
        return TouchPlan("touch", plan.site, plan.env, plan.task, plan.files + ["late.txt"])

    def apply(op, plan):
        return plan.files

    done = execute(oplog, TouchPlan("touch", "shop", "production", "14883", ["a.txt"]), apply, recheck=recheck)
    assert done == ["a.txt", "late.txt"]
    assert seen["lock_during_recheck"] == ["shop"]
    op = oplog.operations(task="14883")[0]
    assert op["status"] == "ok" and op["params"] == {"files": ["a.txt"]}
    assert oplog.locks() == []


def test_a_recheck_that_refuses_ends_the_operation_refused_and_applies_nothing(oplog):
    applied = []

    def recheck(plan):
        raise UsageError("backup 20261127-1 was pruned while we waited")

    with pytest.raises(UsageError):
        execute(oplog, TouchPlan("touch", "shop", None, "7", []), lambda op, p: applied.append(p), recheck=recheck)
    op = oplog.operations(task="7")[0]
    assert applied == [] and op["status"] == "refused" and "pruned while we waited" in op["error"]
    assert oplog.locks() == []


def test_a_failure_while_applying_is_failed_not_refused(oplog):
    def apply(op, plan):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        execute(oplog, TouchPlan("touch", "shop", None, "8", []), apply)
    assert oplog.operations(task="8")[0]["status"] == "failed"


def test_a_held_lock_is_a_refusal_not_a_failure(oplog):
    oplog.acquire_lock("shop", task="1", operation_id=None)
    with pytest.raises(LockHeld):
        execute(oplog, TouchPlan("touch", "shop", None, "9", []), lambda op, p: None)
    assert oplog.operations(task="9")[0]["status"] == "refused"


def test_preflight_records_a_planning_refusal_under_the_task(oplog):
    with pytest.raises(Refused):
        with preflight(lambda: oplog, action="restore", task="14883", site="shop", env="production"):
            raise Refused("restoring onto production needs --yes")
    op = oplog.operations(task="14883")[0]
    assert (op["action"], op["status"], op["site"]) == ("restore", "refused", "shop")
    assert "needs --yes" in op["error"]


def test_preflight_records_nothing_for_a_dry_run_or_when_the_oplog_is_broken(oplog):
    with pytest.raises(UsageError):
        with preflight(lambda: oplog, action="prune", task="5", dry_run=True):
            raise UsageError("no such backup")

    def broken():
        raise OSError("oplog unreadable")

    with pytest.raises(UsageError, match="no such backup"):  # the user's error wins over the oplog's
        with preflight(broken, action="prune", task="5"):
            raise UsageError("no such backup")
    assert oplog.operations(task="5") == []
