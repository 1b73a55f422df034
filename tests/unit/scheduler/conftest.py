"""Fixtures of the scheduler tests (helpers live in schedkit.py: `conftest` is not a unique module name)."""

from __future__ import annotations

import pytest
from schedkit import FakeActions, Kit

from orchestrator.scheduler import runner


@pytest.fixture
def kit(tmp_path, monkeypatch) -> Kit:
    monkeypatch.delenv("ORCH_STATE_DIR", raising=False)
    return Kit(tmp_path)


@pytest.fixture
def fake_actions(monkeypatch) -> FakeActions:
    fakes = FakeActions()
    for kind in ("backup", "verify", "prune"):
        monkeypatch.setitem(runner.ACTIONS, kind, fakes(kind))
    return fakes


@pytest.fixture
def daemons():
    """Daemons started by a test are stopped at its end, whatever happened."""
    started = []
    yield started
    for daemon in started:
        if daemon.runtime is not None and daemon.scheduler is not None and daemon.scheduler.running:
            daemon.stop_grace = 0
            daemon.stop()
