"""Tests of the content merge engine (orchestrator.backends.cms.merge and its helpers): the three-way diff over
sorted row streams, items and their selection, id remaps (plain columns, block JSON, serialized values with
their lengths fixed), conflicts and how they are resolved, and the transaction's SQL.

The sides are small WordPress-like tables written as mysqldump writes rows (tests/unit/cms/mergekit.py); the
playbook's real `merge` block decides what content is. Serialized values are checked by PHP itself when the
`php` CLI is there."""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess

import pytest
from mergekit import SHAPES, Side, row, spec, touched

from orchestrator.backends.cms import mergesql
from orchestrator.backends.cms.dumprows import (
    DumpReader,
    KeyReader,
    Shape,
    decode,
    encode,
    insert_rows,
    split_rows,
    values,
)
from orchestrator.backends.cms.merge import (
    ADDED,
    CHANGED,
    CONFLICT,
    DELETE,
    DELETED,
    INSERT,
    NONE,
    UPDATE,
    MergeError,
    Merger,
    diff,
    parse_select,
)
from orchestrator.backends.cms.playbook import RowMatch, ValueRef
from orchestrator.backends.cms.replace import edit_value, row_rewriter, url_pairs
from orchestrator.errors import OrchError, UsageError

PROD, STAGE = "https://shop.example", "https://t1.stage.example"
PAIRS = url_pairs(PROD, STAGE)
TO_PROD = row_rewriter(url_pairs(STAGE, PROD, www=False))  # as actions/content.back_pairs makes them
TO_STAGE = row_rewriter(PAIRS)

# ------------------------------------------------------------------------------------------ the diff


def batches(rows: list[bytes], size: int):
    return iter([rows[i : i + size] for i in range(0, len(rows), size)])


def key_of(text: bytes):
    return (int(text.split(b",", 1)[0]),)


def test_the_diff_yields_exactly_the_rows_added_changed_and_deleted_whatever_the_batches():
    rng = random.Random(7)
    base = {i: row(i, f"title {i}") for i in range(1, 3000)}
    staging = dict(base)
    for i in rng.sample(sorted(base), 40):
        staging[i] = row(i, f"edited {i}")
    for i in rng.sample(sorted(base), 15):
        staging.pop(i)
    for i in range(3000, 3025):
        staging[i] = row(i, f"new {i}")
    expected = {(k,): (base.get(k), staging.get(k)) for k in set(base) | set(staging) if base.get(k) != staging.get(k)}
    for a_size, b_size in ((1000, 1000), (7, 13), (1, 999)):
        found = list(
            diff(
                batches([base[k] for k in sorted(base)], a_size),
                batches([staging[k] for k in sorted(staging)], b_size),
                key_of,
                "t",
            )
        )
        assert [t.key for t in found] == sorted(expected), "in key order, each once"
        assert {t.key: (t.base, t.staging) for t in found} == expected
        statuses = {t.status for t in found}
        assert statuses == {ADDED, CHANGED, DELETED}


def test_the_diff_of_equal_sides_is_empty_and_an_empty_side_is_all_added_or_deleted():
    rows = [row(i, "x") for i in range(1, 50)]
    assert list(diff(batches(rows, 10), batches(rows, 3), key_of)) == []
    assert [t.status for t in diff(iter([]), batches(rows, 10), key_of)] == [ADDED] * 49
    assert [t.status for t in diff(batches(rows, 10), iter([]), key_of)] == [DELETED] * 49


def test_a_side_out_of_key_order_is_an_error_not_a_wrong_merge():
    base = [row(1, "a"), row(2, "b"), row(3, "c")]
    staging = [row(1, "a"), row(3, "x"), row(2, "b")]
    with pytest.raises(MergeError, match="not in primary-key order"):
        list(diff(iter([base]), iter([staging]), key_of, "wp_posts"))


# ------------------------------------------------------------------------------------------ dump rows


def test_rows_are_split_even_with_the_separator_and_escaped_quotes_inside_strings():
    line = b"INSERT INTO `t` VALUES (1,'a),(b','it\\'s'),(2,'c\\\\',NULL),(3,'),(\\\\\\'',0x00FF);\n"
    rows = list(insert_rows([line]))
    assert [r for _, r in rows] == [b"1,'a),(b','it\\'s'", b"2,'c\\\\',NULL", b"3,'),(\\\\\\'',0x00FF"]
    assert [decode(v) for v in values(rows[2][1])] == [b"3", b"),(\\'", b"\x00\xff"]
    assert split_rows(b"(5,'x')\n", 1) == [b"5,'x'"]


def test_a_malformed_create_or_a_row_short_of_its_key_is_a_one_line_error():
    with pytest.raises(OrchError, match="malformed CREATE TABLE"):
        list(DumpReader([b"CREATE TABLE `t`(\n", b") ENGINE=InnoDB;\n"]).tables())
    with pytest.raises(OrchError, match="table t in the dump ends before its primary key"):
        KeyReader(Shape("t", ("a", "b"), ("b",)))(b"'x'")


def test_a_value_encodes_back_as_the_literal_kind_it_replaces():
    assert encode(b"12", b"7") == b"12" and encode(b"12", b"'7'") == b"'12'"
    assert encode(b"it's\n", b"'x'") == b"'it\\'s\\n'" and decode(encode(b"it's\n")) == b"it's\n"
    assert encode(None) == b"NULL" and encode(b"\x00\x01", b"0xAA") == b"0x0001"


def test_the_dump_reader_gives_each_tables_shape_and_rows_in_both_dump_styles():
    dump = [
        b"CREATE TABLE `wp_posts` (\n",
        b"  `ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n",
        b"  `post_title` text NOT NULL,\n",
        b"  PRIMARY KEY (`ID`)\n",
        b") ENGINE=InnoDB AUTO_INCREMENT=9;\n",
        b"INSERT INTO `wp_posts` VALUES (1,'a'),(2,'b');\n",
        b"CREATE TABLE `wp_term_relationships` (\n",
        b"  `object_id` bigint(20) NOT NULL,\n",
        b"  `term_taxonomy_id` bigint(20) NOT NULL,\n",
        b"  PRIMARY KEY (`object_id`,`term_taxonomy_id`)\n",
        b");\n",
        b"INSERT INTO `wp_term_relationships` VALUES\n",
        b"(1,2),\n",
        b"(1,3);\n",
    ]
    seen = [(shape, [r for batch in rows for r in batch]) for shape, rows in DumpReader(iter(dump)).tables()]
    assert seen[0][0] == Shape("wp_posts", ("ID", "post_title"), ("ID",), "ID", 9)
    assert seen[0][1] == [b"1,'a'", b"2,'b'"]
    assert seen[1][0].key == ("object_id", "term_taxonomy_id") and seen[1][1] == [b"1,2", b"1,3"]
    assert KeyReader(seen[1][0])(b"1,3") == (1, 3)


# ------------------------------------------------------------------------------------------ the merge


def landing_sides():
    """Base, staging (a landing page with a featured image in a block, a changed tagline) and production (two
    posts that took the page's and the image's ids meanwhile, a comment-count bump on an old page)."""
    hero_url = f"{STAGE}/wp-content/uploads/2026/11/hero.png"
    base = {
        "wp_posts": [
            row(1, "Home", "<p>hi</p>", "page", "publish", 0, 0),
            row(2, "Services", f'<a href="{STAGE}/services/">s</a>', "page", "publish", 0, 0),
        ],
        "wp_postmeta": [row(1, 2, "_edit_lock", "1:1")],
        "wp_options": [row(1, "blogdescription", "Roofs", "yes"), row(2, "admin_email", "a@b.example", "yes")],
    }
    content = (
        f'<!-- wp:image {{"id":4,"sizeSlug":"large"}} -->\n<figure><img src="{hero_url}" '
        'class="wp-image-4"/></figure>\n<!-- /wp:image -->'
    )
    staging = {
        "wp_posts": [
            *base["wp_posts"],
            row(3, "Landing", content, "page", "publish", 0, 0),
            row(4, "hero", "", "attachment", "inherit", 3, 0),
        ],
        "wp_postmeta": [
            row(1, 2, "_edit_lock", "1:2"),
            row(2, 3, "_thumbnail_id", "4"),
            row(3, 4, "_wp_attached_file", "2026/11/hero.png"),
        ],
        "wp_options": [row(1, "blogdescription", "Spring sale", "yes"), row(2, "admin_email", "a@b.example", "yes")],
    }
    production = {
        "wp_posts": [
            row(1, "Home", "<p>hi</p>", "page", "publish", 0, 3),
            row(2, "Services", f'<a href="{PROD}/services/">s</a>', "page", "publish", 0, 0),
            row(3, "News 1", "n", "post", "publish", 0, 0),
            row(4, "News 2", "n", "post", "publish", 0, 0),
        ],
        "wp_postmeta": [row(1, 2, "_edit_lock", "1:1"), row(2, 3, "_edit_last", "1")],
        "wp_options": [row(1, "blogdescription", "Roofs", "yes"), row(2, "admin_email", "a@b.example", "yes")],
    }
    return base, staging, production


def merger(base, staging, production, next_ids, merge_spec=None):
    return Merger(
        merge_spec or spec(),
        SHAPES,
        touched(base, staging),
        Side(staging),
        Side(production),
        to_production=TO_PROD,
        to_staging=TO_STAGE,
        next_ids=next_ids,
    )


def final(result, table, key) -> dict[str, bytes | None]:
    change = next(c for c in result.changes if c.table == table and c.key == key)
    return dict(zip(SHAPES[table].columns, (decode(v) for v in change.final), strict=True))


def test_a_landing_page_its_image_and_a_setting_are_promoted_with_colliding_ids_remapped():
    base, staging, production = landing_sides()
    result = merger(base, staging, production, {"wp_posts": 5, "wp_postmeta": 3, "wp_options": 3}).decide()
    assert {i.ident: i.status for i in result.items} == {"page:3": ADDED, "media:4": ADDED, "option:1": CHANGED}
    assert result.remaps == {"wp_posts": {3: 5, 4: 6}, "wp_postmeta": {2: 4}}, "meta 3 is above production's ids"
    assert not result.blocked and result.files == ["wp-content/uploads/2026/11/hero.png"]

    page = final(result, "wp_posts", (3,))
    assert page["ID"] == b"5"
    assert b'{"id":6,"sizeSlug":"large"}' in page["post_content"] and b'class="wp-image-6"' in page["post_content"]
    assert f"{PROD}/wp-content/uploads/2026/11/hero.png".encode() in page["post_content"]
    assert STAGE.encode() not in page["post_content"]
    assert final(result, "wp_posts", (4,))["post_parent"] == b"5", "the image's parent is the page's new id"
    thumb = final(result, "wp_postmeta", (2,))
    assert (thumb["meta_id"], thumb["post_id"], thumb["meta_value"]) == (b"4", b"5", b"6")
    assert final(result, "wp_options", (1,))["option_value"] == b"Spring sale"
    actions = {(c.table, c.key): c.action for c in result.changes}
    assert actions[("wp_options", (1,))] == UPDATE and actions[("wp_posts", (3,))] == INSERT
    # production's own rows are never part of the merge, and the edit lock is no content
    assert ("wp_posts", (2,)) not in actions and ("wp_postmeta", (1,)) not in actions
    assert [i.ident for i in result.left_out] == []


def test_ids_production_never_handed_out_are_kept():
    base, staging, production = landing_sides()
    production["wp_posts"] = production["wp_posts"][:2]
    result = merger(base, staging, production, {"wp_posts": 3, "wp_postmeta": 2, "wp_options": 3}).decide()
    assert "wp_posts" not in result.remaps
    assert final(result, "wp_postmeta", (2,))["meta_value"] == b"4"


def test_selecting_an_item_brings_the_rows_it_needs_and_leaves_the_rest_out():
    base, staging, production = landing_sides()
    result = merger(base, staging, production, {"wp_posts": 5, "wp_postmeta": 3}).decide(select=["page:3"])
    assert {i.ident: i.reason for i in result.items} == {"page:3": "selected", "media:4": "needed by page:3"}
    assert [i.ident for i in result.left_out] == ["option:1"]
    by_title = merger(base, staging, production, {"wp_posts": 5}).decide(select=["option:blogdescription"])
    assert [i.ident for i in by_title.items] == ["option:1"]
    with pytest.raises(MergeError, match="no such item"):
        merger(base, staging, production, {}).decide(select=["page:99"])
    with pytest.raises(UsageError, match="KIND:ID"):
        parse_select(["pages:3"], [k.kind for k in spec().items])


def edited_on_both_sides():
    base, staging, production = landing_sides()
    staging["wp_posts"][1] = row(2, "Services", "<p>staging's text</p>", "page", "publish", 0, 0)
    production["wp_posts"][1] = row(2, "Services", "<p>production's text</p>", "page", "publish", 0, 0)
    return base, staging, production


def test_a_page_edited_on_both_sides_blocks_until_a_side_is_preferred_or_it_is_left_out():
    sides = edited_on_both_sides()
    ids = {"wp_posts": 5, "wp_postmeta": 3}
    blocked = merger(*sides, ids).decide()
    assert blocked.blocked and [i.ident for i in blocked.conflicts] == ["page:2"]
    assert "changed on staging and on production" in blocked.conflicts[0].conflicts[0]
    assert {c.action for c in blocked.changes if c.table == "wp_posts" and c.key == (2,)} == {CONFLICT}

    staging_wins = merger(*sides, ids).decide(prefer="staging")
    change = next(c for c in staging_wins.changes if c.key == (2,) and c.table == "wp_posts")
    assert not staging_wins.blocked and change.action == UPDATE
    assert decode(change.final[2]) == b"<p>staging's text</p>"
    production_wins = merger(*sides, ids).decide(prefer_items={"page:2": "production"})
    assert not production_wins.blocked
    assert next(c for c in production_wins.changes if c.key == (2,) and c.table == "wp_posts").action == NONE
    left_out = merger(*sides, ids).decide(select=["page:3", "option:1"])
    assert not left_out.blocked and "page:2" in [i.ident for i in left_out.left_out]


def test_derived_columns_and_equal_edits_are_no_conflict_and_deletions_wait_to_be_asked():
    base, staging, production = landing_sides()
    # production's comment count moved (derived), staging changed the title: no conflict, the count stays
    staging["wp_posts"][0] = row(1, "Home page", "<p>hi</p>", "page", "publish", 0, 0)
    staging["wp_posts"].pop(1)  # Services deleted on the copy
    result = merger(base, staging, production, {"wp_posts": 5, "wp_postmeta": 3}).decide()
    home = next(c for c in result.changes if c.table == "wp_posts" and c.key == (1,))
    assert home.action == UPDATE and not result.blocked
    table = Merger(
        spec(), SHAPES, {}, Side({}), Side({}), to_production=TO_PROD, to_staging=TO_STAGE, next_ids={}
    ).tables["wp_posts"]
    script = mergesql.Script()
    mergesql.row_statements(script, result, {"wp_posts": table, **_tables()})
    update = next(line for line in script.lines if line.startswith("UPDATE `wp_posts`"))
    assert "`post_title` = 'Home page'" in update and "comment_count` =" not in update.split(" WHERE ")[0]
    assert "page:2" in [i.ident for i in result.left_out]
    deleting = merger(base, staging, production, {"wp_posts": 5, "wp_postmeta": 3}).decide(delete=True)
    assert next(c for c in deleting.changes if c.table == "wp_posts" and c.key == (2,)).action == DELETE
    staging["wp_posts"][0] = production["wp_posts"][0] = row(1, "Same", "<p>hi</p>", "page", "publish", 0, 0)
    same = merger(base, staging, production, {}).decide(select=["page:1"])
    assert same.unchanged and [i.ident for i in same.unchanged] == ["page:1"] and same.empty


def _tables():
    m = Merger(spec(), SHAPES, {}, Side({}), Side({}), to_production=TO_PROD, to_staging=TO_STAGE, next_ids={})
    return m.tables


def serialized(ids: str) -> str:
    return f'a:2:{{s:3:"ids";s:{len(ids)}:"{ids}";s:5:"title";s:7:"Gallery";}}'


def test_ids_inside_serialized_values_are_rewritten_and_the_lengths_fixed():
    base, staging, production = landing_sides()
    staging["wp_options"].append(row(3, "widget_media_gallery", serialized("4,2"), "yes"))
    gallery = ValueRef(
        "wp_options",
        "option_value",
        "wp_posts",
        RowMatch((("option_name", ("widget_media_*",)),)),
        pattern=r's:3:"ids";s:\d+:"([0-9,]*)"',
    )
    merge_spec = dataclasses.replace(spec(), values=(*spec().values, gallery))
    result = merger(base, staging, production, {"wp_posts": 5, "wp_postmeta": 3, "wp_options": 3}, merge_spec).decide(
        select=["option:widget_media_gallery"]
    )
    assert "media:4" in [i.ident for i in result.items], "the image the widget names goes along"
    value = final(result, "wp_options", (3,))["option_value"]
    assert value == serialized("6,2").encode()
    if shutil.which("php"):
        out = subprocess.run(
            ["php", "-r", "var_export(unserialize(stream_get_contents(STDIN)));"],
            input=value,
            capture_output=True,
            check=True,
        ).stdout
        assert b"'ids' => '6,2'" in out


def test_edit_value_fixes_every_enclosing_serialized_length():
    inner = 's:4:"7,12";'
    value = f'a:1:{{s:4:"data";s:{len(inner)}:"{inner}";}}'.encode()
    start = value.index(b"12")
    edited = edit_value(value, [(start, start + 2, b"1200")])
    assert edited == b'a:1:{s:4:"data";s:13:"s:6:"7,1200";";}'
    assert edit_value(b"plain 12", [(6, 8, b"3")]) == b"plain 3"


# ------------------------------------------------------------------------------------------ the SQL


def test_the_transaction_guards_updates_and_deletes_with_productions_row():
    base, staging, production = landing_sides()
    result = merger(base, staging, production, {"wp_posts": 5, "wp_postmeta": 3, "wp_options": 3}).decide()
    script = mergesql.Script()
    mergesql.row_statements(script, result, _tables())
    text = script.text()
    assert text.index("START TRANSACTION;") < text.index("UPDATE `wp_options`") < text.index("INSERT INTO")
    assert text.rstrip().endswith("COMMIT;")
    assert "WHERE BINARY `option_id` <=> BINARY 1 AND BINARY `option_name` <=> BINARY 'blogdescription'" in text
    assert (
        "INSERT INTO `wp_posts` (`ID`, `post_title`, `post_content`, `post_type`, `post_status`, "
        "`post_parent`) VALUES (5, 'Landing'," in text
    ), "derived comment_count is left to the CMS"
    assert script.guards == ["wp_options row (1,) changed on production meanwhile"]
    stderr = "ERROR 1146 (42S02) at line 9: Table 'wp.orch-guard-1' doesn't exist"
    assert mergesql.guard_failure(stderr, script.guards) == script.guards[0]
    assert mergesql.guard_failure("ERROR 1064 syntax", script.guards) is None


def test_items_an_earlier_run_promoted_are_not_inserted_again_and_references_name_their_production_ids():
    base, staging, production = landing_sides()
    staging["wp_posts"].append(row(7, "Sale", "", "nav_menu_item", "publish", 0, 0))
    staging["wp_postmeta"].append(row(9, 7, "_menu_item_object_id", "3"))
    staging["wp_postmeta"].append(row(10, 7, "_menu_item_type", "post_type"))
    result = merger(base, staging, production, {"wp_posts": 8, "wp_postmeta": 11}).decide(
        promoted={"wp_posts": {3: 5, 4: 6}}
    )
    assert [i.ident for i in result.earlier] == ["media:4", "page:3"]
    assert [i.new_key for i in result.earlier] == [(6,), (5,)]
    assert {i.ident for i in result.items} == {"menu-item:7", "option:1"}, "nothing inserted twice"
    assert final(result, "wp_postmeta", (9,))["meta_value"] == b"5", "the menu item opens the page's production id"
    assert result.remaps == {"wp_posts": {7: 8}, "wp_postmeta": {9: 11, 10: 12}}, "only the new rows' new ids"
