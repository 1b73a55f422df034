"""Benchmark: a night of a whole fleet, `orch backup --all` over many hosts, against the same sites one by one.

What is measured
    HOSTS sshd hosts on loopback addresses (127.0.9.x) carry SITES small sites each: a docroot of FILES files
    (text and binary, a few KB each) plus a SQLite database of a few hundred rows beside it. Each host has
    `max_parallel` 2, the fleet a global limit (`scheduler.max_parallel`, --global). The bench reports:

    * parallel: `orch backup --all` over every site (HOSTS x SITES), the real CLI: total wall time, and the
      orchestrator's own cost: peak RSS and CPU (user + system) of the `orch` process tree on this side,
      from wait4's rusage of the CLI process (threads and any reaped children included). The remote side
      (sshd, restic, the dump) runs under the hosts' sshd and is not counted: that work lands on the hosts.
    * sequential: SAMPLE more sites, built the same way and spread over the same hosts, backed up one by one
      by `orch backup S1 S2 ...` with `scheduler.max_parallel` 1 (same code path, one site at a time). A
      sequential night of the whole fleet is EXTRAPOLATED: per-site time of the sample x HOSTS x SITES. Running
      1,000 sites one by one would take most of an hour; the per-site time of a sample of 20 is steady.
    * `orch scheduler plan` for the same inventory (every site scheduled nightly, every host with a nightly
      window), its wall time, and whether the windows hold (per host, and the fleet under the global limit).

    Night 0 creates the repositories of every site, fleet and sample together in one parallel run (`restic
    init`, the first backup): timed and shown, not compared. Nights 1.. (--nights) are what runs every night,
    a backup of each (unchanged) site into its existing repository, measured on both sides.

Why it is fair
    Same machine, same hosts, same kind of site (identical generator, sizes and database), same repository
    location (a local restic repository per site on its host: the S3 server of the testbed would be one more
    process on these 2 cores, shared by both sides alike), same oplog database, the same CLI and code path;
    the only difference is the concurrency. The sample's repositories are created in the same night-0 run as the
    fleet's (restic calibrates each repository's key derivation to the CPU free at `init`, so repositories
    created one by one on an idle machine would cost more to open every night after).
    CLI start-up is paid once per run on both sides (the sample is one CLI run).
    The machine has 2 cores: restic's key derivation (scrypt, ~0.5 s of CPU per restic start, calibrated
    when the repository is created) and the dump run on the same 2 cores as the orchestrator, so the ratio is
    bounded by how much of a backup is waiting (ssh round trips, process starts, fsync) rather than CPU.

Setup
    Runs as root (like the testbed). Starts HOSTS sshd (tests/testbed/sshd.py) as one Unix user `orch-fleet`
    (created if missing and removed at the end if the bench created it), sites under that user's home in
    `fleet-<pid>/`, and for --oplog postgresql a PostgreSQL cluster (tests/testbed/postgres.py). Everything
    stops and is removed at the end, on Ctrl-C and on errors too, unless --keep.

Usage
    .venv/bin/python bench/fleet.py                      # --hosts 50 --sites 20 --sample 20 --global 8
    .venv/bin/python bench/fleet.py --hosts 4 --sites 5 --sample 4 --nights 1     # a quick run (~1 min)
    .venv/bin/python bench/fleet.py --oplog postgresql   # the oplog on PostgreSQL instead of SQLite
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed.postgres import start_postgres  # noqa: E402
from testbed.sshd import ensure_user, start_sshd  # noqa: E402

ORCH = [sys.executable, "-m", "orchestrator"]
USER = "orch-fleet"
ADDRESS = "127.0.9.{}"
WINDOW, SCHEDULE = "01:00-05:00", "0 1 * * *"
MB = 1024 * 1024


@dataclass
class Run:
    """One measured CLI run."""

    seconds: float
    cpu: float  # user + system seconds of the orch process tree (wait4 rusage)
    max_rss: int  # bytes, the largest process of the tree
    tree_rss: int  # bytes, the largest sum over the tree seen by polling /proc
    returncode: int
    stdout: str
    stderr: str


def tree_rss(pid: int) -> int:
    """Given a pid, return the summed RSS (bytes) of it and its descendants now (0 if gone)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rpartition(")")[2].split()[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def measure(args: list[str], env: dict, timeout: float) -> Run:
    """Run the real CLI; return its wall time, its tree's CPU and peak memory."""
    peak = [0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen([*ORCH, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        done = threading.Event()

        def poll():
            while not done.wait(0.25):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        finally:
            done.set()
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        poller.join()
        out.seek(0)
        err.seek(0)
        return Run(
            seconds,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss * 1024,
            peak[0],
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


# --- the fleet -----------------------------------------------------------------------------------------------


def make_site(root: Path, rng: random.Random, files: int, file_kb: int) -> None:
    """Create a small site at root: docroot `www/` (text and binary files, a cache to exclude) and `data.sqlite`."""
    www = root / "www"
    for sub in ("wp-content/uploads", "wp-content/cache", "wp-includes"):
        (www / sub).mkdir(parents=True, exist_ok=True)
    words = [f"w{n}" for n in range(400)]
    for n in range(files):
        size = rng.randint(file_kb * 512, file_kb * 1536)
        if n % 4 == 0:
            (www / f"wp-content/uploads/img-{n}.jpg").write_bytes(rng.randbytes(size))
        else:
            text = " ".join(rng.choices(words, k=size // 4))
            (www / f"wp-includes/f{n}.php").write_text(f"<?php\n// {text}\n"[:size])
    (www / "index.php").write_text("<?php echo 'home';\n")
    (www / "wp-content/cache/page.html").write_text("cached\n")
    db = sqlite3.connect(root / "data.sqlite")
    db.execute("CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
    db.executemany(
        "INSERT INTO posts (title, body) VALUES (?, ?)",
        [(f"post {i}", " ".join(rng.choices(words, k=60))) for i in range(300)],
    )
    db.execute("CREATE TABLE options (name TEXT PRIMARY KEY, value TEXT)")
    db.executemany("INSERT INTO options VALUES (?, ?)", [(f"opt{i}", str(i)) for i in range(50)])
    db.commit()
    db.close()


def site_entry(host: str, root: Path) -> dict:
    return {
        "playbook": "generic",
        "task": "1000",
        "environments": {
            "production": {
                "host": host,
                "path": str(root / "www"),
                "url": f"https://{root.name}.example",
                "database": {"engine": "sqlite", "path": str(root / "data.sqlite")},
            }
        },
    }


def write_inventory(path: Path, base: dict, sites: dict[str, dict], global_limit: int) -> None:
    """Write an inventory (with its own sites folder beside it) holding these sites."""
    folder = path.parent / f"{path.stem}-sites"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(base | {"sites": folder.name, "scheduler": {"max_parallel": global_limit}}, sort_keys=False)
    )
    for name, site in sites.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name} | site, sort_keys=False))


def user_created() -> bool:
    """Create the hosts' user if missing; return whether this run created it (and so removes it)."""
    try:
        pwd.getpwnam(USER)
        existed = True
    except KeyError:
        existed = False
    ensure_user(USER)
    return not existed


# --- the runs ------------------------------------------------------------------------------------------------


def backup(label: str, inventory: Path, args: list[str], env: dict, sites: int, timeout: float) -> dict:
    run = measure(["-i", str(inventory), "--json", "backup", *args, "--task", "1000"], env, timeout)
    try:
        results = json.loads(run.stdout)
    except json.JSONDecodeError:
        results = []
    ok = sum(1 for r in results if r.get("status") == "ok")
    failed = [r for r in results if r.get("status") != "ok"]
    print(
        f"  {label}: {ok}/{sites} ok in {run.seconds:.1f} s, orch CPU {run.cpu:.1f} s, "
        f"max RSS {run.max_rss / MB:.0f} MB (tree {run.tree_rss / MB:.0f} MB), exit {run.returncode}",
        flush=True,
    )
    if ok != sites:
        print(
            f"    failures: {[(r.get('site'), r.get('error')) for r in failed[:5]]}\n    stderr: {run.stderr[-1500:]}"
        )
    return {
        "label": label,
        "sites": sites,
        "ok": ok,
        "seconds": run.seconds,
        "cpu": run.cpu,
        "max_rss": run.max_rss,
        "tree_rss": run.tree_rss,
        "returncode": run.returncode,
    }


def scheduler_plan(inventory: Path, env: dict) -> dict:
    run = measure(["-i", str(inventory), "--json", "scheduler", "plan"], env, 120)
    plan = json.loads(run.stdout) if run.stdout.strip() else {}
    hosts = plan.get("hosts", [])
    return {
        "seconds": run.seconds,
        "cpu": run.cpu,
        "max_rss": run.max_rss,
        "returncode": run.returncode,
        "jobs": len(plan.get("jobs", [])),
        "oversubscribed": [h["host"] for h in hosts if h.get("oversubscribed")],
        "busiest": max((h["estimated_seconds"] / h["max_parallel"] for h in hosts), default=0),
        "window": max((h["window_seconds"] or 0 for h in hosts), default=0),
        "fleet": plan.get("fleet"),
        "warnings": plan.get("warnings", []),
    }


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM unwind through the cleanup (a shell starting us in the background ignores SIGINT)."""

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--sites", type=int, default=20, help="sites per host")
    parser.add_argument("--sample", type=int, default=20, help="sites backed up one by one (extrapolated)")
    parser.add_argument("--global", dest="global_limit", type=int, default=8, help="scheduler.max_parallel")
    parser.add_argument("--max-parallel", type=int, default=2, help="hosts.X.max_parallel")
    parser.add_argument("--files", type=int, default=20, help="files per site")
    parser.add_argument("--file-kb", type=int, default=8, help="mean file size (KB)")
    parser.add_argument("--nights", type=int, default=1, help="measured nights after night 0")
    parser.add_argument("--oplog", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per CLI run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and the sites")
    opts = parser.parse_args()
    stop_on_signals()
    total = opts.hosts * opts.sites
    rng = random.Random(14)
    print(
        f"fleet: {opts.hosts} hosts x {opts.sites} sites = {total} sites, {opts.files} files of ~{opts.file_kb} KB "
        f"+ SQLite each; max_parallel {opts.max_parallel}/host, global {opts.global_limit}; oplog {opts.oplog}; "
        f"sequential sample {opts.sample}; load {load()}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-fleet-"))
    with ExitStack() as stack:
        if not opts.keep:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        if user_created() and not opts.keep:
            stack.callback(subprocess.run, ["userdel", "-r", USER], capture_output=True)
        home = Path(pwd.getpwnam(USER).pw_dir)
        work = home / f"fleet-{os.getpid()}"
        if not opts.keep:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        key = tmp / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orch-bench", "-f", str(key)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        started = time.monotonic()
        hosts = {}
        for n in range(opts.hosts):
            name = f"h{n + 1:02d}"
            hosts[name] = start_sshd(tmp / "ssh", name, ADDRESS.format(n + 10), USER, key)
            stack.callback(hosts[name].stop)
        if opts.oplog == "postgresql":
            pg = start_postgres(tmp / "postgres")
            stack.callback(pg.stop)
            pg.sql("CREATE DATABASE orch_oplog")
            oplog = pg.url("orch_oplog")
        else:
            oplog = f"sqlite:///{tmp}/state/oplog.db"
        fleet, sample = {}, {}
        names = list(hosts)
        for host in names:
            for s in range(opts.sites):
                root = work / host / f"s{s + 1:02d}"
                make_site(root, rng, opts.files, opts.file_kb)
                fleet[f"{host}-s{s + 1:02d}"] = site_entry(host, root)
        for s in range(opts.sample):
            host = names[s % len(names)]
            root = work / host / f"sample{s + 1:02d}"
            make_site(root, rng, opts.files, opts.file_kb)
            sample[f"{host}-sample{s + 1:02d}"] = site_entry(host, root)
        subprocess.run(["chown", "-R", f"{USER}:", str(work)], check=True)
        base = {
            "oplog": oplog,
            "storage": {"local": {"type": "local", "path": str(work / "repos"), "password": {"env": "T_RESTIC_PW"}}},
            "hosts": {
                name: {
                    "address": h.address,
                    "port": h.port,
                    "user": h.user,
                    "host_key": h.host_key,
                    "identity_file": str(key),
                    "max_parallel": opts.max_parallel,
                    "nightly_window": WINDOW,
                }
                for name, h in hosts.items()
            },
            "defaults": {"backup": {"storage": "local", "schedule": SCHEDULE, "exclude": ["wp-content/cache"]}},
        }
        write_inventory(tmp / "fleet.yaml", base, fleet, opts.global_limit)
        write_inventory(tmp / "sample.yaml", base, sample, 1)
        write_inventory(tmp / "all.yaml", base, fleet | sample, opts.global_limit)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env |= {"ORCH_STATE_DIR": str(tmp / "state"), "PYTHONPATH": str(REPO), "T_RESTIC_PW": "fleet-bench-pw"}
        print(
            f"setup: {time.monotonic() - started:.1f} s ({len(hosts)} sshd up, {total + opts.sample} sites)", flush=True
        )

        # Night 0 creates every repository (fleet and sample together, in one parallel run): restic calibrates a
        # repository's key derivation to the CPU it gets at `init`, so both sides must be created alike.
        print(f"night 0 (creates the repositories of all {total + opts.sample} sites): load {load()}", flush=True)
        first = backup("parallel --all", tmp / "all.yaml", ["--all"], env, total + opts.sample, opts.timeout)
        nights = []
        for night in range(1, opts.nights + 1):
            print(f"night {night}: load {load()}", flush=True)
            parallel = backup("parallel --all", tmp / "fleet.yaml", ["--all"], env, total, opts.timeout)
            one_by_one = backup("sequential sample", tmp / "sample.yaml", list(sample), env, opts.sample, opts.timeout)
            nights.append((night, parallel, one_by_one, load()))
        plan = scheduler_plan(tmp / "fleet.yaml", env)
        report(opts, first, nights, plan)
        if opts.keep:
            print(f"kept: {tmp} (inventories fleet.yaml, sample.yaml), sites in {work}")
    return 0


def report(opts, first, nights, plan) -> None:
    total = opts.hosts * opts.sites
    print(
        f"\n{opts.hosts} hosts x {opts.sites} sites = {total} sites; global limit {opts.global_limit}, "
        f"max_parallel {opts.max_parallel}/host; oplog {opts.oplog}\n"
    )
    print("| | night | parallel `--all` | sequential (extrapolated) | ratio | goal |")
    print("|---|---:|---:|---:|---:|---|")
    for night, parallel, one_by_one, after in nights:
        per_site = one_by_one["seconds"] / max(1, one_by_one["sites"])
        sequential = per_site * total
        ratio = sequential / parallel["seconds"]
        print(
            f"| wall time | {night} | {parallel['seconds']:.1f} s ({parallel['ok']}/{total} ok) | "
            f"{sequential:.0f} s ({per_site:.2f} s/site x {total}, from {one_by_one['sites']} one by one) | "
            f"{ratio:.1f}x | >= 10x: {'yes' if ratio >= 10 else 'NO'} |"
        )
        print(
            f"| orch CPU | {night} | {parallel['cpu']:.1f} s ({parallel['cpu'] / total * 1000:.0f} ms/site) | "
            f"{one_by_one['cpu'] / max(1, one_by_one['sites']) * 1000:.0f} ms/site | | |"
        )
        rss = max(parallel["max_rss"], parallel["tree_rss"])
        print(
            f"| orch peak RSS | {night} | {rss / MB:.0f} MB | {one_by_one['max_rss'] / MB:.0f} MB | | "
            f"< 500 MB: {'yes' if rss < 500 * MB else 'NO'} |"
        )
        print(f"| load average after | {night} | {after} | | | |")
    fleet = plan["fleet"] or {}
    print(
        f"\n`orch scheduler plan`: {plan['seconds']:.2f} s for {plan['jobs']} jobs (< 2 s: "
        f"{'yes' if plan['seconds'] < 2 else 'NO'}; CPU {plan['cpu']:.2f} s, load {load()}), exit "
        f"{plan['returncode']}, RSS {plan['max_rss'] / MB:.0f} MB; "
        f"busiest host needs {plan['busiest'] / 60:.1f} min per slot of its {plan['window'] / 60:.0f} min window; "
        f"over-subscribed hosts: {plan['oversubscribed'] or 'none'}"
        + (
            f"; fleet: {fleet.get('estimated_seconds', 0) / 60:.1f} min of work / global {fleet.get('max_parallel')}"
            f" = {fleet.get('needed_seconds', 0) / 60:.1f} min, holds: {not fleet.get('oversubscribed')}"
            if fleet
            else ""
        )
    )
    for line in plan["warnings"][:5]:
        print(f"  warning: {line}")


if __name__ == "__main__":
    sys.exit(main())
