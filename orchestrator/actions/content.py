"""`orch promote --content`: content made on a staging copy (pages, menu items, modules, media, chosen settings)
goes to production item by item, as a three-way merge that keeps production's own new rows.

plan (read the base backup and the copy side by side, production at the rows the copy touched; items, conflicts,
new ids, files; --dry-run prints it) -> lock -> planned again -> mandatory production backup -> point of no
return: the files the promoted rows use are copied (production's versions kept aside first), the rows are
written in ONE transaction (each update and delete guarded: a row production changed meanwhile stops it),
nested sets renumbered in it, then the health check. Any failure after the first change restores production's
database from the backup (when the transaction was committed) and its files from the kept versions, and the
operation is recorded `rolled_back`. Each promoted item is an artifact of the operation.

The merge itself is pure (backends/cms/merge.py); this module reads the sides:
- base: `restic dump` of the copy's source backup on production's host, its content tables picked out (awk) and
  put through the URL replacer exactly as the copy's database was made: an unchanged row reads like the copy's;
- staging: the copy's content tables dumped in primary-key order on its host;
- production: only the rows at the keys the copy touched (mariadb-dump --where), and its next ids.
Base and staging stream through here side by side; only the rows that differ are kept.
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from orchestrator.backends.cms import apply, hostscript, mergesql
from orchestrator.backends.cms.dumprows import DumpReader, Shape, encode, insert_rows
from orchestrator.backends.cms.merge import (
    ADDED,
    CHANGED,
    DELETE,
    DELETED,
    INSERT,
    PREFER,
    UPDATE,
    MergeError,
    Merger,
    MergeResult,
    Table,
    Touched,
    diff,
    parse_select,
)
from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.cms.replace import row_rewriter, url_pairs
from orchestrator.backends.engines import Engine, engine_for
from orchestrator.backends.engines.mysql import MySQL
from orchestrator.backends.envs import staging as staging_model
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.remote.relay import remote_stream, send_files
from orchestrator.config.model import Environment, Host
from orchestrator.errors import OperationFailed, OrchError, RemoteError, UsageError

from . import catalog
from .backup import backup_target
from .plan import SitePlan, execute
from .release import health_check, options, point_of_no_return
from .staging import registered, replacement_pairs, status_of
from .targets import Target, target

log = logging.getLogger("orch.content")
LOOKUP_BATCH = 500  # values per `--where col IN (...)`: a few KB of argv
# Keeps a dump's CREATE TABLE statements and INSERTs (one line, or a header and a line per row) of the tables
# named in `tables` (space separated).
PICK_TABLES = r"""
BEGIN { n = split(tables, list, " "); for (i = 1; i <= n; i++) keep["`" list[i] "`"] = 1 }
inside { print; if (substr($0, 1, 1) == ")") inside = 0; next }
rows { if (substr($0, 1, 1) == "(") { print; next } rows = 0 }
match($0, /^CREATE TABLE `[^`]+`/) { inside = (substr($0, 14, RLENGTH - 13) in keep); if (inside) print; next }
match($0, /^INSERT INTO `[^`]+`/) { rows = (substr($0, 13, RLENGTH - 12) in keep); if (rows) print }
"""


# ------------------------------------------------------------------------------------------------ the sides


@dataclass
class Source:
    """The staging copy content comes from, and the backup its database was made from (the base)."""

    name: str
    env: Environment
    host: Host
    base: dict

    @property
    def engine(self) -> MySQL:
        return _mysql(engine_for(self.env.database, self.env.path))

    @property
    def url(self) -> str:
        """The copy's URL; raise UsageError if it has none."""
        if self.env.url is None:
            raise UsageError(f"{self.env.site}/{self.name}: the staging copy has no url")
        return self.env.url

    @property
    def path(self) -> str:
        """The copy's docroot; raise UsageError if it has none (a Docker copy)."""
        if self.env.path is None:
            raise UsageError(f"{self.env.site}/{self.name}: the staging copy has no path on a host")
        return self.env.path


def _mysql(engine: Engine) -> MySQL:
    """Given a database's engine, return it as MySQL's; raise UsageError if it is another engine."""
    if not isinstance(engine, MySQL):
        raise UsageError(f"{engine.describe()}: content promotion merges MySQL/MariaDB databases only")
    return engine


def content_source(oplog, inventory, prod: Target, name: str) -> Source:
    """Given production and a staging copy's name, return the Source; raise UsageError if it is not a ready copy
    orch made, records no base backup, or that backup is gone."""
    row = registered(oplog, prod.site.name, name)
    if (status := status_of(oplog, row)) != "ready":
        raise UsageError(f"{prod.site.name}/{name} is {status}, not ready: promote content from a copy that is")
    details = row.get("details") or {}
    backup_id = details.get("db_backup_id") or details.get("backup_id")
    if not backup_id:
        raise UsageError(
            f"{prod.site.name}/{name}: orch recorded no backup its database was made from, so there is "
            "no base to merge against: `orch staging refresh` it (then redo the work) or promote by hand"
        )
    env = staging_model.derive(prod.site, name).env
    if env.database is None or env.database.engine != "mysql" or prod.database.engine != "mysql":
        raise UsageError(f"{prod.site.name}: content promotion merges MySQL/MariaDB databases only")
    with connect(prod.host) as conn:
        backups = catalog.list_backups(prod, conn, oplog)
    try:
        base = catalog.resolve(backups, backup_id)
    except UsageError:
        raise UsageError(
            f"{prod.site.name}/{name} was made from backup {backup_id}, which is gone (pruned?): the "
            "merge needs it as its base; pin backups copies are made from, or refresh the copy"
        ) from None
    return Source(name, env, inventory.hosts[env.host], base)


class DbLookup:
    """A database's rows looked up by column value, as mariadb-dump writes them (so they compare with dumps)."""

    def __init__(self, conn, engine: MySQL):
        self.conn, self.engine = conn, engine

    def rows(self, table: str, column: str, values: Collection) -> list[bytes]:
        found: list[bytes] = []
        values = list(values)
        for at in range(0, len(values), LOOKUP_BATCH):
            listed = ", ".join(
                str(v) if isinstance(v, int) else encode(v).decode("utf-8", "surrogateescape")
                for v in values[at : at + LOOKUP_BATCH]
            )
            where = f"{mergesql.ident(column)} IN ({listed})"
            out = self.conn.run(self.engine.dump_rows([table], where=where), timeout=600).stdout
            found += [row for _, row in insert_rows(out.splitlines(keepends=True))]
        return found


def _tables(conn, engine) -> set[str]:
    return {t for t in conn.run(engine.list_tables()).text.splitlines() if t}


def _production_shapes(conn, engine: MySQL, tables: list[str]) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Production's columns (in order) of these tables, and each table's next auto-increment id."""
    listed = ", ".join(f"'{t}'" for t in tables)
    out = conn.run(
        engine.sql(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
            f"DATABASE() AND table_name IN ({listed}) ORDER BY table_name, ordinal_position"
        )
    ).text
    columns: dict[str, list[str]] = {}
    for line in out.splitlines():
        table, _, column = line.partition("\t")
        columns.setdefault(table, []).append(column)
    out = conn.run(
        engine.sql(
            "SELECT table_name, COALESCE(AUTO_INCREMENT, 1) FROM information_schema.tables "
            f"WHERE table_schema = DATABASE() AND table_name IN ({listed})"
        )
    ).text
    next_ids = {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines() if "\t" in line}
    return {t: tuple(c) for t, c in columns.items()}, next_ids


def _max_ids(conn, engine: MySQL, shapes: dict[str, Shape]) -> dict[str, int]:
    """MAX(id) + 1 of each auto-increment table (information_schema's AUTO_INCREMENT may be cached, MySQL 8)."""
    autos = [(s.name, s.auto) for s in shapes.values() if s.auto and s.key == (s.auto,)]
    if not autos:
        return {}
    query = " UNION ALL ".join(
        f"SELECT '{name}', COALESCE(MAX({mergesql.ident(auto)}), 0) + 1 FROM {mergesql.ident(name)}"
        for name, auto in autos
    )
    return {
        line.split("\t")[0]: int(line.split("\t")[1])
        for line in conn.run(engine.sql(query)).text.splitlines()
        if "\t" in line
    }


def _paired(
    base: DumpReader, staging: DumpReader
) -> Iterator[tuple[Shape, Iterator[list[bytes]], Iterator[list[bytes]]]]:
    """Given the base and staging dumps (their tables in the same order), yield each table's shape and both
    sides' row batches; raise MergeError when the tables or their columns differ."""
    stage_tables = staging.tables()
    for base_shape, base_rows in base.tables():
        found = next(stage_tables, None)
        if found is None or found[0].name != base_shape.name:
            raise MergeError(
                f"table {base_shape.name} of the base backup is not next in the copy's dump "
                f"({found[0].name if found else 'nothing'} is)"
            )
        stage_shape, stage_rows = found
        if stage_shape.columns != base_shape.columns or stage_shape.key != base_shape.key:
            raise MergeError(
                f"table {base_shape.name} has other columns on the staging copy than in its base "
                "backup: content promotion needs the same schema"
            )
        yield stage_shape, base_rows, stage_rows
    extra = next(stage_tables, None)
    if extra is not None:
        raise MergeError(f"table {extra[0].name} of the staging copy is not in its base backup")


@dataclass
class Sides:
    """What was read: the content tables' shapes, the rows the copy touched, production's next ids."""

    shapes: dict[str, Shape]
    touched: dict[str, list[Touched]]
    next_ids: dict[str, int]
    pairs: list[tuple[str, str]]  # production URL -> the copy's, as the copy was made
    compared: dict[str, int] = field(default_factory=dict)


def read_sides(prod: Target, source: Source, prod_conn, stage_conn, playbook, spec) -> Sides:
    """Stream the base and the copy side by side and keep the rows that differ; read production's schema."""
    prod_engine, stage_engine = _mysql(prod.db_engine), source.engine
    on_prod, on_stage = _tables(prod_conn, prod_engine), _tables(stage_conn, stage_engine)
    tables = sorted(t for t in spec.tables if t in on_stage)
    missing = [t for t in tables if t not in on_prod]
    if missing:
        raise MergeError(f"production has no table {', '.join(missing)}: promote code (and its migrations) first")
    pairs = replacement_pairs(playbook, prod.env.url, source.env.url)
    script = hostscript.ensure_script(prod_conn)
    base_cmd = (
        prod.repository.command("dump", source.base["snapshots"]["db"], "/" + prod_engine.dump_filename)
        .pipe(Command("awk", "-v", "tables=" + " ".join(tables), PICK_TABLES))
        .pipe(hostscript.replace_command(script, pairs, "mysql"))
    )
    with (
        remote_stream(prod_conn, base_cmd) as base,
        remote_stream(stage_conn, stage_engine.dump_rows(tables)) as staging,
    ):
        shapes, touched, compared = diff_sides(base, staging, spec)
    next_ids = production_ids(prod_conn, prod_engine, shapes)
    return Sides(shapes, touched, next_ids, pairs, compared)


def diff_sides(base, staging, spec) -> tuple[dict[str, Shape], dict[str, list[Touched]], dict[str, int]]:
    """Given the base's and the copy's dumps of the content tables (binary streams, tables in the same order,
    rows in key order) and the merge spec, return the tables' shapes, the rows the copy touched and how many
    rows the copy has, per table. Only the rows that differ are held."""
    touched: dict[str, list[Touched]] = {}
    shapes: dict[str, Shape] = {}
    compared: dict[str, int] = {}
    for shape, base_rows, stage_rows in _paired(DumpReader(base), DumpReader(staging)):
        counted = _Counted(stage_rows)
        touched[shape.name] = list(diff(base_rows, counted, Table(shape, spec.tables[shape.name]).key_of, shape.name))
        shapes[shape.name] = shape
        compared[shape.name] = counted.rows
        log.info("content: %s: %d rows on the copy, %d touched", shape.name, counted.rows, len(touched[shape.name]))
    return shapes, touched, compared


def production_ids(conn, engine: MySQL, shapes: dict[str, Shape]) -> dict[str, int]:
    """Given production and the content tables' shapes, return each table's next id there (above both its
    AUTO_INCREMENT and its highest id); raise MergeError if production's columns differ."""
    columns, next_ids = _production_shapes(conn, engine, list(shapes))
    for name, shape in shapes.items():
        if columns.get(name) != shape.columns:
            raise MergeError(
                f"table {name} has other columns on production than on the staging copy: promote code "
                "(and its migrations) first"
            )
    maxima = _max_ids(conn, engine, shapes)
    return {name: max(next_ids.get(name, 1), maxima.get(name, 1)) for name in shapes}


class _Counted:
    """Row batches passed through, counted."""

    def __init__(self, batches):
        self._batches, self.rows = batches, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._batches)
        self.rows += len(batch)
        return batch


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class ContentPlan(SitePlan):
    """Which items of a staging copy go to production, with their rows, new ids, files and conflicts."""

    target: Target
    source: Source
    result: MergeResult
    tables: dict[str, Table]
    choice: dict  # select, prefer, prefer_items, delete: what the user asked

    def lines(self) -> list[str]:
        r, counts = self.result, Counter(item.status for item in self.result.items)
        head = (
            f"content from {self.source.name} (base: backup {self.source.base['backup_id']}): "
            f"{counts[ADDED]} added, {counts[CHANGED]} changed, {counts[DELETED]} deleted, "
            f"{len(r.files)} file(s)"
        )
        lines = [head]
        for item in r.items:
            mark = {ADDED: "+", CHANGED: "~", DELETED: "-"}[item.status]
            extra = [
                f"was {_key(item.key)} on staging" if item.new_key else "",
                item.reason if item.reason.startswith("needed") else "",
            ]
            note = "; ".join(x for x in extra if x)
            lines.append(f"{mark} {item.label}" + (f" ({note})" if note else ""))
            lines += [f"  ! conflict: {why}" for why in item.conflicts]
        lines += [
            f"  remap {table}: " + ", ".join(f"{old} -> {new}" for old, new in sorted(ids.items()))
            for table, ids in sorted(r.remaps.items())
        ]
        lines += [f"  file {path}" for path in r.files]
        if r.left_out:
            lines.append(
                "not promoted (select with --select KIND:ID): "
                + ", ".join(f"{item.ident} ({item.status})" for item in r.left_out[:20])
                + (" ..." if len(r.left_out) > 20 else "")
            )
        if r.unchanged:
            lines.append("already on production: " + ", ".join(item.ident for item in r.unchanged))
        if r.earlier:
            lines.append(
                "promoted by an earlier run, not again (refresh the copy to promote later edits): "
                + ", ".join(item.label for item in r.earlier)
            )
        if r.other_rows:
            lines.append(
                "rows the copy changed that are no content item (never promoted): "
                + ", ".join(f"{table} {count}" for table, count in sorted(r.other_rows.items()))
            )
        if r.blocked:
            lines.append(
                f"BLOCKED by {len(r.conflicts)} conflict(s): resolve with --prefer staging|production, "
                "--prefer KIND:ID=staging|production, or leave the item out with --select"
            )
        return lines

    def params(self) -> dict:
        return {"from": self.source.name, "base_backup": self.source.base["backup_id"], **self.choice}

    def as_dict(self) -> dict:
        r = self.result
        return super().as_dict() | {
            "items": [_item_dict(i) for i in r.items],
            "left_out": [_item_dict(i) for i in r.left_out],
            "unchanged": [_item_dict(i) for i in r.unchanged],
            "earlier": [_item_dict(i) for i in r.earlier],
            "remaps": {t: {str(o): n for o, n in ids.items()} for t, ids in r.remaps.items()},
            "files": r.files,
            "other_rows": r.other_rows,
            "rows": self.row_counts(),
            "conflicts": [{"item": i.ident, "title": i.title, "why": i.conflicts} for i in r.conflicts],
            "blocked": r.blocked,
            "summary": summary(r.items),
        }

    def row_counts(self) -> dict[str, int]:
        return dict(Counter(c.action for c in self.result.changes))


def _key(key) -> str:
    return "/".join(str(k) for k in key)


def _item_dict(item) -> dict:
    return {
        "kind": item.kind,
        "table": item.table,
        "id": _key(item.key),
        "new_id": _key(item.new_key) if item.new_key else None,
        "title": item.title,
        "status": item.status,
        "reason": item.reason,
        "conflicts": item.conflicts,
        "rows": len(item.rows),
    }


def summary(items) -> str:
    """Given the promoted items, return what a PM reads: `2 pages, 1 menu item, 4 media promoted`."""
    counts = Counter(item.kind for item in items)
    if not counts:
        return "nothing promoted"
    return (
        ", ".join(
            f"{n} {kind.replace('-', ' ')}{'' if n == 1 or kind in ('media',) else 's'}"
            for kind, n in sorted(counts.items())
        )
        + " promoted"
    )


def parse_prefer(values: list[str] | None, kinds: Collection[str]) -> tuple[str | None, dict[str, str]]:
    """Given --prefer values (`staging`, `production`, or `KIND:ID=staging`), return (for all, per item)."""
    every, per_item = None, {}
    for value in values or []:
        item, sep, side = value.rpartition("=")
        side = side if sep else value
        if side not in PREFER:
            raise UsageError(f"--prefer {value!r}: give staging, production, or KIND:ID=staging|production")
        if sep:
            per_item[parse_select([item], kinds)[0]] = side
        elif every not in (None, side):
            raise UsageError("--prefer staging and --prefer production contradict each other")
        else:
            every = side
    return every, per_item


def back_pairs(playbook, production_url: str, staging_url: str) -> list[tuple[str, str]]:
    """Given the URLs, return the pairs that turn the copy's URLs into production's own: the copy's pairs
    reversed would fold every variant they map (www. or not, http or https) onto one of them, not onto
    production's URL."""
    pairs = url_pairs(staging_url, production_url, www=False)
    if playbook.urls.bare_host:
        pairs.append((urlsplit(staging_url).netloc, urlsplit(production_url).netloc))
    return pairs


def plan_content(
    oplog,
    inventory,
    site_name: str,
    *,
    source: str,
    task: str,
    select: list[str] | None = None,
    prefer: list[str] | None = None,
    delete: bool = False,
) -> ContentPlan:
    """Given a site, a staging copy and the user's choices, return the content promotion's plan (reads only).
    Raise UsageError if the copy cannot be merged (not orch's, no base, another schema) or a choice is wrong."""
    prod = target(inventory, site_name, "production")
    playbook = playbook_for_site(prod.site)
    if playbook.merge is None:
        raise UsageError(
            f"playbook {playbook.name} says nothing about content: content promotion needs its "
            "`merge` block (see playbooks/wordpress.yaml)"
        )
    if not prod.env.url or prod.env.database is None:
        raise UsageError(f"{prod.label} needs a `url` and a `database` for a content promotion")
    kinds = [k.kind for k in playbook.merge.items]
    chosen = parse_select(select or [], kinds)
    every, per_item = parse_prefer(prefer, kinds)
    src = content_source(oplog, inventory, prod, source)
    with connect(prod.host) as prod_conn, connect(src.host) as stage_conn:
        spec = playbook.merge.for_prefix(apply.table_prefix(prod_conn, playbook, prod.path))
        sides = read_sides(prod, src, prod_conn, stage_conn, playbook, spec)
        merger = Merger(
            spec,
            sides.shapes,
            sides.touched,
            DbLookup(stage_conn, src.engine),
            DbLookup(prod_conn, _mysql(prod.db_engine)),
            to_production=row_rewriter(back_pairs(playbook, prod.env.url, src.url)),
            to_staging=row_rewriter(sides.pairs),
            next_ids=sides.next_ids,
        )
        result = merger.decide(
            select=chosen or None,
            prefer=every,
            prefer_items=per_item,
            delete=delete,
            promoted=earlier_promotions(oplog, prod.site.name, src),
        )
    choice = {"select": chosen, "prefer": prefer or [], "delete": delete}
    return ContentPlan("promote-content", prod.site.name, "production", task, prod, src, result, merger.tables, choice)


def earlier_promotions(oplog, site: str, source: Source) -> dict[str, dict[int, int]]:
    """Given a copy, return the items it added that content promotions from it (since its database was last
    loaded: the same base) inserted on production: {table: {staging id: production id}}. A second run must not
    insert them again."""
    found: dict[str, dict[int, int]] = {}
    for op in oplog.operations(site=site, action="promote-content", oldest_first=True, with_details=True):
        params = op["params"]
        if (
            op["status"] != "ok"
            or params.get("from") != source.name
            or params.get("base_backup") != source.base["backup_id"]
        ):
            continue
        for artifact in op["artifacts"]:
            item = artifact["details"]
            if (
                artifact["kind"] == "content-item"
                and item.get("status") == ADDED
                and item.get("table")
                and str(item.get("id", "")).isdigit()
            ):
                found.setdefault(item["table"], {})[int(item["id"])] = int(item.get("new_id") or item["id"])
    return found


def refuse_conflicts(plan: ContentPlan) -> None:
    """Raise OperationFailed naming the conflicting items if the plan is blocked."""
    if plan.result.blocked:
        named = "; ".join(f"{i.label}: {', '.join(i.conflicts)}" for i in plan.result.conflicts)
        raise OperationFailed(
            f"content promotion blocked, production unchanged: {named} (resolve with --prefer "
            "staging|production, or leave the item out with --select)"
        )


# ------------------------------------------------------------------------------------------------ the apply


def promote_content(oplog, inventory, plan: ContentPlan) -> dict:
    """Given a plan, promote the content: lock, plan again, back up, copy files, write rows in one transaction,
    check health; return the outcome. Raise OperationFailed if it was blocked or rolled back."""

    def recheck(p: ContentPlan) -> ContentPlan:
        fresh = plan_content(
            oplog,
            inventory,
            p.site,
            source=p.source.name,
            task=p.task,
            select=p.choice["select"],
            prefer=p.choice["prefer"],
            delete=p.choice["delete"],
        )
        refuse_conflicts(fresh)
        return fresh

    return execute(oplog, plan, lambda op, p: _ContentPromotion(oplog, op, p).run(), recheck=recheck)


class _ContentPromotion:
    """One content promotion under its lock: backup, then the point of no return."""

    def __init__(self, oplog, op, plan: ContentPlan):
        self.oplog, self.op, self.plan = oplog, op, plan
        self.prod, self.src = plan.target, plan.source
        self.committed = False
        self.kept: str | None = None  # the scratch folder with production's versions of replaced files
        self.new_files: list[str] = []

    def run(self) -> dict:
        result = self.plan.result
        self.op.artifact("content-plan", summary(result.items), details=self.plan.as_dict())
        outcome = {
            "site": self.prod.site.name,
            "from": self.src.name,
            "summary": summary(result.items),
            "items": [_item_dict(i) for i in result.items],
            "files": result.files,
            "rows": self.plan.row_counts(),
        }
        if result.empty:
            return outcome | {"status": "unchanged"}
        backup = self._backup()
        with ExitStack() as stack:
            conn = stack.enter_context(connect(self.prod.host))
            stage_conn = stack.enter_context(connect(self.src.host))
            self.conn = conn
            try:
                with point_of_no_return(self.op, self.undo):
                    self.backup = backup
                    self._files(stage_conn)
                    self._database()
                    with self.op.step("health check") as step:
                        step.output(
                            health_check(self.prod, options(self.prod), playbook_for_site(self.prod.site), None)
                        )
            finally:
                self._drop_kept()
        for item in result.items:
            self.op.artifact("content-item", f"{item.kind}:{_key(item.new_key or item.key)}", details=_item_dict(item))
        for path in result.files:
            self.op.artifact("content-file", path)
        return outcome | {"status": "ok", "backup_id": backup["backup_id"]}

    def _backup(self) -> dict:
        with self.op.step("mandatory production backup") as step:
            try:
                backup = backup_target(self.oplog, self.prod, task=self.plan.task, lock=False)
            except OrchError as exc:
                raise OperationFailed(
                    f"content promotion refused, production unchanged: the backup failed: {exc}"
                ) from exc
            self.op.artifact("pre-promotion-backup", backup["backup_id"], details=backup["snapshots"])
            step.output(f"backup {backup['backup_id']}")
        return backup

    def _files(self, stage_conn) -> None:
        files = self.plan.result.files
        with self.op.step(f"copy {len(files)} file(s) the promoted content uses") as step:
            if not files:
                step.skip("no files")
                return
            there = _existing(stage_conn, self.src.path, files)
            missing = [f for f in files if f not in there]
            on_prod = set(_existing(self.conn, self.prod.path, there))
            if on_prod:  # production's versions, kept aside first: the undo puts them back
                parent = posixpath.dirname(self.prod.path.rstrip("/"))
                self.kept = self.conn.run(Command("mktemp", "-d", "-p", parent, ".orch-content.XXXXXX")).text.strip()
                self.conn.run(
                    Command(
                        "tar",
                        "-C",
                        self.prod.path,
                        "-cf",
                        posixpath.join(self.kept, "kept.tar"),
                        "--",
                        *sorted(on_prod),
                    )
                )
            self.new_files = [f for f in there if f not in on_prod]
            send_files(stage_conn, self.src.path, self.conn, self.prod.path, there)
            step.output(
                f"{len(there)} copied ({len(on_prod)} replaced)"
                + (f"; not on the copy, skipped: {', '.join(missing)}" if missing else "")
            )

    def _database(self) -> None:
        with self.op.step("write the rows in one transaction") as step:
            script = mergesql.Script()
            mergesql.row_statements(script, self.plan.result, self.plan.tables)
            renumbered = 0
            for t in self.plan.tables.values():
                if t.spec.tree is not None and any(
                    c.table == t.name and c.action in (INSERT, UPDATE, DELETE) for c in self.plan.result.changes
                ):
                    now = mergesql.parse_tree(self.conn.run(self.prod.db_engine.sql(mergesql.tree_query(t))).text)
                    renumbered += mergesql.tree_statements(script, t, now, self.plan.result)
            result = self.conn.run(
                self.prod.db_engine.script(), stdin=script.text().encode(), check=False, timeout=None
            )
            if not result.ok:
                guarded = mergesql.guard_failure(result.stderr, script.guards)
                raise OperationFailed(
                    "the transaction was not committed, production's database is unchanged: "
                    + (guarded or result.stderr.strip()[-300:])
                )
            self.committed = True
            counts = self.plan.row_counts()
            step.output(
                f"{counts.get(INSERT, 0)} inserted, {counts.get(UPDATE, 0)} updated, "
                f"{counts.get(DELETE, 0)} deleted; {renumbered} nested-set rows renumbered"
            )

    def undo(self, reason: str) -> str:
        done = []
        if self.committed:
            from .restore import restore_database

            done.append("database restored: " + restore_database(self.conn, self.prod, self.backup["snapshots"]["db"]))
        if self.new_files:
            self.conn.run(Command("cd", self.prod.env.path).then(Command("rm", "-f", "--", *self.new_files)))
            done.append(f"{len(self.new_files)} new file(s) removed")
        if self.kept:
            self.conn.run(Command("tar", "-C", self.prod.env.path, "-xpf", posixpath.join(self.kept, "kept.tar")))
            done.append("replaced files put back")
        self.op.artifact("rollback", "content", details={"reason": reason})
        return "; ".join(done) or "nothing to undo"

    def _drop_kept(self) -> None:
        if self.kept:
            self.conn.run(Command("rm", "-rf", "--", self.kept), check=False)


def _existing(conn, root: str, files: list[str]) -> list[str]:
    """Of these paths relative to root, return those that are regular files there."""
    if not files:
        return []
    script = 'cd "$1" || exit 1; shift; for f in "$@"; do [ -f "$f" ] && printf "%s\\n" "$f"; done; exit 0'
    try:
        out = conn.run(Command("sh", "-c", script, "orch", root, *files)).text
    except RemoteError as exc:
        raise OperationFailed(f"cannot list files in {root}: {exc}") from exc
    return [line for line in out.splitlines() if line]
