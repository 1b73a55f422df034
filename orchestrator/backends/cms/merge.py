"""The content merge of `orch promote --content`: which rows a staging copy changed, which items they make up,
and what production gets, as a three-way merge.

Three sides
    *base* is the dump of the backup the copy was made from, put through the URL replacer exactly as the copy's
    database was: so a row the copy did not change is byte for byte its base row. *staging* is the copy now,
    *production* is production now. :func:`diff` walks base and staging side by side in primary-key order (two
    sorted streams, nothing held but the rows that differ): equal runs of rows are compared a batch at a time,
    and only where they differ are keys read. What it yields are the rows staging *touched*: added, changed or
    deleted there. Production is then read only at those keys (a content promotion never scans production) and
    compared with the base in the same URL space (``to_staging``): a row production left as it was is promoted;
    one both sides changed differently is a conflict; production's own new rows are never read nor touched.

Items
    The playbook's ``merge`` block (see ``playbook.Merge``) says what content is. A touched row belongs to the
    item whose root row it leads to: itself when it matches an item kind (a page, a menu item, an option), else
    through its ``owner`` column (a post's meta) or the row that ``owns`` it (an article's asset). An item is
    *added*, *changed* or *deleted* on staging. By default every added or changed item whose kind's ``default``
    allows it is promoted; ``select`` names items instead. An item referring to a row staging added (a page's
    image, a menu item's page) brings that row's item along. Deleted items are applied only when asked.

Ids and references
    A row staging added keeps its id when production never handed that id out (it is at or above production's
    AUTO_INCREMENT); otherwise it gets a new one there, and every reference to it in the promoted rows is
    rewritten: plain columns (``refs``, ``owner``, ``owns``), and ids inside values (``values``: a meta value,
    block attributes in post content, a serialized array), where serialized strings around an edit get their
    lengths fixed by the URL replacer's own machinery (``replace.edit_value``).

Nothing here does I/O: staging and production are read through :class:`Lookup` objects, URLs are replaced by
the functions given. ``actions/content.py`` runs it against real hosts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol, TypeVar

from orchestrator.errors import UsageError

from . import dumprows
from .dumprows import Key, KeyReader, Shape, Value, decode, encode, key_value
from .playbook import ItemKind, Merge, MergeTable, RowMatch, Tree, ref_table
from .replace import edit_value

ADDED, CHANGED, DELETED = "added", "changed", "deleted"
INSERT, UPDATE, DELETE, NONE, CONFLICT = "insert", "update", "delete", "none", "conflict"
PREFER = ("staging", "production")
_DIGITS = re.compile(rb"-?\d+")
_DERIVED_ONLY = "only derived or nested-set columns changed on staging"
R = TypeVar("R")


class MergeError(UsageError):
    """The merge cannot be made as asked (a table missing on one side, columns that differ, rows out of order)."""


# --------------------------------------------------------------------------------------------- the diff


@dataclass
class Touched:
    """A row staging touched: as the copy got it (``base``, None: added on staging) and as it is now
    (``staging``, None: deleted there). Both hold staging's URLs."""

    key: Key
    base: bytes | None
    staging: bytes | None

    @property
    def status(self) -> str:
        return ADDED if self.base is None else DELETED if self.staging is None else CHANGED

    @property
    def row(self) -> bytes:
        """The row as staging has it, or had it before deleting it; raise MergeError if neither side has it."""
        row = self.staging if self.staging is not None else self.base
        if row is None:
            raise MergeError(f"row {_show_key(self.key)} is on neither side")
        return row


class _Cursor:
    """A position in a stream of row batches, checking that the keys it is asked for increase."""

    def __init__(self, batches: Iterator[list[bytes]], key_of: Callable[[bytes], Key], side: str, table: str):
        self._batches, self.key_of, self.side, self.table = batches, key_of, side, table
        self.rows: list[bytes] | None = []
        self.i = 0
        self._last: Key | None = None  # the key of the last row consumed whose key was read
        self._key: Key | None = None  # the current row's key, once read
        self._fill()

    def _fill(self) -> None:
        while self.rows is not None and self.i >= len(self.rows):
            self.rows, self.i = next(self._batches, None), 0

    def skip(self, n: int) -> None:
        """Move past n rows (of the current batch, or the current row and then into the next batches)."""
        if self._key is not None:
            self._last, self._key = self._key, None
        self.i += n
        self._fill()

    @property
    def row(self) -> bytes:
        """The current row; raise MergeError if the side has no rows left."""
        if self.rows is None:
            raise MergeError(f"{self.side} rows of {self.table} were read past their end")
        return self.rows[self.i]

    def key(self) -> Key:
        """The current row's key; raise MergeError if it does not follow the last key read."""
        if self._key is None:
            key = self.key_of(self.row)
            if self._last is not None and not self._last < key:
                raise MergeError(
                    f"{self.side} rows of {self.table} are not in primary-key order ({key!r} after "
                    f"{self._last!r}): is it a MyISAM table? Content promotion needs key order"
                )
            self._key = key
        return self._key


def diff(
    base: Iterator[list[bytes]], staging: Iterator[list[bytes]], key_of: Callable[[bytes], Key], table: str = ""
) -> Iterator[Touched]:
    """Given the row batches of one table on the base and on staging, both in primary-key order, yield the rows
    that differ, in key order. Raise MergeError if a side is out of order."""
    a, b = _Cursor(base, key_of, "base", table), _Cursor(staging, key_of, "staging", table)
    while a.rows is not None and b.rows is not None:
        n = min(len(a.rows) - a.i, len(b.rows) - b.i)
        if a.rows[a.i : a.i + n] == b.rows[b.i : b.i + n]:  # one C-level compare for a run of equal rows
            a.skip(n)
            b.skip(n)
            continue
        same = 0
        while a.rows[a.i + same] == b.rows[b.i + same]:
            same += 1
        if same:
            a.skip(same)
            b.skip(same)
        ka, kb = a.key(), b.key()
        if ka == kb:
            yield Touched(ka, a.row, b.row)
            a.skip(1)
            b.skip(1)
        elif ka < kb:
            yield Touched(ka, a.row, None)
            a.skip(1)
        else:
            yield Touched(kb, None, b.row)
            b.skip(1)
    for cursor, side in ((a, "base"), (b, "staging")):
        while cursor.rows is not None:
            key = cursor.key()
            yield Touched(key, cursor.row, None) if side == "base" else Touched(key, None, cursor.row)
            cursor.skip(1)


# ------------------------------------------------------------------------------------------- the sides


class Lookup(Protocol):
    """One side's rows, looked up: the row texts of `table` whose `column` holds one of `values`."""

    def rows(self, table: str, column: str, values: Collection) -> list[bytes]: ...


@dataclass
class Table:
    """A content table as the merge sees it: its shape (from the dumps) and what the playbook says of it."""

    shape: Shape
    spec: MergeTable

    def __post_init__(self):
        self.key_of = KeyReader(self.shape)
        self._values: dict[bytes, list[bytes]] = {}
        self.auto = self.shape.auto if self.shape.key == (self.shape.auto,) else None
        tree = self.spec.tree
        self.kept = set(self.spec.derived) | (
            {c for c in (tree.left, tree.right, tree.level) if c is not None} if tree else set()
        )
        # compared without: columns that may differ while the row is the same (and a row matched by its unique
        # column may have another id on production)
        self.blank = self.kept | (set(self.shape.key) if self.spec.unique else set())

    @property
    def name(self) -> str:
        return self.shape.name

    @property
    def owner_column(self) -> str:
        """The column naming the row's owner; raise MergeError if the playbook gives the table no owner."""
        if self.spec.owner is None:
            raise MergeError(f"playbook merge: table {self.name} has no owner")
        return self.spec.owner[0]

    @property
    def tree(self) -> Tree:
        """The table's nested set; raise MergeError if the playbook declares none."""
        if self.spec.tree is None:
            raise MergeError(f"playbook merge: table {self.name} is no nested set (no tree)")
        return self.spec.tree

    def literals(self, row: bytes) -> list[bytes]:
        if (found := self._values.get(row)) is None:
            found = self._values[row] = dumprows.values(row)
            if len(found) != len(self.shape.columns):
                raise MergeError(f"a row of {self.name} has {len(found)} values for {len(self.shape.columns)} columns")
        return found

    def get(self, row: bytes, column: str) -> Value:
        return decode(self.literals(row)[self.shape.index(column)])

    def matches(self, row: bytes, match: RowMatch | None) -> bool:
        return match is not None and match.test(lambda column: self.get(row, column))

    def takes_part(self, row: bytes) -> bool:
        """Whether a row takes part in merges at all (the table's ``where``, not its ``skip``)."""
        return self.matches(row, self.spec.where) and not self.matches(row, self.spec.skip)

    def comparable(self, row: bytes | None) -> bytes | None:
        """The row as compared across sides: with derived and nested-set columns blanked (they may differ)."""
        if row is None or not self.blank:
            return row
        return b",".join(
            b"" if column in self.blank else literal
            for column, literal in zip(self.shape.columns, self.literals(row), strict=True)
        )


def as_key(value: Value) -> int | bytes | None:
    """Given a stored value naming a row, return it as a key part (an int for digits)."""
    return None if value is None else key_value(value) if _DIGITS.fullmatch(value) else value


# ------------------------------------------------------------------------------------------- the result


@dataclass
class Item:
    """One thing people made in the admin: a page, a menu item, an option... with the rows it touched."""

    kind: str
    table: str
    key: Key
    title: str
    status: str  # added | changed | deleted (on staging)
    rows: list[tuple[str, Key]] = field(default_factory=list)
    reason: str = ""  # why it is promoted: default, selected, needed by ...
    conflicts: list[str] = field(default_factory=list)
    new_key: Key | None = None

    @property
    def ident(self) -> str:
        return f"{self.kind}:{_show_key(self.key)}"

    @property
    def label(self) -> str:
        return f"{self.kind} {_show_key(self.new_key or self.key)} {self.title!r}"


@dataclass
class RowChange:
    """What happens to one row on production: insert, update, delete, none (already so) or a conflict."""

    table: str
    key: Key  # on staging
    base: bytes | None
    staging: bytes | None
    production: bytes | None  # production's row at the key (production's URLs)
    action: str = NONE
    why: str = ""
    final: list[bytes] | None = None  # the literals production gets (insert, update)
    final_key: Key | None = None
    item: str = ""

    @property
    def written(self) -> list[bytes]:
        """The literals production gets; raise MergeError if the change writes none (it is no insert or update)."""
        if self.final is None:
            raise MergeError(f"{self.table} row {_show_key(self.key)}: a {self.action} with no row to write")
        return self.final

    @property
    def written_key(self) -> Key:
        """The row's key on production; raise MergeError if the change has none (it changes nothing there)."""
        if self.final_key is None:
            raise MergeError(f"{self.table} row {_show_key(self.key)}: a {self.action} with no key on production")
        return self.final_key

    @property
    def staged(self) -> bytes:
        """Staging's row; raise MergeError if staging deleted it."""
        if self.staging is None:
            raise MergeError(f"{self.table} row {_show_key(self.key)}: a {self.action} of a row staging deleted")
        return self.staging

    @property
    def replaced(self) -> bytes:
        """Production's row the change updates or deletes; raise MergeError if production has none at the key."""
        if self.production is None:
            raise MergeError(f"{self.table} row {_show_key(self.key)}: a {self.action} of a row production lacks")
        return self.production


@dataclass
class MergeResult:
    """The merge, decided: items promoted (and those that are not), row changes, new ids, files, conflicts."""

    items: list[Item]
    left_out: list[Item]
    changes: list[RowChange]
    remaps: dict[str, dict[int, int]]
    files: list[str]
    other_rows: dict[str, int]  # touched rows that belong to no item: never promoted
    prefer: str | None = None
    unchanged: list[Item] = field(default_factory=list)  # chosen, but production has them so already
    earlier: list[Item] = field(default_factory=list)  # added on staging and promoted by an earlier run

    @property
    def conflicts(self) -> list[Item]:
        return [item for item in self.items if item.conflicts]

    @property
    def blocked(self) -> bool:
        return any(change.action == CONFLICT for change in self.changes)

    @property
    def empty(self) -> bool:
        return not any(change.action in (INSERT, UPDATE, DELETE) for change in self.changes) and not self.files


def _show_key(key: Key | None) -> str:
    if key is None:
        return ""
    return "/".join(part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part) for part in key)


# ------------------------------------------------------------------------------------------- the merge


class _Missing(Enum):
    """Not looked up yet (a staging row :class:`_StagingRows` fetches in its next batch)."""

    MISSING = 0


_MISSING: Final = _Missing.MISSING


class _StagingRows:
    """Staging rows looked up by column value, batched: get() answers from the cache or records the miss;
    fill() looks every recorded miss up at once (one query per table and column)."""

    def __init__(self, lookup: Lookup, tables: dict[str, Table]):
        self.lookup, self.tables = lookup, tables
        self.cache: dict[tuple[str, str, object], list[bytes]] = {}
        self.missing: dict[tuple[str, str], set] = defaultdict(set)

    def get(self, table: str, column: str, value) -> list[bytes] | _Missing:
        found = self.cache.get((table, column, value), _MISSING)
        if found is _MISSING:
            self.missing[(table, column)].add(value)
        return found

    def fill(self) -> None:
        for (table, column), values in self.missing.items():
            for value in values:
                self.cache[(table, column, value)] = []
            for row in self.lookup.rows(table, column, sorted(values, key=_sortable)):
                found = as_key(self.tables[table].get(row, column))
                if (table, column, found) in self.cache:
                    self.cache[(table, column, found)].append(row)
        self.missing.clear()


def _sortable(value) -> tuple:
    return (0, value, b"") if isinstance(value, int) else (1, 0, value or b"")


class Merger:
    """Decides a content merge (see the module docstring). Given the playbook's merge block (table names
    resolved), the tables' shapes, the touched rows per table, staging and production lookups, the URL
    replacers (staging -> production for rows to write, production -> staging for comparisons) and
    production's next auto-increment ids; :meth:`decide` returns the MergeResult."""

    def __init__(
        self,
        spec: Merge,
        shapes: dict[str, Shape],
        touched: dict[str, list[Touched]],
        staging: Lookup,
        production: Lookup,
        *,
        to_production: Callable[[bytes], bytes],
        to_staging: Callable[[bytes], bytes],
        next_ids: dict[str, int],
    ):
        self.spec = spec
        self.tables = {name: Table(shapes[name], table) for name, table in spec.tables.items() if name in shapes}
        self.touched = {name: {t.key: t for t in rows} for name, rows in touched.items() if name in self.tables}
        self.staging, self.production = _StagingRows(staging, self.tables), production
        self.to_production, self.to_staging, self.next_ids = to_production, to_staging, next_ids
        self._check_columns()

    def _check_columns(self) -> None:
        named = [
            (t.name, c)
            for t in self.tables.values()
            for c in (
                *t.spec.refs,
                *t.spec.owns,
                *t.spec.derived,
                *((t.spec.owner[0],) if t.spec.owner else ()),
                *((t.spec.unique,) if t.spec.unique else ()),
                *t.spec.where.names,
                *(t.spec.skip.names if t.spec.skip else ()),
            )
        ]
        named += [(i.table, c) for i in self.spec.items for c in i.where.names]
        for item in self.spec.items:  # a title may come from a row the item's row owns (a term's name)
            t = self.tables.get(item.table)
            homes = [t, *(self.tables.get(o) for o in t.spec.owns.values())] if t else []
            if t and not any(h and item.title in h.shape.columns for h in homes):
                raise MergeError(
                    f"playbook merge: items.{item.kind}: no column {item.title!r} in {item.table} or a table it owns"
                )
        named += [(v.table, v.column) for v in self.spec.values]
        named += [(f.table, f.column) for f in self.spec.files]
        for table, column in named:
            if table in self.tables and column not in self.tables[table].shape.columns:
                raise MergeError(f"playbook merge: table {table} has no column {column!r}")

    # -- rows as staging has them ---------------------------------------------------------------------------

    def _current(self, table: str, key: Key) -> bytes | None | _Missing:
        """The row as staging has it (for a row staging deleted: as it was), or _MISSING until looked up."""
        touched = self.touched.get(table, {}).get(key)
        if touched is not None:
            return touched.staging if touched.staging is not None else touched.base
        t = self.tables[table]
        if len(t.shape.key) != 1:
            return None
        found = self.staging.get(table, t.shape.key[0], key[0])
        if found is _MISSING:
            return _MISSING
        return found[0] if found else None

    def _kind(self, table: str, row: bytes) -> ItemKind | None:
        t = self.tables[table]
        for kind in self.spec.items:
            if kind.table == table and t.matches(row, kind.where) and not t.matches(row, kind.skip):
                return kind
        return None

    def _root(self, table: str, key: Key, row: bytes, depth: int = 0) -> tuple[str, Key] | None | _Missing:
        """The (table, key) of the item a row belongs to, None if none, _MISSING until looked up."""
        t = self.tables[table]
        if self._kind(table, row) is not None:
            return table, key
        if depth > 8:
            return None
        if t.spec.owner:
            column, target = t.spec.owner
            owner_key = (as_key(t.get(row, column)),)
            owner = self._current(target, owner_key) if target in self.tables else None
            if owner is _MISSING or owner is None:
                return owner
            return self._root(target, owner_key, owner, depth + 1)
        for other in self.tables.values():
            for column, target in other.spec.owns.items():
                if target != table or len(key) != 1:
                    continue
                owners = [
                    s.row
                    for s in self.touched.get(other.name, {}).values()
                    if as_key(other.get(s.row, column)) == key[0]
                ]
                if not owners:
                    found = self.staging.get(other.name, column, key[0])
                    if found is _MISSING:
                        return _MISSING
                    owners = found
                if owners:
                    return self._root(other.name, other.key_of(owners[0]), owners[0], depth + 1)
        return None

    def _settled(self, compute: Callable[[], R]) -> R:
        """Run compute() until it needs no staging row that was not looked up yet; return its result."""
        for _ in range(12):
            result = compute()
            if not self.staging.missing:
                return result
            self.staging.fill()
        raise MergeError("item ownership is nested too deep to resolve")

    # -- items ----------------------------------------------------------------------------------------------

    def _items(self) -> tuple[dict[tuple[str, Key], Item], dict[str, int]]:
        """Group the touched rows into items; return them and the count of rows per table that belong to none."""

        def compute():
            return {
                (table, key): self._root(table, key, t.row)
                for table, rows in self.touched.items()
                for key, t in rows.items()
                if self.tables[table].takes_part(t.row)
            }

        roots = self._settled(compute)
        # a root found through a row it owns (a category through its asset) may not be looked up by key yet
        self._settled(lambda: [self._current(*root) for root in set(roots.values()) if isinstance(root, tuple)])
        items: dict[tuple[str, Key], Item] = {}
        other: dict[str, int] = defaultdict(int)
        for table, rows in self.touched.items():
            for key in rows:
                root = roots.get((table, key))
                if root is None or root is _MISSING:
                    other[table] += 1
                    continue
                if root not in items:
                    items[root] = self._item(*root)
                items[root].rows.append((table, key))
        titles = self._settled(lambda: {r: self._title(items[r]) for r in items})
        for root, item in items.items():
            title = titles[root]  # settled: a str or None
            item.title = title if isinstance(title, str) else ""
        return items, dict(other)

    def _found(self, table: str, key: Key) -> bytes:
        """The row as staging has it, once looked up (an item's own row); raise MergeError if staging has none."""
        row = self._current(table, key)
        if row is None or row is _MISSING:
            raise MergeError(f"{table} row {_show_key(key)} is not on staging")
        return row

    def _item(self, table: str, key: Key) -> Item:
        kind = self._kind(table, self._found(table, key))
        if kind is None:
            raise MergeError(f"{table} row {_show_key(key)} is no item the playbook names")
        touched = self.touched.get(table, {}).get(key)
        return Item(kind.kind, table, key, "", touched.status if touched else CHANGED)

    def _title(self, item: Item) -> str | None | _Missing:
        kind = next(k for k in self.spec.items if k.kind == item.kind)
        t, row = self.tables[item.table], self._found(item.table, item.key)
        if kind.title in t.shape.columns:
            value = t.get(row, kind.title)
            return None if value is None else value.decode("utf-8", "replace")
        for column, target in t.spec.owns.items():  # a term's name is in the terms row it owns
            owned_key = (as_key(t.get(row, column)),)
            if target in self.tables and kind.title in self.tables[target].shape.columns:
                owned = self._current(target, owned_key)
                if owned is _MISSING:
                    return _MISSING
                if owned is not None:
                    value = self.tables[target].get(owned, kind.title)
                    return None if value is None else value.decode("utf-8", "replace")
        return None

    # -- selection ------------------------------------------------------------------------------------------

    def _select(
        self, items: dict[tuple[str, Key], Item], select: list[str] | None, delete: bool
    ) -> dict[tuple[str, Key], Item]:
        chosen: dict[tuple[str, Key], Item] = {}
        if select:
            for wanted in select:
                found = [i for i in items.values() if _names(i, wanted)]
                if not found:
                    raise MergeError(f"--select {wanted}: no such item changed on staging (dry run lists them)")
                for item in found:
                    item.reason = "selected"
                    chosen[(item.table, item.key)] = item
        else:
            for root, item in items.items():
                kind = next(k for k in self.spec.items if k.kind == item.kind)
                if (item.status != DELETED or delete) and (
                    kind.default is None
                    or self.tables[item.table].matches(self._found(item.table, item.key), kind.default)
                ):
                    item.reason = "default"
                    chosen[root] = item
        added = {
            (table, key): root
            for root, item in items.items()
            for table, key in item.rows
            if self.touched[table][key].status == ADDED
        }
        queue = list(chosen.values())
        while queue:
            item = queue.pop()
            for target in self._references(item):
                needed_root = added.get(target)
                if needed_root is not None and needed_root not in chosen:
                    chosen[needed_root] = needed = items[needed_root]
                    needed.reason = f"needed by {item.ident}"
                    queue.append(needed)
        return chosen

    def _references(self, item: Item) -> Iterator[tuple[str, Key]]:
        """The (table, key) of every row the item's rows (staging versions) refer to."""
        for table, key in item.rows:
            row = self.touched[table][key].staging
            if row is None:
                continue
            t = self.tables[table]
            plain = {**t.spec.refs, **t.spec.owns, **dict([t.spec.owner] if t.spec.owner else [])}
            for column, target in plain.items():
                value = t.get(row, column)
                if "." in target.removeprefix(ref_table(target)):
                    yield from self._named(target, value)
                elif value is not None and _DIGITS.fullmatch(value):
                    yield target, (abs(int(value)),)
            for ref in self.spec.values:
                if ref.table == table and t.matches(row, ref.where):
                    for _, _, found in _ids_in(t.get(row, ref.column), ref.pattern, ref.ids):
                        yield ref.to, (found,)

    def _named(self, target: str, value: Value) -> Iterator[tuple[str, Key]]:
        """Rows of `table.column` targets staging touched whose column holds value (a menu's type name)."""
        table, column = ref_table(target), target.rsplit(".", 1)[1]
        t = self.tables.get(table)
        if t is None:
            return
        for key, touched in self.touched.get(table, {}).items():
            if touched.staging is not None and t.get(touched.staging, column) == value:
                yield table, key

    # -- the decision ---------------------------------------------------------------------------------------

    def decide(
        self,
        *,
        select: list[str] | None = None,
        prefer: str | None = None,
        delete: bool = False,
        prefer_items: dict[str, str] | None = None,
        promoted: dict[str, dict[int, int]] | None = None,
    ) -> MergeResult:
        """Decide the merge: items, their rows' fate on production, new ids, files. `prefer` (staging or
        production) resolves every conflict, `prefer_items` ({item ident: side}) one item's; `delete` applies
        items deleted on staging. `promoted` ({table: {staging id: production id}}) names the items staging
        added that an earlier promotion from the same base already inserted: they are not inserted again, and
        references to them name their production ids."""
        promoted = promoted or {}
        items, other = self._items()
        earlier = {
            root: item
            for root, item in items.items()
            if item.status == ADDED and len(item.key) == 1 and item.key[0] in promoted.get(item.table, {})
        }
        for (table, key), item in earlier.items():
            new = promoted[table][key[0]]
            item.new_key, item.reason = ((new,) if new != key[0] else None), "promoted earlier"
        chosen = self._select({r: i for r, i in items.items() if r not in earlier}, select, delete)
        changes = self._changes(chosen)
        remaps = self._remaps(changes)
        ids = {
            table: {**{o: n for o, n in promoted.get(table, {}).items() if o != n}, **remaps.get(table, {})}
            for table in set(remaps) | set(promoted)
        }
        self._decide_rows(changes, ids, chosen, prefer, prefer_items or {})
        files = self._rewrite(changes, ids)
        for item in chosen.values():
            if item.status == ADDED and self.tables[item.table].auto:
                new_id = remaps.get(item.table, {}).get(item.key[0])
                item.new_key = (new_id,) if new_id is not None else None
        acting = {c.item for c in changes if c.action in (INSERT, UPDATE, DELETE, CONFLICT)}
        acted = [item for item in chosen.values() if item.ident in acting or item.conflicts]
        substance = {c.item for c in changes if c.why != _DERIVED_ONLY}  # a renumbered asset is no edit
        same = [item for item in chosen.values() if item not in acted and item.ident in substance]
        left_out = [item for root, item in items.items() if root not in chosen and root not in earlier]
        return MergeResult(
            sorted(acted, key=_item_order),
            sorted(left_out, key=_item_order),
            changes,
            remaps,
            files,
            other,
            prefer,
            sorted(same, key=_item_order),
            sorted(earlier.values(), key=_item_order),
        )

    def _changes(self, chosen: dict[tuple[str, Key], Item]) -> list[RowChange]:
        """The rows of the chosen items, with production's row at the same key (looked up per table)."""
        wanted: dict[str, list[tuple[Key, str]]] = defaultdict(list)
        for item in chosen.values():
            for table, key in item.rows:
                touched = self.touched[table][key]
                if self.tables[table].takes_part(touched.row):
                    wanted[table].append((key, item.ident))
        changes = []
        for table, keys in wanted.items():
            t = self.tables[table]
            found = self._production_rows(t, [self.touched[table][k] for k, _ in keys])
            for key, ident in sorted(keys, key=lambda ki: tuple(map(_sortable, ki[0]))):
                touched = self.touched[table][key]
                changes.append(RowChange(table, key, touched.base, touched.staging, found.get(key), item=ident))
        return changes

    def _production_rows(self, t: Table, rows: list[Touched]) -> dict[Key, bytes]:
        """Production's rows at the touched rows' keys (matched by the table's unique column when it has one)."""
        if unique := t.spec.unique:

            def name(touched: Touched) -> Value:
                return t.get(touched.row, unique)

            by_name = {
                t.get(row, unique): row
                for row in self.production.rows(
                    t.name, unique, sorted({as_key(name(r)) for r in rows} - {None}, key=_sortable)
                )
            }
            return {r.key: by_name[name(r)] for r in rows if name(r) in by_name}
        found = self.production.rows(t.name, t.shape.key[0], sorted({r.key[0] for r in rows}, key=_sortable))
        return {t.key_of(row): row for row in found}

    def _remaps(self, changes: list[RowChange]) -> dict[str, dict[int, int]]:
        """New ids for the rows staging added whose id production may have handed out already (below its
        next auto-increment value); the others keep theirs."""
        remaps: dict[str, dict[int, int]] = defaultdict(dict)
        by_table: dict[str, list[int]] = defaultdict(list)
        for change in changes:
            t = self.tables[change.table]
            if change.base is None and t.auto and isinstance(change.key[0], int):
                if self._matched(t, change):  # the same option on production: its id
                    remaps[change.table][change.key[0]] = t.key_of(change.replaced)[0]
                else:
                    by_table[change.table].append(change.key[0])
        for table, ids in by_table.items():
            floor = self.next_ids.get(table, 1)
            kept = [i for i in ids if i >= floor]
            fresh = max([floor, *(i + 1 for i in kept)])
            moved = sorted(i for i in ids if i < floor)
            remaps[table] |= {old: fresh + n for n, old in enumerate(moved)}
        return {
            table: {old: new for old, new in ids.items() if old != new}
            for table, ids in remaps.items()
            if any(old != new for old, new in ids.items())
        }

    @staticmethod
    def _matched(t: Table, change: RowChange) -> bool:
        """Whether production's row was found by the table's unique column (so it is this row, whatever its id)."""
        return t.spec.unique is not None and change.production is not None

    def _decide_rows(
        self,
        changes: list[RowChange],
        remaps: dict[str, dict[int, int]],
        chosen: dict[tuple[str, Key], Item],
        prefer: str | None,
        prefer_items: dict[str, str],
    ) -> None:
        by_ident = {item.ident: item for item in chosen.values()}
        for change in changes:
            t = self.tables[change.table]
            change.final_key = self._final_key(t, change.key, remaps)
            fresh = not self._matched(t, change) and (
                change.final_key != change.key or (change.base is None and t.auto is not None)
            )
            production = None if fresh else change.production
            change.action, change.why = _three_way(t, change, production, self.to_staging)
            if change.action == CONFLICT:
                side = prefer_items.get(change.item, prefer)
                by_ident[change.item].conflicts.append(change.why)
                if side is not None:
                    change.why += f"; resolved: {side}'s version"
                    change.action = (
                        NONE
                        if side == "production"
                        else (DELETE if change.staging is None else UPDATE if production is not None else INSERT)
                    )
            if change.action == UPDATE and production is None:
                change.action = INSERT
            if change.base is None and fresh:
                change.production = None

    def _final_key(self, t: Table, key: Key, remaps: dict[str, dict[int, int]]) -> Key:
        """The row's key on production: its parts that name remapped rows (its own id, an owner's) rewritten."""
        targets = {t.auto: t.name} if t.auto else {}
        targets |= {
            c: tgt for c, tgt in (*t.spec.refs.items(), *t.spec.owns.items(), *([t.spec.owner] if t.spec.owner else []))
        }
        parts = []
        for column, part in zip(t.shape.key, key, strict=True):
            target = targets.get(column)
            parts.append(remaps.get(target, {}).get(part, part) if target and isinstance(part, int) else part)
        return tuple(parts)

    # -- rewriting ------------------------------------------------------------------------------------------

    def _rewrite(self, changes: list[RowChange], remaps: dict[str, dict[int, int]]) -> list[str]:
        """Set each insert's and update's final literals: production's URLs, remapped ids. Return the files the
        written rows use (sorted)."""
        files: set[str] = set()
        siblings = self._siblings(changes)
        for change in changes:
            if change.action not in (INSERT, UPDATE):
                continue
            t = self.tables[change.table]
            text = self.to_production(change.staged)
            literals = list(dumprows.values(text))
            for column, target in self._plain(t).items():
                i = t.shape.index(column)
                value = decode(literals[i])
                if value is not None and _DIGITS.fullmatch(value):
                    number = int(value)
                    new = remaps.get(target, {}).get(abs(number))
                    if new is not None:
                        literals[i] = encode(str(new if number >= 0 else -new).encode(), literals[i])
            for ref in self.spec.values:
                if ref.table == t.name and self._applies(t, ref, change, siblings):
                    self._rewrite_ids(t, literals, ref, remaps.get(ref.to, {}))
            change.final = literals
            files.update(self._files(t, literals))
        return sorted(files)

    def _plain(self, t: Table) -> dict[str, str]:
        """Columns naming rows by id (the row's own auto-increment id too) -> the table they name."""
        plain = {
            c: tgt
            for c, tgt in (*t.spec.refs.items(), *t.spec.owns.items(), *([t.spec.owner] if t.spec.owner else []))
            if "." not in tgt.removeprefix(ref_table(tgt))
        }
        if t.auto:
            plain[t.auto] = t.name
        return plain

    def _siblings(self, changes: list[RowChange]) -> dict[tuple[str, Key], list[bytes]]:
        """Staging rows of the same owner, for value references with a `sibling` condition."""
        tables = {ref.table for ref in self.spec.values if ref.sibling is not None}
        owners = {
            (c.table, (as_key(self.tables[c.table].get(c.staging, self.tables[c.table].owner_column)),))
            for c in changes
            if c.table in tables and c.staging is not None and self.tables[c.table].spec.owner
        }

        def compute():
            return {
                (table, owner): self.staging.get(table, self.tables[table].owner_column, owner[0])
                for table, owner in owners
            }

        return self._settled(compute)

    def _applies(self, t: Table, ref, change: RowChange, siblings) -> bool:
        if not t.matches(change.staged, ref.where):
            return False
        if ref.sibling is None:
            return True
        owner = (as_key(t.get(change.staged, t.owner_column)),)
        return any(t.matches(row, ref.sibling) for row in siblings.get((t.name, owner), []))

    @staticmethod
    def _rewrite_ids(t: Table, literals: list[bytes], ref, remap: dict[int, int]) -> None:
        if not remap:
            return
        i = t.shape.index(ref.column)
        value = decode(literals[i])
        edits = [
            (start, end, str(remap[old]).encode())
            for start, end, old in _ids_in(value, ref.pattern, ref.ids)
            if old in remap
        ]
        if edits and value is not None:  # ids were found, so there is a value
            literals[i] = encode(edit_value(value, sorted(edits)), literals[i])

    def _files(self, t: Table, literals: list[bytes]) -> Iterator[str]:
        for rule in self.spec.files:
            if rule.table != t.name:
                continue

            def get(column: str) -> Value:
                return decode(literals[t.shape.index(column)])  # noqa: B023 - used in this iteration only

            if not rule.where.test(get):
                continue
            value = get(rule.column)
            if value is None:
                continue
            text = value.replace(b"\\/", b"/").decode("utf-8", "replace")  # JSON escapes its slashes
            found = (
                [m.group(1) if m.groups() else m.group(0) for m in re.finditer(rule.pattern, text)]
                if rule.pattern
                else [text.strip()]
            )
            folder = ""
            for name in found:
                if rule.beside == "first":
                    if "/" in name:
                        folder = folder or name.rsplit("/", 1)[0] + "/"
                    else:
                        name = folder + name
                path = rule.path.replace("{}", name)
                if _safe_path(path):
                    yield path


def _three_way(
    t: Table, change: RowChange, production: bytes | None, to_staging: Callable[[bytes], bytes]
) -> tuple[str, str]:
    """Given a touched row and production's row at its final key (None: none there), return (action, why)."""
    base, staging = t.comparable(change.base), t.comparable(change.staging)
    prod = t.comparable(to_staging(production)) if production is not None else None
    where = f"{t.name} row {_show_key(change.key)}"
    if change.base is None:
        if production is None:
            return INSERT, "added on staging"
        return (
            (NONE, "already on production")
            if prod == staging
            else (CONFLICT, f"{where}: added on staging and on production, differently")
        )
    if change.staging is None:
        if production is None:
            return NONE, "deleted on both sides"
        return (
            (DELETE, "deleted on staging")
            if prod == base
            else (CONFLICT, f"{where}: deleted on staging, changed on production")
        )
    if base == staging:
        return NONE, _DERIVED_ONLY
    if production is None:
        return CONFLICT, f"{where}: changed on staging, deleted on production"
    if prod == base:
        return UPDATE, "changed on staging"
    if prod == staging:
        return NONE, "changed the same way on both sides"
    return CONFLICT, f"{where}: changed on staging and on production"


def _ids_in(value: Value, pattern: str | None, ids: str | None) -> Iterator[tuple[int, int, int]]:
    """Given a value and a reference's pattern, yield (start, end, id) of each id in it."""
    if value is None:
        return
    if pattern is None:
        if _DIGITS.fullmatch(value.strip()):
            start = len(value) - len(value.lstrip())
            yield start, start + len(value.strip()), abs(int(value))
        return
    for region in re.finditer(pattern.encode(), value):
        start, end = region.span(_group(region))
        inner = re.finditer(ids.encode(), value[:end]) if ids else [region]
        for match in inner:
            if ids and match.start() < start:
                continue
            group = _group(match)
            for number in re.finditer(rb"\d+", match.group(group)):
                offset = match.start(group) + number.start()
                yield offset, offset + len(number.group()), int(number.group())


def _group(match: re.Match) -> int:
    """The first group of a match that took part, or the whole match."""
    return next((i for i in range(1, (match.re.groups or 0) + 1) if match.group(i) is not None), 0)


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "\0" not in path and "\n" not in path


def _names(item: Item, wanted: str) -> bool:
    """Whether `KIND:ID` (or `KIND:TITLE`) names an item."""
    kind, _, ident = wanted.partition(":")
    return kind == item.kind and ident in (_show_key(item.key), item.title)


def _item_order(item: Item) -> tuple:
    return item.kind, tuple(map(_sortable, item.key))


def parse_select(values: Iterable[str], kinds: Collection[str]) -> list[str]:
    """Given --select values (KIND:ID), return them checked; raise UsageError naming the known kinds."""
    out = []
    for value in values:
        kind, sep, ident = value.partition(":")
        if not sep or not ident or kind not in kinds:
            raise UsageError(f"--select {value!r}: give KIND:ID, KIND one of {', '.join(kinds)}")
        out.append(value)
    return out
