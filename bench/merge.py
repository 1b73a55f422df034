"""Benchmark: the three-way content merge of `orch promote --content` on a WordPress-like database, against
dumping both sides once.

What is compared
    A generated WordPress-like database (wp_posts with block HTML, wp_postmeta, wp_options) of --size-mb of dump
    is loaded into a private MariaDB as `prod`; its dump is the *base*; `stage` is loaded from that dump (a
    staging copy). Then 1,000 edits are made on stage (500 posts rewritten, 250 new pages, each with a
    `_thumbnail_id` meta row naming an existing attachment) and 10,000 on prod (4,000 new posts, 5,000 meta rows,
    1,000 posts rewritten: some are the ones stage rewrote, so there are conflicts).

    * dump both: the content tables of stage and of prod dumped once (orch's own dump command,
      `MySQL.dump_rows`: mariadb-dump --order-by-primary), read through a pipe and thrown away: what any
      tool comparing the two databases must at least do.
    * merge:     what `orch promote --content` does to plan (actions/content.py: diff_sides, production_ids,
      merge.Merger.decide): the base dump (a file here; on a real site `restic dump` piped through the URL
      replacer on production's host) and stage's dump streamed side by side, then production read only at the
      keys stage touched, items decided (conflicts resolved with --prefer staging), ids remapped, rows
      rewritten. Run in a child process of its own: its wall time and its peak RSS (VmHWM) are reported
      (mariadb-dump and the connector's watchdog run beside it as processes of their own).

    The merge is run at --size-mb and at a quarter of it: its peak RSS should not grow with the database.

Usage
    .venv/bin/python bench/merge.py [--size-mb 500] [--seed 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from testbed.mariadb import start_mariadb  # noqa: E402

MB = 1 << 20
TABLES = ["wp_options", "wp_postmeta", "wp_posts"]
SCHEMA = """
CREATE TABLE wp_posts (ID BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT, post_author BIGINT, post_date DATETIME,
  post_content LONGTEXT, post_title TEXT, post_status VARCHAR(20), post_name VARCHAR(200), post_parent BIGINT,
  post_type VARCHAR(20), comment_count BIGINT DEFAULT 0) ENGINE=InnoDB;
CREATE TABLE wp_postmeta (meta_id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT, post_id BIGINT, meta_key VARCHAR(255),
  meta_value LONGTEXT, KEY post_id (post_id)) ENGINE=InnoDB;
CREATE TABLE wp_options (option_id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT, option_name VARCHAR(191) UNIQUE,
  option_value LONGTEXT, autoload VARCHAR(20) DEFAULT 'yes') ENGINE=InnoDB;
"""
WORDS = (
    "roof tile slate copper gutter chimney repair estimate warranty shingle valley flashing ridge vent eave "
    "insulation membrane install quote season storm inspection"
).split()


def text(rng: random.Random, n_bytes: int) -> str:
    out, size = [], 0
    while size < n_bytes:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def post(rng: random.Random, n: int, kind: str = "post", size: int = 5000) -> str:
    body = "".join(f"<!-- wp:paragraph --><p>{text(rng, size // 4)}</p><!-- /wp:paragraph -->\\n" for _ in range(4))
    if kind == "page":
        body += f'<!-- wp:image {{\\"id\\":{rng.randint(1, 50)}}} --><img class=\\"wp-image-1\\"/><!-- /wp:image -->'
    return (
        f"({n}, 1, '2026-11-0{rng.randint(1, 9)} 10:00:00', '{body}', 'Title {n}', 'publish', 'p-{n}', 0, '{kind}', 0)"
    )


def inserts(table: str, rows, per: int = 200) -> list[str]:
    rows = list(rows)
    return [f"INSERT INTO {table} VALUES " + ",\n".join(rows[i : i + per]) + ";" for i in range(0, len(rows), per)]


def run_sql(server, db: str, script: str) -> None:
    subprocess.run(
        ["mariadb", "--no-defaults", "-S", str(server.socket), "-u", "root", db], input=script.encode(), check=True
    )


def seed(server, size: int, rng: random.Random) -> int:
    """prod: about `size` bytes of posts (5 KB each; the first 50 are attachments), 4 meta rows a post,
    1,500 options. Return the number of posts."""
    posts = max(2000, size // 5_600)
    server.sql("CREATE DATABASE prod")
    run_sql(server, "prod", SCHEMA)
    for start in range(1, posts + 1, 5000):
        chunk = range(start, min(start + 5000, posts + 1))
        sql = inserts("wp_posts", (post(rng, n, "attachment" if n <= 50 else "post") for n in chunk))
        sql += inserts(
            "wp_postmeta",
            (f"({4 * n + k}, {n}, '_meta_{k}', '{text(rng, 60)}')" for n in chunk for k in range(4)),
            per=2000,
        )
        run_sql(server, "prod", "\n".join(sql))
    options = (f"({i}, 'option_{i}', 'a:1:{{s:3:\"key\";s:5:\"value\";}}', 'yes')" for i in range(1, 1501))
    run_sql(server, "prod", "\n".join(inserts("wp_options", options, per=500)))
    return posts


def edit(
    server, db: str, rng: random.Random, posts: int, rewrites: list[int], new_posts: int, meta: int, kind: str
) -> None:
    sql = [f"UPDATE wp_posts SET post_content = '{text(rng, 3000)}' WHERE ID = {i};" for i in rewrites]
    first = int(server.sql("SELECT MAX(ID) FROM wp_posts", db)) + 1
    sql += inserts("wp_posts", (post(rng, n, kind, 3000) for n in range(first, first + new_posts)))
    first_meta = int(server.sql("SELECT MAX(meta_id) FROM wp_postmeta", db)) + 1
    key = "_thumbnail_id" if kind == "page" else "_news_source"
    sql += inserts(
        "wp_postmeta",
        (f"({first_meta + k}, {first + k % max(new_posts, 1)}, '{key}', '{rng.randint(1, 50)}')" for k in range(meta)),
        per=2000,
    )
    run_sql(server, db, "\n".join(sql))


# --- the measured parts ------------------------------------------------------------------------------------------


def engine(socket: str, name: str):
    from orchestrator.backends.engines.mysql import MySQL
    from orchestrator.config.model import Database

    return MySQL(Database("mysql", name, "root", None, None, None, None, socket))


def child_merge(socket: str, base_file: str) -> None:
    """The merge as `orch promote --content` plans it (in this process, measured by the parent)."""
    from orchestrator.actions.content import DbLookup, diff_sides, production_ids
    from orchestrator.backends.cms.merge import Merger
    from orchestrator.backends.cms.playbook import load_playbook
    from orchestrator.backends.remote import LocalConnector
    from orchestrator.backends.remote.relay import remote_stream

    spec = load_playbook("wordpress").merge.for_prefix("wp_")
    conn, stage, prod = LocalConnector(), engine(socket, "stage"), engine(socket, "prod")
    same = bytes  # URLs are the same on both sides here: the replacer is benchmarked in bench/replace.py
    with open(base_file, "rb") as base, remote_stream(conn, stage.dump_rows(TABLES)) as staging:
        shapes, touched, compared = diff_sides(base, staging, spec)
    next_ids = production_ids(conn, prod, shapes)
    result = Merger(
        spec,
        shapes,
        touched,
        DbLookup(conn, stage),
        DbLookup(conn, prod),
        to_production=same,
        to_staging=same,
        next_ids=next_ids,
    ).decide(prefer="staging")
    print(
        json.dumps(
            {
                "hwm_mb": peak_rss_mb(),
                "touched": sum(map(len, touched.values())),
                "rows": sum(compared.values()),
                "items": len(result.items),
                "conflicts": len(result.conflicts),
                "remapped": sum(map(len, result.remaps.values())),
                "changes": len([c for c in result.changes if c.action in ("insert", "update")]),
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: since its exec; getrusage's ru_maxrss would count the parent it was
    forked from, whose RSS the bench's data generation makes large)."""
    status = Path("/proc/self/status").read_text()
    return round(int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024, 1)


def measured(argv: list[str]) -> tuple[float, dict]:
    """Run argv; return (wall s, the JSON it printed)."""
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, text=True)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def dump_both(socket: str) -> float:
    """Dump stage's and prod's content tables once, through a pipe, thrown away; return the wall time."""
    from orchestrator.backends.remote import LocalConnector
    from orchestrator.backends.remote.relay import remote_stream

    started = time.monotonic()
    conn = LocalConnector()
    for name in ("stage", "prod"):
        with remote_stream(conn, engine(socket, name).dump_rows(TABLES)) as stream:
            while stream.read(MB):
                pass
    return time.monotonic() - started


def scenario(tmp: Path, size_mb: int, seed_value: int) -> dict:
    rng = random.Random(seed_value)
    with ExitStack() as stack:
        server = start_mariadb(tmp / f"mariadb-{size_mb}")
        stack.callback(server.stop)
        started = time.monotonic()
        posts = seed(server, size_mb * MB, rng)
        base_file = tmp / f"base-{size_mb}.sql"
        with open(base_file, "wb") as out:
            subprocess.run(engine(str(server.socket), "prod").dump_rows(TABLES).argv(), stdout=out, check=True)
        server.sql("CREATE DATABASE stage")
        with open(base_file, "rb") as dump:
            subprocess.run(
                ["mariadb", "--no-defaults", "-S", str(server.socket), "-u", "root", "stage"], stdin=dump, check=True
            )
        ids = list(range(51, posts + 1))
        staged = rng.sample(ids, 500)
        edit(server, "stage", rng, posts, staged, 250, 250, "page")
        edit(server, "prod", rng, posts, rng.sample(staged, 50) + rng.sample(ids, 950), 4000, 5000, "post")
        setup = time.monotonic() - started
        socket = str(server.socket)
        baseline = min(dump_both(socket) for _ in range(2))
        runs = [measured([sys.executable, __file__, "--child", socket, str(base_file)]) for _ in range(2)]
        wall, out = min(runs, key=lambda run: run[0])
        return {
            "size_mb": round(base_file.stat().st_size / MB, 1),
            "posts": posts,
            "setup_s": round(setup, 1),
            "dump_both_s": round(baseline, 2),
            "merge_s": round(wall, 2),
            "ratio": round(wall / baseline, 2),
            "merge_rss_mb": max(run[1]["hwm_mb"] for run in runs),
            **out,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_merge(*args.child)
        return
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="orch-bench-merge-"))
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, load {os.getloadavg()[0]:.1f}")
    results = []
    for size in (max(args.size_mb // 4, 1), args.size_mb):
        results.append(scenario(tmp, size, args.seed))
        print(json.dumps(results[-1]), flush=True)
    print(
        "\n| dump MB | rows | touched | items | conflicts | remapped | dump both s | merge s | merge / dump | "
        "merge peak RSS MB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in results:
        print(
            f"| {r['size_mb']} | {r['rows']} | {r['touched']} | {r['items']} | {r['conflicts']} | {r['remapped']} "
            f"| {r['dump_both_s']} | {r['merge_s']} | {r['ratio']} | {r['merge_rss_mb']} |"
        )
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
