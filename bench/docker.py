"""Benchmark: time to a working staging copy in Docker, next to a copy on a staging host, in the same run.

What is measured
    The wall time of `orch staging create SITE --task N` from the CLI's start until it exits 0: the copy then
    answers 200 with basic auth (401 without) through its web server, which orch's own health check waited
    for. For each copy the oplog's steps give the breakdown (restore files, load the dump, containers...).
    Two sites, each copied by both targets, interleaved (host, docker, host, docker...) so that both share the
    machine's background load, each copy destroyed before the next:

    * `wp`: the testbed's real WordPress (tests/testbed/wordpress.py: Debian's package, ~60 MB docroot);
    * `big`: the same WordPress plus ~1 GB of generated content: uploads (1 MB files, 60 % random bytes, 40 %
      text) and 4,000 posts of ~10 KB each in the database (a ~45 MB dump).

Why the comparison is fair
    Both targets copy the same backup (taken once before the runs) from the same S3 server (`rclone serve
    s3`), through the same restic, the same URL replacer, the same sanitize and password steps; both health
    checks are orch's own. The host copy goes to an sshd "staging host" (nginx + php-fpm + MariaDB already
    running, as on a prepared staging server); the Docker copy starts its database, PHP and web containers
    from images already on the engine (a first copy on a new engine pays the pulls once, which no run here
    measures). Both run on this machine.

Setup
    The testbed's daemons (tests/testbed): one sshd host at 127.0.0.2 (user `orch-bench`) holding production
    and host copies, its nginx + php-fpm, MariaDB (production databases and the host copies' databases),
    `rclone serve s3`, and a private dockerd with the testbed's images (tests/testbed/docker.py: built once
    per machine, loaded from /var/cache/orch-testbed). Everything is stopped and removed at the end.

Usage
    .venv/bin/python bench/docker.py [--runs 2] [--big-mb 1000] [--sites wp,big]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# This file is named like the Docker SDK: its own folder must not shadow the `docker` package.
sys.path[0] = str(REPO / "tests")

from testbed.docker import ensure_images, start_dockerd  # noqa: E402
from testbed.inventory import s3_secrets, s3_storage, web_host_entry  # noqa: E402
from testbed.mariadb import start_mariadb  # noqa: E402
from testbed.ports import free_port  # noqa: E402
from testbed.s3 import start_s3  # noqa: E402
from testbed.sshd import start_sshd  # noqa: E402
from testbed.webserver import make_user_dir, run_as, start_web_stack  # noqa: E402
from testbed.wordpress import install_wordpress  # noqa: E402

ORCH = [sys.executable, "-m", "orchestrator"]
HOST_USER, HOST_ADDRESS = "orch-bench", "127.0.0.2"
TASK = "20013"
ADMIN_PW = "admin-" + os.urandom(6).hex()


def sh(user: str, script: str) -> None:
    run_as(user, ["bash", "-c", script], timeout=1800)


def grow(path: Path, mariadb, db: str, megabytes: int) -> None:
    """Add ~megabytes of uploads (1 MB files: 60 % random, 40 % text) and 4,000 posts of ~10 KB."""
    files = max(1, megabytes - 45)
    sh(
        HOST_USER,
        f"""set -e; d={path}/wp-content/uploads/bench; mkdir -p $d; cd $d
        for i in $(seq 1 {files}); do
          if [ $((i % 5)) -lt 3 ]; then head -c 1048576 /dev/urandom > f$i.bin
          else base64 -w 100 /dev/urandom | head -c 1048576 > f$i.txt; fi
        done""",
    )
    body = 'Lorem ipsum dolor sit amet, <a href=\\"URL/page\\">link</a> ' * 160
    rows = ",".join(
        f"(1, NOW(), NOW(), '{body}', 'Bench post {i}', '', 'publish', 'open', 'open', '', "
        f"'bench-{i}', '', '', NOW(), NOW(), '', 0, 'URL/?p={i}', 0, 'post', '', 0)"
        for i in range(200)
    )
    columns = (
        "post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_status, "
        "comment_status, ping_status, post_password, post_name, to_ping, pinged, post_modified, "
        "post_modified_gmt, post_content_filtered, post_parent, guid, menu_order, post_type, "
        "post_mime_type, comment_count"
    )
    sql = "".join(f"INSERT INTO wp_posts ({columns}) VALUES {rows};\n" for _ in range(20))
    subprocess.run(
        ["mariadb", "--no-defaults", "-S", str(mariadb.socket), "-u", "root", db], input=sql.encode(), check=True
    )


class Bench:
    def __init__(self, stack: ExitStack, tmp: Path):
        identity = tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
        self.tmp = tmp
        self.host = start_sshd(tmp / "ssh", "bench", HOST_ADDRESS, HOST_USER, identity)
        stack.callback(self.host.stop)
        self.work = make_user_dir(self.host.home / f"bench-docker-{os.getpid()}", HOST_USER)
        stack.callback(shutil.rmtree, self.work, ignore_errors=True)
        self.mariadb = start_mariadb(tmp / "mariadb")
        stack.callback(self.mariadb.stop)
        self.mariadb.sql(f"CREATE USER 'orch_admin'@'%' IDENTIFIED BY '{ADMIN_PW}'")
        self.mariadb.sql("GRANT ALL PRIVILEGES ON *.* TO 'orch_admin'@'%' WITH GRANT OPTION")
        self.s3 = start_s3(tmp / "s3")
        stack.callback(self.s3.stop)
        self.web = start_web_stack(HOST_USER, HOST_ADDRESS, parent=self.work, php_children=4)
        stack.callback(self.web.stop)
        started = time.monotonic()
        self.engine = start_dockerd()
        stack.callback(self.engine.stop)
        self.engine.images = ensure_images(self.engine)
        self.engine_seconds = time.monotonic() - started
        self.proxy_port = free_port()
        self.sites: dict[str, object] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")} | {
            "ORCH_STATE_DIR": str(tmp / "state"),
            "PYTHONPATH": str(REPO),
            **s3_secrets(self.s3, "B"),
            "B_ADMIN_PW": ADMIN_PW,
        }

    @property
    def inventory(self) -> Path:
        return self.tmp / "inventory" / "inventory.yaml"

    def add_site(self, name: str, big_mb: int) -> None:
        password = "pw-" + os.urandom(8).hex()
        url = f"http://{name}.bench.test:{self.web.nginx.port}"
        wp = install_wordpress(
            self.host,
            self.work / f"{name}-prod",
            self.mariadb,
            name,
            name,
            password,
            url,
            self.web.nginx,
            self.web.php,
            default_server=False,
        )
        if big_mb:
            grow(wp.path, self.mariadb, name, big_mb)
        self.sites[name] = wp
        self.env[f"B_{name.upper()}_PW"] = password

    def write_inventory(self) -> None:
        h, nginx, images = self.host, self.web.nginx, self.engine.images
        inventory = {
            "oplog": f"sqlite:///{self.tmp}/state/oplog.db",
            "storage": {"offsite": s3_storage(self.s3, "bench-docker", "B")},
            "hosts": {"web": web_host_entry(h, self.web)},
            "docker": {
                "review": {
                    "url": self.engine.url,
                    "domain": "review.bench",
                    "address": "127.0.0.1",
                    "publish_address": "127.0.0.1",
                    "proxy_port": self.proxy_port,
                    "images": {
                        "mysql": images["mariadb"],
                        "php": images["php-fpm"],
                        "web": images["nginx"],
                        "proxy": images["nginx"],
                    },
                }
            },
            "defaults": {"backup": {"storage": "offsite", "exclude": ["wp-content/cache"]}},
        }
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
        (self.inventory.parent / "sites").mkdir(exist_ok=True)
        port = nginx.listen.rsplit(":", 1)[1]
        m = self.mariadb
        for name, wp in self.sites.items():
            site = {
                "name": name,
                "playbook": "wordpress",
                "task": TASK,
                "environments": {
                    "production": {
                        "host": "web",
                        "path": str(wp.path),
                        "url": wp.url,
                        "database": {
                            "engine": "mysql",
                            "name": name,
                            "user": name,
                            "password": {"env": f"B_{name.upper()}_PW"},
                            "host": m.host,
                            "port": m.port,
                        },
                    },
                    "staging": {
                        "host": "web",
                        "path": f"{self.work}/stage/{{site}}-{{env}}",
                        "url": f"http://{{env}}.{{site}}.stage.bench:{port}",
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
            }
            (self.inventory.parent / "sites" / f"{name}.yaml").write_text(yaml.safe_dump(site, sort_keys=False))

    def orch(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*ORCH, "-i", str(self.inventory), *args], capture_output=True, text=True, env=self.env, timeout=3600
        )
        if proc.returncode:
            raise SystemExit(
                f"orch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def copy(self, site: str, target: str, run: int) -> dict:
        """Create a copy, time it, read its steps from the oplog, destroy it."""
        name = f"b{run}{target[0]}"
        started = time.monotonic()
        self.orch("--json", "staging", "create", site, "--task", TASK, "--name", name, "--target", target)
        seconds = time.monotonic() - started
        ops = json.loads(self.orch("--json", "log", "--task", TASK, "--site", site).stdout)
        op = next(o for o in ops if o["action"] == "staging-create" and o["env"] == name)
        steps = {s["name"]: s.get("duration") or 0 for s in op["steps"]}
        self.orch("--json", "staging", "destroy", site, "--env", name, "--task", TASK)
        return {
            "site": site,
            "target": target,
            "run": run,
            "seconds": seconds,
            "operation": op.get("duration"),
            "steps": steps,
        }


def docroot_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout
    return float(out.split()[0]) if out else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--big-mb", type=int, default=1000)
    parser.add_argument("--sites", default="wp,big")
    args = parser.parse_args()
    names = args.sites.split(",")
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="orch-bench-docker-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        b = Bench(stack, tmp)
        for name in names:
            b.add_site(name, args.big_mb if name == "big" else 0)
        b.write_inventory()
        for name in names:
            b.orch("--json", "backup", name, "--task", TASK)
        load_before = os.getloadavg()[0]
        results = [
            b.copy(name, target, run)
            for run in range(1, args.runs + 1)
            for name in names
            for target in ("host", "docker")
        ]
        load_after = os.getloadavg()[0]
        report(b, names, results, load_before, load_after)


def report(b: Bench, names: list[str], results: list[dict], load_before: float, load_after: float) -> None:
    print(
        f"engine: started and images loaded in {b.engine_seconds:.1f} s (load {b.engine.load_seconds or 0:.1f} s"
        f", first build {b.engine.build_seconds or 0:.0f} s)"
    )
    print(f"load average (1 min) before / after the copies: {load_before:.1f} / {load_after:.1f}\n")
    print("| site | docroot | host copy (s) | docker copy (s) | docker / host |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        host = [r["seconds"] for r in results if r["site"] == name and r["target"] == "host"]
        dock = [r["seconds"] for r in results if r["site"] == name and r["target"] == "docker"]
        size = docroot_mb(b.sites[name].path)
        print(
            f"| {name} | {size:.0f} MB | {' / '.join(f'{s:.1f}' for s in host)} (median "
            f"{statistics.median(host):.1f}) | {' / '.join(f'{s:.1f}' for s in dock)} (median "
            f"{statistics.median(dock):.1f}) | {statistics.median(dock) / statistics.median(host):.2f} |"
        )
    print("\nSteps of the last run of each (s, from the oplog):\n")
    for name in names:
        for target in ("host", "docker"):
            last = [r for r in results if r["site"] == name and r["target"] == target][-1]
            steps = ", ".join(f"{k} {v:.1f}" for k, v in last["steps"].items())
            print(f"- {name} / {target} ({last['seconds']:.1f} s): {steps}")


if __name__ == "__main__":
    main()
