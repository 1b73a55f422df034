"""Content merge on Joomla's tables, as the real playbook (playbooks/joomla.yaml) describes them: an article
(with its asset) and a menu item linking to it, added on a staging copy while production added an article, an
asset and a menu item of its own; and the nested sets (assets, categories, menu) renumbered afterwards."""

from __future__ import annotations

import importlib.util
import random
import re
import shutil
from pathlib import Path

import pytest
from mergekit import Side, row, touched

from orchestrator.backends.cms import mergesql
from orchestrator.backends.cms.dumprows import DumpReader, Shape, decode
from orchestrator.backends.cms.merge import ADDED, INSERT, Merger, MergeResult, RowChange, Table
from orchestrator.backends.cms.nestedset import Node, problems, rebuild
from orchestrator.backends.cms.playbook import load_playbook
from orchestrator.backends.cms.replace import row_rewriter, url_pairs

PROD, STAGE = "https://roofs.example", "https://t1.stage.example"
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "cms" / "joomla"
CONTENT = Shape(
    "jos_content",
    (
        "id",
        "asset_id",
        "title",
        "introtext",
        "fulltext",
        "images",
        "catid",
        "hits",
        "checked_out",
        "checked_out_time",
        "state",
    ),
    ("id",),
    "id",
)
CATEGORIES = Shape(
    "jos_categories",
    (
        "id",
        "asset_id",
        "parent_id",
        "lft",
        "rgt",
        "level",
        "extension",
        "title",
        "params",
        "hits",
        "checked_out",
        "checked_out_time",
    ),
    ("id",),
    "id",
)
ASSETS = Shape("jos_assets", ("id", "parent_id", "lft", "rgt", "level", "name", "title"), ("id",), "id")
MENU = Shape(
    "jos_menu",
    (
        "id",
        "menutype",
        "title",
        "link",
        "parent_id",
        "lft",
        "rgt",
        "level",
        "client_id",
        "params",
        "checked_out",
        "checked_out_time",
    ),
    ("id",),
    "id",
)
MENU_TYPES = Shape("jos_menu_types", ("id", "menutype", "title", "client_id"), ("id",), "id")
SHAPES = {s.name: s for s in (CONTENT, CATEGORIES, ASSETS, MENU, MENU_TYPES)}


def spec():
    return load_playbook("joomla").merge.for_prefix("jos_")


def test_the_joomla_playbook_names_its_content_tables_trees_and_production_tables():
    merge = spec()
    trees = {name: t.tree for name, t in merge.tables.items() if t.tree}
    assert set(trees) == {"jos_categories", "jos_assets", "jos_menu"}
    assert all((t.parent, t.left, t.right, t.level) == ("parent_id", "lft", "rgt", "level") for t in trees.values())
    assert merge.tables["jos_content"].owns == {"asset_id": "jos_assets"}
    assert merge.tables["jos_menu"].refs["menutype"] == "jos_menu_types.menutype"
    assert {"jos_users", "jos_session", "jos_user_*"} <= set(merge.production)
    assert {i.kind for i in merge.items} == {"article", "category", "menu-item", "menu", "module"}


@pytest.mark.parametrize(
    ("link", "target", "found"),
    [
        ("index.php?option=com_content&view=article&id=12", "jos_content", "12"),
        ("index.php?option=com_content&view=article&layout=blog&id=7&catid=2", "jos_content", "7"),
        ("index.php?option=com_content&view=category&layout=blog&id=9", "jos_categories", "9"),
        ("index.php?option=com_contact&view=contact&id=3", None, None),
    ],
)
def test_menu_links_name_the_article_or_category_they_open(link, target, found):
    refs = [v for v in spec().values if v.table == "jos_menu" and v.column == "link"]
    hits = [(v.to, m.group(1)) for v in refs for m in [re.search(v.pattern, link)] if m]
    assert hits == ([(target, found)] if target else [])


def sides():
    """Base, staging (an article with its asset, a menu item opening it) and production (its own article 1,
    asset 4 and menu item 3 took the copy's ids)."""
    base = {
        "jos_assets": [
            row(1, 0, 0, 5, 0, "root.1", "Root"),
            row(2, 1, 1, 4, 1, "com_content", "Content"),
            row(3, 2, 2, 3, 2, "com_content.category.2", "Uncategorised"),
        ],
        "jos_categories": [
            row(1, 0, 0, 0, 3, 0, "system", "ROOT", "{}", 0, 0, None),
            row(2, 3, 1, 1, 2, 1, "com_content", "Uncategorised", "{}", 0, 0, None),
        ],
        "jos_content": [],
        "jos_menu": [
            row(1, "", "Menu_Item_Root", "", 0, 0, 3, 0, 0, "{}", 0, None),
            row(2, "mainmenu", "Home", "index.php?option=com_content&view=featured", 1, 1, 2, 1, 0, "{}", 0, None),
        ],
        "jos_menu_types": [row(1, "mainmenu", "Main Menu", 0)],
    }
    staging = {
        **base,
        "jos_assets": [
            row(1, 0, 0, 7, 0, "root.1", "Root"),
            row(2, 1, 1, 6, 1, "com_content", "Content"),
            row(3, 2, 2, 5, 2, "com_content.category.2", "Uncategorised"),
            row(4, 3, 3, 4, 3, "com_content.article.1", "Landing"),
        ],
        "jos_content": [
            row(
                1,
                4,
                "Landing",
                f'<p><img src="{STAGE}/images/landing/hero.jpg"> <img src="images/landing/hero.jpg"></p>',
                "",
                '{"image_intro":"images\\/landing\\/intro.jpg"}',
                2,
                5,
                0,
                None,
                1,
            )
        ],
        "jos_menu": [
            row(1, "", "Menu_Item_Root", "", 0, 0, 5, 0, 0, "{}", 0, None),
            base["jos_menu"][1],
            row(
                3, "mainmenu", "Landing", "index.php?option=com_content&view=article&id=1", 1, 3, 4, 1, 0, "{}", 0, None
            ),
        ],
    }
    production = {
        **base,
        "jos_assets": [
            row(1, 0, 0, 7, 0, "root.1", "Root"),
            row(2, 1, 1, 6, 1, "com_content", "Content"),
            row(3, 2, 2, 5, 2, "com_content.category.2", "Uncategorised"),
            row(4, 3, 3, 4, 3, "com_content.article.1", "News"),
        ],
        "jos_content": [row(1, 4, "News", "<p>news</p>", "", "{}", 2, 40, 0, None, 1)],
        "jos_menu": [
            row(1, "", "Menu_Item_Root", "", 0, 0, 5, 0, 0, "{}", 0, None),
            base["jos_menu"][1],
            row(3, "mainmenu", "News", "index.php?option=com_content&view=article&id=1", 1, 3, 4, 1, 0, "{}", 0, None),
        ],
    }
    return base, staging, production


def decide(base, staging, production):
    merger = Merger(
        spec(),
        SHAPES,
        touched(base, staging, SHAPES),
        Side(staging, SHAPES),
        Side(production, SHAPES),
        to_production=row_rewriter(url_pairs(STAGE, PROD, www=False)),
        to_staging=row_rewriter(url_pairs(PROD, STAGE)),
        next_ids={"jos_content": 2, "jos_assets": 5, "jos_menu": 4},
    )
    return merger, merger.decide()


def final(result, table, key):
    change = next(c for c in result.changes if c.table == table and c.key == key)
    return change, dict(zip(SHAPES[table].columns, (decode(v) for v in change.final), strict=True))


def test_an_article_and_its_menu_item_get_new_ids_with_asset_link_and_files_following():
    _, result = decide(*sides())
    assert {i.ident: i.status for i in result.items} == {"article:1": ADDED, "menu-item:3": ADDED}
    assert result.unchanged == [], "the category whose asset the copy renumbered is no edit"
    assert result.remaps == {"jos_content": {1: 2}, "jos_assets": {4: 5}, "jos_menu": {3: 4}}
    assert not result.blocked
    change, article = final(result, "jos_content", (1,))
    assert change.action == INSERT and (article["id"], article["asset_id"]) == (b"2", b"5")
    assert f"{PROD}/images/landing/hero.jpg".encode() in article["introtext"]
    _, asset = final(result, "jos_assets", (4,))
    assert (asset["id"], asset["name"], asset["parent_id"]) == (b"5", b"com_content.article.2", b"3")
    _, item = final(result, "jos_menu", (3,))
    assert (item["id"], item["link"]) == (b"4", b"index.php?option=com_content&view=article&id=2")
    assert result.files == ["images/landing/hero.jpg", "images/landing/intro.jpg"]
    # the copy's renumbered roots are no item: never promoted (the sets are renumbered on production instead)
    assert ("jos_assets", (1,)) not in {(c.table, c.key) for c in result.changes}


def apply_tree(rows: dict[int, list], script: mergesql.Script) -> None:
    """Apply the script's renumbering UPDATEs to {id: [parent, left, right, level]}."""
    update = re.compile(r"UPDATE `\w+` SET `lft` = (\d+), `rgt` = (\d+), `level` = (\d+) WHERE `id` = (\d+);")
    for line in script.lines:
        if (m := update.fullmatch(line)) is not None:
            left, right, level, key = map(int, m.groups())
            rows[key][1:] = [left, right, level]


def test_the_nested_sets_are_valid_on_production_after_the_merge():
    merger, result = decide(*sides())
    for name, now_rows in (
        ("jos_assets", [(1, None, 0, 7, 0), (2, 1, 1, 6, 1), (3, 2, 2, 5, 2), (4, 3, 3, 4, 3)]),
        ("jos_menu", [(1, 0, 0, 5, 0), (2, 1, 1, 2, 1), (3, 1, 3, 4, 1)]),
    ):
        now = [mergesql.TreeRow(*r) for r in now_rows]
        script = mergesql.Script()
        assert mergesql.tree_statements(script, merger.tables[name], now, result) >= 2
        assert any("orch-guard-1" in line for line in script.checks), "the set is checked under a lock first"
        rows = {r.key: [r.parent, r.left, r.right, r.level] for r in now}
        new = next(c for c in result.changes if c.table == name and c.action == INSERT)
        rows[new.final_key[0]] = [int(decode(new.final[SHAPES[name].index("parent_id")])), 0, 0, 0]
        apply_tree(rows, script)
        assert problems([(k, p, left, right) for k, (p, left, right, _) in rows.items()]) == [], (name, rows)
        root = min(rows, key=lambda k: rows[k][1])
        assert rows[root][1] == 0 and rows[root][2] == 2 * len(rows) - 1


def test_rebuild_keeps_sibling_order_numbers_depth_first_and_refuses_a_cycle():
    nodes = [Node(1, 0, (0, 0)), Node(2, 1, (0, 5)), Node(3, 1, (0, 1)), Node(4, 3, (0, 2)), Node(9, 2, (1, 0))]
    numbers = rebuild(nodes)
    assert numbers == {1: (0, 9, 0), 3: (1, 4, 1), 4: (2, 3, 2), 2: (5, 8, 1), 9: (6, 7, 2)}
    assert problems([(n.id, n.parent, *numbers[n.id][:2]) for n in nodes]) == []
    with pytest.raises(ValueError, match="cycle"):
        rebuild([Node(1, 0), Node(2, 3), Node(3, 2)])


def test_a_random_tree_rebuilt_is_always_a_valid_nested_set():
    rng = random.Random(3)
    for _ in range(20):
        nodes = [Node(1, 0, (0,))] + [Node(i, rng.randrange(1, i), (rng.random(),)) for i in range(2, 60)]
        numbers = rebuild(nodes)
        rows = [(n.id, n.parent, numbers[n.id][0], numbers[n.id][1]) for n in nodes]
        assert problems(rows) == []
        assert sorted(x for _, _, left, right in rows for x in (left, right)) == list(range(2 * len(nodes)))


def test_problems_names_what_is_wrong_with_a_nested_set():
    assert problems([(1, 0, 0, 5), (2, 1, 1, 3), (3, 1, 2, 4)])  # 3 overlaps 2
    assert problems([(1, 0, 0, 3), (2, 1, 4, 5)])  # 2 outside its parent
    assert problems([(1, 0, 3, 3)])  # left not below right


def test_a_tree_change_is_numbered_from_the_rows_it_names():
    t = Table(MENU, spec().tables["jos_menu"])
    change = RowChange(
        "jos_menu",
        (3,),
        None,
        b"",
        None,
        action=INSERT,
        final_key=(3,),
        final=[b"3", b"'mainmenu'", b"'x'", b"''", b"2", b"0", b"0", b"0", b"0", b"'{}'", b"0", b"NULL"],
    )
    result = MergeResult([], [], [change], {}, [], {})
    script = mergesql.Script()
    now = [mergesql.TreeRow(1, 0, 0, 3, 0), mergesql.TreeRow(2, 1, 1, 2, 1)]
    mergesql.tree_statements(script, t, now, result)
    rows = {1: [0, 0, 3, 0], 2: [1, 1, 2, 1], 3: [2, 0, 0, 0]}
    apply_tree(rows, script)
    assert rows == {1: [0, 0, 5, 0], 2: [1, 1, 4, 1], 3: [2, 2, 3, 2]}


def test_a_nested_set_is_locked_and_checked_before_the_rows_change_it():
    """The check compares the set with the rows read before the script was made: run after the script's own
    inserts, it would count them too and stop every promotion that adds an asset, a category or a menu item."""
    merger, result = decide(*sides())
    script = mergesql.Script()
    mergesql.row_statements(script, result, merger.tables)
    now = [mergesql.TreeRow(*r) for r in [(1, None, 0, 7, 0), (2, 1, 1, 6, 1), (3, 2, 2, 5, 2), (4, 3, 3, 4, 3)]]
    mergesql.tree_statements(script, merger.tables["jos_assets"], now, result)
    lines = script.text().splitlines()
    check = next(i for i, line in enumerate(lines) if "FROM `jos_assets` FOR UPDATE" in line)
    insert = next(i for i, line in enumerate(lines) if line.startswith("INSERT INTO `jos_assets`"))
    renumber = next(i for i, line in enumerate(lines) if line.startswith("UPDATE `jos_assets` SET `lft`"))
    assert lines.index("START TRANSACTION;") < check < insert < renumber
    assert "orch-guard-1" in lines[check + 2], "the check's guard follows it at once"


def fixture_tables() -> dict[str, tuple[Shape, list[bytes]]]:
    """The Joomla 4 content tables of the fixture site (tests/fixtures/cms/joomla/content.sql): shapes and rows."""
    with (FIXTURE / "content.sql").open("rb") as dump:
        return {shape.name: (shape, [r for batch in rows for r in batch]) for shape, rows in DumpReader(dump).tables()}


def test_the_playbook_names_only_columns_the_joomla_4_tables_have_and_the_fixture_sets_are_valid():
    tables = fixture_tables()
    merge = load_playbook("joomla").merge.for_prefix("jx7tq_")
    assert set(tables) == set(merge.tables), "the fixture holds the playbook's content tables"
    shapes = {name: shape for name, (shape, _) in tables.items()}
    merger = Merger(merge, shapes, {}, Side({}, shapes), Side({}, shapes), to_production=bytes, to_staging=bytes,
                    next_ids={})  # fmt: skip
    for name in ("jx7tq_assets", "jx7tq_categories", "jx7tq_menu"):
        t = merger.tables[name]
        rows = [[int(t.get(r, c) or 0) for c in ("id", "parent_id", "lft", "rgt")] for r in tables[name][1]]
        assert problems(rows) == [], name
        assert sorted(n for r in rows for n in r[2:]) == list(range(2 * len(rows))), name


@pytest.mark.skipif(shutil.which("php") is None, reason="php CLI not installed")
def test_the_joomla_content_fixture_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("cms_fixture_generate", FIXTURE.parent / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.EXTRA["joomla/content.sql"]() == (FIXTURE / "content.sql").read_text(encoding="utf-8")
