"""`orch backup`: files + a consistent database dump of a site environment, into its restic repository.

A backup is two restic snapshots sharing the tag `backup=<id>`: `part=db` (the dump, streamed into
`restic backup --stdin` on the host, taken FIRST) and `part=files` (the docroot). The database goes first so
that a run killed half-way leaves at most a lone db part, which listings show as `incomplete`, never a
files part paired with a truncated dump. A dump that fails or is truncated has its snapshot forgotten at
once: no snapshot of a failed dump survives as a good backup.
"""
from __future__ import annotations

import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timezone

from orchestrator.backends.remote import PIPE, Command, Raw, connect
from orchestrator.backends.storage.restic import Repository, parse_summary
from orchestrator.errors import OperationFailed, OrchError, RemoteError
from orchestrator.oplog.run import locked_operation

from .targets import Target

log = logging.getLogger("orch.backup")
TAIL_BYTES = 512


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
    return t.engine.table_counts(conn) if t.engine else {}


def merge_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    """Row counts bracket the dump: [min, max] of before/after per table (equal on a quiet site)."""
    tables = set(before) | set(after)
    pairs = {name: (before.get(name, 0), after.get(name, 0)) for name in sorted(tables)}
    return {name: [min(pair), max(pair)] for name, pair in pairs.items()}


def dump_into_restic(conn, repo: Repository, t: Target, tags: list[str], version) -> dict:
    """Stream the database dump into restic on the host. Return restic's summary plus `dump_size`.

    Raise OperationFailed (after forgetting any snapshot it made) if the dump failed or is truncated.
    """
    backup = repo.command("backup", "--json", "--host", t.restic_host, *tag_args(tags + ["part=db"]),
                          "--stdin-filename", t.engine.dump_filename)
    if version.stdin_from_command:
        result, tail = _dump_by_restic(conn, backup, t), None
    else:
        result, tail = _dump_through_pipe(conn, backup, t)
    problem = None
    if not result.ok:
        problem = f"database dump failed (exit {result.exit_status}): {_last_lines(result.stderr)}"
    elif tail is not None and not t.engine.is_complete(tail):
        problem = "database dump is truncated (no completion marker at its end)"
    if problem:
        _forget_part(conn, repo, tags, "db")
        raise OperationFailed(f"{t.label}: {problem}")
    summary = parse_summary(result.text)
    summary["dump_size"] = summary.get("total_bytes_processed", 0)
    return summary


def _dump_by_restic(conn, backup: Command, t: Target):
    """restic >= 0.17 runs the dump itself and saves no snapshot when the dump exits non-zero."""
    dump = t.engine.dump()
    command = backup.env(**dict(dump.environment)).args(
        "--stdin-from-command", "--", "bash", "-o", "pipefail", "-c", dump.body())
    return conn.run(command, check=False, timeout=None)


def _dump_through_pipe(conn, backup: Command, t: Target):
    """Older restic reads the dump on stdin: pipefail catches a failing dump, the kept tail a truncated one."""
    tail_file = conn.run(Command("mktemp")).text.strip()
    # tee the stream to restic (fd 3) and keep its last bytes in tail_file; the group is part of the
    # pipeline, so `tail` has finished writing when the pipeline returns.
    keep_tail = Command(Raw("{"), "tee", "/dev/fd/3", PIPE, "tail", "-c", TAIL_BYTES, Raw(">"), tail_file,
                        Raw("; } 3>&1"))
    try:
        result = conn.run(t.engine.dump().pipe(keep_tail).pipe(backup.args("--stdin")), check=False, timeout=None)
        tail = conn.run(Command("cat", tail_file), check=False).stdout
    finally:
        conn.run(Command("rm", "-f", tail_file), check=False)
    return result, tail


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no message"


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
    backup = repo.command("backup", "--json", "--host", t.restic_host, *tag_args(tags + ["part=files"]),
                          *excludes, ".")
    result = conn.run(Command("cd", t.files_root).then(backup), check=False, timeout=None)
    if result.exit_status == 3:  # restic: snapshot saved, some files unreadable: keep it, say so loudly
        log.warning("%s: some files could not be read: %s", t.label, _last_lines(result.stderr))
    elif not result.ok:
        _forget_part(conn, repo, tags, "files")
        raise repo.explain(RemoteError(conn.name, "restic backup", result.exit_status, result.stderr))
    return parse_summary(result.text)


def backup_target(oplog, t: Target, *, task: str, pin: bool = False, catch_up: bool = False,
                  lock: bool = True) -> dict:
    """Back up one environment as one locked operation. Return a summary dict; raise on failure.

    lock=False is for a caller that already holds the site's lock (a promotion's mandatory backup)."""
    backup_id = new_backup_id()
    params = {"backup_id": backup_id, "pin": pin, "storage": t.storage.name if t.storage else None}
    with locked_operation(oplog, site=t.site.name, env=t.env.name, task=task, action="backup", params=params,
                          catch_up=catch_up, lock=lock) as op, connect(t.host) as conn:
        repo = t.repository
        with op.step("open repository") as step:
            version = repo.version(conn)
            # Opening a repository costs a key derivation (~1 s); skip the probe once a backup went there.
            state = "known" if _has_backed_up_to(oplog, t.site.name, repo.url) else repo.ensure(conn)
            step.output(f"restic {version} on {t.host.name}; {repo.describe()}: {state}")
        tags = backup_tags(t, task, backup_id, pin)
        db = tables = None
        if t.engine:
            with op.step("count rows before dump"):
                before = count_tables(t, conn)
            with op.step(f"dump {t.env.database.engine} database into restic") as step:
                db = dump_into_restic(conn, repo, t, tags, version)
                step.output(f"snapshot {db['snapshot_id'][:8]}, dump {db['dump_size']} bytes, "
                            f"added {db.get('data_added', 0)}")
            with op.step("count rows after dump"):
                tables = merge_counts(before, count_tables(t, conn))
        with op.step("back up files") as step:
            files = backup_files(conn, repo, t, tags)
            step.output(f"snapshot {files['snapshot_id'][:8]}, {files.get('total_files_processed')} files, "
                        f"{files.get('total_bytes_processed')} bytes, added {files.get('data_added', 0)}")
        summary = _summary(t, backup_id, task, pin, files, db, tables)
        op.artifact("backup", backup_id, size=summary["added"], details=summary)
        return summary


def _has_backed_up_to(oplog, site: str, url: str) -> bool:
    """Whether a recorded backup of this site went to this repository (so it exists and opens)."""
    for op in oplog.operations(site=site, action="backup", limit=20, with_details=True):
        if op["status"] == "ok" and any(a["kind"] == "backup" and (a.get("details") or {}).get("repository") == url
                                        for a in op.get("artifacts", [])):
            return True
    return False


def _summary(t: Target, backup_id, task, pin, files: dict, db: dict | None, tables) -> dict:
    return {
        "site": t.site.name, "env": t.env.name, "backup_id": backup_id, "task": task, "pinned": pin,
        "repository": t.repository.url,
        "snapshots": {"files": files["snapshot_id"], **({"db": db["snapshot_id"]} if db else {})},
        "files": {"count": files.get("total_files_processed"), "size": files.get("total_bytes_processed"),
                  "added": files.get("data_added", 0)},
        "db": ({"engine": t.env.database.engine, "size": db["dump_size"], "added": db.get("data_added", 0),
                "tables": tables} if db else None),
        "added": files.get("data_added", 0) + (db.get("data_added", 0) if db else 0),
    }


def plan(t: Target, pin: bool) -> dict:
    """What a backup of this target would do (for --dry-run)."""
    return {"site": t.site.name, "env": t.env.name, "host": t.host.name, "path": t.files_root,
            "database": f"{t.env.database.engine}:{t.env.database.name or t.env.database.path}"
            if t.env.database else None,
            "repository": t.repository.url, "exclude": list(t.site.backup.exclude), "pin": pin}


def run_backups(inventory, oplog, targets: list[Target], *, task: str | None, pin: bool = False,
                catch_up: bool = False, on_done=None) -> list[dict]:
    """Back up many targets in parallel, at most `hosts.X.max_parallel` per host and
    `scheduler.max_parallel` overall. One failure never stops the others. Return one result per target:
    {"site", "env", "status": ok|failed|locked, "backup_id", "error", "summary"} in input order.
    """
    host_slots = {name: threading.Semaphore(h.max_parallel) for name, h in inventory.hosts.items()}

    def one(t: Target) -> dict:
        with ExitStack() as stack:
            stack.enter_context(host_slots[t.host.name])
            result = {"site": t.site.name, "env": t.env.name, "host": t.host.name}
            try:
                summary = backup_target(oplog, t, task=task or t.site.task, pin=pin, catch_up=catch_up)
                result |= {"status": "ok", "backup_id": summary["backup_id"], "summary": summary}
            except OrchError as exc:
                result |= {"status": "failed", "error": str(exc), "exit_code": int(exc.exit_code)}
            except Exception as exc:  # noqa: BLE001 - one site's bug must not stop the fleet
                log.exception("%s: unexpected error", t.label)
                result |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "exit_code": 1}
            if on_done:
                on_done(result)
            return result

    workers = max(1, min(len(targets), inventory.scheduler.max_parallel))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, targets))
