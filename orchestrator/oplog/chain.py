"""The tamper-evident log: every operation, step and artifact row, once final, is a link of one hash chain.

A row enters the chain when it reaches its final state (an artifact when it is written, a step when it closes,
an operation when it finishes), in the same transaction as that last write, so a final row is never outside the
chain and a row still running is never in it. Each link stores
  row_hash  = sha256 of the row's canonical content (every column, its id included), and
  link_hash = sha256 of (seq, kind, row id, row_hash, the previous link's link_hash),
so editing a row breaks its row_hash, deleting one leaves a link without its row (or a gap in `seq`), and
moving links around breaks the link_hash of the first one moved. `chain_head` holds the last link: a writer
locks it first (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers), so
concurrent orch processes on one database append one after the other and `seq` has no gaps.

The chain proves nothing against someone who rewrites every link after an edit: that is why the head is
carried in each tracker note and printed in the task report, where an edited oplog no longer matches it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from . import process
from .schema import artifacts, chain, chain_head, operations, steps

GENESIS = "0" * 64
TABLES = {"operation": operations, "step": steps, "artifact": artifacts}
FINAL = {  # which rows are final, by kind: only those are in the chain
    "operation": operations.c.status != "running",
    "step": steps.c.status != "running",
    "artifact": sa.true(),
}
_CHUNK = 2000


@dataclass(frozen=True)
class Head:
    """The last link of the chain: how many links there are, and the last link's hash."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @property
    def short(self) -> str:
        """The head as people quote it: `seq:first 16 hex digits`."""
        return f"{self.seq}:{self.hash[:16]}"


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold: the link's seq, the row it names, and what is wrong."""

    seq: int
    kind: str
    row_id: int | None
    problem: str

    def __str__(self) -> str:
        row = f"{self.kind} {self.row_id}" if self.row_id is not None else "a row"
        return f"{row} (link {self.seq}) {self.problem}"


def canonical(kind: str, row: sa.Row | dict) -> bytes:
    """Given a row kind and the row as read from the database, return the bytes its row_hash is taken over."""
    mapping = row._mapping if isinstance(row, sa.Row) else row
    values = {column.name: _plain(mapping[column.name]) for column in TABLES[kind].columns}
    return json.dumps([kind, values], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


def row_hash(kind: str, row: sa.Row | dict) -> str:
    return hashlib.sha256(canonical(kind, row)).hexdigest()


def link_hash(seq: int, kind: str, row_id: int, digest: str, previous: str) -> str:
    return hashlib.sha256(f"{seq}|{kind}|{row_id}|{digest}|{previous}".encode()).hexdigest()


def lock_head(conn: sa.Connection) -> Head:
    """Given a connection inside a transaction, lock the chain head until it ends and return it.

    Call it first in a transaction that finalizes rows, so that concurrent writers queue here and never hold
    a row another one waits for.
    """
    row = conn.execute(
        sa.select(chain_head.c.seq, chain_head.c.link_hash).where(chain_head.c.id == 1).with_for_update()
    ).first()
    if row is None:  # a database migrated by a crashed first open: start the chain here
        conn.execute(chain_head.insert().values(id=1, seq=0, link_hash=GENESIS))
        return Head(0, GENESIS)
    return Head(row.seq, row.link_hash)


def append(conn: sa.Connection, kind: str, ids: list[int], head: Head | None = None) -> Head:
    """Given a transaction, a row kind and ids of final rows of that kind, add them to the chain in id order.

    Rows already linked are skipped. The head must have been locked in this transaction (it is, if None is
    passed). Return the new head.
    """
    head = head or lock_head(conn)
    if not ids:
        return head
    table = TABLES[kind]
    linked = {
        row.row_id
        for row in conn.execute(sa.select(chain.c.row_id).where(chain.c.kind == kind, chain.c.row_id.in_(ids)))
    }
    rows = conn.execute(
        sa.select(table).where(table.c.id.in_([i for i in ids if i not in linked])).order_by(table.c.id)
    ).all()
    links = []
    for row in rows:
        digest = row_hash(kind, row)
        seq = head.seq + 1
        head = Head(seq, link_hash(seq, kind, row.id, digest, head.hash))
        links.append(
            {
                "seq": seq,
                "kind": kind,
                "row_id": row.id,
                "row_hash": digest,
                "link_hash": head.hash,
                "linked_at": process.now(),
            }
        )
    if links:
        conn.execute(chain.insert(), links)
        conn.execute(chain_head.update().where(chain_head.c.id == 1).values(seq=head.seq, link_hash=head.hash))
    return head


def append_operation(conn: sa.Connection, op_id: int, head: Head | None = None) -> Head:
    """Given a transaction that just finalized operation op_id, link its final steps not linked yet, its
    artifacts, then the operation itself. Return the new head."""
    head = head or lock_head(conn)
    for kind, table in (("step", steps), ("artifact", artifacts)):
        ids = conn.execute(sa.select(table.c.id).where(table.c.operation_id == op_id, FINAL[kind])).scalars()
        head = append(conn, kind, list(ids), head)
    return append(conn, "operation", [op_id], head)


def backfill(conn: sa.Connection) -> Head:
    """Given a transaction on a database whose chain is empty, link every final row, operation by operation."""
    head = lock_head(conn)
    op_ids = conn.execute(sa.select(operations.c.id).order_by(operations.c.id)).scalars().all()
    for op_id in op_ids:
        head = append_operation(conn, op_id, head)
    return head


def current_head(engine: sa.Engine) -> Head:
    """Given an oplog engine, return the chain's head as recorded (without verifying it)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(chain_head.c.seq, chain_head.c.link_hash).where(chain_head.c.id == 1)).first()
    return Head(row.seq, row.link_hash) if row else Head(0, GENESIS)


def link_of(engine: sa.Engine, kind: str, row_id: int) -> Head | None:
    """Given a row kind and id, return its link as a Head (seq and link hash), or None if it is not linked."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(chain.c.seq, chain.c.link_hash).where(chain.c.kind == kind, chain.c.row_id == row_id)
        ).first()
    return None if row is None else Head(row.seq, row.link_hash)


def mismatch(engine: sa.Engine, quoted: str) -> str | None:
    """Given a head as a note or report quoted it (`seq:hash`, the hash possibly cut to 8+ hex digits), return
    why this oplog does not hold it (the link is gone or has another hash), or None if it does."""
    seq, _, digest = quoted.strip().partition(":")
    if not seq.isdigit() or len(digest) < 8 or any(ch not in "0123456789abcdef" for ch in digest.lower()):
        return f"{quoted!r} is not a chain head (SEQ:HASH, at least 8 hex digits of the hash)"
    with engine.connect() as conn:
        found = conn.execute(sa.select(chain.c.link_hash).where(chain.c.seq == int(seq))).scalar()
    if found is None:
        return f"link {seq} is not in this oplog (quoted {digest[:16]}...)"
    if not found.startswith(digest.lower()):
        return f"link {seq} is {found[:16]}... here but was quoted as {digest[:16]}...: rows were rewritten since"
    return None


def verify(engine: sa.Engine) -> tuple[Head, Break | None]:
    """Given an oplog engine, walk the chain from its first link; return the last good head and the first
    break (None if the whole chain holds, every final row is in it and the recorded head matches)."""
    head = Head(0, GENESIS)
    with engine.connect() as conn:
        for links in _link_chunks(conn):
            rows = _rows_of(conn, links)
            for link in links:
                problem = _check(link, rows.get((link.kind, link.row_id)), head)
                if problem:
                    return head, problem
                head = Head(link.seq, link.link_hash)
        recorded = conn.execute(sa.select(chain_head.c.seq, chain_head.c.link_hash).where(chain_head.c.id == 1)).first()
        if recorded is not None and (recorded.seq, recorded.link_hash) != (head.seq, head.hash):
            return head, Break(
                recorded.seq,
                "link",
                None,
                f"is missing: the head says {recorded.seq} links, "
                f"the chain ends at {head.seq} (links deleted at the end)",
            )
        unlinked = _first_unlinked(conn)
    if unlinked:
        kind, row_id = unlinked
        return head, Break(head.seq + 1, kind, row_id, "is final but not in the chain (added outside orch)")
    return head, None


def _check(link: sa.Row, row: sa.Row | None, previous: Head) -> Break | None:
    if link.seq != previous.seq + 1:
        return Break(
            previous.seq + 1,
            "link",
            None,
            f"is missing (the chain jumps from {previous.seq} to {link.seq}: a row and its link were deleted)",
        )
    if row is None:
        return Break(link.seq, link.kind, link.row_id, "was deleted")
    if row_hash(link.kind, row) != link.row_hash:
        return Break(link.seq, link.kind, link.row_id, "was changed")
    if link_hash(link.seq, link.kind, link.row_id, link.row_hash, previous.hash) != link.link_hash:
        return Break(link.seq, link.kind, link.row_id, "is out of order (rows or links were moved)")
    return None


def _link_chunks(conn: sa.Connection) -> Iterator[Sequence[sa.Row]]:
    last = 0
    while True:
        links = conn.execute(sa.select(chain).where(chain.c.seq > last).order_by(chain.c.seq).limit(_CHUNK)).all()
        if not links:
            return
        yield links
        last = links[-1].seq


def _rows_of(conn: sa.Connection, links: Sequence[sa.Row]) -> dict[tuple[str, int], sa.Row]:
    found = {}
    for kind, table in TABLES.items():
        ids = [link.row_id for link in links if link.kind == kind]
        if ids:
            for row in conn.execute(sa.select(table).where(table.c.id.in_(ids))):
                found[(kind, row.id)] = row
    return found


def _first_unlinked(conn: sa.Connection) -> tuple[str, int] | None:
    """Return the (kind, id) of the first final row that has no link, or None."""
    for kind, table in TABLES.items():
        missing = conn.execute(
            sa.select(table.c.id)
            .where(FINAL[kind], ~sa.exists().where(chain.c.kind == kind, chain.c.row_id == table.c.id))
            .order_by(table.c.id)
            .limit(1)
        ).scalar()
        if missing is not None:
            return kind, missing
    return None
