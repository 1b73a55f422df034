"""Benchmark: a nightly `orch backup` (restic: dedup + compression) against a naive full `tar czf` to S3.

What is compared
    One WordPress-like site (a docroot of ~60 % incompressible uploads and ~40 % text/PHP, a few thousand files,
    plus a MariaDB database of posts/options/postmeta) is backed up every night to the same S3 server:

    * orch:  `orch --json backup SITE`, the real CLI. restic runs on the host, reads the docroot and the
             database dump streamed into it, deduplicates against what the repository already holds,
             compresses, and writes to the bucket under `orch/SITE/`.
    * naive: `mariadb-dump` (same flags as orch) to a file on the host, then `tar czf - docroot dump.sql`
             streamed straight into the same bucket under `naive/` (boto3 `upload_fileobj` reading the pipe).
             Each night stores the whole site again: that is what such a script does.
    * by hand: the two restic commands orch runs, typed on the host with nothing around them (no CLI, oplog,
             locks, row counts or checks): `mariadb-dump | restic backup --stdin`, then `restic backup .` in the
             docroot, into a repository of their own (`raw/` in the same bucket). orch's time minus this one is
             orch's own overhead.

    Night 1 is a first, full backup for both. Then 1 % of the files (by count and by bytes: text files
    rewritten, new uploads added) and a few hundred database rows change, and night 2 runs both again.
    Separately, right after night 1, orch backs up the UNCHANGED site once more: the issue's bar is that such
    a second backup adds < 1 % of the site's size and takes < half the time of the first.

    Last, the live progress line's cost: the unchanged site is backed up --progress-rounds times each way,
    alternating, once with stdout and stderr on a pseudo-terminal (the line is drawn: restic's status lines
    parsed, redrawn up to 4 times a second) and once into pipes (no progress); the best times are compared.

Why it is fair
    Same machine, same site, same S3 server (`rclone serve s3` from the testbed), same bucket, same dump tool
    and flags, same page cache (the data is generated first, so both read warm files). Both read the site as
    the host's user on the host: tar through `runuser`, restic through orch's ssh session to the loopback
    sshd. Neither sends its data through ssh: restic uploads it itself, tar's pipe is read by boto3 on the
    same machine. orch's time is the wall time of the whole CLI run (start-up, locks, oplog, row counts,
    repository checks included); the naive time covers dump, tar and upload.
    "Stored" is measured the same way for both: bytes that appeared in the bucket (restic's packs, indexes and
    snapshot files under the site's prefix; the tar.gz object's size). restic 0.14's `added` (from orch's JSON
    summary) is printed too, but it counts new data BEFORE compression, so it is not what the bucket holds.
    The naive side gets gzip's single thread (what `tar czf` does); restic uses all cores. That difference is
    part of what is measured, not a handicap added by the bench.

Setup
    The testbed's daemons (tests/testbed: one sshd host as user `orch-bench`, MariaDB, S3) start in a temp
    dir and stop at the end. The docroot lives in that user's home (`~/bench-<pid>`), removed at the end with
    the user's restic cache, unless --keep.

Usage
    .venv/bin/python bench/backup.py [--size-mb 200] [--progress-rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed.mariadb import start_mariadb  # noqa: E402
from testbed.s3 import start_s3  # noqa: E402
from testbed.sshd import start_sshd  # noqa: E402
from testbed.terminal import run_on_terminal  # noqa: E402

from orchestrator.backends.engines.mysql import DUMP_FLAGS as ORCH_DUMP_FLAGS  # noqa: E402

ORCH = [sys.executable, "-m", "orchestrator"]
SITE, DB_NAME, DB_USER = "wp", "wp", "wp"
BUCKET, ORCH_PREFIX, NAIVE_PREFIX, RAW_PREFIX = "bench", "orch", "naive", "raw"
HOST_USER, HOST_ADDRESS = "orch-bench", "127.0.0.2"
DUMP_FLAGS = " ".join(ORCH_DUMP_FLAGS)  # the naive and raw dumps use orch's own mariadb-dump flags
BINARY_SHARE = 0.6  # of the docroot's bytes
CHANGE_SHARE = 0.01  # of files, by count and by bytes, changed before night 2
MB = 1_000_000


# --- synthetic content ---------------------------------------------------------------------------------------


class Text:
    """Source-like text: tokens drawn from a Zipf-weighted vocabulary, so gzip/zstd find realistic redundancy
    (about 3x with gzip, like PHP and prose), not the absurd ratios of a repeated phrase."""

    KEYWORDS = (
        "function",
        "return",
        "if",
        "else",
        "foreach",
        "as",
        "array",
        "public",
        "private",
        "static",
        "class",
        "new",
        "null",
        "true",
        "false",
        "echo",
        "isset",
        "=>",
        "=",
        "==",
        "!==",
        "&&",
        "||",
        "{",
        "}",
        "(",
        ")",
        ";",
        "$this->",
        "wp_",
        "get_option",
        "esc_html",
        "__(",
        "apply_filters",
        "the",
        "and",
        "of",
        "to",
        "a",
        "in",
        "is",
        "for",
        "with",
        "on",
        "this",
        "that",
        "post",
        "page",
    )

    def __init__(self, rng: random.Random, vocabulary: int = 6000):
        syllables = [
            "ka",
            "lo",
            "mi",
            "ne",
            "po",
            "ru",
            "si",
            "ta",
            "ve",
            "zo",
            "ba",
            "de",
            "fi",
            "gu",
            "ha",
            "jo",
            "qu",
            "xe",
            "wy",
            "str",
            "ing",
            "er",
            "ion",
            "ed",
            "_",
        ]
        made = {"".join(rng.choices(syllables, k=rng.randint(2, 5))) for _ in range(vocabulary * 2)}
        self.words = list(self.KEYWORDS) + sorted(made)[:vocabulary]
        weights = [1 / (rank + 1) for rank in range(len(self.words))]
        self.cumulative = list(itertools.accumulate(weights))
        self.rng = rng

    def words_for(self, n_bytes: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cumulative, k=max(1, n_bytes // 6))

    def source(self, n_bytes: int, header: str = "") -> bytes:
        """About n_bytes of indented, line-broken text."""
        words = self.words_for(n_bytes)
        lines = (("    " * (i % 4)) + " ".join(words[j : j + 9]) for i, j in enumerate(range(0, len(words), 9)))
        return (header + "\n".join(lines) + "\n").encode()[: max(n_bytes, 1)]

    def sentence(self, n_bytes: int) -> str:
        return " ".join(self.words_for(n_bytes)).replace("'", "").replace("\\", "")


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    """A size between low and high, spread evenly over orders of magnitude (many small, few big)."""
    return int(low * (high / low) ** rng.random())


# --- the docroot ---------------------------------------------------------------------------------------------


def text_path(rng: random.Random, n: int) -> str:
    kind = rng.choice(
        [
            ("wp-includes", ".php"),
            ("wp-admin", ".php"),
            ("wp-content/plugins", ".php"),
            ("wp-content/plugins", ".js"),
            ("wp-content/themes/agency", ".css"),
            ("wp-content/themes/agency", ".php"),
            ("wp-content/languages", ".po"),
        ]
    )
    return f"{kind[0]}/d{rng.randrange(40)}/f{n}{kind[1]}"


def upload_path(rng: random.Random, n: int) -> str:
    return f"wp-content/uploads/{rng.choice(range(2019, 2027))}/{rng.randrange(1, 13):02d}/img-{n}.jpg"


def write_file(root: Path, rel: str, data: bytes) -> int:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def make_docroot(root: Path, size: int, rng: random.Random, text: Text) -> None:
    """Fill root with ~size bytes: BINARY_SHARE random "uploads" of 50 KB-2 MB, the rest text of 1-100 KB."""
    binary_budget = int(size * BINARY_SHARE)
    text_budget = size - binary_budget
    n = 0
    while binary_budget > 0:
        chunk = min(log_uniform(rng, 50_000, 2_000_000), max(binary_budget, 50_000))
        binary_budget -= write_file(root, upload_path(rng, n), rng.randbytes(chunk))
        n += 1
    while text_budget > 0:
        rel = text_path(rng, n)
        header = "<?php\n" if rel.endswith(".php") else ""
        text_budget -= write_file(root, rel, text.source(log_uniform(rng, 1_000, 100_000), header))
        n += 1
    write_file(root, "index.php", b"<?php\nrequire __DIR__ . '/wp-blog-header.php';\n")


def tree_stats(root: Path) -> tuple[int, int]:
    """(file count, bytes) of a directory tree."""
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()]
    return len(sizes), sum(sizes)


def change_docroot(root: Path, rng: random.Random, text: Text) -> dict:
    """Change CHANGE_SHARE of the files by count and by bytes, like a busy day: half the changed files are
    text files rewritten (an edited theme, a plugin update), the other half new uploads that bring the
    changed bytes up to CHANGE_SHARE of the docroot."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    count, size = len(files), sum(p.stat().st_size for p in files)
    n_changed = max(2, round(count * CHANGE_SHARE))
    texts = [p for p in files if p.suffix != ".jpg"]
    rewritten = rng.sample(texts, n_changed // 2)
    changed_bytes = 0
    for path in rewritten:
        header = "<?php\n" if path.suffix == ".php" else ""
        changed_bytes += write_file(root, str(path.relative_to(root)), text.source(path.stat().st_size, header))
    n_added = n_changed - len(rewritten)
    each = max(50_000, (int(size * CHANGE_SHARE) - changed_bytes) // n_added)
    for i in range(n_added):
        changed_bytes += write_file(root, upload_path(rng, 10_000_000 + i), rng.randbytes(each))
    return {
        "files": count,
        "bytes": size,
        "rewritten": len(rewritten),
        "added": n_added,
        "changed_bytes": changed_bytes,
    }


# --- the database --------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE wp_options (option_id BIGINT PRIMARY KEY AUTO_INCREMENT, option_name VARCHAR(191) UNIQUE,
  option_value LONGTEXT, autoload VARCHAR(20) DEFAULT 'yes') ENGINE=InnoDB;
CREATE TABLE wp_posts (ID BIGINT PRIMARY KEY AUTO_INCREMENT, post_author BIGINT, post_date DATETIME,
  post_content LONGTEXT, post_title TEXT, post_excerpt TEXT, post_status VARCHAR(20), post_name VARCHAR(200),
  post_modified DATETIME, post_type VARCHAR(20), guid VARCHAR(255)) ENGINE=InnoDB;
CREATE TABLE wp_postmeta (meta_id BIGINT PRIMARY KEY AUTO_INCREMENT, post_id BIGINT, meta_key VARCHAR(255),
  meta_value LONGTEXT, KEY post_id (post_id)) ENGINE=InnoDB;
"""


def post_row(text: Text, rng: random.Random, n: int) -> str:
    paragraphs = "".join(
        f"<!-- wp:paragraph --><p>{text.sentence(rng.randint(200, 1500))}</p><!-- /wp:paragraph -->\\n"
        for _ in range(rng.randint(2, 8))
    )
    date = f"20{rng.randint(15, 26)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 10:00:00"
    return (
        f"({rng.randint(1, 9)}, '{date}', '{paragraphs}', '{text.sentence(40)}', '{text.sentence(120)}', "
        f"'publish', 'post-{n}', '{date}', 'post', 'https://wp.example/?p={n}')"
    )


def insert_posts(text: Text, rng: random.Random, first: int, count: int) -> list[str]:
    """INSERT statements of about 1 MB each (well under max_allowed_packet)."""
    statements, rows, size = [], [], 0
    for n in range(first, first + count):
        rows.append(post_row(text, rng, n))
        size += len(rows[-1])
        if size > MB or n == first + count - 1:
            statements.append(
                "INSERT INTO wp_posts (post_author, post_date, post_content, post_title, "
                "post_excerpt, post_status, post_name, post_modified, post_type, guid) VALUES " + ",\n".join(rows) + ";"
            )
            rows, size = [], 0
    return statements


def seed_database(server, password: str, size: int, rng: random.Random, text: Text) -> None:
    """A WordPress-like database of about `size` bytes of dump: mostly post bodies, options, postmeta."""
    server.create_database(DB_NAME, DB_USER, password)
    posts = max(100, size // 5_000)
    sql = [SCHEMA, *insert_posts(text, rng, 1, posts)]
    options = ",".join(
        f"('option_{i}', 'a:2:{{s:3:\"key\";s:40:\"{text.sentence(rng.randint(20, 2000))}\";}}')" for i in range(1500)
    )
    sql.append(f"INSERT INTO wp_options (option_name, option_value) VALUES {options};")
    for start in range(0, posts * 4, 5000):
        meta = ",".join(
            f"({rng.randint(1, posts)}, '_meta_{i % 30}', '{text.sentence(rng.randint(10, 200))}')"
            for i in range(start, min(start + 5000, posts * 4))
        )
        sql.append(f"INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES {meta};")
    run_sql(server, "\n".join(sql))


def change_database(server, rng: random.Random, text: Text) -> int:
    """Touch a few hundred rows, as a day on a live site does: edit 150 of the newest 20 % of posts (what
    editors touch), publish 100 new ones, update 50 options. Return the number of rows.

    restic cuts a dump into ~1 MiB content-defined chunks and stores again every chunk holding a changed row:
    edits scattered uniformly over ALL posts would make it store nearly the whole dump again each night."""
    posts = int(server.sql("SELECT MAX(ID) FROM wp_posts", DB_NAME))
    sql = [
        f"UPDATE wp_posts SET post_content = '{text.sentence(3000)}', post_modified = NOW() WHERE ID = {i};"
        for i in rng.sample(range(max(1, posts - max(posts // 5, 150) + 1), posts + 1), 150)
    ]
    sql += insert_posts(text, rng, posts + 1, 100)
    sql += [
        f"UPDATE wp_options SET option_value = '{text.sentence(300)}' WHERE option_name = 'option_{i}';"
        for i in rng.sample(range(1500), 50)
    ]
    run_sql(server, "\n".join(sql))
    return 300


def run_sql(server, script: str) -> None:
    """Feed a (large) SQL script to the server as root over its socket (stdin: no argv size limit)."""
    subprocess.run(
        ["mariadb", "--no-defaults", "-S", str(server.socket), "-u", "root", DB_NAME], input=script.encode(), check=True
    )


# --- the testbed and the inventory ---------------------------------------------------------------------------


@dataclass
class Bench:
    tmp: Path
    host: object
    mariadb: object
    s3: object
    docroot: Path
    db_password: str
    env: dict = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.tmp / "inventory" / "inventory.yaml"

    def s3_client(self):
        return self.s3.client()


def start_testbed(stack: ExitStack, tmp: Path) -> Bench:
    """Start sshd (one host), MariaDB and S3 under tmp; register their stop() on stack."""
    identity = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(identity)], check=True)
    host = start_sshd(tmp / "ssh", "bench", HOST_ADDRESS, HOST_USER, identity)
    stack.callback(host.stop)
    mariadb = start_mariadb(tmp / "mariadb")
    stack.callback(mariadb.stop)
    s3 = start_s3(tmp / "s3")
    stack.callback(s3.stop)
    s3.client().create_bucket(Bucket=BUCKET)
    return Bench(tmp, host, mariadb, s3, host.home / f"bench-{os.getpid()}", "pw-" + os.urandom(8).hex())


def build_site(stack: ExitStack | None, b: Bench, size_mb: int, rng: random.Random, text: Text) -> None:
    """Generate the bench site (a `size_mb` docroot owned by the host user, a database of 15 % of that) and
    write the inventory; with a stack, remove the docroot and the host user's restic cache when it closes."""
    if stack is not None:
        stack.callback(shutil.rmtree, b.docroot, ignore_errors=True)
        stack.callback(shutil.rmtree, b.host.home / ".cache" / "restic", ignore_errors=True)
    step(f"generating a {size_mb} MB docroot in {b.docroot} and the database")
    make_docroot(b.docroot, size_mb * MB, rng, text)
    subprocess.run(["chown", "-R", f"{HOST_USER}:{HOST_USER}", str(b.docroot)], check=True)
    seed_database(b.mariadb, b.db_password, size_mb * MB * 15 // 100, rng, text)
    write_inventory(b)


def write_inventory(b: Bench) -> None:
    """One host, one S3 storage, one WordPress site on MariaDB: what a real agency inventory would say."""
    h = b.host
    inventory = {
        "oplog": f"sqlite:///{b.tmp}/state/oplog.db",
        "storage": {
            "offsite": {
                "type": "s3",
                "endpoint": b.s3.endpoint,
                "bucket": BUCKET,
                "prefix": ORCH_PREFIX,
                "access_key": {"env": "B_S3_KEY"},
                "secret_key": {"env": "B_S3_SECRET"},
                "password": {"env": "B_RESTIC_PW"},
            }
        },
        "hosts": {
            "web": {
                "address": h.address,
                "port": h.port,
                "user": h.user,
                "host_key": h.host_key,
                "identity_file": str(h.identity_file),
            }
        },
        "defaults": {"backup": {"storage": "offsite", "retention": {"daily": 7}}},
    }
    site = {
        "name": SITE,
        "playbook": "wordpress",
        "task": "10001",
        "environments": {
            "production": {
                "host": "web",
                "path": str(b.docroot),
                "url": "https://wp.example",
                "database": {
                    "engine": "mysql",
                    "name": DB_NAME,
                    "user": DB_USER,
                    "password": {"env": "B_DB_PW"},
                    "host": b.mariadb.host,
                    "port": b.mariadb.port,
                },
            }
        },
    }
    (b.inventory.parent / "sites").mkdir(parents=True, exist_ok=True)
    b.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    (b.inventory.parent / "sites" / f"{SITE}.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    b.env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")} | {
        "ORCH_STATE_DIR": str(b.tmp / "state"),
        "PYTHONPATH": str(REPO),
        "B_S3_KEY": b.s3.access_key,
        "B_S3_SECRET": b.s3.secret_key,
        "B_RESTIC_PW": "pw-" + os.urandom(8).hex(),
        "B_DB_PW": b.db_password,
    }


# --- the two ways of backing up ------------------------------------------------------------------------------


@dataclass
class Night:
    seconds: float
    stored: int  # bytes that appeared in the bucket
    added: int | None = None  # orch's summary "added" (restic data_added: new data BEFORE compression)
    added_db: int | None = None  # ... of which the database dump's part
    dump: int | None = None  # orch's summary: size of the database dump restic read


def prefix_bytes(b: Bench, prefix: str) -> int:
    pages = b.s3_client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))


def orch_backup(b: Bench) -> Night:
    """`orch --json backup wp`: wall time, bucket growth under the site's prefix, summary's added bytes."""
    before = prefix_bytes(b, f"{ORCH_PREFIX}/{SITE}")
    start = time.monotonic()
    proc = subprocess.run(
        [*ORCH, "-i", str(b.inventory), "--json", "backup", SITE, "--task", "10001"],
        capture_output=True,
        text=True,
        env=b.env,
    )
    seconds = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"orch backup failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)[0]["summary"]
    return Night(
        seconds,
        prefix_bytes(b, f"{ORCH_PREFIX}/{SITE}") - before,
        summary["added"],
        summary["db"]["added"],
        summary["db"]["size"],
    )


def naive_backup(b: Bench, key: str) -> Night:
    """mariadb-dump to a file on the host, then `tar czf - docroot dump.sql` streamed into the bucket."""
    dump = b.docroot.parent / f"{b.docroot.name}-dump.sql"
    m = b.mariadb
    start = time.monotonic()
    b.host.run(
        f"MYSQL_PWD={b.db_password} mariadb-dump --host={m.host} --port={m.port} --protocol=TCP "
        f"--user={DB_USER} {DUMP_FLAGS} {DB_NAME} > {dump}"
    )
    tar = subprocess.Popen(
        ["runuser", "-l", b.host.user, "-c", f"tar czf - -C {b.docroot} . -C {dump.parent} {dump.name}"],
        stdout=subprocess.PIPE,
    )
    b.s3_client().upload_fileobj(tar.stdout, BUCKET, f"{NAIVE_PREFIX}/{key}")
    if tar.wait():
        raise SystemExit(f"tar exited {tar.returncode}")
    b.host.run(f"rm -f {dump}")
    seconds = time.monotonic() - start
    return Night(seconds, b.s3_client().head_object(Bucket=BUCKET, Key=f"{NAIVE_PREFIX}/{key}")["ContentLength"])


def progress_cost(b: Bench, rounds: int) -> dict[str, list[float]]:
    """Back up the (unchanged) site `rounds` times each way, alternating: on a terminal (the live progress
    line drawn) and with output to pipes (no progress). Return the wall times of each."""
    times: dict[str, list[float]] = {"terminal (progress drawn)": [], "pipes (no progress)": []}
    argv = [*ORCH, "-i", str(b.inventory), "backup", SITE, "--task", "10001"]
    for _ in range(rounds):
        start = time.monotonic()
        code, screen = run_on_terminal(argv, b.env)
        times["terminal (progress drawn)"].append(time.monotonic() - start)
        if code or "\x1b[K" not in screen:
            raise SystemExit(f"orch backup on a terminal: exit {code}, drew no progress:\n{screen[-3000:]}")
        start = time.monotonic()
        subprocess.run(argv, capture_output=True, env=b.env, check=True)
        times["pipes (no progress)"].append(time.monotonic() - start)
    return times


def progress_table(times: dict[str, list[float]]) -> list[str]:
    best = {name: min(values) for name, values in times.items()}
    drawn, plain = best.values()
    return [
        "",
        "Live progress costs (the unchanged site backed up again, alternating; bar: no measurable cost):",
        "",
        "| orch backup | best | all rounds |",
        "|---|---:|---|",
        *(f"| {name} | {best[name]:.2f} s | {', '.join(f'{v:.2f}' for v in vs)} |" for name, vs in times.items()),
        f"| terminal / pipes | {drawn / plain:.3f} | |",
    ]


def raw_env_file(b: Bench, prefix: str = RAW_PREFIX, init: bool = True) -> Path:
    """Write the raw runs' secrets to a file only the host's user reads (not into argv), for the repository
    under `prefix` in the bucket (default: their own, initialised here)."""
    env = b.docroot.parent / f"{b.docroot.name}-{prefix.replace('/', '-')}.env"
    values = {
        "RESTIC_REPOSITORY": f"s3:{b.s3.endpoint.rstrip('/')}/{BUCKET}/{prefix}",
        "RESTIC_PASSWORD": b.env["B_RESTIC_PW"],
        "AWS_ACCESS_KEY_ID": b.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": b.s3.secret_key,
        "MYSQL_PWD": b.db_password,
    }
    env.write_text("".join(f"export {k}='{v}'\n" for k, v in values.items()))
    env.chmod(0o600)
    shutil.chown(env, HOST_USER, HOST_USER)
    if init:
        b.host.run(f". {env} && restic init -q")
    return env


def raw_backup(b: Bench, env: Path) -> Night:
    """What orch does, typed by hand on the host with nothing around it: `mariadb-dump | restic backup --stdin`,
    then `restic backup .` in the docroot, into a repository of its own (`raw/` in the same bucket)."""
    m = b.mariadb
    before = prefix_bytes(b, RAW_PREFIX)
    start = time.monotonic()
    b.host.run(
        f". {env} && set -o pipefail && mariadb-dump --host={m.host} --port={m.port} --protocol=TCP "
        f"--user={DB_USER} {DUMP_FLAGS} {DB_NAME} | restic backup -q --stdin --stdin-filename database.sql "
        f"&& cd {b.docroot} && restic backup -q ."
    )
    seconds = time.monotonic() - start
    return Night(seconds, prefix_bytes(b, RAW_PREFIX) - before)


def orch_steps(b: Bench) -> list[dict[str, float]]:
    """Each orch backup's step durations (from `orch log --steps`), oldest first, plus the CLI's own time."""
    proc = subprocess.run(
        [*ORCH, "-i", str(b.inventory), "--json", "log", "--steps", "--action", "backup"],
        capture_output=True,
        text=True,
        env=b.env,
        check=True,
    )
    ops = sorted(json.loads(proc.stdout), key=lambda op: op["id"])
    return [
        {step["name"]: step["duration"] or 0 for step in op["steps"]} | {"whole operation (oplog)": op["duration"]}
        for op in ops
    ]


# --- report --------------------------------------------------------------------------------------------------


def mb(n: int | None) -> str:
    return "" if n is None else f"{n / MB:,.1f} MB"


def steps_table(nights: list[Night], steps: list[dict[str, float]]) -> list[str]:
    """Where orch's time goes: one column per backup, one row per step, the rest is the CLI around them."""
    lines = ["| orch step (s) | night 1 | unchanged re-run | night 2 |", "|---|---:|---:|---:|"]
    for name in steps[0]:
        lines.append(f"| {name} | " + " | ".join(f"{run.get(name, 0):.1f}" for run in steps) + " |")
    rest = [n.seconds - run["whole operation (oplog)"] for n, run in zip(nights, steps, strict=True)]
    lines.append(
        "| (CLI start-up, config, oplog, ssh: wall - operation) | " + " | ".join(f"{r:.1f}" for r in rest) + " |"
    )
    return lines


def report(
    site: dict,
    change: dict,
    o1: Night,
    same: Night,
    o2: Night,
    n1: Night,
    n2: Night,
    steps: list[dict[str, float]],
    r1: Night,
    r2: Night,
) -> str:
    """The results as Markdown tables (printed, and pasted into bench/README.md)."""
    site_bytes = site["docroot_bytes"] + site["dump_bytes"]
    rows = [
        ("night 1 (full) time", f"{o1.seconds:.1f} s", f"{n1.seconds:.1f} s", f"{o1.seconds / n1.seconds:.2f}"),
        ("night 1 stored", mb(o1.stored), mb(n1.stored), f"{o1.stored / n1.stored:.3f}"),
        ("night 2 (1 % changed) time", f"{o2.seconds:.1f} s", f"{n2.seconds:.1f} s", f"{o2.seconds / n2.seconds:.2f}"),
        ("night 2 stored", mb(o2.stored), mb(n2.stored), f"{o2.stored / n2.stored:.4f}"),
        (
            "total stored after 2 nights",
            mb(o1.stored + same.stored + o2.stored),
            mb(n1.stored + n2.stored),
            f"{(o1.stored + same.stored + o2.stored) / (n1.stored + n2.stored):.3f}",
        ),
    ]
    changed = change["rewritten"] + change["added"]
    lines = [
        f"Site: {site['files']:,} files, docroot {mb(site['docroot_bytes'])}, dump {mb(site['dump_bytes'])}; "
        f"night 2 changed {change['rewritten']} files rewritten + {change['added']} added "
        f"({changed} = {100 * changed / change['files']:.2f} % of files, {mb(change['changed_bytes'])} = "
        f"{100 * change['changed_bytes'] / change['bytes']:.2f} % of bytes) and {change['rows']} database rows.",
        "",
        "| | orch (restic) | naive tar.gz | orch / naive |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    added = ", ".join(
        f"{name} {mb(n.added)} (dump {mb(n.added_db)})"
        for name, n in (("night 1", o1), ("unchanged re-run", same), ("night 2", o2))
    )
    lines += [
        "",
        "orch against the same restic commands typed by hand on the host (`mariadb-dump | restic backup "
        "--stdin`, then `restic backup .` in the docroot; bar: overhead <= 10 % or <= 1 s):",
        "",
        "| | orch | by hand | orch - by hand | orch / by hand |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} time | {o.seconds:.1f} s | {r.seconds:.1f} s | {o.seconds - r.seconds:+.1f} s | "
        f"{o.seconds / r.seconds:.2f} |"
        for name, o, r in (("night 1", o1, r1), ("night 2", o2, r2))
    ]
    lines += [
        f"| {name} stored | {mb(o.stored)} | {mb(r.stored)} | | {o.stored / r.stored:.3f} |"
        for name, o, r in (("night 1", o1, r1), ("night 2", o2, r2))
    ]
    lines += [
        "",
        f"orch's summary `added` (restic data_added, before compression): {added}.",
        "",
        "Second backup of the UNCHANGED site (bar: < 1 % added, < half the time of the first):",
        "",
        "| | value | bar | ok |",
        "|---|---:|---:|:-:|",
        f"| stored in the bucket | {mb(same.stored)} = {100 * same.stored / site_bytes:.3f} % of the site | "
        f"< 1 % | {'yes' if same.stored < 0.01 * site_bytes else 'NO'} |",
        f"| `added` (summary) | {mb(same.added)} = {100 * same.added / site_bytes:.3f} % of the site | "
        f"< 1 % | {'yes' if same.added < 0.01 * site_bytes else 'NO'} |",
        f"| time | {same.seconds:.1f} s = {100 * same.seconds / o1.seconds:.1f} % of the first "
        f"({o1.seconds:.1f} s) | < 50 % | {'yes' if same.seconds < 0.5 * o1.seconds else 'NO'} |",
        "",
    ]
    return "\n".join(lines + steps_table([o1, same, o2], steps))


def load() -> str:
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
    restic = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    debian = Path("/etc/debian_version").read_text().strip()
    return f"{os.cpu_count()} CPUs ({model}), Debian {debian}, {restic}"


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="docroot size in MB (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir, docroot and restic cache")
    parser.add_argument("--progress-rounds", type=int, default=3, help="backups each way for the progress cost")
    args = parser.parse_args()
    rng = random.Random(20261127)
    text = Text(rng)
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-backup-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        b = start_testbed(stack, tmp)
        build_site(None if args.keep else stack, b, args.size_mb, rng, text)
        raw_env = raw_env_file(b)
        if not args.keep:
            stack.callback(raw_env.unlink, missing_ok=True)
        files, docroot_bytes = tree_stats(b.docroot)

        load_before = load()
        step("night 1: orch backup (full)")
        o1 = orch_backup(b)
        step("unchanged site: orch backup again")
        same = orch_backup(b)
        step("night 1: the same restic commands by hand")
        r1 = raw_backup(b, raw_env)
        step("night 1: naive tar.gz")
        n1 = naive_backup(b, "night-1.tar.gz")

        step("changing 1 % of the files and a few hundred rows")
        change = change_docroot(b.docroot, rng, text)
        subprocess.run(["chown", "-R", f"{HOST_USER}:{HOST_USER}", str(b.docroot)], check=True)
        change["rows"] = change_database(b.mariadb, rng, text)

        step("night 2: orch backup")
        o2 = orch_backup(b)
        step("night 2: the same restic commands by hand")
        r2 = raw_backup(b, raw_env)
        step("night 2: naive tar.gz")
        n2 = naive_backup(b, "night-2.tar.gz")
        step("progress: orch backup on a terminal and to pipes, alternating")
        drawn = progress_cost(b, args.progress_rounds)

        site = {"files": files, "docroot_bytes": docroot_bytes, "dump_bytes": o1.dump}
        print(
            f"\nMachine: {machine()}; 1-min load average {load_before} before the backups, {load()} after\n"
            f"Command: .venv/bin/python bench/backup.py --size-mb {args.size_mb}\n"
        )
        print(report(site, change, o1, same, o2, n1, n2, orch_steps(b)[:3], r1, r2))
        print("\n".join(progress_table(drawn)))
        if args.keep:
            print(f"\nkept: {tmp} (daemons stopped), docroot {b.docroot}")


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
