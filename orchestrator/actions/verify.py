"""`orch verify`: a restore drill, because a backup nobody restored is a hope, not a backup.

1. the dump is restored into a scratch database on the host and its tables and row counts are compared
   with what the backup recorded (each count must lie within the [before, after] bracket of the dump);
2. a sample of files is restored with `restic restore --verify` and compared with the live site;
3. `restic check --read-data-subset=n/t` reads a rotating slice of the repository's data.
Any mismatch fails the operation loudly; the scratch database is always dropped. The drill is planned first
(`--dry-run` prints the plan) and planned again under the site's lock.
"""

from __future__ import annotations

import json
import posixpath
import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from orchestrator.backends.engines import engine_for
from orchestrator.backends.remote import Command, connect
from orchestrator.errors import OperationFailed, OrchError, RemoteError, UsageError

from . import catalog
from .plan import Plan, execute
from .targets import Target

SAMPLE_FILES = 20


def compare_tables(recorded: dict[str, list[int]] | None, restored: dict[str, int]) -> list[str]:
    """Given the backup's recorded [min, max] counts and the restored counts, return the problems found."""
    if not recorded:
        return []  # a backup taken without a recorded table list can only be checked for restorability
    problems = [f"table {name} missing from the restored dump" for name in recorded if name not in restored]
    for name, bracket in recorded.items():
        low, high = min(bracket), max(bracket)
        if name in restored and not low <= restored[name] <= high:
            expected = f"{low}" if low == high else f"{low}-{high}"
            problems.append(f"table {name}: {restored[name]} rows restored, the backup recorded {expected}")
    return problems


def scratch_engine(t: Target):
    """The engine drills restore into: the site's own server, or `verify.scratch_database` when configured
    (production accounts rarely may CREATE DATABASE)."""
    scratch = (t.site.verify or {}).get("scratch_database")
    if not scratch:
        return t.engine
    if scratch["engine"] != t.database.engine:
        raise UsageError(
            f"site {t.site.name}: verify.scratch_database is {scratch['engine']}, the site's "
            f"database is {t.database.engine}"
        )
    db = replace(
        t.database,
        host=scratch.get("host"),
        port=scratch.get("port"),
        user=scratch.get("user"),
        password=scratch.get("password"),
        socket=None,
    )
    return engine_for(db, t.path)


def drill_database(conn, t: Target, snapshot_id: str, recorded) -> tuple[dict, list[str]]:
    """Restore the dump into a scratch database, compare, drop it. Return (restored counts, problems)."""
    engine = scratch_engine(t)
    scratch = f"orch_verify_{secrets.token_hex(4)}"
    if t.database.engine == "sqlite":
        scratch = posixpath.join("/tmp", scratch + ".sqlite")  # noqa: S108 - the host's tmp, removed below
    dump = t.repository.command("dump", snapshot_id, "/" + engine.dump_filename)
    try:
        _create_scratch(conn, t, engine, scratch)
        result = conn.run(dump.pipe(engine.restore(scratch)), check=False, timeout=None)
        if not result.ok:
            reason = result.stderr.strip()[-400:] or f"exit {result.exit_status}"
            return {}, [f"the dump does not restore: {reason}"]
        restored = engine.table_counts(conn, scratch)
        return restored, compare_tables(recorded, restored)
    finally:
        conn.run(engine.drop(scratch), check=False)


def _create_scratch(conn, t: Target, engine, scratch: str) -> None:
    """Create the scratch database; raise OperationFailed saying where to point the drill if that is refused."""
    try:
        conn.run(engine.create(scratch))
    except RemoteError as exc:
        configured = (t.site.verify or {}).get("scratch_database")
        hint = (
            "check that verify.scratch_database's account may create databases"
            if configured
            else f"the site's database user {t.database.user} may not create databases: set "
            "verify.scratch_database to a server and an account that may (see docs/inventory.md)"
        )
        raise OperationFailed(
            f"{t.label}: could not create the scratch database {scratch} for the restore "
            f"drill: {_last_line(exc.stderr) or exc}; {hint}"
        ) from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def sample_files(conn, t: Target, snapshot_id: str, count: int = SAMPLE_FILES) -> list[str]:
    """Return up to `count` regular file paths of the snapshot (relative), picked at random."""
    out = t.repository.run(conn, "ls", "--json", snapshot_id, timeout=600).text
    files = [
        node["path"]
        for line in out.splitlines()
        if line.startswith("{")
        for node in [json.loads(line)]
        if node.get("type") == "file"
    ]
    return random.sample(files, min(count, len(files)))  # noqa: S311 - sampling, not security


def drill_files(conn, t: Target, snapshot_id: str) -> tuple[dict, list[str]]:
    """Restore sampled files with content verification; report how many still match the live site."""
    paths = sample_files(conn, t, snapshot_id)
    if not paths:
        return {"sampled": 0}, []
    scratch = conn.run(Command("mktemp", "-d")).text.strip()
    try:
        includes = [arg for p in paths for arg in ("--include", p)]
        result = t.repository.run(
            conn, "restore", snapshot_id, "--target", scratch, "--verify", *includes, timeout=None
        )
        problems = [] if "error" not in result.stderr.lower() else [f"file restore reported: {result.stderr[-300:]}"]
        rel = [p.lstrip("/") for p in paths]
        restored = _sha256(conn, scratch, rel)
        live = _sha256(conn, t.files_root, rel)
        problems += [f"sampled file {p} did not restore" for p in rel if p not in restored]
        same = sum(1 for p in rel if p in restored and live.get(p) == restored[p])
        return {"sampled": len(rel), "restored": len(restored), "unchanged_since_backup": same}, problems
    finally:
        conn.run(Command("rm", "-rf", "--", scratch), check=False)


def _sha256(conn, root: str, rel_paths: list[str]) -> dict[str, str]:
    out = conn.run(Command("cd", root).then(Command("sha256sum", "--", *rel_paths)), check=False).text
    return {line[66:]: line[:64] for line in out.splitlines() if len(line) > 66}


DEFAULT_SUBSET = "1/7"


def data_subset(spec: str | None, today: datetime | None = None) -> str:
    """Given 'n/t' (or None: DEFAULT_SUBSET), return this run's rotating slice so all data is read over t runs;
    given a percentage ('5%'), return it (restic picks a random share each run)."""
    spec = spec or DEFAULT_SUBSET
    if spec.endswith("%"):
        return spec
    total = int(spec.split("/")[1])
    day = (today or datetime.now(timezone.utc)).timetuple().tm_yday
    return f"{day % total + 1}/{total}"


@dataclass
class VerifyPlan(Plan):
    """Which backup the drill restores, and what it compares."""

    target: Target
    backup: dict
    subset: str  # this run's restic check --read-data-subset

    @property
    def drills_database(self) -> bool:
        return "db" in self.backup["snapshots"] and self.target.engine is not None

    def lines(self) -> list[str]:
        snaps, where = self.backup["snapshots"], self.target.host.name
        lines = []
        if self.drills_database:
            lines.append(
                f"restore the dump of backup {self.backup['backup_id']} (snapshot {snaps['db']}) into a "
                "scratch database, compare each table's rows with the backup's record, drop it"
            )
        return lines + [
            f"restore up to {SAMPLE_FILES} random files of snapshot {snaps['files']} on {where} "
            "(content verified) and compare them with the live site",
            f"restic check --read-data-subset={self.subset}",
        ]

    def params(self) -> dict:
        return {"backup_id": self.backup["backup_id"]}


def plan_verify(oplog, t: Target, *, backup_id: str, task: str) -> VerifyPlan:
    """Given a target and a backup id (or 'latest', or a prefix), return the drill's plan (reads only); raise
    UsageError if there is no such complete backup."""
    with connect(t.host) as conn:
        chosen = catalog.resolve(catalog.list_backups(t, conn, oplog), backup_id)
    subset = data_subset((t.site.verify or {}).get("read_data_subset"))
    return VerifyPlan("verify", t.site.name, t.env.name, task, t, chosen, subset)


def verify(oplog, t: Target, *, backup_id: str, task: str, catch_up: bool = False) -> dict:
    """Run the restore drill on one backup (plan, then apply under the lock). Return the report; raise
    OperationFailed if anything is off."""
    return run_verify(oplog, plan_verify(oplog, t, backup_id=backup_id, task=task), catch_up=catch_up)


def run_verify(oplog, plan: VerifyPlan, *, catch_up: bool = False) -> dict:
    """Apply a drill plan as one locked operation; the backup is resolved again under the lock (it may have been
    pruned meanwhile). Return the report; raise OperationFailed if anything is off."""

    def recheck(p: VerifyPlan) -> VerifyPlan:
        return plan_verify(oplog, p.target, backup_id=p.backup["backup_id"], task=p.task)

    return execute(oplog, plan, _apply, recheck=recheck, catch_up=catch_up)


def _apply(op, plan: VerifyPlan) -> dict:
    t, chosen, problems = plan.target, plan.backup, []
    report = {"backup_id": chosen["backup_id"], "site": t.site.name, "env": t.env.name}
    with connect(t.host) as conn:
        if plan.drills_database:
            with op.step("restore dump into a scratch database and compare") as step:
                counts, found = drill_database(conn, t, chosen["snapshots"]["db"], chosen.get("tables"))
                report["tables"] = counts
                problems += found
                step.output(f"{len(counts)} tables, {sum(counts.values())} rows; " + ("; ".join(found) or "match"))
        with op.step("restore a sample of files and compare checksums") as step:
            report["files"], found = drill_files(conn, t, chosen["snapshots"]["files"])
            problems += found
            step.output(json.dumps(report["files"]) + ("; " + "; ".join(found) if found else ""))
        with op.step("restic check") as step:
            try:
                t.repository.unlock_stale(conn)
                t.repository.run(conn, "check", f"--read-data-subset={plan.subset}", timeout=None)
                step.output(f"repository ok (data subset {plan.subset})")
            except OrchError as exc:
                problems.append(f"restic check: {exc}")
            report["read_data_subset"] = plan.subset
    report["problems"] = problems
    report["status"] = "failed" if problems else "ok"
    op.artifact("verify", chosen["backup_id"], details=report)
    if problems:
        raise OperationFailed(f"{t.label}: verify of backup {chosen['backup_id']} FAILED: " + "; ".join(problems))
    return report
