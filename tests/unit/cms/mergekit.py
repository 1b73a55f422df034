"""Small WordPress-like tables for the merge engine's unit tests: rows written as mysqldump writes them, and
lookups that answer from dicts as a database would."""

from __future__ import annotations

from orchestrator.backends.cms.dumprows import Shape, encode, values
from orchestrator.backends.cms.merge import Touched
from orchestrator.backends.cms.playbook import load_playbook

POSTS = Shape(
    "wp_posts",
    ("ID", "post_title", "post_content", "post_type", "post_status", "post_parent", "comment_count"),
    ("ID",),
    "ID",
)
POSTMETA = Shape("wp_postmeta", ("meta_id", "post_id", "meta_key", "meta_value"), ("meta_id",), "meta_id")
OPTIONS = Shape("wp_options", ("option_id", "option_name", "option_value", "autoload"), ("option_id",), "option_id")
TERMS = Shape("wp_terms", ("term_id", "name", "slug"), ("term_id",), "term_id")
TAXONOMY = Shape(
    "wp_term_taxonomy",
    ("term_taxonomy_id", "term_id", "taxonomy", "parent", "count"),
    ("term_taxonomy_id",),
    "term_taxonomy_id",
)
RELATIONSHIPS = Shape(
    "wp_term_relationships", ("object_id", "term_taxonomy_id", "term_order"), ("object_id", "term_taxonomy_id")
)
SHAPES = {s.name: s for s in (POSTS, POSTMETA, OPTIONS, TERMS, TAXONOMY, RELATIONSHIPS)}


def row(*fields) -> bytes:
    """A row's text as mysqldump writes it: ints bare, strings quoted and escaped, None as NULL."""
    return b",".join(
        b"NULL" if f is None else str(f).encode() if isinstance(f, int) else encode(f.encode()) for f in fields
    )


def spec():
    return load_playbook("wordpress").merge.for_prefix("wp_")


class Side:
    """A lookup over {table: [row text]}; records what it was asked."""

    def __init__(self, tables: dict[str, list[bytes]], shapes: dict[str, Shape] = SHAPES):
        self.tables, self.asked, self.shapes = tables, [], shapes

    def rows(self, table, column, wanted):
        self.asked.append((table, column, tuple(wanted)))
        i = self.shapes[table].columns.index(column)
        wanted = {str(w).encode() if isinstance(w, int) else w for w in wanted}
        out = []
        for text in self.tables.get(table, []):
            literal = values(text)[i]
            value = literal.strip(b"'")
            if value in wanted:
                out.append(text)
        return out


def touched(
    base: dict[str, list[bytes]], staging: dict[str, list[bytes]], shapes: dict[str, Shape] = SHAPES
) -> dict[str, list[Touched]]:
    """The rows that differ between two {table: rows} states, keyed by their first column (two columns)."""
    out = {}
    for table in set(base) | set(staging):
        b = {int(values(r)[0]): r for r in base.get(table, [])}
        s = {int(values(r)[0]): r for r in staging.get(table, [])}
        if shapes[table].key != (shapes[table].columns[0],):
            b = {tuple(int(v) for v in values(r)[:2]): r for r in base.get(table, [])}
            s = {tuple(int(v) for v in values(r)[:2]): r for r in staging.get(table, [])}
            keys = sorted(set(b) | set(s))
            out[table] = [Touched(k, b.get(k), s.get(k)) for k in keys if b.get(k) != s.get(k)]
            continue
        keys = sorted(set(b) | set(s))
        out[table] = [Touched((k,), b.get(k), s.get(k)) for k in keys if b.get(k) != s.get(k)]
    return out
