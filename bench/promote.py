"""Benchmark: what visitors of a real WordPress see while `orch promote` deploys a code change, for both
production layouts: `releases` (a new release folder, then an atomic symlink switch) and `inplace` (changed
files renamed into the live docroot one by one, the old ones kept in a rollback set).

What is measured
    A load generator sends a steady 50 requests/s (open loop: one request every 20 ms, each on its own thread
    and its own new TCP connection, so slow answers never lower the rate) to production for the whole run of
    each `orch promote` (from just before the CLI starts until it exits). The requests cycle, like visits,
    over `/` (WordPress renders the home page: PHP + MariaDB), the theme's `style.css` (twice: static, from
    nginx), one of the theme's fonts (static, never changed) and `/orch-revision.php` (the file orch writes
    into each release; PHP echoes the revision id): 10 pages/s, 30 static files/s, 10 probes/s. (A first
    version sent 1 page in 3 requests, 17 pages/s: with other sessions' test suites on the same 2 CPUs the
    PHP pool then saturated in the baselines too, and PHP requests timed out, promotion or not.)

    * failed: a connection error, no complete answer within 5 s (`TIMEOUT`), or a status other than 200;
    * stale: an answer that still shows the OLD code to a request SENT after the switch had finished (the
      oplog's `finished_at` of the "switch" step): `/orch-revision.php` answering the old revision id, or
      `/` / `style.css` carrying the old version marker (every changed file carries one, see below). The
      window goes on only while orch runs (migrations and the health check: 0.3-1 s after a quiet switch),
      so it rests on some 25-60 answers per run;
    * mixed: a `/` page that carries markers of BOTH versions at once (a torn deploy: e.g. the new header
      template rendered with the old home template);
    * old / new / neither (per run): successful answers of the marked paths (all but the font) showing the
      old version, the new one, or no known version (should be 0);
    * latency: from the moment the request was due (its 20 ms slot) to the last byte, so a queue in the
      client would show as latency instead of as a lower rate;
    * switch time: the oplog's own figure (`orch --json log ...`: the "switch" step's output says
      "in X.XXXs", timed by orch around the switch itself, ssh round trip included), and the promotion time
      (the operation's duration in the oplog; the mandatory backup, the build, migrations, the health check
      and, for releases, pruning are all part of it).

The code change
    Each measured run k promotes version k over version k-1 from a `dev` copy of the site on the same host:
    20 theme files edited (style.css, the 4 block parts, the 9 block templates, the 6 patterns: a marker
    `orch-bench-rev-k` appended), the theme's functions.php edited to `require` a NEW file inc/bench-rk.php
    (and hook a function defined there into wp_head), the previous inc file removed, and a new plugin file of
    300 KB (wp-content/plugins/orch-bench/bundle-rk.php; the previous one removed): 21 changed, 2 added,
    2 removed per run. The functions.php -> inc dependency is what a real theme update looks like; it is the
    kind of change an in-place deploy can tear. An unmeasured run 0 first puts the marked theme live, so
    every measured run switches between two marked versions and the in-place site has its orch-revision.php.

The release that fatals
    Then (--fatal N, default 3) each layout promotes N versions whose theme functions.php calls an undefined
    function: every page is an HTTP 500, /orch-revision.php and static files still answer. orch must roll back.
    Measured: switch -> rollback (from the oplog: the "switch" step's start to the end of the "automatic
    rollback" step: the time production served the broken release), the requests that failed in the window
    (with the same load's baseline), and the failures that exposure means when every request is a page
    (RATE x exposure: the issue's "<= 150 failed requests at 50 req/s" is exposure <= 3 s).

Why the comparison is fair
    Both layouts run against two fresh WordPress installs made the same way (tests/testbed/wordpress.py: the
    Debian package copied, same content), served by the SAME nginx + php-fpm, backed by the same MariaDB and
    the same S3 server, promoted from identical dev copies with the identical sequence of changes, with the
    same load. Each site is backed up once before its first promotion, so every measured promotion takes an
    incremental backup (as on a site under nightly backups). Baselines: right after each promotion, the same
    load runs against the same site with NO promotion for the same time as that promotion's window, so
    failures and latency can be told apart from what the (shared) machine does anyway; interleaving puts both
    under the same background load. The idle site gets no traffic. Nothing is tuned for either layout:
    php-fpm reload is not configured (`$realpath_root` in the vhost, OPcache revalidating on every request,
    as in the testbed), nginx has no open_file_cache. Both sites share one php-fpm pool, so php-fpm is reloaded
    (an empty OPcache) before each layout's runs; a probe vhost on that pool reports its OPcache afterwards
    (each release of the `releases` layout is compiled anew under its own path).

Setup
    The testbed's daemons (tests/testbed): one sshd host at 127.0.0.2 as Unix user `orch-bench` (created if
    missing, like bench/backup.py), MariaDB, `rclone serve s3`, nginx + php-fpm running as that user. Sites,
    dev copies, release trees and the web stack live in `~orch-bench/bench-promote-<pid>/`; everything is
    stopped and removed at the end (with the restic cache dirs this run created), unless --keep.

Usage
    .venv/bin/python bench/promote.py [--runs 5] [--fatal 3] [--layouts releases,inplace] [--php-reload [graceful]]
                                      [--keep] [--priority]

    --php-reload sets the host's `web.php_reload` to php-fpm's reload (SIGUSR2), so orch empties OPcache after
    each switch; `graceful` also sets php-fpm's process_control_timeout = 10s (default 0: a reload kills the
    requests in flight). The default run uses neither, as the testbed does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from replace import take_priority  # noqa: E402  (bench/replace.py: a session of its own at autogroup nice -20)
from testbed.inventory import host_entry, s3_secrets, s3_storage  # noqa: E402
from testbed.mariadb import start_mariadb  # noqa: E402
from testbed.s3 import start_s3  # noqa: E402
from testbed.sshd import start_sshd  # noqa: E402
from testbed.webserver import make_user_dir, php_vhost, run_as, start_web_stack, write_user_file  # noqa: E402
from testbed.wordpress import WORDPRESS_SOURCE, install_wordpress  # noqa: E402

ORCH = [sys.executable, "-m", "orchestrator"]
HOST_USER, HOST_ADDRESS = "orch-bench", "127.0.0.2"
LAYOUTS = ("releases", "inplace")
TASK = "20001"
BUCKET = "bench-promote"
THEME = "wp-content/themes/twentytwentythree"
RATE = 50  # requests per second, open loop
TIMEOUT = 5.0  # seconds; slower is a failure
PHP_CHILDREN = 4
PLUGIN_BYTES = 300_000
FONT = f"/{THEME}/assets/fonts/dm-sans/DMSans-Regular.woff2"
# one 100 ms cycle of 5 requests, like a visit: the page, its assets, and the revision probe
PATHS = ("/", f"/{THEME}/style.css", "/orch-revision.php", FONT, f"/{THEME}/style.css")
PROBE_HOST = "probe.bench.test"
MARK = re.compile(rb"orch-bench-rev-(\d+)")
FATAL_PHP = b"<?php\n// orch bench: a release whose every page dies\nthis_function_does_not_exist();\n"


# --- the code change ---------------------------------------------------------------------------------------


def theme_files() -> list[str]:
    """The 20 theme files each run edits (relative to the theme): style.css, parts, templates, patterns."""
    theme = WORDPRESS_SOURCE / THEME
    return ["style.css"] + sorted(
        str(p.relative_to(theme)) for folder in ("parts", "templates", "patterns") for p in (theme / folder).iterdir()
    )


def marker(rel: str, k: int) -> bytes:
    """The version marker appended to a file: a comment that ends up in the served CSS or HTML."""
    if rel.endswith(".css"):
        return f"\n/* orch-bench-rev-{k} */\n.orch-bench-r{k} {{ color: inherit; }}\n".encode()
    return f"\n<!-- orch-bench-rev-{k} -->\n".encode()


def functions_php(k: int) -> bytes:
    return (
        f"<?php\n// orch bench: theme functions, version {k}\n"
        f"require __DIR__ . '/inc/bench-r{k}.php';\n"
        f"add_action( 'wp_head', 'orch_bench_r{k}_meta' );\n"
    ).encode()


def inc_php(k: int) -> bytes:
    return (
        f"<?php\nfunction orch_bench_r{k}_meta() {{\n"
        f'\techo \'<meta name="orch-bench" content="orch-bench-rev-{k}">\' . "\\n";\n}}\n'
    ).encode()


def plugin_php(k: int, rng: random.Random) -> bytes:
    """A ~300 KB plugin file (a vendored data bundle; not activated, never loaded by a page)."""
    head = f"<?php\n/**\n * Plugin Name: orch bench bundle r{k}\n */\nreturn array(\n"
    rows, size = [], len(head)
    while size < PLUGIN_BYTES:
        rows.append(f"\t'{rng.randbytes(8).hex()}' => '{rng.randbytes(40).hex()}',\n")
        size += len(rows[-1])
    return (head + "".join(rows) + ");\n").encode()


def write_version(dev: Path, k: int, rng: random.Random) -> None:
    """Make the dev copy hold version k of the code (see the module docstring), as the host's user."""
    files = {f"{THEME}/{rel}": (WORDPRESS_SOURCE / THEME / rel).read_bytes() + marker(rel, k) for rel in theme_files()}
    files[f"{THEME}/functions.php"] = functions_php(k)
    files[f"{THEME}/inc/bench-r{k}.php"] = inc_php(k)
    files[f"wp-content/plugins/orch-bench/bundle-r{k}.php"] = plugin_php(k, rng)
    for rel, data in files.items():
        write_as_user(dev / rel, data)
    for old in (f"{THEME}/inc/bench-r{k - 1}.php", f"wp-content/plugins/orch-bench/bundle-r{k - 1}.php"):
        (dev / old).unlink(missing_ok=True)


def write_as_user(path: Path, data: bytes) -> None:
    run_as(HOST_USER, ["mkdir", "-p", str(path.parent)])
    run_as(HOST_USER, ["sh", "-c", 'cat > "$1"', "sh", str(path)], input=data)


# --- the testbed, the sites and the inventory --------------------------------------------------------------


@dataclass
class Site:
    layout: str
    name: str
    url: str
    prod: Path
    dev: Path
    db_password: str
    revisions: dict[int, str] = field(default_factory=dict)  # version k -> orch revision id


@dataclass
class Bench:
    tmp: Path
    work: Path  # on the host, in the user's home
    host: object
    mariadb: object
    s3: object
    web: object
    sites: dict[str, Site] = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    opcache: dict[str, str] = field(default_factory=dict)  # layout -> OPcache state after its runs

    @property
    def inventory(self) -> Path:
        return self.tmp / "inventory" / "inventory.yaml"


def start_testbed(stack: ExitStack, tmp: Path, keep: bool) -> Bench:
    """Start sshd (one host), MariaDB, S3 and nginx + php-fpm; register their stop and clean-up on stack."""
    identity = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    host = start_sshd(tmp / "ssh", "bench", HOST_ADDRESS, HOST_USER, identity)
    stack.callback(host.stop)
    work = make_user_dir(host.home / f"bench-promote-{os.getpid()}", HOST_USER)
    if not keep:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        forget_new_restic_caches(stack, host.home / ".cache" / "restic")
    mariadb = start_mariadb(tmp / "mariadb")
    stack.callback(mariadb.stop)
    s3 = start_s3(tmp / "s3")
    stack.callback(s3.stop)
    web = start_web_stack(HOST_USER, HOST_ADDRESS, parent=work, php_children=PHP_CHILDREN)
    stack.callback(web.stop, remove=not keep)
    add_opcache_probe(web, work / "probe")
    return Bench(tmp, work, host, mariadb, s3, web)


def raise_priority(*daemons) -> None:
    """Given testbed daemons (each started in a session of its own), give their sessions autogroup nice -20."""
    for daemon in daemons:
        Path(f"/proc/{daemon._proc.pid}/autogroup").write_text("-20")


def graceful_php_reload(php) -> None:
    """Let a php-fpm reload wait up to 10 s for the requests in flight (php-fpm's default, 0, kills them)."""
    conf = php.conf_path.read_text()
    php.conf_path.write_text(conf.replace("[global]\n", "[global]\nprocess_control_timeout = 10s\n", 1))
    php.reload()


def add_opcache_probe(web, docroot: Path) -> None:
    """A vhost of its own on the same php-fpm pool that reports the pool's OPcache (shared by both sites)."""
    make_user_dir(docroot, HOST_USER)
    write_user_file(
        docroot / "opcache.php",
        "<?php $s = opcache_get_status(false);\n"
        "echo json_encode(['memory' => $s['memory_usage'], 'stats' => $s['opcache_statistics'], "
        "'full' => $s['cache_full']]);\n",
        HOST_USER,
    )
    write_user_file(
        web.nginx.sites_dir / "probe.conf",
        php_vhost(listen=web.nginx.listen, root=docroot, php_socket=web.php.socket, server_name=PROBE_HOST),
        HOST_USER,
    )
    web.nginx.reload()


def opcache(b: Bench) -> str:
    """The pool's OPcache in one line: memory used, scripts cached, whether it is full."""
    conn = http.client.HTTPConnection(b.web.nginx.address, b.web.nginx.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/opcache.php", headers={"Host": PROBE_HOST})
        data = json.loads(conn.getresponse().read())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"unknown (the probe got no answer: {type(exc).__name__})"
    finally:
        conn.close()
    memory, stats = data["memory"], data["stats"]
    return (
        f"{memory['used_memory'] / 2**20:.0f} of "
        f"{(memory['used_memory'] + memory['free_memory'] + memory['wasted_memory']) / 2**20:.0f} MiB used, "
        f"{stats['num_cached_scripts']} scripts, {'FULL' if data['full'] else 'not full'}"
    )


def forget_new_restic_caches(stack: ExitStack, cache: Path) -> None:
    """At the end, remove the restic cache dirs that appear during this run (and only those)."""
    before = set(cache.iterdir()) if cache.is_dir() else set()
    stack.callback(
        lambda: [
            shutil.rmtree(p, ignore_errors=True) for p in (set(cache.iterdir()) if cache.is_dir() else set()) - before
        ]
    )


def install_site(b: Bench, layout: str) -> Site:
    """A fresh WordPress (its own database and vhost on the shared web stack) and a dev copy of its code."""
    name = f"wp{layout[0]}"  # wpr, wpi
    prod, dev = b.work / f"{name}-prod", b.work / f"{name}-dev"
    password = "pw-" + os.urandom(8).hex()
    url = f"http://{layout}.bench.test:{b.web.nginx.port}"
    install_wordpress(b.host, prod, b.mariadb, name, name, password, url, b.web.nginx, b.web.php, default_server=False)
    run_as(HOST_USER, ["cp", "-a", f"{prod}/.", str(dev)])
    return Site(layout, name, url, prod, dev, password)


def write_inventory(b: Bench, php_reload: bool = False) -> None:
    """One host with its web server, S3 storage, and one site per layout (production + dev). With php_reload,
    the host's `web.php_reload` makes orch reload php-fpm (empty OPcache) after each release switch."""
    h, nginx = b.host, b.web.nginx
    web = {"sites_dir": str(nginx.sites_dir), "connect": nginx.listen}
    if php_reload:
        web["php_reload"] = ["sh", "-c", b.web.php.reload_command]
    inventory = {
        "oplog": f"sqlite:///{b.tmp}/state/oplog.db",
        "storage": {"offsite": s3_storage(b.s3, BUCKET, "B")},
        "hosts": {"web": host_entry(h, web=web)},
        "defaults": {"backup": {"storage": "offsite", "exclude": ["wp-content/cache"], "retention": {"daily": 7}}},
    }
    b.inventory.parent.mkdir(parents=True, exist_ok=True)
    b.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    for site in b.sites.values():
        write_site_file(b, site, "inplace")
    b.env = (
        {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        | {"ORCH_STATE_DIR": str(b.tmp / "state"), "PYTHONPATH": str(REPO), **s3_secrets(b.s3, "B")}
        | {f"B_{s.name.upper()}_PW": s.db_password for s in b.sites.values()}
    )


def write_site_file(b: Bench, site: Site, layout: str) -> None:
    m = b.mariadb
    data = {
        "name": site.name,
        "playbook": "wordpress",
        "task": TASK,
        "layout": layout,
        "promote": {"health_timeout": 30},
        "environments": {
            "production": {
                "host": "web",
                "path": str(site.prod),
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
            "dev": {"host": "web", "path": str(site.dev)},
        },
    }
    folder = b.inventory.parent / "sites"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{site.name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def orch(b: Bench, *args: str, may_fail: bool = False) -> subprocess.CompletedProcess:
    """Run the real CLI; stop the bench on an unexpected exit code (1 is allowed with may_fail)."""
    proc = subprocess.run([*ORCH, "-i", str(b.inventory), *args], capture_output=True, text=True, env=b.env)
    if proc.returncode not in ((0, 1) if may_fail else (0,)):
        raise SystemExit(
            f"orch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def prepare(b: Bench, site: Site, rng: random.Random) -> None:
    """Adopt the releases layout where needed, back up once, and put version 0 live (unmeasured)."""
    if site.layout == "releases":
        orch(b, "--json", "adopt", site.name, "--layout", "releases", "--task", TASK, "--yes")
        write_site_file(b, site, "releases")
    orch(b, "--json", "backup", site.name, "--task", TASK)
    write_version(site.dev, 0, rng)
    result = promote(b, site)
    if result.get("status") != "ok":
        raise SystemExit(f"warm-up promotion of {site.name} failed: {result}")
    site.revisions[0] = result["revision"]


def promote(b: Bench, site: Site) -> dict:
    """`orch --json promote SITE --from dev`; its JSON result, or {"status": "failed", "error": ...}."""
    proc = orch(b, "--json", "promote", site.name, "--from", "dev", "--task", TASK, "--yes", may_fail=True)
    if proc.returncode:
        return {"status": "failed", "error": proc.stderr.strip()[-500:]}
    return json.loads(proc.stdout)


def promotion_log(b: Bench, site: Site) -> list[dict]:
    """The site's promotions from the oplog, oldest first, with their steps."""
    ops = json.loads(orch(b, "--json", "log", "--task", TASK, "--action", "promote", "--site", site.name).stdout)
    return sorted(ops, key=lambda op: op["id"])


# --- the load ----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    path: str
    due: float  # time.time() of the request's 20 ms slot
    sent: float  # when the connection was opened
    done: float
    status: int | None
    error: str | None
    markers: frozenset  # version numbers of the `orch-bench-rev-N` markers in the body
    revision: str | None  # the body of /orch-revision.php (an orch revision id)
    seen: frozenset = frozenset()  # the versions this answer shows (see classify)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status != 200 or self.done - self.due > TIMEOUT

    @property
    def latency(self) -> float:
        return self.done - self.due


class Load:
    """Open-loop load: a scheduler thread starts one request thread per 20 ms slot, whatever the answers do."""

    def __init__(self, site: Site, nginx):
        self.host_header = site.url.split("://", 1)[1]
        self.address, self.port = nginx.address, nginx.port
        self.answers: list[Answer] = []
        self.max_lag = 0.0  # how late the scheduler started a slot (proves the rate held)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)
        self._scheduler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._scheduler.join()
        for thread in self._threads:
            thread.join()

    def _schedule(self) -> None:
        start, i = time.time(), 0
        while not self._stop.is_set():
            due = start + i / RATE
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            self.max_lag = max(self.max_lag, time.time() - due)
            thread = threading.Thread(target=self._request, args=(PATHS[i % len(PATHS)], due), daemon=True)
            thread.start()
            self._threads.append(thread)
            i += 1

    def _request(self, path: str, due: float) -> None:
        sent, status, error, body = time.time(), None, None, b""
        conn = http.client.HTTPConnection(self.address, self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", path, headers={"Host": self.host_header, "Connection": "close"})
            response = conn.getresponse()
            status, body = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            error = type(exc).__name__
        finally:
            conn.close()
        revision = body.decode(errors="replace").strip()[:100] if path == "/orch-revision.php" else None
        self.answers.append(
            Answer(path, due, sent, time.time(), status, error, frozenset(int(m) for m in MARK.findall(body)), revision)
        )


def classify(answers: list[Answer], revisions: dict[int, str]) -> None:
    """Set each answer's versions: its markers, or for /orch-revision.php the version of the revision id."""
    version_of = {rev: k for k, rev in revisions.items()}
    for a in answers:
        a.seen = (
            a.markers if a.revision is None else frozenset([version_of[a.revision]] if a.revision in version_of else [])
        )


def load_window(b: Bench, site: Site, seconds: float | None = None, action=None) -> tuple[Load, float, object]:
    """Run the load against `site` for `seconds`, or for as long as action() runs; return (load, window, result)."""
    load = Load(site, b.web.nginx)
    with load:
        started = time.time()
        result = action() if action else time.sleep(seconds)
        window = time.time() - started
    return load, window, result


# --- one layout --------------------------------------------------------------------------------------------


@dataclass
class Run:
    k: int
    window: float
    answers: list[Answer]
    max_lag: float
    status: str
    switch: float | None = None  # the oplog's "switch ... in X.XXXs"
    switch_start: float | None = None  # epoch seconds the switch step started
    switch_end: float | None = None  # epoch seconds the switch step finished
    rollback_end: float | None = None  # epoch seconds the automatic rollback step finished
    promotion: float | None = None  # the operation's duration in the oplog
    changes: str = ""
    steps: list[tuple[str, float, float]] = field(default_factory=list)  # oplog steps: name, start, end (epoch)

    @property
    def stale(self) -> list[Answer]:
        if self.switch_end is None or self.status != "ok":  # after a rollback the old version is right
            return []
        return [a for a in self.answers if a.sent > self.switch_end and not a.failed and (self.k - 1) in a.seen]

    @property
    def exposure(self) -> float | None:
        """Seconds production served this promotion's release: from the switch step's start to the end of the
        automatic rollback (None when it was not rolled back)."""
        if self.switch_start is None or self.rollback_end is None:
            return None
        return self.rollback_end - self.switch_start

    @property
    def mixed(self) -> list[Answer]:
        return [a for a in self.answers if len(a.seen) > 1]

    def shown(self) -> str:
        """How many successful answers of the marked paths showed the old version, the new one, or neither."""
        ok = [a for a in self.answers if not a.failed and a.path != FONT]
        old = sum(a.seen == {self.k - 1} for a in ok)
        new = sum(a.seen == {self.k} for a in ok)
        return f"{old} / {new} / {sum(not a.seen for a in ok)}"


def measure_layout(b: Bench, site: Site, runs: int, fatal: int, rng: random.Random) -> Measured:
    """N promotions under load, then `fatal` promotions of a release that fatals, each followed by its baseline:
    the same load for the same time, no promotion (interleaved, so both see the same background load)."""
    step(f"{site.layout}: php-fpm reload (an empty OPcache), adopt/backup/warm-up promotion (version 0)")
    b.web.php.reload()
    prepare(b, site, rng)
    measured = Measured([], [], [], [])
    for k in range(1, runs + fatal + 1):
        broken = k > runs
        write_version(site.dev, k, rng)
        if broken:  # every page of this release dies with a PHP fatal error (HTTP 500)
            write_as_user(site.dev / THEME / "functions.php", FATAL_PHP)
        what = "promotion of a release that fatals" if broken else "promotion"
        step(f"{site.layout}: {what} {k}/{runs + fatal} under {RATE} requests/s")
        run, baseline = promote_and_baseline(b, site, k)
        (measured.fatal if broken else measured.runs).append(run)
        (measured.fatal_baselines if broken else measured.baselines).append(baseline)
    add_oplog_figures(measured.runs + measured.fatal, promotion_log(b, site)[-(runs + fatal) :] if runs + fatal else [])
    b.opcache[site.layout] = opcache(b)
    step(f"  OPcache after the {site.layout} runs: {b.opcache[site.layout]}")
    for run in measured.runs + measured.fatal:
        step(
            f"  {site.layout} run {run.k} steps (s): "
            + ", ".join(f"{name} {end - start:.2f}" for name, start, end in run.steps)
        )
        explain(site.layout, run)
    return measured


def promote_and_baseline(b: Bench, site: Site, k: int) -> tuple[Run, Run]:
    """Promote version k under load, then the same load for as long with no promotion."""
    load, window, result = load_window(b, site, action=lambda: promote(b, site))
    if result.get("status") == "ok":
        site.revisions[k] = result["revision"]
    classify(load.answers, site.revisions)
    step(f"  OPcache after promotion {k}: {opcache(b)}")
    run = Run(
        k,
        window,
        load.answers,
        load.max_lag,
        result.get("status", "?"),
        changes=f"+{result.get('added', '?')} ~{result.get('changed', '?')} -{result.get('removed', '?')}",
    )
    if result.get("status") != "ok":
        step(f"  promotion {k} did not succeed: {result.get('error', result)[-300:]}")
    step(f"{site.layout}: baseline {k}, the same load for {window:.1f} s with no promotion")
    load, quiet, _ = load_window(b, site, seconds=window)
    classify(load.answers, site.revisions)
    return run, Run(k, quiet, load.answers, load.max_lag, "baseline")


@dataclass
class Measured:
    runs: list[Run]
    baselines: list[Run]
    fatal: list[Run]  # promotions of a release that fatals (rolled back)
    fatal_baselines: list[Run]


def add_oplog_figures(runs: list[Run], ops: list[dict]) -> None:
    """Status (`rolled_back`, not the CLI's exit 1), switch time (from the step's output), switch end and promotion
    time, from the oplog."""
    for run, op in zip(runs, ops, strict=True):
        run.status = op["status"]
        run.promotion = op["duration"]
        run.steps = [
            (st["name"], epoch(st["started_at"]), epoch(st["finished_at"] or st["started_at"]))
            for st in op.get("steps", [])
        ]
        back = next((s for s in op.get("steps", []) if s["name"] == "automatic rollback"), None)
        run.rollback_end = epoch(back["finished_at"]) if back and back["finished_at"] else None
        switch = next((s for s in op.get("steps", []) if s["name"] == "switch"), None)
        if switch and switch["finished_at"]:
            found = re.search(r"in (\d+\.\d+)s", switch["output"])
            run.switch = float(found.group(1)) if found else switch["duration"]
            run.switch_start, run.switch_end = epoch(switch["started_at"]), epoch(switch["finished_at"])


def explain(layout: str, run: Run) -> None:
    """On stderr: when the odd answers (failed, stale, mixed) were sent, relative to the switch step."""
    if run.switch_start is None:
        return
    for what, answers in (("failed", [a for a in run.answers if a.failed]), ("stale", run.stale), ("mixed", run.mixed)):
        if answers:
            when = ", ".join(
                f"{a.path} {a.sent - run.switch_start:+.3f}..{a.done - run.switch_start:+.3f}s {sorted(a.seen)}"
                for a in answers[:8]
            )
            step(
                f"  {layout} run {run.k}: {len(answers)} {what}; sent..answered, from the switch step's start "
                f"(it took {run.switch_end - run.switch_start:.3f}s): {when}"
            )
            if what == "failed":
                first, last = min(a.sent for a in answers), max(a.sent for a in answers)
                steps = ", ".join(
                    f"{name} {start - run.switch_start:+.2f}..{end - run.switch_start:+.2f}s"
                    for name, start, end in run.steps
                )
                step(
                    f"    failed requests were sent from {first - run.switch_start:+.2f}s to "
                    f"{last - run.switch_start:+.2f}s; the promotion's steps: {steps}"
                )


def epoch(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured promotions per layout (default 5)")
    parser.add_argument(
        "--fatal", type=int, default=3, help="then promotions of a release that fatals, rolled back (default 3)"
    )
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated (default: releases,inplace)")
    parser.add_argument(
        "--php-reload",
        nargs="?",
        const="plain",
        choices=["plain", "graceful"],
        help="set the host's web.php_reload: orch reloads php-fpm after each release switch; "
        "`graceful` also gives php-fpm process_control_timeout = 10s",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and the sites")
    parser.add_argument(
        "--priority",
        action="store_true",
        help="root: the bench and its daemons at autogroup nice -20 (a machine others keep busy)",
    )
    args = parser.parse_args()
    layouts = [name for name in args.layouts.split(",") if name]
    if not layouts or set(layouts) - set(LAYOUTS):
        parser.error(f"--layouts: choose from {', '.join(LAYOUTS)}")
    if args.priority:
        take_priority()
    rng = random.Random(20261127)
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-promote-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        b = start_testbed(stack, tmp, args.keep)
        if args.priority:
            raise_priority(b.host, b.mariadb, b.s3, b.web.nginx, b.web.php)
        if args.php_reload == "graceful":
            graceful_php_reload(b.web.php)
        step("installing two WordPress sites (one per layout) and their dev copies")
        b.sites = {layout: install_site(b, layout) for layout in layouts}
        write_inventory(b, args.php_reload)
        load_before = loadavg()
        measured = {layout: measure_layout(b, b.sites[layout], args.runs, args.fatal, rng) for layout in layouts}
        print(
            f"\nMachine: {machine()}; 1-min load average {load_before} before, {loadavg()} after\n"
            f"Command: .venv/bin/python bench/promote.py --runs {args.runs} --fatal {args.fatal}"
            + ("" if layouts == list(LAYOUTS) else f" --layouts {','.join(layouts)}")
            + (f" --php-reload {args.php_reload}" if args.php_reload else "")
            + (" --priority" if args.priority else "")
            + "\n"
        )
        print(report(measured))
        print(
            "\nOPcache of the shared php-fpm pool (reloaded before each layout) after each layout's runs: "
            + "; ".join(f"{layout}: {state}" for layout, state in b.opcache.items())
        )
        if args.keep:
            print(f"\nkept: {tmp} (daemons stopped), sites in {b.work}")


# --- report ------------------------------------------------------------------------------------------------


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        ),
        "?",
    )
    nginx = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    php = subprocess.run(["php", "-r", "echo PHP_VERSION;"], capture_output=True, text=True).stdout.strip()
    wp = re.search(r"\$wp_version = '([^']+)'", (WORDPRESS_SOURCE / "wp-includes/version.php").read_text())
    return (
        f"{os.cpu_count()} CPUs ({model}), Debian {Path('/etc/debian_version').read_text().strip()}, "
        f"nginx {nginx}, php-fpm {php} ({PHP_CHILDREN} static children), WordPress {wp.group(1) if wp else '?'}"
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def failures(answers: list[Answer]) -> str:
    """Why requests failed, e.g. `500 x3, timeout x1`."""
    kinds: dict[str, int] = {}
    for a in answers:
        if a.failed:
            kind = a.error or (str(a.status) if a.status != 200 else "slower than 5 s")
            kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "-"


def summary_row(label: str, runs: list[Run]) -> str:
    answers = [a for r in runs for a in r.answers]
    failed = [a for a in answers if a.failed]
    latencies = [a.latency for a in answers]
    home = [a.latency for a in answers if a.path == "/"]
    switches = [r.switch for r in runs if r.switch is not None]
    promotions = [r.promotion for r in runs if r.promotion is not None]
    fmt = lambda xs, f: f"{f(xs):.3f}" if xs else "-"  # noqa: E731
    return (
        f"| {label} | {len([r for r in runs if r.status != 'baseline']) or '-'} | "
        f"{sum(r.window for r in runs):.1f} | {len(answers)} | {len(failed)} | "
        f"{100 * len(failed) / max(1, len(answers)):.2f} | {sum(len(r.stale) for r in runs)} | "
        f"{sum(len(r.mixed) for r in runs)} | {1000 * percentile(latencies, 0.5):.0f} / "
        f"{1000 * percentile(latencies, 0.99):.0f} / {1000 * max(latencies, default=0):.0f} | "
        f"{1000 * percentile(home, 0.5):.0f} / {1000 * percentile(home, 0.99):.0f} | "
        f"{fmt(switches, statistics.median)} / {fmt(switches, max)} | "
        f"{fmt(promotions, statistics.median).rstrip('0')} | {failures(answers)} |"
    )


def run_row(layout: str, r: Run, baseline: Run) -> str:
    def ms(run: Run, q: float, path: str | None = None) -> str:
        return f"{1000 * percentile([a.latency for a in run.answers if path in (None, a.path)], q):.0f}"

    return (
        f"| {layout} | {r.k} | {r.status} | {r.changes} | {r.window:.1f} | {len(r.answers)} | "
        f"{sum(a.failed for a in r.answers)} | {len(r.stale)} | {len(r.mixed)} | {r.shown()} | "
        f"{ms(r, 0.99)} ({ms(baseline, 0.99)}) | {ms(r, 0.5, '/')} ({ms(baseline, 0.5, '/')}) | "
        f"{sum(a.failed for a in baseline.answers)} | {r.switch if r.switch is not None else '-'} | "
        f"{r.promotion if r.promotion is not None else '-'} | {1000 * r.max_lag:.0f} |"
    )


def report(measured: dict[str, Measured]) -> str:
    lines = [
        f"Load: {RATE} requests/s open loop, new connection each, cycling over {', '.join(PATHS)}; "
        f"failed = error, > {TIMEOUT:.0f} s or status != 200.",
        "",
    ]
    if any(m.runs for m in measured.values()):
        lines += [
            "| layout | promotions | window s | requests | failed | failed % | stale after switch | "
            "mixed pages | latency p50 / p99 / max ms | `/` p50 / p99 ms | switch s median / max | "
            "promotion s median | failures |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for layout, m in measured.items():
            lines.append(summary_row(layout, m.runs))
            lines.append(summary_row(f"{layout}: baseline (no promotion)", m.baselines))
        lines += [
            "",
            "| layout | run | status | files +added ~changed -removed | window s | requests | failed | "
            "stale | mixed | old / new / neither | p99 ms (baseline) | `/` p50 ms (baseline) | baseline failed | "
            "switch s | promotion s | max scheduler lag ms |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for layout, m in measured.items():
            lines += [run_row(layout, r, q) for r, q in zip(m.runs, m.baselines, strict=True)]
        lines += ["", *steps_table({layout: m.runs for layout, m in measured.items()})]
    if any(m.fatal for m in measured.values()):
        lines += [
            "",
            *fatal_table(measured),
            "",
            *steps_table({layout: m.fatal for layout, m in measured.items()}, "release that fatals"),
        ]
    return "\n".join(lines)


def fatal_table(measured: dict[str, Measured]) -> list[str]:
    """Promotions of a release that fatals: how long production served it (switch -> end of the rollback), the
    requests that failed meanwhile, and what that exposure means if every request were a page (RATE x it)."""
    lines = [
        "| layout | run | status | switch -> rollback s | requests | failed (baseline) | failed `/` | "
        f"last failure after the rollback s | failed at {RATE} pages/s (= {RATE} x exposure) | promotion s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layout, m in measured.items():
        for r, q in zip(m.fatal, m.fatal_baselines, strict=True):
            failed = [a for a in r.answers if a.failed]
            last = max((a.sent for a in failed), default=None)
            after = f"{last - r.rollback_end:+.2f}" if last is not None and r.rollback_end else "-"
            exposure = r.exposure
            lines.append(
                f"| {layout} | {r.k} | {r.status} | {f'{exposure:.2f}' if exposure else '-'} | "
                f"{len(r.answers)} | {len(failed)} ({sum(a.failed for a in q.answers)}) | "
                f"{sum(a.path == '/' for a in failed)} | {after} | "
                f"{f'{RATE * exposure:.0f}' if exposure else '-'} | {r.promotion or '-'} |"
            )
    exposures = [r.exposure for m in measured.values() for r in m.fatal if r.exposure is not None]
    if exposures:
        lines += [
            "",
            f"switch -> rollback: median {statistics.median(exposures):.2f} s, max {max(exposures):.2f} s "
            f"over {len(exposures)} promotions of a release that fatals",
        ]
    return lines


def steps_table(measured: dict[str, list[Run]], what: str = "promotion") -> list[str]:
    """Where a promotion's time goes: each oplog step's median (and max) duration, per layout."""
    layouts = list(measured)
    names = list(dict.fromkeys(name for runs in measured.values() for r in runs for name, _, _ in r.steps))
    lines = [f"| {what}: step, s: median (max) | " + " | ".join(layouts) + " |", "|---|" + "---:|" * len(layouts)]
    for name in names:
        cells = []
        for layout in layouts:
            took = [end - start for r in measured[layout] for n, start, end in r.steps if n == name]
            cells.append(f"{statistics.median(took):.2f} ({max(took):.2f})" if took else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
