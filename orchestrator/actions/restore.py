"""`orch restore`: bring an environment's files and/or database back to a backup.

Files are restored into a fresh folder beside the docroot, then synced into place with rsync (only changed
files are touched; excluded paths such as caches are left alone). The database dump streams from the
repository straight into the target database on the host.
"""
from __future__ import annotations

import posixpath

from orchestrator.backends.remote import Command, connect
from orchestrator.errors import Refused, UsageError
from orchestrator.oplog.run import locked_operation

from . import catalog
from .backup import backup_target
from .targets import Target


def safe_subpath(path: str | None) -> str | None:
    """Given a user's --path, return it normalised and relative; raise UsageError if it escapes the docroot."""
    if path is None:
        return None
    norm = posixpath.normpath(path.strip())
    if path.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in path or norm in ("", "."):
        raise UsageError(f"--path {path!r} must be a relative path inside the site (no leading /, no ..)")
    return norm


def restore_files(conn, t: Target, snapshot_id: str, subpath: str | None) -> str:
    """Restore the files snapshot into the target's docroot (or only `subpath`). Return a summary line."""
    repo, root = t.repository, t.files_root
    parent = posixpath.dirname(root.rstrip("/"))
    staging = conn.run(Command("mktemp", "-d", "-p", parent, ".orch-restore.XXXXXX")).text.strip()
    try:
        include = ["--include", "/" + subpath] if subpath else []
        repo.run(conn, "restore", snapshot_id, "--target", staging, *include)
        source = posixpath.join(staging, subpath) if subpath else staging
        if subpath and not conn.ok(Command("test", "-e", source)):
            raise UsageError(f"{subpath} is not in backup snapshot {snapshot_id[:8]}")
        dest = posixpath.join(root, subpath) if subpath else root
        excludes = [arg for pattern in t.site.backup.exclude for arg in ("--exclude", pattern)]
        is_dir = conn.ok(Command("test", "-d", source))
        src, dst = (source.rstrip("/") + "/", dest.rstrip("/") + "/") if is_dir else (source, dest)
        out = conn.run(Command("rsync", "-a", "--delete", "--itemize-changes", *excludes, "--", src, dst)).text
        return f"{len([line for line in out.splitlines() if line.strip()])} path(s) changed in {dest}"
    finally:
        conn.run(Command("rm", "-rf", "--", staging), check=False)


def restore_database(conn, t: Target, snapshot_id: str) -> str:
    """Stream the dump from the repository into the target environment's database."""
    engine = t.engine
    dump = t.repository.command("dump", snapshot_id, "/" + engine.dump_filename)
    conn.run(dump.pipe(engine.restore()), timeout=None)
    tables = engine.table_counts(conn)
    return f"{len(tables)} tables, {sum(tables.values())} rows now in {t.env.database.name or t.env.database.path}"


def restore(oplog, source: Target, dest: Target, *, backup_id: str, task: str, files: bool = True,
            db: bool = True, path: str | None = None, yes: bool = False, dry_run: bool = False) -> dict:
    """Restore a backup of `source`'s environment into `dest` (same site). Return what was done.

    Onto a production environment this needs yes=True and first takes a safety backup of it.
    """
    subpath = safe_subpath(path)
    if dest.env.production and not yes and not dry_run:
        raise Refused(f"restoring onto production {dest.label} needs --yes (a safety backup is taken first)")
    with connect(dest.host) as conn:
        chosen = catalog.resolve(catalog.list_backups(source, conn, oplog), backup_id)
    snaps = chosen["snapshots"]
    db = db and dest.engine is not None and "db" in snaps and subpath is None
    plan = {"site": dest.site.name, "to": dest.env.name, "backup_id": chosen["backup_id"],
            "from_env": chosen["env"], "files": files, "db": db, "path": subpath}
    if dry_run:
        return plan | {"dry_run": True}
    if dest.env.production:
        safety = backup_target(oplog, dest, task=task)
        plan["safety_backup"] = safety["backup_id"]
    params = {"backup_id": chosen["backup_id"], "files": files, "db": db, "path": subpath,
              "safety_backup": plan.get("safety_backup")}
    with locked_operation(oplog, site=dest.site.name, env=dest.env.name, task=task, action="restore",
                          params=params) as op, connect(dest.host) as conn:
        if plan.get("safety_backup"):
            op.artifact("safety-backup", plan["safety_backup"])
        op.artifact("restored-backup", chosen["backup_id"], details={"snapshots": snaps})
        if files:
            with op.step("restore files" + (f" ({subpath})" if subpath else "")) as step:
                step.output(restore_files(conn, dest, snaps["files"], subpath))
        if db:
            with op.step("restore database") as step:
                step.output(restore_database(conn, dest, snaps["db"]))
    return plan
