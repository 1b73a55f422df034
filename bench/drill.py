"""Benchmark: how long a boot drill takes to bring a site back (its RTO), next to a plain restore of the same
backup on the same host, for the testbed's WordPress and for a generated 1 GB WordPress.

What is measured
    * plain restore: what restoring by hand costs at the least, on the staging host, from the same repository:
      `restic restore` of the backup's files snapshot into a new folder, then `restic dump` of its database
      part piped into `mariadb` (a new, empty database), one after the other, driven over SSH with orch's own
      Repository and engine commands. Time: wall clock of the two, measured here.
    * boot drill: `orch verify SITE --boot --backup ID --json` on the same backup: the throwaway copy is made by
      the staging machinery (files restored, database created, dump loaded through the URL replacer, config
      rewritten, data sanitized, passwords reset, guard files, vhost + nginx reload, health check), then the
      check URLs are requested. RTO = the report's `rto_seconds`: from the start of the restore to the home
      page's first good answer through nginx (200, the playbook's marker, basic auth). Also shown: the drill's
      whole wall time (CLI start to exit, the copy's removal included), which is not the RTO.
    * ratio = RTO / plain restore (the goal: <= 1.3).

Why the comparison is fair
    Same backup (one `orch backup` per site, taken before the runs), same repository (an S3 bucket of
    `rclone serve s3` on loopback), same host, same MariaDB, same disk; the restic cache of the host user is
    warm for both (the first, unmeasured, plain restore fills it). Runs are interleaved (plain, drill, plain,
    drill ...) so that background load falls on both. The plain restore writes no vhost and loads no URL
    replacer: it is the floor, not a competitor.

Sites
    * `wp`: the testbed WordPress (tests/testbed/wordpress.py: Debian's package copied, ~60 MB, a small
      database);
    * `big`: the same WordPress plus ~850 MB of incompressible uploads (50 KB-2 MB, many small, few big) and
      ~150 MB of posts in its wp_posts: ~1 GB in all.

Setup
    The testbed's daemons: one sshd host at 127.0.0.2 as Unix user `orch-bench` (created if missing), MariaDB,
    `rclone serve s3`, nginx + php-fpm as that user serving production and the staging copies. Everything lives
    in `~orch-bench/bench-drill-<pid>/` and a temp dir, and is stopped and removed at the end (with the restic
    cache dirs this run created).

Usage
    .venv/bin/python bench/drill.py [--runs 3] [--big-mb 1000] [--sites wp,big]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from backup import Text, log_uniform  # noqa: E402  (bench/backup.py: the same synthetic content)
from promote import forget_new_restic_caches, loadavg, machine  # noqa: E402
from testbed.inventory import s3_secrets, s3_storage, web_host_entry  # noqa: E402
from testbed.mariadb import start_mariadb  # noqa: E402
from testbed.s3 import start_s3  # noqa: E402
from testbed.sshd import start_sshd  # noqa: E402
from testbed.webserver import make_user_dir, start_web_stack, write_user_file  # noqa: E402
from testbed.wordpress import install_wordpress  # noqa: E402

ORCH = [sys.executable, "-m", "orchestrator"]
HOST_USER, HOST_ADDRESS, TASK = "orch-bench", "127.0.0.2", "10001"
MB = 1_000_000


@dataclass
class Site:
    name: str
    url: str
    path: Path
    db_password: str
    backup: dict = field(default_factory=dict)
    size: dict = field(default_factory=dict)


@dataclass
class Bench:
    tmp: Path
    work: Path
    host: object
    mariadb: object
    s3: object
    web: object
    admin_password: str
    sites: dict[str, Site] = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.tmp / "inventory" / "inventory.yaml"


def start_testbed(stack: ExitStack, tmp: Path) -> Bench:
    identity = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    host = start_sshd(tmp / "ssh", "bench", HOST_ADDRESS, HOST_USER, identity)
    stack.callback(host.stop)
    work = make_user_dir(host.home / f"bench-drill-{os.getpid()}", HOST_USER)
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    forget_new_restic_caches(stack, host.home / ".cache" / "restic")
    mariadb = start_mariadb(tmp / "mariadb")
    stack.callback(mariadb.stop)
    s3 = start_s3(tmp / "s3")
    stack.callback(s3.stop)
    web = start_web_stack(HOST_USER, HOST_ADDRESS, parent=work)
    stack.callback(web.stop)
    # like a real nginx, a default server answers names no vhost claims (else the first site's vhost would)
    write_user_file(
        web.nginx.sites_dir / "00-default.conf",
        f"server {{\n    listen {web.nginx.listen} default_server;\n    return 404;\n}}\n",
        HOST_USER,
    )
    web.nginx.reload()
    admin = "admin-" + os.urandom(6).hex()
    mariadb.sql(
        f"CREATE USER 'orch_admin'@'%' IDENTIFIED BY '{admin}'; "
        "GRANT ALL PRIVILEGES ON *.* TO 'orch_admin'@'%' WITH GRANT OPTION"
    )
    return Bench(tmp, work, host, mariadb, s3, web, admin)


def install_site(b: Bench, name: str) -> Site:
    password = "pw-" + os.urandom(8).hex()
    site = Site(name, f"http://{name}.bench.test:{b.web.nginx.port}", b.work / name, password)
    install_wordpress(
        b.host, site.path, b.mariadb, name, name, password, site.url, b.web.nginx, b.web.php, default_server=False
    )
    return site


def grow(b: Bench, site: Site, total_mb: int, rng: random.Random) -> None:
    """Make the site ~total_mb: 85 % incompressible uploads, 15 % posts (WordPress's own wp_posts)."""
    uploads, budget, n = site.path / "wp-content" / "uploads" / "bench", int(total_mb * MB * 0.85), 0
    while budget > 0:
        size = min(log_uniform(rng, 50_000, 2_000_000), max(budget, 50_000))
        folder = uploads / f"{n % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img-{n}.jpg").write_bytes(rng.randbytes(size))
        budget -= size
        n += 1
    subprocess.run(["chown", "-R", f"{HOST_USER}:{HOST_USER}", str(uploads)], check=True)
    text, posts, statements, rows = Text(rng), int(total_mb * MB * 0.15) // 6_000, [], []
    for i in range(posts):
        body = "".join(
            f"<!-- wp:paragraph --><p>{text.sentence(rng.randint(300, 1500))}</p><!-- /wp:paragraph -->\\n"
            for _ in range(rng.randint(2, 6))
        )
        rows.append(
            f"(1, NOW(), NOW(), '{body}', 'Bench post {i}', '', 'publish', 'bench-{i}', '', '', NOW(), "
            f"NOW(), '', '{site.url}/?p=bench-{i}', 'post')"
        )
        if len(rows) == 200 or i == posts - 1:
            statements.append(
                "INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, "
                "post_title, post_excerpt, post_status, post_name, to_ping, pinged, post_modified, "
                "post_modified_gmt, post_content_filtered, guid, post_type) VALUES " + ",".join(rows) + ";"
            )
            rows = []
    subprocess.run(
        ["mariadb", "--no-defaults", "-S", str(b.mariadb.socket), "-u", "root", site.name],
        input="\n".join(statements).encode(),
        check=True,
    )


def write_inventory(b: Bench) -> None:
    h, nginx, m = b.host, b.web.nginx, b.mariadb
    inventory = {
        "oplog": f"sqlite:///{b.tmp}/state/oplog.db",
        "storage": {"offsite": s3_storage(b.s3, "bench", "B")},
        "hosts": {"web": web_host_entry(h, b.web, php_error_log=str(b.web.php.php_error_log))},
        "defaults": {"backup": {"storage": "offsite", "exclude": ["wp-content/cache"]}},
    }
    b.inventory.parent.mkdir(parents=True, exist_ok=True)
    b.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    (b.inventory.parent / "sites").mkdir(exist_ok=True)
    for site in b.sites.values():
        data = {
            "name": site.name,
            "playbook": "wordpress",
            "task": TASK,
            "environments": {
                "production": {
                    "host": "web",
                    "path": str(site.path),
                    "url": site.url,
                    "database": {
                        "engine": "mysql",
                        "name": site.name,
                        "user": site.name,
                        "password": {"env": f"B_{site.name.upper()}_PW"},
                        "host": m.host,
                        "port": m.port,
                    },
                },
                "staging": {
                    "host": "web",
                    "path": str(b.work / "stage" / site.name),
                    "url": f"http://{{env}}.{site.name}.stage.test:{nginx.port}",
                    "database": {
                        "engine": "mysql",
                        "name": "mysql",
                        "user": "orch_admin",
                        "password": {"env": "B_ADMIN_PW"},
                        "host": m.host,
                        "port": m.port,
                    },
                },
            },
            "verify": {"urls": ["/"]},
            "drill": {"timeout": 600, "response_time": 30},
        }
        (b.inventory.parent / "sites" / f"{site.name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    b.env = (
        {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        | {
            "ORCH_STATE_DIR": str(b.tmp / "state"),
            "PYTHONPATH": str(REPO),
            **s3_secrets(b.s3, "B"),
            "B_ADMIN_PW": b.admin_password,
        }
        | {f"B_{s.name.upper()}_PW": s.db_password for s in b.sites.values()}
    )


def orch_json(b: Bench, *args: str) -> dict | list:
    proc = subprocess.run([*ORCH, "-i", str(b.inventory), "--json", *args], capture_output=True, text=True, env=b.env)
    if proc.returncode:
        raise SystemExit(
            f"orch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout)


def plain_restore(b: Bench, site: Site) -> float:
    """restic restore + restic dump | mariadb on the host, with orch's own commands; return the seconds."""
    os.environ.update(b.env)  # the inventory's secrets are {env: ...} references
    from orchestrator.actions.targets import target
    from orchestrator.backends.engines import engine_for
    from orchestrator.backends.remote import Command, connect
    from orchestrator.config import load_inventory

    prod = target(load_inventory(b.inventory), site.name)
    admin_db = prod.site.environments["staging"].database
    scratch, folder = f"plain_{os.urandom(3).hex()}", str(b.work / f"plain-{site.name}")
    engine = engine_for(replace(admin_db, name=scratch), folder)
    snapshots = site.backup["snapshots"]
    with connect(prod.host) as conn:
        try:
            started = time.monotonic()
            conn.run(Command("mkdir", "-p", folder))
            prod.repository.run(conn, "restore", snapshots["files"], "--target", folder, timeout=None)
            conn.run(engine.create(scratch))
            conn.run(
                prod.repository.command("dump", snapshots["db"], "/" + engine.dump_filename).pipe(
                    engine.restore(scratch)
                ),
                timeout=None,
            )
            return time.monotonic() - started
        finally:
            conn.run(engine.drop(scratch), check=False)
            conn.run(Command("rm", "-rf", "--", folder), check=False)


def boot_drill(b: Bench, site: Site) -> tuple[float, float, dict[str, float]]:
    """Run one drill; return its RTO, its wall time and the seconds of each step (from the oplog)."""
    started = time.monotonic()
    report = orch_json(b, "verify", site.name, "--boot", "--backup", site.backup["backup_id"], "--task", TASK)
    wall = time.monotonic() - started
    op = orch_json(b, "log", "--site", site.name, "--action", "drill", "--limit", "1", "--steps")[0]
    return report["rto_seconds"], wall, {s["name"]: s["duration"] or 0.0 for s in op["steps"]}


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=1000)
    parser.add_argument("--sites", default="wp,big")
    args = parser.parse_args()
    rng = random.Random(12)
    results: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-drill-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        step("starting sshd, MariaDB, S3, nginx + php-fpm")
        b = start_testbed(stack, tmp)
        for name in args.sites.split(","):
            step(f"installing WordPress {name}")
            b.sites[name] = site = install_site(b, name)
            if name == "big":
                step(f"growing {name} to ~{args.big_mb} MB")
                grow(b, site, args.big_mb, rng)
        write_inventory(b)
        load_before = loadavg()
        for site in b.sites.values():
            step(f"{site.name}: orch backup")
            backup_id = orch_json(b, "backup", site.name, "--task", TASK)[0]["backup_id"]
            site.backup = next(x for x in orch_json(b, "backups", site.name) if x["backup_id"] == backup_id)
            site.size = {
                "files_mb": (site.backup["files_size"] or 0) / MB,
                "dump_mb": (site.backup["db_size"] or 0) / MB,
            }
            step(f"{site.name}: a plain restore to warm the restic cache (not measured)")
            plain_restore(b, site)
            runs = results[site.name] = {"plain": [], "rto": [], "drill": [], "steps": []}
            for k in range(args.runs):
                step(f"{site.name}: run {k + 1}: plain restore")
                runs["plain"].append(plain_restore(b, site))
                step(f"{site.name}: run {k + 1}: boot drill")
                rto, wall, steps = boot_drill(b, site)
                runs["rto"].append(rto)
                runs["drill"].append(wall)
                runs["steps"].append(steps)
                step(
                    f"{site.name}: plain {runs['plain'][-1]:.1f} s, RTO {rto:.1f} s ({rto / runs['plain'][-1]:.2f}x),"
                    f" drill wall {wall:.1f} s"
                )
        print(
            f"\nMachine: {machine()}; 1-min load average {load_before} before the runs, {loadavg()} after\n"
            f"Command: .venv/bin/python bench/drill.py --runs {args.runs} --big-mb {args.big_mb} "
            f"--sites {args.sites}\n"
        )
        print(report(b, results))


def report(b: Bench, results: dict) -> str:
    lines = [
        "| site | files | dump | plain restore (s) | drill RTO (s) | RTO / plain | drill wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        site = b.sites[name]
        ratios = [r / p for r, p in zip(runs["rto"], runs["plain"], strict=True)]
        lines.append(
            f"| {name} | {site.size['files_mb']:.0f} MB | {site.size['dump_mb']:.1f} MB | "
            f"{_spread(runs['plain'])} | {_spread(runs['rto'])} | {_spread(ratios, 2)} | "
            f"{_spread(runs['drill'])} |"
        )
    lines += [
        "",
        "(median, and min-max over the runs)",
        "",
        "Drill steps (median seconds, from the oplog):",
        "",
        "| step | " + " | ".join(results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    names = list(dict.fromkeys(name for runs in results.values() for steps in runs["steps"] for name in steps))
    for name in names:
        cells = [statistics.median([steps.get(name, 0.0) for steps in runs["steps"]]) for runs in results.values()]
        lines.append(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def _spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


if __name__ == "__main__":
    main()
