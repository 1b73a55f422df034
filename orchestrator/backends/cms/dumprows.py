"""Rows of a MySQL dump, streamed: each table's shape (columns, primary key, auto-increment column) from its
CREATE TABLE, and its rows as the dump wrote them.

A row is kept as its literal text, the part between the parentheses of an ``INSERT ... VALUES`` list
(``1,'a\\'b',NULL,0x00``). mariadb-dump and mysqldump write a value the same way whatever the row around it, so
two rows are equal exactly when their texts are: comparing rows costs one ``bytes ==``, and only rows that differ
are ever split into values (:func:`values`) and decoded (:func:`decode`).

mysqldump writes an ``INSERT`` with all its rows on one line; mariadb-dump 10.11 writes ``INSERT ... VALUES``
and then each row on a line of its own (``(1,'a'),``). Both write no newline inside a value. Splitting a line
into rows: its values list is split at ``),(`` and pieces are joined back while one holds an odd number of real
quotes (a ``),(`` inside a string). In the dump a quote inside a string is always escaped (``\\'``) and every
escape is two bytes, so removing the escaped backslashes (``\\\\``) first leaves ``\\'`` for exactly the
escaped quotes. Rows of the dumps orch reads for a content merge are in primary-key
order (InnoDB returns a table in its clustered-index order; orch's own dumps say ``--order-by-primary``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from orchestrator.errors import OrchError

from .replace import MYSQL

_CREATE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
_INSERT = re.compile(rb"^(?:INSERT|REPLACE) INTO `((?:[^`]|``)+)` (?:\([^)]*\) )?VALUES\s*")
_COLUMN = re.compile(rb"^  `((?:[^`]|``)+)` ")
_PRIMARY = re.compile(rb"^  PRIMARY KEY \(([^)]*)\)")
_NEXT_ID = re.compile(rb"\bAUTO_INCREMENT=(\d+)")
_NAME = re.compile(rb"`((?:[^`]|``)+)`")
# One value of a row: a string (with an optional introducer such as _binary or b), or a bare token (a number,
# NULL, a 0x hex literal).
_VALUE = re.compile(rb"[A-Za-z_0-9]*'[^'\\]*(?:\\.[^'\\]*)*'|[^,']+", re.S)
_UNESCAPE = {ord("0"): b"\0", ord("n"): b"\n", ord("r"): b"\r", ord("Z"): b"\x1a", ord("t"): b"\t", ord("b"): b"\b"}
_ESCAPE = re.compile(rb"\\(.)", re.S)

BATCH = 1000  # rows per batch handed out (mariadb-dump writes one row per line)
Key = tuple  # of int (integer columns) and bytes (others), comparable across the three sides
Value = bytes | None  # a decoded value: the stored bytes, or None for NULL


@dataclass(frozen=True)
class Shape:
    """A table as its CREATE TABLE says: columns in order, primary-key columns, the AUTO_INCREMENT column and
    the table's next auto-increment value (None when the dump does not say)."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    auto: str | None = None
    next_id: int | None = None

    def index(self, column: str) -> int:
        """Given a column name, return its position; raise KeyError if the table has no such column."""
        try:
            return self.columns.index(column)
        except ValueError:
            raise KeyError(f"table {self.name} has no column {column!r}") from None

    @property
    def key_positions(self) -> tuple[int, ...]:
        return tuple(self.columns.index(c) for c in self.key)


def _ident(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode()


def parse_create(lines: list[bytes]) -> Shape:
    """Given the lines of one CREATE TABLE statement as mysqldump writes it, return the table's Shape."""
    if (create := _CREATE.match(lines[0])) is None:
        raise OrchError(f"the dump has a malformed CREATE TABLE line: {lines[0][:80]!r}")
    name = _ident(create[1])
    columns: list[str] = []
    key: tuple[str, ...] = ()
    auto: str | None = None
    next_id: int | None = None
    for line in lines[1:]:
        if (column := _COLUMN.match(line)) is not None:
            columns.append(_ident(column[1]))
            if b" AUTO_INCREMENT" in line:
                auto = columns[-1]
        elif (primary := _PRIMARY.match(line)) is not None:
            key = tuple(_ident(m) for m in _NAME.findall(primary[1]))
        elif line.startswith(b")") and (found := _NEXT_ID.search(line)) is not None:
            next_id = int(found[1])
    return Shape(name, tuple(columns), key, auto, next_id)


def split_rows(line: bytes, start: int) -> list[bytes]:
    """Given an INSERT line and where its first row starts (after ``VALUES (``), return its rows' texts."""
    body = line[start : line.rindex(b")")]
    pieces = body.split(b"),(")
    rows, pending = [], None
    for piece in pieces:
        if pending is not None:
            piece = pending + b"),(" + piece
        quotes = piece.count(b"'")
        if quotes and b"\\" in piece:
            quotes -= piece.replace(b"\\\\", b"").count(b"\\'")
        if quotes & 1:
            pending = piece
        else:
            pending = None
            rows.append(piece)
    if pending is not None:
        raise ValueError(f"unbalanced quotes in a row of {line[:60]!r}")
    return rows


class DumpReader:
    """Reads a MySQL dump from a binary stream, table by table.

    ``tables()`` yields (Shape, batches) per CREATE TABLE; each batches iterator yields, per INSERT line of that
    table, the list of its row texts, and must be read to its end (or left) before the next table is asked for.
    A dump without CREATE TABLE statements (``--no-create-info``) is read with :func:`insert_rows` instead."""

    def __init__(self, stream):
        self._lines = iter(stream)
        self._held: bytes | None = None

    def _next(self) -> bytes | None:
        if self._held is not None:
            line, self._held = self._held, None
            return line
        return next(self._lines, None)

    def tables(self) -> Iterator[tuple[Shape, Iterator[list[bytes]]]]:
        while (line := self._next()) is not None:
            if not line.startswith(b"CREATE TABLE `"):
                continue
            create = [line]
            while not line.startswith(b")") and (line := self._next()) is not None:
                create.append(line)
            shape = parse_create(create)
            rows = self._rows(shape.name.encode().replace(b"`", b"``"))
            yield shape, rows
            for _ in rows:  # whatever the caller left unread
                pass

    def _rows(self, name: bytes) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        inserting = False
        while (line := self._next()) is not None:
            if line.startswith(b"(") and inserting:  # a row line of mariadb-dump's INSERT
                batch += split_rows(line, 1)
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
                continue
            inserting = False
            if line.startswith(b"CREATE TABLE `"):
                self._held = line
                break
            if line.startswith((b"INSERT INTO `", b"REPLACE INTO `")):
                match = _INSERT.match(line)
                if match is None or match[1] != name:
                    self._held = line
                    break
                inserting = True
                if line[match.end() : match.end() + 1] == b"(":  # mysqldump: every row on this line
                    batch += split_rows(line, match.end() + 1)
        if batch:
            yield batch


def insert_rows(lines: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """Given the lines of a dump (with or without CREATE TABLE), yield (table, row text) of its INSERTs."""
    table = None
    for line in lines:
        if line.startswith(b"(") and table is not None:
            for row in split_rows(line, 1):
                yield table, row
            continue
        table = None
        if line.startswith((b"INSERT INTO `", b"REPLACE INTO `")) and (match := _INSERT.match(line)) is not None:
            table = _ident(match[1])
            if line[match.end() : match.end() + 1] == b"(":
                for row in split_rows(line, match.end() + 1):
                    yield table, row


def values(row: bytes) -> list[bytes]:
    """Given a row's text, return its values as the dump wrote them (literals)."""
    return _VALUE.findall(row)


def decode(literal: bytes) -> Value:
    """Given a literal as mysqldump writes it, return the stored value: None for NULL, the bytes of a string
    (escapes undone) or of a hex literal, the digits of a number."""
    if literal == b"NULL":
        return None
    if literal.endswith(b"'"):
        body = literal[literal.index(b"'") + 1 : -1]
        return _ESCAPE.sub(lambda m: _UNESCAPE.get(m[1][0], m[1]), body) if b"\\" in body else body
    if literal.startswith((b"0x", b"0X")):
        return bytes.fromhex(literal[2:].decode())
    return literal


def encode(value: Value, like: bytes = b"''") -> bytes:
    """Given a value and the literal it replaces, return it as a literal of the same kind: NULL, a hex literal,
    a bare number, or a quoted string (escaped as mysqldump does)."""
    if value is None:
        return b"NULL"
    if like.startswith((b"0x", b"0X")):
        return b"0x" + value.hex().upper().encode() if value else b"''"
    if (
        not like.endswith(b"'")
        and like != b"NULL"
        and re.fullmatch(rb"-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?", value, re.I)
    ):
        return value
    return b"'" + MYSQL.escape(value) + b"'"


def key_value(literal: bytes) -> int | bytes | None:
    """Given a key column's literal, return it comparable: an int for integers, else the decoded bytes."""
    if literal[:1].isdigit() or literal[:1] == b"-":
        try:
            return int(literal)
        except ValueError:
            pass
    return decode(literal)


class KeyReader:
    """Reads the primary key of row texts of one table: the leading values up to the last key column."""

    def __init__(self, shape: Shape):
        if not shape.key:
            raise ValueError(f"table {shape.name} has no primary key")
        self.table = shape.name
        self.positions = shape.key_positions
        self._last = max(self.positions)
        self._simple = self.positions == (0,)

    def __call__(self, row: bytes) -> Key:
        if self._simple and row[:1] != b"'":  # an integer first column: the common case
            comma = row.find(b",")
            head = row if comma < 0 else row[:comma]
            try:
                return (int(head),)
            except ValueError:
                pass
        found, pos = [], 0
        for _ in range(self._last + 1):
            if (match := _VALUE.match(row, pos)) is None:
                raise OrchError(f"a row of table {self.table} in the dump ends before its primary key: {row[:80]!r}")
            found.append(match[0])
            pos = match.end() + 1
        return tuple(key_value(found[i]) for i in self.positions)
