"""`orch restore`: bring an environment's files and/or database back to a backup.

Files are restored into a fresh folder beside the docroot, then synced into place with rsync (only changed
files are touched; excluded paths such as caches are left alone; the docroot keeps its own mode, owner and
group). Into a missing or empty docroot that sync would be a second full copy: the folder is renamed into its
place instead, given the docroot's mode, owner and group first. A `--path` is resolved on the host first: a
component that is a symlink out of the docroot is refused, so a restore never writes or deletes outside the
site. The database dump streams from the repository straight into the target database on the host. Onto
production, a safety backup is taken first, inside the same locked operation.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.backends.envs.docroot import move_into_place, resolve_inside, sync_into, vacancy
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.remote.written import watching
from orchestrator.backends.storage.restic import RepositoryError
from orchestrator.errors import OperationFailed, Refused, RemoteError, UsageError

from . import catalog
from .backup import backup_target
from .plan import SitePlan, execute
from .targets import Target, target


def safe_subpath(path: str | None) -> str | None:
    """Given a user's --path, return it normalised and relative; raise UsageError if it escapes the docroot."""
    if path is None:
        return None
    norm = posixpath.normpath(path.strip())
    if (
        norm.startswith("/")
        or norm == ".."
        or norm.startswith("../")
        or "\0" in path
        or "\n" in path
        or norm in ("", ".")
    ):
        raise UsageError(f"--path {path!r} must be a relative path inside the site (no leading /, no ..)")
    return norm


@dataclass
class RestorePlan(SitePlan):
    """Which backup goes where: files (all, or one path), database, and whether production is backed up first."""

    source: Target
    dest: Target
    backup: dict
    files: bool
    db: bool
    subpath: str | None
    into: str  # the real folder or file the files land in: the docroot, or the resolved --path
    safety_backup: bool  # production: a full backup of it is taken first
    into_empty: bool = False  # a full restore into a missing or empty docroot: restored beside it, then renamed

    def lines(self) -> list[str]:
        snaps, lines = self.backup["snapshots"], []
        if self.safety_backup:
            lines.append(f"back up production {self.dest.label} first (the safety backup)")
        if self.files and self.into_empty:
            lines.append(
                f"restore files of backup {self.backup['backup_id']} (snapshot {snaps['files']}) beside the "
                f"missing or empty {self.into} and move them into its place"
            )
        elif self.files:
            kept = ", ".join(self.dest.site.backup.exclude)
            lines.append(
                f"restore files of backup {self.backup['backup_id']} (snapshot {snaps['files']}) into "
                f"{self.into}: changed files only" + (f"; left alone: {kept}" if kept else "")
            )
        if self.db:
            db = self.dest.database
            lines.append(
                f"replace {db.engine} database {db.name or db.path} with the dump of backup "
                f"{self.backup['backup_id']} (snapshot {snaps['db']})"
            )
        return lines

    def params(self) -> dict:
        return {
            "backup_id": self.backup["backup_id"],
            "from_env": self.source.env.name,
            "files": self.files,
            "db": self.db,
            "path": self.subpath,
            "safety_backup_first": self.safety_backup,
        }

    def as_dict(self) -> dict:
        return {
            "site": self.site,
            "to": self.env,
            **self.params(),
            "into": self.into,
            "into_empty": self.into_empty,
            "plan": self.lines(),
        }


def plan_restore(
    oplog,
    inventory,
    site: str,
    *,
    to_env: str,
    from_env: str,
    backup_id: str,
    task: str,
    files: bool = True,
    db: bool = True,
    path: str | None = None,
    yes: bool = False,
    chosen: dict | None = None,
) -> RestorePlan:
    """Given what the user asked for, return the restore plan (reads only). `chosen`: the backup a plan made
    earlier resolved (its listing is then not read again).

    Raise UsageError for a staging copy (`staging refresh` does its URL replacement and sanitizing), an unknown
    backup, a --path that escapes the site or leads out of it through a symlink; Refused for production
    without yes."""
    subpath = safe_subpath(path)
    if subpath and not files:
        raise UsageError("--path restores files: it cannot go with --db-only")
    if any(row["name"] == to_env for row in oplog.envs(site)):
        # a raw restore would skip URL replacement and sanitizing: refresh does both
        raise UsageError(f"{site}/{to_env} is a staging copy: use `orch staging refresh {site} --env {to_env}`")
    source, dest = target(inventory, site, from_env), target(inventory, site, to_env)
    if dest.env.production and not yes:
        raise Refused(f"restoring onto production {dest.label} needs --yes (a safety backup is taken first)")
    with connect(dest.host) as conn:
        chosen = chosen or catalog.resolve(catalog.list_backups(source, conn, oplog), backup_id)
        into = resolve_inside(conn, dest.files_root, subpath) if subpath else dest.files_root
        into_empty = files and not subpath and vacancy(conn, into) is not None
    db = db and dest.engine is not None and "db" in chosen["snapshots"] and subpath is None
    if not files and not db:
        raise UsageError(f"backup {chosen['backup_id']} has no database part to restore into {dest.label}")
    return RestorePlan(
        "restore", site, to_env, task, source, dest, chosen, files, db, subpath, into, dest.env.production, into_empty
    )


def restore(oplog, inventory, plan: RestorePlan) -> dict:
    """Given a restore plan, apply it as one locked operation, planned again under the lock (a symlink may have
    appeared, the docroot may have been filled). Return the plan applied, with the safety backup's id.

    The re-check does not list the repository again (a restic start: ~0.7 s of key derivation): the plan holds
    the backup by its snapshot ids, and a snapshot never changes; all that can happen to it meanwhile is a
    prune forgetting it, and then `restic restore`/`restic dump` fail on it before the docroot or the database
    is touched (`_missing` says so plainly)."""

    def recheck(p: RestorePlan) -> RestorePlan:
        return plan_restore(
            oplog,
            inventory,
            p.site,
            to_env=p.env,
            from_env=p.source.env.name,
            backup_id=p.backup["backup_id"],
            task=p.task,
            files=p.files,
            db=p.db,
            path=p.subpath,
            yes=True,
            chosen=p.backup,
        )

    return execute(oplog, plan, lambda op, p: _apply(oplog, op, p), recheck=recheck)


def _apply(oplog, op, plan: RestorePlan) -> dict:
    dest, snaps, result = plan.dest, plan.backup["snapshots"], plan.as_dict()
    if plan.safety_backup:
        with op.step("safety backup of production") as step:
            # the site is locked by this operation: the backup runs under its lock, not one of its own
            safety = backup_target(oplog, dest, task=plan.task, lock=False)
            step.output(f"backup {safety['backup_id']}")
        op.artifact("safety-backup", safety["backup_id"])
        result["safety_backup"] = safety["backup_id"]
    op.artifact("restored-backup", plan.backup["backup_id"], details={"snapshots": snaps})
    # the executor outlives the connection: on Ctrl-C the closed connection stops an import still running beside
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-db") as beside, connect(dest.host) as conn:
        db_size = plan.backup.get("db_size")
        if not plan.files:
            _database_step(op, conn, dest, snaps["db"], db_size)
            return result
        # the dump and the files are independent: the import runs beside the files (restic decrypting files and
        # MariaDB importing use different CPUs: bench/restore.py) as a step of its own, recorded however it ends.
        # Not a SQLite database: a file in the docroot, which the files' sync would delete or overwrite under it.
        alongside = plan.db and dest.database.engine != "sqlite"
        importing = beside.submit(_database_step, op, conn, dest, snaps["db"], db_size, True) if alongside else None
        try:
            with op.step("restore files" + (f" ({plan.subpath})" if plan.subpath else "")) as step:
                size = None if plan.subpath else plan.backup.get("files_size")
                step.output(restore_files(conn, dest, snaps["files"], plan.subpath, plan.into, size, plan.into_empty))
        except Exception:
            if importing is not None:  # the database is replaced all the same: its step says how; raise the files'
                wait([importing])
            raise
        if importing is not None:
            importing.result()
        elif plan.db:
            _database_step(op, conn, dest, snaps["db"], db_size)
    return result


def _database_step(op, conn, t: Target, snapshot_id: str, size: int | None, beside: bool = False) -> None:
    """Restore the database as the step `restore database` (in a thread of its own when `beside` the files: the
    step then has its own times and its own figures on the live line)."""
    with op.step("restore database") as step:
        step.output(restore_database(conn, t, snapshot_id, size) + (" (beside the files)" if beside else ""))


def restore_files(
    conn, t: Target, snapshot_id: str, subpath: str | None, into: str, size: int | None = None, vacant: bool = False
) -> str:
    """Restore the files snapshot into the target's docroot, or only `subpath` into `into` (its real path,
    checked by resolve_inside); `size` (the backup's, if known) is the total of the progress figures; `vacant`:
    the plan found the docroot missing or empty (the restored folder is then renamed into its place when it
    still is). Return a summary line."""
    repo, root = t.repository, t.files_root
    restic = posixpath.basename(repo.restic)
    scratch = conn.run(
        Command("mktemp", "-d", "-p", posixpath.dirname(root.rstrip("/")), ".orch-restore.XXXXXX")
    ).text.strip()
    if not scratch:
        raise UsageError(f"could not make a scratch folder beside {root}")
    moved = False
    excludes = [arg for pattern in t.site.backup.exclude for arg in ("--exclude", pattern)]
    try:
        # only a subpath; or, for a whole restore, what the site excludes now stays out of the docroot as rsync
        # --exclude keeps it out of a docroot with files (an older backup may hold it); the backup's patterns,
        # so restic reads them as it did when backing up
        choose = ["--include", "/" + subpath] if subpath else excludes
        # restic 0.14 says nothing while it restores: progress is what it has written so far
        with watching(conn, restic, "restore", scratch, total=size):
            with _missing(snapshot_id):
                repo.run(conn, "restore", snapshot_id, "--target", scratch, *choose, timeout=None)
        if not subpath:
            if vacant and (moved := move_into_place(conn, scratch, root)):
                return f"snapshot {snapshot_id} restored beside the empty {root} and moved into place"
            out = sync_into(conn, scratch, root, "--delete", "--itemize-changes", *excludes)
            return f"{_changed(out)} path(s) changed in {root}"
        source = posixpath.join(scratch, subpath)
        if not conn.ok(Command("test", "-e", source)) and not conn.ok(Command("test", "-L", source)):
            raise UsageError(f"{subpath} is not in backup snapshot {snapshot_id[:8]}")
        conn.run(Command("mkdir", "-p", "--", posixpath.dirname(into)))
        # a folder is mirrored; a file, or a symlink as the backup holds it, is copied as itself
        is_dir = conn.ok(Command("test", "-d", source).then(Command("test", "!", "-L", source)))
        src, dst = (source + "/", into + "/") if is_dir else (source, into)
        out = conn.run(
            Command("rsync", "-a", "--delete", "--itemize-changes", *excludes, "--", src, dst), timeout=None
        ).text
        return f"{_changed(out)} path(s) changed in {posixpath.join(root, subpath)}"
    finally:
        if not moved:
            conn.run(Command("rm", "-rf", "--", scratch), check=False)


@contextmanager
def _missing(snapshot_id: str) -> Iterator[None]:
    """Say plainly when restic cannot find the snapshot: it was forgotten after the plan (the re-check under the
    lock trusts the plan's listing, see `restore`). Nothing was written before restic looked it up."""
    try:
        yield
    except (RepositoryError, RemoteError) as exc:
        if "no matching ID found" not in str(exc) + getattr(exc, "stderr", ""):
            raise
        raise OperationFailed(
            f"snapshot {snapshot_id} is no longer in the repository (pruned since the restore was planned?): "
            "nothing was restored from it"
        ) from None


def _changed(rsync_out: str) -> int:
    return len([line for line in rsync_out.splitlines() if line.strip()])


def restore_database(conn, t: Target, snapshot_id: str, size: int | None = None) -> str:
    """Stream the dump from the repository into the target environment's database; `size` (the dump's, if
    known) is the total of the progress figures."""
    engine, restic = t.db_engine, posixpath.basename(t.repository.restic)
    dump = t.repository.command("dump", snapshot_id, "/" + engine.dump_filename)
    with watching(conn, restic, "dump", snapshot_id, total=size):
        with _missing(snapshot_id):  # restic exits at once: the import got no input and changed nothing
            conn.run(dump.pipe(engine.restore()), timeout=None)
    tables = engine.table_counts(conn)
    return f"{len(tables)} tables, {sum(tables.values())} rows now in {t.database.name or t.database.path}"
