"""Benchmark: server time of `orch serve`'s pages over an oplog of 1,000,000 steps, on SQLite and PostgreSQL.

What is measured
    The oplog holds 100,000 operations of 10 steps each (1,000,000 steps, each with ~300 bytes of output) and
    2 artifacts each, spread over 20,000 tasks and 50 sites, as written by orch's own tables and indexes (the
    rows are bulk-inserted for speed; the chain's head row is set, as pages read it). The measured task has 25
    operations (250 steps, 50 artifacts): a busy support task. Each page is requested 30 times in-process
    through Starlette's test client (ASGI app, Jinja2 rendering, the oplog queries; no network), after 3
    warm-up requests; the figure is the median and the 95th percentile of the request's wall time.
    Baseline, in the same run: the same task's data read by `Oplog.operations(task=..., with_details=True)`
    alone (the queries without the page), so the ratio says what rendering and the framework add.

Run: .venv/bin/python bench/serve.py [--steps 1000000] [--only sqlite|postgresql]
(PostgreSQL: a private cluster started for the run, as the tests do; needs root and Debian's postgresql.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sqlalchemy as sa  # noqa: E402

from orchestrator.oplog import Oplog, schema  # noqa: E402

STEPS_PER_OP, ARTIFACTS_PER_OP, TASKS, SITES = 10, 2, 20_000, 50
TASK, TASK_OPS = "14883", 25
RUNS, WARMUP = 30, 3
CHUNK = 5_000


def fill(oplog: Oplog, steps: int) -> None:
    """Bulk-insert `steps` steps (in operations of 10) with their operations and artifacts."""
    ops = steps // STEPS_PER_OP
    start = datetime(2026, 1, 1, tzinfo=UTC)
    output = "restic backup: processed 1234 files, 56.7 MiB in 0:03; added to the repository: 1.2 MiB\n" * 3
    op_rows, step_rows, art_rows = [], [], []
    with oplog.engine.begin() as conn:
        for n in range(1, ops + 1):
            task = TASK if n % (ops // TASK_OPS) == 0 else str(20_000 + n % TASKS)
            began = start + timedelta(minutes=5 * n)
            op_rows.append(
                {
                    "id": n,
                    "task": task,
                    "site": f"site{n % SITES}",
                    "env": "production",
                    "action": "backup",
                    "actor": "olga@admin",
                    "host": "admin",
                    "pid": 1000,
                    "params": {"backup_id": f"b{n}"},
                    "started_at": began,
                    "finished_at": began + timedelta(seconds=40),
                    "duration": 40.0,
                    "status": "ok",
                    "error": None,
                    "catch_up": False,
                }
            )
            for s in range(STEPS_PER_OP):
                step_rows.append(
                    {
                        "operation_id": n,
                        "seq": s + 1,
                        "name": f"step {s + 1}",
                        "started_at": began + timedelta(seconds=4 * s),
                        "finished_at": began + timedelta(seconds=4 * s + 4),
                        "status": "ok",
                        "output": output,
                    }
                )
            for a in range(ARTIFACTS_PER_OP):
                art_rows.append(
                    {
                        "operation_id": n,
                        "kind": "backup" if a == 0 else "url-replacements",
                        "ident": f"2026-{n:08d}-{a}",
                        "size": 1_000_000 + n,
                        "details": {"files": {"size": 123456}, "db": {"size": 7890}},
                        "created_at": began + timedelta(seconds=40),
                    }
                )
            if len(step_rows) >= CHUNK:
                _flush(conn, op_rows, step_rows, art_rows)
        _flush(conn, op_rows, step_rows, art_rows)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT setval('operations_id_seq', (SELECT max(id) FROM operations))"))
    with oplog.engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
        conn.commit()


def _flush(conn, op_rows, step_rows, art_rows) -> None:
    for table, rows in ((schema.operations, op_rows), (schema.steps, step_rows), (schema.artifacts, art_rows)):
        if rows:
            conn.execute(table.insert(), rows)
            rows.clear()


def measure(fn) -> tuple[float, float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def run(label: str, url: str, steps: int) -> None:
    from starlette.testclient import TestClient

    from orchestrator.web.app import create_app
    from orchestrator.web.reader import read_only

    writer = Oplog(url)
    began = time.perf_counter()
    fill(writer, steps)
    print(f"{label}: filled {steps:,} steps in {time.perf_counter() - began:.0f} s")
    oplog = read_only(writer)  # as `orch serve` reads it
    inventory = _inventory()
    web = TestClient(create_app(oplog, inventory))

    def page(path: str):
        def get():
            answer = web.get(path)
            assert answer.status_code == 200, (path, answer.status_code)

        return get

    base = measure(lambda: oplog.operations(task=TASK, oldest_first=True, with_details=True))
    print(f"  {'what':<38} {'median ms':>10} {'p95 ms':>8} {'x baseline':>11}")
    print(f"  {'baseline: the task read by Oplog':<38} {base[0]:>10.1f} {base[1]:>8.1f} {1:>11.2f}")
    for name, path in (
        ("task page /tasks/14883", f"/tasks/{TASK}"),
        ("tasks list /tasks", "/tasks"),
        ("tasks search ?task=148&result=ok", "/tasks?task=148&result=ok"),
        ("tasks of a site ?site=site7", "/tasks?site=site7"),
    ):
        median, p95 = measure(page(path))
        flag = "  (goal < 200 ms)" if path == f"/tasks/{TASK}" else ""
        print(f"  {name:<38} {median:>10.1f} {p95:>8.1f} {median / base[0]:>11.2f}{flag}")
    oplog.close()
    writer.close()


def _inventory():
    from orchestrator.config.model import Inventory, SchedulerOptions

    return Inventory(
        path=Path("inventory.yaml"),
        oplog_url="",
        storage={},
        hosts={},
        defaults={},
        notify=[],
        scheduler=SchedulerOptions(1, 0, 0),
        sites={},
        billing={"currency": "EUR", "hourly_rate": 60},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    print(f"orch serve bench: {args.steps:,} steps, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="orch-bench-serve-") as tmp:
        if args.only in (None, "sqlite"):
            run("SQLite", f"sqlite:///{tmp}/oplog.db", args.steps)
        if args.only in (None, "postgresql"):
            from testbed.postgres import start_postgres

            pg = start_postgres(Path(tmp) / "pg")
            try:
                pg.sql("CREATE DATABASE bench")
                run("PostgreSQL", pg.url("bench"), args.steps)
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
