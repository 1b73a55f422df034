"""Helpers of the scheduler tests: a local inventory (local-connector hosts, SQLite oplog), schedules seconds ahead, and
actions replaced by fakes that record real operations in the real oplog."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from orchestrator.config import load_inventory
from orchestrator.errors import OperationFailed
from orchestrator.oplog import Oplog, locked_operation


def cron_at(*offsets: float) -> str:
    """Given seconds from now (same minute is not required), return a 6-field cron firing at those seconds."""
    moments = [datetime.now() + timedelta(seconds=offset) for offset in offsets]
    first = moments[0]
    if any((m.minute, m.hour) != (first.minute, first.hour) for m in moments):
        return ",".join(str(m.second) for m in moments) + " * * * * *"  # crosses a minute: every minute, fine here
    return f"{','.join(str(m.second) for m in moments)} {first.minute} {first.hour} * * *"


def wait_for(predicate, timeout: float = 10, step: float = 0.1):
    """Poll predicate until it returns something truthy; return it, or fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


class Kit:
    """Writes an inventory under a tmp folder and reads it back."""

    def __init__(self, root: Path):
        self.root = root
        self.base = {
            "oplog": "sqlite:///state/oplog.db",
            "storage": {"local": {"type": "local", "path": "/var/backups/orch", "password": "pw-unit-test"}},
            "hosts": {
                "one": {"connector": "local", "max_parallel": 1},
                "two": {"connector": "local", "max_parallel": 2},
            },
            "defaults": {"backup": {"storage": "local"}},
            "scheduler": {"jitter": 0, "misfire_grace": 60, "max_parallel": 4},
        }

    @property
    def path(self) -> Path:
        return self.root / "inventory.yaml"

    def site(self, name: str, host: str = "one", schedule: str | None = None, **extra) -> dict:
        site = {"name": name, "task": "700", "environments": {"production": {"host": host, "path": f"/srv/{name}"}}}
        if schedule:
            site["backup"] = {"schedule": schedule}
        return site | extra

    def write(self, *sites: dict, **overrides) -> Path:
        folder = self.root / "sites"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.yaml"):
            old.unlink()
        for site in sites:
            (folder / f"{site['name']}.yaml").write_text(yaml.safe_dump(site))
        self.path.write_text(yaml.safe_dump(self.base | overrides))
        return self.path

    def load(self):
        return load_inventory(self.path, partial=True)

    def oplog(self) -> Oplog:
        return Oplog.from_inventory(self.load())


class FakeActions:
    """Stand-ins for backup/verify/prune: a real locked operation that lasts `duration` and fails for the
    sites in `failing` (until removed from it)."""

    def __init__(self, duration: float = 0.3):
        self.duration = duration
        self.failing: set[str] = set()
        self.release = None  # a threading.Event to wait on instead of sleeping

    def __call__(self, kind):
        def action(oplog, t, *, task, catch_up):
            with locked_operation(
                oplog, site=t.site.name, env=t.env.name, task=task, action=kind, catch_up=catch_up
            ) as op:
                if self.release is not None:
                    self.release.wait(30)
                else:
                    time.sleep(self.duration)
                if t.site.name in self.failing:
                    raise OperationFailed(f"{t.site.name}: database dump failed (exit 2): Access denied")
                if kind == "backup":
                    op.artifact("backup", f"b-{op.id}", size=10, details={"files": {"size": 100}})
            return {}

        return action
