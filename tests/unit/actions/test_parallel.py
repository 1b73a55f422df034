"""run_backups' dispatch: per-host and global limits both hold, and a fleet listed host by host still keeps
every global slot busy (the threads never queue behind one host while others are idle)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from orchestrator.actions import backup
from orchestrator.actions.parallel import run_limited


class Meter:
    """Counts how many calls run at once, overall and per host."""

    def __init__(self):
        self.lock, self.now, self.per_host = threading.Lock(), 0, {}
        self.peak, self.host_peak, self.first = 0, {}, []

    def __call__(self, host: str, seconds: float = 0.05) -> None:
        with self.lock:
            self.now += 1
            self.per_host[host] = self.per_host.get(host, 0) + 1
            self.peak = max(self.peak, self.now)
            self.host_peak[host] = max(self.host_peak.get(host, 0), self.per_host[host])
            self.first.append(host)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
            self.per_host[host] -= 1


def fleet(hosts: int, sites: int, max_parallel: int, global_limit: int):
    """An inventory-like object and targets listed host by host, as `--all` lists them."""
    host_objs = {f"h{n}": SimpleNamespace(name=f"h{n}", max_parallel=max_parallel) for n in range(hosts)}
    targets = [
        SimpleNamespace(
            site=SimpleNamespace(name=f"h{n}-s{i}", task="1"),
            env=SimpleNamespace(name="production"),
            host=host_objs[f"h{n}"],
            label=f"h{n}-s{i}/production",
        )
        for n in range(hosts)
        for i in range(sites)
    ]
    inventory = SimpleNamespace(hosts=host_objs, scheduler=SimpleNamespace(max_parallel=global_limit))
    return inventory, targets


def test_a_fleet_listed_host_by_host_fills_every_global_slot_within_each_hosts_limit(monkeypatch):
    meter = Meter()

    def fake_backup(oplog, t, **kwargs):
        meter(t.host.name)
        return {"backup_id": f"b-{t.site.name}"}

    monkeypatch.setattr(backup, "backup_target", fake_backup)
    inventory, targets = fleet(hosts=4, sites=6, max_parallel=2, global_limit=6)
    done = []
    results = backup.run_backups(inventory, None, targets, task="1", on_done=done.append)
    assert [r["site"] for r in results] == [t.site.name for t in targets]  # input order
    assert all(r["status"] == "ok" for r in results) and len(done) == 24
    assert meter.peak == 6  # the global limit, reached (not 2: one host's)
    assert max(meter.host_peak.values()) == 2  # never more than a host's max_parallel
    assert sorted(meter.first[:6]) == ["h0", "h0", "h1", "h1", "h2", "h3"]  # hosts take turns from the start


def test_run_limited_keeps_order_respects_a_lone_limit_and_reraises_after_the_started_calls():
    meter = Meter()
    items = [("a", 1), ("a", 2), ("b", 3), ("c", 4)]
    assert run_limited(
        items,
        lambda item: meter(item[0], 0.01) or item[1] * 10,
        key=lambda item: item[0],
        limits={"a": 2, "b": 1},
        limit=1,
    ) == [10, 20, 30, 40]
    assert meter.peak == 1
    ended = []

    def boom(item):
        time.sleep(0.02 if item == 1 else 0)
        ended.append(item)
        if item == 2:
            raise RuntimeError("bug")
        return item

    with pytest.raises(RuntimeError, match="bug"):
        run_limited([1, 2, 3, 4], boom, key=lambda item: item, limits={}, limit=2)
    assert 1 in ended  # the call started before the failure was waited for
    assert run_limited([], boom, key=lambda item: item, limits={}, limit=3) == []
