"""A decided content merge as one MySQL transaction: guarded deletes and updates, inserts, nested sets renumbered.

Every update and delete names the whole row production had when the merge was decided (derived and nested-set
columns aside, compared byte for byte: ``BINARY col <=> BINARY value``) and is followed by a guard that stops
the script unless exactly one row was hit. A guard is a prepared statement that selects from a table named
``orch-guard-N`` when its condition fails: the client stops at that error, the transaction is never committed,
and :func:`guard_failure` turns the error back into what changed. Inserts are guarded by the primary key (and
any unique key). A nested set is renumbered from the rows production had when the script was made, locked and
checked first (count and a CRC32 sum of id, parent, left and right), so nobody renumbers it meanwhile: the check
runs before the script's own row changes, which it would otherwise count as someone else's.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from .dumprows import decode, encode
from .merge import DELETE, INSERT, UPDATE, MergeResult, RowChange, Table
from .nestedset import Node, rebuild

_GUARD = re.compile(r"orch-guard-(\d+)")


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class TreeRow:
    """One row of a nested set as production has it."""

    key: int
    parent: int | None
    left: int
    right: int
    level: int | None = None


def fingerprint(rows: Iterable[TreeRow]) -> tuple[int, int]:
    """Given a nested set's rows, return (count, sum of CRC32 of "id,parent,left,right"), as the SQL of
    tree_statements computes them (CONCAT_WS leaves a NULL parent out)."""
    rows = list(rows)
    return len(rows), sum(
        zlib.crc32(",".join(str(v) for v in (r.key, r.parent, r.left, r.right) if v is not None).encode()) for r in rows
    )


class Script:
    """Builds the transaction's SQL and remembers what each guard checks. ``checks`` run first, at the start of
    the transaction (locks, and checks of what the statements were computed from); ``lines`` follow."""

    def __init__(self):
        self.head = [
            "SET NAMES utf8mb4;",
            "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';",
            "SET autocommit = 0;",
            "START TRANSACTION;",
        ]
        self.checks: list[str] = []
        self.lines: list[str] = []
        self.guards: list[str] = []

    def guard(self, condition: str, what: str, *, first: bool = False) -> None:
        """Stop the script (and so the transaction) unless the SQL condition holds: where it is now, or with
        `first` among the checks, before any row changes."""
        self.guards.append(what)
        (self.checks if first else self.lines).extend(
            [
                f"SET @orch_ok = ({condition});",
                f"SET @orch_sql = IF(@orch_ok, 'DO 0', 'SELECT 1 FROM `orch-guard-{len(self.guards)}`');",
                "PREPARE orch_guard FROM @orch_sql;",
                "EXECUTE orch_guard;",
                "DEALLOCATE PREPARE orch_guard;",
            ]
        )

    def text(self) -> str:
        return "\n".join([*self.head, *self.checks, *self.lines, "COMMIT;"]) + "\n"


def _same_row(t: Table, literals: list[bytes]) -> str:
    """SQL true for exactly the row with these values (derived and nested-set columns aside)."""
    return " AND ".join(
        f"BINARY {ident(c)} <=> BINARY {lit.decode('utf-8', 'surrogateescape')}"
        for c, lit in zip(t.shape.columns, literals, strict=True)
        if c not in t.kept
    )


def _sql(literal: bytes) -> str:
    return literal.decode("utf-8", "surrogateescape")


def row_statements(script: Script, result: MergeResult, tables: dict[str, Table]) -> None:
    """Append the merge's deletes, updates and inserts (in that order) to the script."""
    changes = [c for c in result.changes if c.action in (DELETE, UPDATE, INSERT)]
    for action in (DELETE, UPDATE, INSERT):
        for change in changes:
            if change.action == action:
                _statement(script, tables[change.table], change)


def _statement(script: Script, t: Table, change: RowChange) -> None:
    what = f"{t.name} row {change.final_key}"
    if change.action == INSERT:
        columns = [(c, lit) for c, lit in zip(t.shape.columns, change.written, strict=True) if c not in t.spec.derived]
        script.lines.append(
            f"INSERT INTO {ident(t.name)} ({', '.join(ident(c) for c, _ in columns)}) VALUES "
            f"({', '.join(_sql(lit) for _, lit in columns)});"
        )
        return
    before = t.literals(change.replaced)
    if change.action == DELETE:
        script.lines.append(f"DELETE FROM {ident(t.name)} WHERE {_same_row(t, before)};")
    else:
        sets = [
            f"{ident(c)} = {_sql(new)}"
            for c, new, old in zip(t.shape.columns, change.written, before, strict=True)
            if c not in t.kept and new != old
        ]
        if not sets:
            return
        script.lines.append(f"UPDATE {ident(t.name)} SET {', '.join(sets)} WHERE {_same_row(t, before)};")
    script.guard("ROW_COUNT() = 1", f"{what} changed on production meanwhile")


def tree_statements(script: Script, t: Table, now: list[TreeRow], result: MergeResult) -> int:
    """Renumber the nested set of table t after the merge's changes; production had rows `now` when the script
    was made (locked and checked among the script's first checks). Return how many rows are renumbered."""
    tree = t.tree
    key_col = t.shape.key[0]
    count, crc = fingerprint(now)
    script.checks.append(
        f"SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS(',', {ident(key_col)}, {ident(tree.parent)}, "
        f"{ident(tree.left)}, {ident(tree.right)}))), 0) INTO @orch_n, @orch_s "
        f"FROM {ident(t.name)} FOR UPDATE;"
    )
    script.guard(
        f"@orch_n = {count} AND @orch_s = {crc}",
        f"the nested set of {t.name} changed on production meanwhile",
        first=True,
    )
    nodes = {row.key: Node(row.key, row.parent, (0, row.left)) for row in now}
    new: set[int] = set()
    for change in result.changes:
        if change.table != t.name or change.action not in (INSERT, UPDATE, DELETE):
            continue
        key = change.written_key[0]
        if change.action == DELETE:
            nodes.pop(key, None)
            continue
        values = dict(zip(t.shape.columns, change.written, strict=True))
        parent_value = decode(values[tree.parent])
        parent_key = int(parent_value) if parent_value not in (None, b"") else None
        staging_left = int(decode(values[tree.left]) or 0)
        old = nodes.get(key)
        kept = old is not None and old.parent == parent_key  # not moved: keeps its place among its siblings
        nodes[key] = Node(key, parent_key, old.order if old is not None and kept else (1, staging_left))
        if old is None:
            new.add(key)
    roots = [row.left for row in now if row.parent not in nodes or row.parent == row.key]
    numbers = rebuild(nodes.values(), min(roots) if roots else 0)
    current = {row.key: (row.left, row.right, row.level) for row in now}
    renumbered = 0
    for key, (left, right, level) in sorted(numbers.items()):
        if key not in new and current.get(key) == (left, right, level if tree.level else current[key][2]):
            continue
        sets = [f"{ident(tree.left)} = {left}", f"{ident(tree.right)} = {right}"]
        if tree.level:
            sets.append(f"{ident(tree.level)} = {level}")
        script.lines.append(
            f"UPDATE {ident(t.name)} SET {', '.join(sets)} WHERE {ident(key_col)} = "
            f"{_sql(encode(str(key).encode(), b'0'))};"
        )
        renumbered += 1
    return renumbered


def tree_query(t: Table) -> str:
    """The SELECT reading a nested set's rows (id, parent, left, right, level) on production."""
    tree = t.tree
    level = ident(tree.level) if tree.level else "NULL"
    return (
        f"SELECT {ident(t.shape.key[0])}, {ident(tree.parent)}, {ident(tree.left)}, {ident(tree.right)}, {level} "
        f"FROM {ident(t.name)}"
    )


def parse_tree(text: str) -> list[TreeRow]:
    """Given the client's tab-separated output of tree_query, return the rows."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, parent, left, right, level = line.split("\t")
        rows.append(
            TreeRow(
                int(key),
                None if parent == "NULL" else int(parent),
                int(left),
                int(right),
                None if level == "NULL" else int(level),
            )
        )
    return rows


def guard_failure(stderr: str, guards: list[str]) -> str | None:
    """Given the client's stderr after a failed script, return what the guard that stopped it checks (None if no
    guard stopped it)."""
    found = _GUARD.search(stderr)
    if found is None:
        return None
    number = int(found.group(1))
    return guards[number - 1] if 0 < number <= len(guards) else None
