"""Benchmark: how long the `orch` CLI takes to answer, start to exit: `orch --help`, and `orch log --task N` over an
oplog of 1,000,000 steps.

What is measured
    The wall time of the whole process (fork, exec, imports, the inventory file, the oplog query, printing, exit),
    as a user waits for it, for `RUNS` runs of each command, interleaved round by round after a warm-up round
    (so the page cache and the machine's load are shared alike); the median and the 90th percentile; and the
    median CPU time (user + system) of the process, which a busy machine inflates far less than the wall time.
    The oplog is a SQLite file built as bench/serve.py builds it: 100,000 operations of 10 steps (1,000,000 steps,
    ~300 bytes of output each) and 2 artifacts each, over 20,000 tasks; task 14883 has 25 operations.

Baselines, in the same run
    * floor: `python -c pass`, the interpreter's own start-up: no CLI can beat it;
    * eager: the same command with every command module imported first, as `orch` did before its commands
      loaded lazily (paramiko, boto3, SQLAlchemy, APScheduler... for any command).
    Both variants run the same launcher (`python -c "... main()"`), so the difference is the imports alone.

Run: .venv/bin/python bench/cli.py [--runs 20] [--steps 1000000] [--workdir DIR (kept, reused)]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

TARGETS = {"--help": 0.150, "log --task 14883": 0.300}  # seconds, median
LAZY = "from orchestrator.cli import main; main()"
EAGER = (
    "from importlib import import_module; from orchestrator.cli import COMMANDS, main; "
    "[import_module(f'orchestrator.cli.{module}') for module, _ in COMMANDS.values()]; main()"
)


def prepare(workdir: Path, steps: int) -> Path:
    """Given a folder, make (or reuse) an oplog of `steps` steps and an inventory naming it; return the
    inventory's path."""
    from serve import fill

    from orchestrator.oplog import Oplog

    oplog_file = workdir / "oplog.db"
    inventory = workdir / "inventory.yaml"
    if not oplog_file.exists():
        started = time.monotonic()
        with Oplog(f"sqlite:///{oplog_file}") as oplog:
            fill(oplog, steps)
        print(f"built an oplog of {steps:,} steps in {time.monotonic() - started:.0f} s", file=sys.stderr)
    (workdir / "sites").mkdir(exist_ok=True)
    inventory.write_text(
        f"oplog: sqlite:///{oplog_file}\nstorage:\n  local: {{type: local, path: {workdir}/repo, "
        "password: bench-password}\nhosts:\n  here: {connector: local}\n"
    )
    return inventory


def timed(argv: list[str]) -> tuple[float, float]:
    """Given a command, run it (output discarded) and return its wall time and its CPU time (user + system) in
    seconds; fail if it fails. On a busy machine the wall time waits for a core; the CPU time is close to what
    the wall time would be on an idle one (start-up is CPU-bound: the files are in the page cache)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(commands: dict, runs: int) -> dict:
    """Given named commands, run them round by round (one warm-up round first); return each one's times."""
    for argv in commands.values():
        timed(argv)
    times: dict = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(timed(argv))
    return times  # (wall, cpu) pairs


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, help="keep the oplog here and reuse it next time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        inventory = prepare(workdir, args.steps)
        python = sys.executable
        commands = {("floor", "python -c pass"): [python, "-c", "pass"]}
        for label, argv in (
            ("--help", ["--help"]),
            ("log --task 14883", ["-i", str(inventory), "log", "--task", "14883"]),
        ):
            commands[("eager", label)] = [python, "-c", EAGER, *argv]
            commands[("lazy", label)] = [python, "-c", LAZY, *argv]
        times = measure(commands, args.runs)
    report(times)


def report(times: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
    """Given the (wall, cpu) times of each (variant, command), print medians, 90th percentiles, ratios, and
    whether the targets are met (by the wall time; by the CPU time when the machine was too busy to tell)."""
    wall = {key: [w for w, _ in values] for key, values in times.items()}
    cpu = {key: [c for _, c in values] for key, values in times.items()}
    floor = statistics.median(wall[("floor", "python -c pass")])
    print(f"{'variant':<7} {'command':<18} {'median':>8} {'p90':>8} {'x floor':>8} {'vs eager':>9} {'cpu':>8}")
    for (variant, label), values in wall.items():
        median = statistics.median(values)
        eager = statistics.median(wall[("eager", label)]) if variant != "floor" else None
        print(
            f"{variant:<7} {label:<18} {median * 1000:>6.0f}ms {p90(values) * 1000:>6.0f}ms {median / floor:>7.1f}x"
            + (f" {median / eager:>8.2f}x" if eager else " " * 9)
            + f" {statistics.median(cpu[(variant, label)]) * 1000:>6.0f}ms"
        )
    for label, target in TARGETS.items():
        median, cpu_median = statistics.median(wall[("lazy", label)]), statistics.median(cpu[("lazy", label)])
        print(
            f"orch {label}: {median * 1000:.0f} ms wall ({'met' if median <= target else 'NOT met'}), "
            f"{cpu_median * 1000:.0f} ms CPU ({'met' if cpu_median <= target else 'NOT met'}); "
            f"target {target * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
