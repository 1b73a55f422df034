"""Benchmark: `orch restore` of a site (files + database) against the same restic commands typed by hand.

What is compared
    The site of bench/backup.py (a WordPress-like docroot and a MariaDB database, same generator, same
    testbed) is backed up once with `orch backup`. Then its backup is restored into an empty environment
    `copy` of the same site (a fresh docroot beside the production one, an empty database `wp_copy`):

    * orch:    `orch restore wp --backup latest --from-env production --to copy`, the real CLI (plan, lock,
               re-check under the lock, `restic restore` into a scratch folder renamed into the missing
               docroot's place, `restic dump | mariadb` beside it, row counts, oplog).
    * by hand: on the host, `restic restore SNAPSHOT --target DOCROOT` then `restic dump SNAPSHOT
               /database.sql | mariadb wp_copy`: what a person restoring the same backup would type.
    * by hand, both at once: the same two commands started together (`&`, then `wait`), as orch runs them:
               what orch's own overhead is measured against.

    Each way runs --rounds times, alternating, from the same empty state (docroot removed, database dropped
    and created again); the best time of each is compared (goal: orch <= 1.2x by hand, one after the other).
    orch's steps (from the oplog) say where its time goes.

Usage
    .venv/bin/python bench/restore.py [--size-mb 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml
from backup import (
    DB_NAME,
    DB_USER,
    MB,
    ORCH,
    ORCH_PREFIX,
    SITE,
    Bench,
    Text,
    build_site,
    load,
    machine,
    raw_env_file,
    start_testbed,
    step,
)

COPY_DB = f"{DB_NAME}_copy"


def add_copy_env(b: Bench) -> Path:
    """Give the site an environment `copy`: an empty docroot beside production's and the database wp_copy."""
    site_file = b.inventory.parent / "sites" / f"{SITE}.yaml"
    site = yaml.safe_load(site_file.read_text())
    prod = site["environments"]["production"]
    copy = b.docroot.parent / f"{b.docroot.name}-copy"
    site["environments"]["copy"] = prod | {
        "path": str(copy),
        "url": "https://copy.wp.example",
        "database": prod["database"] | {"name": COPY_DB},
    }
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))
    return copy


def empty_copy(b: Bench, copy: Path) -> None:
    """The state both ways start from: no docroot, an empty database."""
    b.host.run(f"rm -rf {copy}")
    b.mariadb.sql(f"DROP DATABASE IF EXISTS {COPY_DB}")
    b.mariadb.create_database(COPY_DB, DB_USER, b.db_password)


def orch(b: Bench, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ORCH, "-i", str(b.inventory), *args], capture_output=True, text=True, env=b.env)
    if proc.returncode:
        raise SystemExit(
            f"orch {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def orch_restore(b: Bench) -> float:
    start = time.monotonic()
    orch(
        b,
        "--json",
        "restore",
        SITE,
        "--backup",
        "latest",
        "--from-env",
        "production",
        "--to",
        "copy",
        "--task",
        "10001",
    )
    return time.monotonic() - start


def hand_restore(b: Bench, env: Path, snapshots: dict, copy: Path, together: bool = False) -> float:
    m = b.mariadb
    files = f"restic restore -q {snapshots['files']} --target {copy}"
    db = (
        f"restic dump -q {snapshots['db']} /database.sql | mariadb --host={m.host} --port={m.port} --protocol=TCP "
        f"--user={DB_USER} {COPY_DB}"
    )
    both = f"{{ {files} & pid=$!; {db}; db=$?; wait $pid && [ $db = 0 ]; }}" if together else f"{files} && {db}"
    start = time.monotonic()
    b.host.run(f". {env} && set -o pipefail && {both}")
    return time.monotonic() - start


def restore_steps(b: Bench) -> list[dict[str, float]]:
    """Each orch restore's step durations (oplog), oldest first, with the whole operation's."""
    ops = json.loads(orch(b, "--json", "log", "--steps", "--action", "restore").stdout)
    return [
        {s["name"]: s["duration"] or 0 for s in op["steps"]} | {"whole operation (oplog)": op["duration"]}
        for op in sorted(ops, key=lambda op: op["id"])
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="docroot size in MB (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="restores of each kind, alternating (default 2)")
    args = parser.parse_args()
    rng = random.Random(20261127)
    text = Text(rng)
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-restore-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        b = start_testbed(stack, tmp)
        build_site(stack, b, args.size_mb, rng, text)
        copy = add_copy_env(b)
        stack.callback(shutil.rmtree, copy, ignore_errors=True)
        env = raw_env_file(b, f"{ORCH_PREFIX}/{SITE}", init=False)  # by hand: orch's own repository
        stack.callback(env.unlink, missing_ok=True)
        step("orch backup (the backup both restore)")
        summary = json.loads(orch(b, "--json", "backup", SITE, "--task", "10001").stdout)[0]["summary"]

        load_before, times = load(), {"orch": [], "by hand": [], "by hand, both at once": []}
        for n in range(args.rounds):
            step(f"round {n + 1}: orch restore, by hand, by hand both at once")
            empty_copy(b, copy)
            times["orch"].append(orch_restore(b))
            empty_copy(b, copy)
            times["by hand"].append(hand_restore(b, env, summary["snapshots"], copy))
            empty_copy(b, copy)
            times["by hand, both at once"].append(hand_restore(b, env, summary["snapshots"], copy, together=True))
        best = {name: min(values) for name, values in times.items()}
        print(
            f"\nMachine: {machine()}; 1-min load average {load_before} before the restores, {load()} after\n"
            f"Command: .venv/bin/python bench/restore.py --size-mb {args.size_mb} --rounds {args.rounds}\n"
            f"Site: docroot {summary['files']['size'] / MB:,.1f} MB in {summary['files']['count']:,} files, "
            f"dump {summary['db']['size'] / MB:,.1f} MB\n"
        )
        ratio = best["orch"] / best["by hand"]
        print("| restore (files + database) | best | all rounds |\n|---|---:|---|")
        for name, values in times.items():
            print(f"| {name} | {best[name]:.1f} s | {', '.join(f'{v:.1f}' for v in values)} |")
        print(f"| orch / by hand | {ratio:.2f} (goal <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'}) | |")
        print(f"| orch / by hand, both at once | {best['orch'] / best['by hand, both at once']:.2f} | |\n")
        steps = restore_steps(b)
        print("| orch step (s) | " + " | ".join(f"round {i + 1}" for i in range(len(steps))) + " |")
        print("|---|" + "---:|" * len(steps))
        for name in steps[0]:
            print(f"| {name} | " + " | ".join(f"{run.get(name, 0):.1f}" for run in steps) + " |")


if __name__ == "__main__":
    main()
