"""`orch backup`: files + a consistent database dump of a site environment, into its restic repository.

A backup is two restic snapshots sharing the tag `backup=<id>`: `part=db` (the dump, streamed into
`restic backup --stdin` on the host, taken FIRST) and `part=files` (the docroot). The database goes first so
that a run killed half-way leaves at most a lone db part, which listings show as `incomplete`, never a
files part paired with a truncated dump. A dump that fails or is truncated has its snapshot forgotten at
once: no snapshot of a failed dump survives as a good backup.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from orchestrator import progress
from orchestrator.backends.remote import PIPE, Command, Raw, connect
from orchestrator.backends.remote.command import part_statuses
from orchestrator.backends.storage.restic import MissingRepository, Repository, parse_summary
from orchestrator.errors import OperationFailed, OrchError, RemoteError, UsageError
from orchestrator.oplog.run import locked_operation

from .parallel import run_limited
from .targets import Target

log = logging.getLogger("orch.backup")
TAIL_BYTES = 512
TAIL_MARK = "orch-dump-tail:"  # starts the stderr line carrying the dump's last bytes (base64)
CD_FAILED = re.compile(r"^bash: line \d+: cd: ", re.M)
# restic >= 0.17 runs the dump itself: these words in its stderr mean the storage failed, not the database
STORAGE_TROUBLE = re.compile(
    r"Fatal: (unable to open|create repository)|repository|Access ?Denied|InvalidAccessKeyId|"
    r"SignatureDoesNotMatch|connection refused|no such host|dial tcp|Save\(",
    re.I,
)


def new_backup_id(now: datetime | None = None) -> str:
    """Return a sortable, readable backup id such as 20261127-030012-3fa2."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def backup_tags(t: Target, task: str, backup_id: str, pin: bool) -> list[str]:
    tags = ["orch", f"site={t.site.name}", f"env={t.env.name}", f"task={task}", f"backup={backup_id}"]
    return tags + (["pinned"] if pin else [])


def tag_args(tags: list[str]) -> list[str]:
    return [arg for tag in tags for arg in ("--tag", tag)]


def count_tables(t: Target, conn) -> dict[str, int]:
    """Return {table: rows} of the environment's database; raise OperationFailed naming the database."""
    try:
        return t.db_engine.table_counts(conn) if t.env.database else {}
    except RemoteError as exc:
        raise OperationFailed(
            f"{t.db_engine.describe()}: cannot count rows: {_why(exc.exit_status, exc.stderr)}"
        ) from None


def merge_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    """Row counts bracket the dump: [min, max] of before/after per table (equal on a quiet site)."""
    tables = set(before) | set(after)
    pairs = {name: (before.get(name, 0), after.get(name, 0)) for name in sorted(tables)}
    return {name: [min(pair), max(pair)] for name, pair in pairs.items()}


def dump_into_restic(conn, repo: Repository, t: Target, tags: list[str], version) -> dict:
    """Stream the database dump into restic on the host. Return restic's summary plus `dump_size`.

    Raise (after forgetting any snapshot it made) OperationFailed naming the database if the dump failed or
    is truncated, RepositoryError naming the storage if restic failed; HostLost comes from the connector."""
    backup = repo.command(
        "backup",
        "--json",
        "--host",
        t.restic_host,
        *tag_args(tags + ["part=db"]),
        "--stdin-filename",
        t.db_engine.dump_filename,
    )
    if version.stdin_from_command:
        result, tail = _dump_by_restic(conn, backup, t), None
        statuses, stderr = None, result.stderr
    else:
        result, tail = _dump_through_pipe(conn, backup, t)
        statuses, stderr = part_statuses(result.stderr)
    problem = _dump_problem(conn, repo, t, result.exit_status, statuses, stderr)
    if problem is None and tail is not None and not t.db_engine.is_complete(tail):
        problem = OperationFailed(f"{t.db_engine.describe()}: the dump is truncated (no completion marker at its end)")
    if problem:
        _forget_part(conn, repo, tags, "db")
        raise problem
    summary = parse_summary(result.text)
    summary["dump_size"] = summary.get("total_bytes_processed", 0)
    return summary


def _dump_problem(
    conn, repo: Repository, t: Target, status: int, statuses: list[int] | None, stderr: str
) -> OrchError | None:
    """Given how `dump | tail keeper | restic` ended, return the error naming the part that failed, or None.

    restic failing first is the storage's fault (the dump then dies of a broken pipe); a dump failing alone
    is the database's (restic then saved a short stream, forgotten by the caller)."""
    if statuses is None:  # restic >= 0.17 ran the dump itself, or the pipeline was stopped midway
        if status == 0:
            return None
        if status != 124 and not STORAGE_TROUBLE.search(stderr):
            return OperationFailed(f"{t.db_engine.describe()}: dump failed: {_why(status, stderr)}")
        return repo.explain("backup", status, stderr)
    dump, keeper, restic = statuses[0], statuses[1:-1], statuses[-1]
    if restic:
        return repo.explain("backup", restic, stderr)
    if dump:
        return OperationFailed(f"{t.db_engine.describe()}: dump failed: {_why(dump, stderr)}")
    if any(keeper):
        return OperationFailed(
            f"host {conn.name}: could not keep the dump's tail in a temp file: {_why(max(keeper), stderr)}"
        )
    return None


def _dump_by_restic(conn, backup: Command, t: Target):
    """restic >= 0.17 runs the dump itself and saves no snapshot when the dump exits non-zero."""
    dump = t.db_engine.dump()
    command = backup.env(**dict(dump.environment)).args(
        "--stdin-from-command", "--", "bash", "-o", "pipefail", "-c", dump.body()
    )
    return conn.run(command, check=False, timeout=None, on_stdout=progress.lines(progress.restic_status))


def _dump_through_pipe(conn, backup: Command, t: Target):
    """Older restic reads the dump on stdin: each part's status says which failed, the kept tail whether
    the dump is whole. One command (no temp file to make, read and remove: each command costs a round trip)."""
    # tee the stream to restic (fd 3) and write its last bytes, base64 on one line, to stderr; the group is
    # part of the pipeline, so that line is written before the pipeline returns.
    keep_tail = Command(
        Raw("{"),
        "tee",
        "/dev/fd/3",
        PIPE,
        "tail",
        "-c",
        TAIL_BYTES,
        PIPE,
        "base64",
        "-w0",
        PIPE,
        "awk",
        f'{{print "{TAIL_MARK}" $0}}',
        Raw(">&2; } 3>&1"),
    )
    pipeline = t.db_engine.dump().pipe(keep_tail).pipe(backup.args("--stdin")).reporting_statuses()
    result = conn.run(pipeline, check=False, timeout=None, on_stdout=progress.lines(progress.restic_status))
    tail, stderr = dump_tail(result.stderr)
    return replace(result, stderr=stderr), tail


def dump_tail(stderr: str) -> tuple[bytes, str]:
    """Given the stderr of `_dump_through_pipe`, return the dump's kept last bytes (empty when the line is
    missing: the dump is then taken as truncated) and stderr without that line."""
    head, found, rest = stderr.rpartition(TAIL_MARK)
    if not found:
        return b"", stderr
    line, _, after = rest.partition("\n")
    try:
        return base64.b64decode(line.strip(), validate=True), head + after
    except ValueError:
        return b"", stderr


def _why(status: int | None, stderr: str, n: int = 3) -> str:
    """Given a failed command's status and stderr, return its last lines, or how it died when it said nothing."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if lines:
        return " | ".join(lines[-n:])
    if status is not None and status > 128:
        return f"killed by signal {status - 128}, without a message"
    return f"exit {status}, without a message"


def _forget_part(conn, repo: Repository, tags: list[str], part: str) -> None:
    """Forget snapshots of this backup's part (a failed dump's leftovers). Best effort: we are failing anyway."""
    backup_tag = next(tag for tag in tags if tag.startswith("backup="))
    try:
        ids = [s["id"] for s in repo.snapshots(conn, backup_tag, f"part={part}")]
        repo.forget(conn, ids)
    except OrchError as exc:
        log.warning("could not forget the failed %s snapshot: %s", part, exc)


def backup_files(conn, repo: Repository, t: Target, tags: list[str]) -> dict:
    """Back up the environment's docroot (minus excludes) from inside it, so restores land at the root."""
    excludes = [arg for pattern in t.site.backup.exclude for arg in ("--exclude", pattern)]
    backup = repo.command("backup", "--json", "--host", t.restic_host, *tag_args(tags + ["part=files"]), *excludes, ".")
    result = conn.run(
        Command("cd", t.files_root).then(backup),
        check=False,
        timeout=None,
        on_stdout=progress.lines(progress.restic_status),
    )
    if result.exit_status == 3:  # restic: snapshot saved, some files unreadable: keep it, say so loudly
        log.warning("%s: some files could not be read: %s", t.label, _why(3, result.stderr))
    elif not result.ok:
        if CD_FAILED.search(result.stderr):
            raise OperationFailed(
                f"host {conn.name}: cannot enter the site's folder {t.files_root}: "
                f"{_why(result.exit_status, result.stderr)}"
            )
        _forget_part(conn, repo, tags, "files")
        raise repo.explain("backup", result.exit_status, result.stderr)
    return parse_summary(result.text)


def backup_target(
    oplog, t: Target, *, task: str, pin: bool = False, catch_up: bool = False, lock: bool = True, init: bool = False
) -> dict:
    """Back up one environment as one locked operation. Return a summary dict; raise on failure.

    lock=False is for a caller that already holds the site's lock (a promotion's mandatory backup); init=True
    creates the repository even where earlier backups went (it was deleted: see the error that says so)."""
    backup_id = new_backup_id()
    params = {"backup_id": backup_id, "pin": pin, "storage": t.storage.name if t.storage else None}
    with (
        locked_operation(
            oplog,
            site=t.site.name,
            env=t.env.name,
            task=task,
            action="backup",
            params=params,
            catch_up=catch_up,
            lock=lock,
        ) as op,
        connect(t.host) as conn,
    ):
        repo = t.repository
        # Opening a repository costs a key derivation (~1 s); skip the probe once a backup went there.
        last = None if init else _last_backup_to(oplog, t.site.name, repo.url)
        known = last is not None
        try:
            parts = _back_up(op, conn, repo, t, last, tags=backup_tags(t, task, backup_id, pin))
        except MissingRepository as exc:
            if not known:
                raise
            raise MissingRepository(
                f"{exc}. It held this site's earlier backups, which are gone with it. To start a new, empty "
                f"repository there: orch backup {t.site.name} --env {t.env.name} --init --task {task}"
            ) from None
        summary = _summary(t, backup_id, task, pin, *parts)
        op.artifact("backup", backup_id, size=summary["added"], details=summary)
        return summary


def _back_up(
    op, conn, repo: Repository, t: Target, last: dict | None, tags: list[str]
) -> tuple[dict, dict | None, dict[str, list[int]] | None]:
    """The steps of one backup. Return (files summary, db summary or None, row counts or None). `last` is the
    summary of the last backup that went to this repository (None: it may not exist yet).

    The row counts run beside the restic work (a second channel of the same connection): the first while the
    repository is opened, the second while the files are backed up. The dump still starts after the first
    count and the files after the dump (a killed run leaves at most a lone db part)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="count") as beside:
        counting = beside.submit(count_tables, t, conn) if t.env.database else None
        with op.step("open repository") as step:
            version = repo.version(conn)
            state = "known" if last else repo.ensure(conn)
            step.output(f"restic {version} on {t.host.name}; {repo.describe()}: {state}")
        db = None
        if counting is not None:  # the environment has a database
            with op.step("count rows before dump"):
                before = counting.result()
            with op.step(f"dump {t.database.engine} database into restic") as step:
                if (meter := progress.current()) and last and last.get("db"):
                    meter.expected = last["db"].get("size")  # a stream's size is known at its end: guess the last
                db = dump_into_restic(conn, repo, t, tags, version)
                step.output(
                    f"snapshot {db['snapshot_id'][:8]}, dump {db['dump_size']} bytes, added {db.get('data_added', 0)}"
                )
            counting = beside.submit(count_tables, t, conn)
        with op.step("back up files") as step:
            files = backup_files(conn, repo, t, tags)
            step.output(
                f"snapshot {files['snapshot_id'][:8]}, {files.get('total_files_processed')} files, "
                f"{files.get('total_bytes_processed')} bytes, added {files.get('data_added', 0)}"
            )
        tables = None
        if counting is not None:
            with op.step("count rows after dump") as step:
                tables = _counted_after(conn, repo, tags, before, counting)
                step.output("counted while the files were backed up")
    return files, db, tables


def _counted_after(
    conn, repo: Repository, tags: list[str], before: dict[str, int], counting: Future[dict[str, int]]
) -> dict[str, list[int]]:
    """Given the counts before the dump and the future of those after it, return their [min, max] per table.
    If the second count failed, forget the files part too: a failed backup leaves at most a lone db part."""
    try:
        return merge_counts(before, counting.result())
    except OrchError:
        _forget_part(conn, repo, tags, "files")
        raise


def _last_backup_to(oplog, site: str, url: str) -> dict | None:
    """Return the summary of the last recorded backup of this site to this repository (so it exists and
    opens), or None."""
    for op in oplog.operations(site=site, action="backup", limit=20, with_details=True):
        for a in op.get("artifacts", []) if op["status"] == "ok" else ():
            if a["kind"] == "backup" and (a.get("details") or {}).get("repository") == url:
                return a["details"]
    return None


def _summary(
    t: Target, backup_id: str, task: str, pin: bool, files: dict, db: dict | None, tables: dict[str, list[int]] | None
) -> dict:
    return {
        "site": t.site.name,
        "env": t.env.name,
        "backup_id": backup_id,
        "task": task,
        "pinned": pin,
        "repository": t.repository.url,
        "snapshots": {"files": files["snapshot_id"], **({"db": db["snapshot_id"]} if db else {})},
        "files": {
            "count": files.get("total_files_processed"),
            "size": files.get("total_bytes_processed"),
            "added": files.get("data_added", 0),
        },
        "db": (
            {"engine": t.database.engine, "size": db["dump_size"], "added": db.get("data_added", 0), "tables": tables}
            if db
            else None
        ),
        "added": files.get("data_added", 0) + (db.get("data_added", 0) if db else 0),
    }


def plan(t: Target, pin: bool) -> dict:
    """What a backup of this target would do (for --dry-run)."""
    return {
        "site": t.site.name,
        "env": t.env.name,
        "host": t.host.name,
        "path": t.files_root,
        "database": f"{t.env.database.engine}:{t.env.database.name or t.env.database.path}" if t.env.database else None,
        "repository": t.repository.url,
        "exclude": list(t.site.backup.exclude),
        "pin": pin,
    }


def run_backups(
    inventory,
    oplog,
    targets: list[Target],
    *,
    task: str | None,
    pin: bool = False,
    catch_up: bool = False,
    init: bool = False,
    on_done=None,
) -> list[dict]:
    """Back up many targets in parallel, at most `hosts.X.max_parallel` per host and
    `scheduler.max_parallel` overall (see run_limited). One failure never stops the others. Return one result
    per target: {"site", "env", "status": ok|failed|locked, "backup_id", "error", "summary"} in input order.
    """

    def one(t: Target) -> dict:
        result: dict[str, Any] = {"site": t.site.name, "env": t.env.name, "host": t.host.name}
        try:
            logged_as = task or t.site.task
            if logged_as is None:
                raise UsageError(f"{t.label}: no task to log the backup against (give --task or set the site's task)")
            summary = backup_target(oplog, t, task=logged_as, pin=pin, catch_up=catch_up, init=init)
            result |= {"status": "ok", "backup_id": summary["backup_id"], "summary": summary}
        except OrchError as exc:
            result |= {"status": "failed", "error": str(exc), "exit_code": int(exc.exit_code)}
        except Exception as exc:  # noqa: BLE001 - one site's bug must not stop the fleet
            log.exception("%s: unexpected error", t.label)
            result |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "exit_code": 1}
        if on_done:
            on_done(result)
        return result

    return run_limited(
        targets,
        one,
        key=lambda t: t.host.name,
        limits={name: h.max_parallel for name, h in inventory.hosts.items()},
        limit=inventory.scheduler.max_parallel,
    )
