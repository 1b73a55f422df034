"""Content promotion end to end on Joomla 4's tables: the fixture site (tests/fixtures/cms/joomla/, its content.sql
on top: assets, categories, articles, the main menu, modules, with Joomla's nested sets) runs on web1 against the
testbed's MariaDB, served by web1's nginx. On a staging copy the admin builds a landing page: a category, an
article in it (its asset under the category's, images in its `images` JSON and its text), a menu item opening it
and a module shown on that menu item. Meanwhile production gets a category, an article and a menu item of its own,
so the copy's auto-increment ids are taken there. `orch promote --content` must bring the copy's rows with new ids
and every reference rewritten (asset names, catid, the menu link's id=, modules_menu), production's rows intact,
and the three nested sets valid, checked by SQL on production.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

import pytest
from fleet import Fleet
from test_staging_cms import CMSES, Deployed, deploy, dump
from testbed.inventory import web_host_entry
from testbed.webserver import php_vhost, write_user_file

from orchestrator.backends.envs.web import fetch

pytestmark = pytest.mark.e2e

TASK = "14883"
ENV = f"t{TASK}"
SITE = "shinglas"
PROD_URL = "http://shinglas.example"  # served by web1's nginx (health checks and images)
STAGING_DB = f"{SITE}_{ENV}"
TREES = ("jx7tq_assets", "jx7tq_categories", "jx7tq_menu")
IMAGES = ("images/sale/hero.png", "images/sale/full.png", "images/sale/banner.png")


def sql_str(text: str) -> str:
    """Given a text, return it as a MariaDB string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def joomla_json(value: dict) -> str:
    """A JSON value as Joomla stores it (PHP's json_encode: slashes escaped)."""
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/")


def last_child(table: str, parent: str, values: dict[str, str]) -> str:
    """SQL that stores a row as the last child of `parent` (an SQL expression) in a Joomla nested set, as Joomla's
    Nested table does for a new node: room is made at the parent's rgt, the row gets it. Leaves its id in @id."""
    columns = ", ".join(f"`{c}`" for c in values)
    return f"""
        SELECT rgt, level INTO @rgt, @level FROM {table} WHERE id = {parent};
        UPDATE {table} SET rgt = rgt + 2 WHERE rgt >= @rgt;
        UPDATE {table} SET lft = lft + 2 WHERE lft > @rgt;
        INSERT INTO {table} (parent_id, lft, rgt, level, {columns})
            VALUES ({parent}, @rgt, @rgt + 1, @level + 1, {", ".join(values.values())});
        SET @id = LAST_INSERT_ID();"""


def category_sql(title: str, alias: str) -> str:
    """A com_content category under ROOT with its asset under com_content's (asset 8), as the admin saves one:
    the row first, then its asset named after its id. Leaves the category's id in @cat."""
    return (
        last_child(
            "jx7tq_categories",
            "1",
            {
                "asset_id": "0",
                "path": sql_str(alias),
                "extension": "'com_content'",
                "title": sql_str(title),
                "alias": sql_str(alias),
                "description": "''",
                "published": "1",
                "access": "1",
                "params": sql_str(joomla_json({"category_layout": "", "image": "", "image_alt": ""})),
                "metadata": sql_str(joomla_json({"author": "", "robots": ""})),
                "created_user_id": "42",
                "created_time": "NOW()",
                "modified_user_id": "42",
                "modified_time": "NOW()",
                "language": "'*'",
            },
        )
        + "SET @cat = @id;"
        + last_child(
            "jx7tq_assets",
            "8",
            {"name": "CONCAT('com_content.category.', @cat)", "title": sql_str(title), "rules": "'{}'"},
        )
        + "UPDATE jx7tq_categories SET asset_id = @id WHERE id = @cat;"
    )


def article_sql(title: str, alias: str, introtext: str, images: dict[str, str]) -> str:
    """An article in category @cat with its asset under the category's and its workflow stage. Leaves its id in
    @article."""
    shown = {
        "image_intro": "",
        "image_intro_alt": "",
        "float_intro": "",
        "image_intro_caption": "",
        "image_fulltext": "",
        "image_fulltext_alt": "",
        "float_fulltext": "",
        "image_fulltext_caption": "",
    }
    for key, path in images.items():
        shown[key] = f"{path}#joomlaImage://local-{path}?width=1200&height=600"
    return (
        f"""
        INSERT INTO jx7tq_content (asset_id, title, alias, introtext, `fulltext`, state, catid, created, created_by,
            modified, modified_by, publish_up, images, urls, attribs, metadesc, access, metadata, language)
        VALUES (0, {sql_str(title)}, {sql_str(alias)}, {sql_str(introtext)}, '', 1, @cat, NOW(), 42, NOW(), 42,
            NOW(), {sql_str(joomla_json(shown))}, {sql_str(joomla_json({"urla": "", "urlatext": ""}))},
            {sql_str(joomla_json({"article_layout": "", "show_title": ""}))}, '', 1,
            {sql_str(joomla_json({"robots": "", "author": ""}))}, '*');
        SET @article = LAST_INSERT_ID();
        SELECT asset_id INTO @cat_asset FROM jx7tq_categories WHERE id = @cat;"""
        + last_child(
            "jx7tq_assets",
            "@cat_asset",
            {
                "name": "CONCAT('com_content.article.', @article)",
                "title": sql_str(title),
                "rules": sql_str('{"core.delete":{},"core.edit":{},"core.edit.state":{}}'),
            },
        )
        + """
        UPDATE jx7tq_content SET asset_id = @id WHERE id = @article;
        INSERT INTO jx7tq_workflow_associations (item_id, stage_id, extension)
            VALUES (@article, 1, 'com_content.article');"""
    )


def menu_item_sql(title: str, alias: str) -> str:
    """A main-menu item opening article @article, last under the menu root. Leaves its id in @item."""
    return (
        last_child(
            "jx7tq_menu",
            "1",
            {
                "menutype": "'mainmenu'",
                "title": sql_str(title),
                "alias": sql_str(alias),
                "path": sql_str(alias),
                "link": "CONCAT('index.php?option=com_content&view=article&id=', @article)",
                "type": "'component'",
                "published": "1",
                "component_id": "19",
                "access": "1",
                "img": "''",
                "params": sql_str(joomla_json({"menu_text": 1, "show_page_heading": 0})),
                "language": "'*'",
                "client_id": "0",
            },
        )
        + "SET @item = @id;"
    )


def landing_sql(staging_url: str) -> str:
    """What the admin does on the copy: a category, an article with images, a menu item, a module on it."""
    intro = (
        f'<p>Весной вся кровля дешевле. <a href="{staging_url}/roofing">Каталог кровли</a></p>'
        f'<p><img src="images/sale/banner.png" alt="sale"></p>'
    )
    module = f'<p><a href="{staging_url}/sale"><img src="images/sale/banner.png" alt="sale"></a></p>'
    return (
        category_sql("Распродажа", "sale")
        + article_sql(
            "Весенняя распродажа",
            "spring-sale",
            intro,
            {"image_intro": "images/sale/hero.png", "image_fulltext": "images/sale/full.png"},
        )
        + menu_item_sql("Распродажа", "sale")
        + f"""
        INSERT INTO jx7tq_modules (asset_id, title, note, content, ordering, position, published, module, access,
            showtitle, params, client_id, language)
        VALUES (0, 'Sale banner', '', {sql_str(module)}, 2, 'banner', 1, 'mod_custom', 1, 0,
            {sql_str(joomla_json({"prepare_content": "0", "layout": "_:default"}))}, 0, '*');
        SET @module = LAST_INSERT_ID();"""
        + last_child(
            "jx7tq_assets",
            "18",
            {"name": "CONCAT('com_modules.module.', @module)", "title": "'Sale banner'", "rules": "'{}'"},
        )
        + """
        UPDATE jx7tq_modules SET asset_id = @id WHERE id = @module;
        INSERT INTO jx7tq_modules_menu (moduleid, menuid) VALUES (@module, @item);
        SELECT @cat, @article, @item, @module;"""
    )


LIVE_ON = (
    category_sql("Новости", "news")
    + article_sql("Новости компании", "company-news", "<p>Мы открыли второй склад.</p>", {})
    + menu_item_sql("Новости", "news")
    + "SELECT @cat, @article, @item;"
)


# ------------------------------------------------------------------------------------------------ checks by SQL


def nested_set_problems(mariadb, db: str, table: str) -> list[str]:
    """Given a Joomla nested-set table, return what is wrong with it (SQL on the database): lft not below rgt, a
    number used twice or missing (0 .. 2n-1), ranges that overlap, a child outside its parent or at the wrong
    level, a parent that does not exist, not one root. [] when it is valid."""
    checks = {
        "lft not below rgt": f"SELECT id FROM {table} WHERE lft >= rgt",
        "children outside their parent": f"""SELECT c.id FROM {table} c JOIN {table} p ON p.id = c.parent_id
            WHERE NOT (p.lft < c.lft AND c.rgt < p.rgt)""",
        "levels not the parent's + 1": f"""SELECT c.id FROM {table} c JOIN {table} p ON p.id = c.parent_id
            WHERE c.level <> p.level + 1""",
        "parents that do not exist": f"""SELECT c.id FROM {table} c LEFT JOIN {table} p ON p.id = c.parent_id
            WHERE c.parent_id <> 0 AND p.id IS NULL""",
        "ranges that overlap": f"""SELECT a.id, b.id FROM {table} a JOIN {table} b
            ON a.lft < b.lft AND b.lft < a.rgt AND a.rgt < b.rgt""",
        "numbers not 0 .. 2n-1 once each": f"""SELECT COUNT(*), COUNT(DISTINCT n), MIN(n), MAX(n)
            FROM (SELECT lft AS n FROM {table} UNION ALL SELECT rgt FROM {table}) x
            HAVING NOT (COUNT(*) = COUNT(DISTINCT n) AND MIN(n) = 0 AND MAX(n) = COUNT(*) - 1)""",
        "not one root": f"SELECT COUNT(*) FROM {table} WHERE parent_id = 0 HAVING COUNT(*) <> 1",
    }
    found = []
    for what, query in checks.items():
        out = mariadb.sql(query, db).strip()
        if out:
            found.append(f"{table}: {what}: {out.replace(chr(10), '; ')[:200]}")
    return found


def unbatch(value: str) -> str:
    """A value as `mariadb -B` prints it, unescaped (\\n, \\t, \\0, \\\\)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), value)


def row(mariadb, db: str, table: str, where: str) -> dict[str, str]:
    """The one row of a table that matches `where`, by column name (values as text, NULL as 'NULL')."""
    columns = [line.split("\t")[0] for line in mariadb.sql(f"SHOW COLUMNS FROM {table}", db).splitlines()]
    lines = mariadb.sql(f"SELECT * FROM {table} WHERE {where}", db).splitlines()
    assert len(lines) == 1, (table, where, lines)
    return dict(zip(columns, map(unbatch, lines[0].split("\t")), strict=True))


def table_rows(mariadb, db: str) -> dict[str, set[tuple[str, ...]]]:
    """Every row of every table, by table; the nested-set numbers (lft, rgt, level) left out."""
    rows = {}
    for table in mariadb.sql("SHOW TABLES", db).split():
        columns = mariadb.sql(f"SHOW COLUMNS FROM {table}", db).splitlines()
        keep = [i for i, c in enumerate(columns) if c.split("\t")[0] not in ("lft", "rgt", "level")]
        out = mariadb.sql(f"SELECT * FROM {table}", db)
        rows[table] = {tuple(line.split("\t")[i] for i in keep) for line in out.splitlines()}
    return rows


def checksums(host, root: str, paths) -> dict[str, str]:
    out = host.run(f"cd {root} && sha256sum {' '.join(paths)}").stdout
    return {line[66:]: line[:64] for line in out.splitlines()}


# ------------------------------------------------------------------------------------------------ the fleet


@dataclass
class Landing:
    orch: Fleet
    mariadb: object
    site: Deployed
    staging: dict  # `orch staging create` output
    built: dict  # the copy's new ids: cat, article, item, module
    lived: dict  # production's new ids: cat, article, item
    prod_db: str
    files: dict[str, str]  # the copy's images: path -> sha256
    listen: str  # web1's nginx, serving production

    def prod(self, table: str, where: str) -> dict[str, str]:
        return row(self.mariadb, self.prod_db, table, where)


def ids(line: str, names: tuple[str, ...]) -> dict[str, int]:
    return dict(zip(names, map(int, line.split()), strict=True))


@pytest.fixture(scope="module")
def landing(fleet, web1_web, stage1_web, mariadb, ssh_hosts, tmp_path_factory):
    """The Joomla fixture site as production on web1 (vhost shinglas.example on web1's nginx), a staging copy of
    it with the landing page built on it, and production's own new category, article and menu item."""
    web1, stage1 = ssh_hosts["web1"], ssh_hosts["stage1"]
    run = secrets.token_hex(4)
    admin, admin_pw = f"orch_jc_{run}", "adm-" + secrets.token_hex(8)
    prod_path, stage_root = f"{web1.home}/joomla-{run}", f"{stage1.home}/stage-joomla-{run}"
    vhost = web1_web.nginx.sites_dir / f"joomla-{run}.conf"
    inventory = json.loads(json.dumps(fleet.base))
    inventory["oplog"] = inventory["oplog"].replace("oplog.db", f"oplog-joomla-{run}.db")
    inventory["hosts"]["web1"] = web_host_entry(web1, web1_web)
    inventory["hosts"]["stage1"] = web_host_entry(stage1, stage1_web)
    orch = Fleet(tmp_path_factory.mktemp("joomlafleet"), dict(fleet.env), fleet.hosts)
    site: Deployed | None = None
    staged = None
    try:
        site = deploy(CMSES["joomla"], web1, mariadb, prod_path, ("database.sql", "content.sql"))
        prod_db = site.prod_config["database"]
        write_user_file(
            vhost,
            php_vhost(
                listen=web1_web.nginx.listen,
                root=prod_path,
                php_socket=web1_web.php.socket,
                server_name="shinglas.example",
            ),
            web1.user,
        )
        web1_web.nginx.reload()
        mariadb.sql(f"CREATE USER '{admin}'@'%' IDENTIFIED BY '{admin_pw}'")
        mariadb.sql(f"GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION")
        orch.env |= {"T_JOOMLA_ADMIN_PW": admin_pw, "T_SHINGLAS_PW": site.prod_config["password"]}
        db = {"engine": "mysql", "host": mariadb.host, "port": mariadb.port}
        port = stage1_web.nginx.listen.rsplit(":", 1)[1]
        orch.write_inventory(
            inventory,
            {
                SITE: {
                    "name": SITE,
                    "playbook": "joomla",
                    "task": "10030",
                    "environments": {
                        "production": {
                            "host": "web1",
                            "path": prod_path,
                            "url": PROD_URL,
                            "database": db
                            | {"name": prod_db, "user": site.prod_config["user"], "password": {"env": "T_SHINGLAS_PW"}},
                        },
                        "staging": {
                            "host": "stage1",
                            "path": f"{stage_root}/{{site}}",
                            "url": f"http://{{env}}.shinglas.stage.test:{port}",
                            "database": db | {"name": "mysql", "user": admin, "password": {"env": "T_JOOMLA_ADMIN_PW"}},
                        },
                    },
                }
            },
        )
        for table in TREES:
            assert nested_set_problems(mariadb, prod_db, table) == [], "the fixture's nested sets are valid"
        staged = orch.orch_json("staging", "create", SITE, "--task", TASK, "--from", "fresh")

        # the admin on the copy: the landing page, its images uploaded to the copy's images/sale/
        stage1.run(f"mkdir -p {staged['path']}/images/sale")
        for path in IMAGES:
            stage1.run(f"head -c 3000 /dev/urandom > {staged['path']}/{path}")
        built = ids(
            mariadb.sql(landing_sql(staged["url"].rstrip("/")), STAGING_DB), ("cat", "article", "item", "module")
        )
        lived = ids(mariadb.sql(LIVE_ON, prod_db), ("cat", "article", "item"))
        for table in TREES:
            assert nested_set_problems(mariadb, STAGING_DB, table) == [], "the copy's nested sets are valid"
            assert nested_set_problems(mariadb, prod_db, table) == [], "production's nested sets are valid"
        assert (built["cat"], built["article"], built["item"]) == (lived["cat"], lived["article"], lived["item"]), (
            "production's new rows must take the ids the copy used"
        )
        files = checksums(stage1, staged["path"], IMAGES)
        yield Landing(orch, mariadb, site, staged, built, lived, prod_db, files, web1_web.nginx.listen)
    finally:
        if staged is not None:
            orch.orch("staging", "destroy", SITE, "--env", ENV, "--task", TASK, expect=None)
        if site is not None:
            mariadb.sql(f"DROP DATABASE IF EXISTS `{site.prod_config['database']}`")
        mariadb.sql(f"DROP DATABASE IF EXISTS `{STAGING_DB}`; DROP USER IF EXISTS '{STAGING_DB}'@'%'")
        mariadb.sql(f"DROP USER IF EXISTS '{admin}'@'%'")
        vhost.unlink(missing_ok=True)
        web1_web.nginx.reload()
        web1.run(f"rm -rf {prod_path}")
        stage1.run(f"rm -rf {stage_root}")


def promote(landing: Landing, *extra, expect: int = 0):
    return landing.orch.orch("promote", SITE, "--from", ENV, "--content", "--task", TASK, *extra, expect=expect)


# ------------------------------------------------------------------------------------------------ the tests


def test_the_nested_set_check_finds_what_is_wrong(landing):
    mariadb, db = landing.mariadb, STAGING_DB
    mariadb.sql("CREATE TABLE orch_probe AS SELECT id, parent_id, lft, rgt, level FROM jx7tq_categories", db)
    try:
        assert nested_set_problems(mariadb, db, "orch_probe") == []
        # categories 2 (1, 2) and 8 (3, 4) become (1, 3) and (2, 4): every number still used once, but they overlap
        mariadb.sql("UPDATE orch_probe SET rgt = 3 WHERE id = 2; UPDATE orch_probe SET lft = 2 WHERE id = 8", db)
        assert [f.split(": ")[1] for f in nested_set_problems(mariadb, db, "orch_probe")] == ["ranges that overlap"]
        mariadb.sql(
            "UPDATE orch_probe SET rgt = 2, level = 2 WHERE id = 2; UPDATE orch_probe SET lft = 3 WHERE id = 8", db
        )
        assert [f.split(": ")[1] for f in nested_set_problems(mariadb, db, "orch_probe")] == [
            "levels not the parent's + 1"
        ]
        mariadb.sql("UPDATE orch_probe SET level = 1, rgt = 9 WHERE id = 2", db)  # past its parent's rgt (7)
        found = {f.split(": ")[1] for f in nested_set_problems(mariadb, db, "orch_probe")}
        assert found >= {"children outside their parent", "numbers not 0 .. 2n-1 once each"}, found
    finally:
        mariadb.sql("DROP TABLE orch_probe", db)


def test_the_dry_run_lists_the_items_new_ids_and_files_and_changes_nothing(landing):
    before = dump(landing.mariadb, landing.prod_db)
    plans = landing.orch.orch_json("promote", SITE, "--from", ENV, "--content", "--task", TASK, "--dry-run")
    assert len(plans) == 2 and "base_backup" not in plans[0], "the code's plan, then the content's"
    content = plans[1]
    items = {(i["kind"], i["id"]): i["status"] for i in content["items"]}
    built = landing.built
    assert items == {
        ("category", str(built["cat"])): "added",
        ("article", str(built["article"])): "added",
        ("menu-item", str(built["item"])): "added",
        ("module", str(built["module"])): "added",
    }, items
    remaps = content["remaps"]
    assert str(built["cat"]) in remaps["jx7tq_categories"] and str(built["article"]) in remaps["jx7tq_content"]
    assert str(built["item"]) in remaps["jx7tq_menu"] and remaps["jx7tq_assets"]
    assert content["files"] == sorted(IMAGES)
    assert not content["blocked"] and content["conflicts"] == []
    text = promote(landing, "--dry-run")
    assert "Весенняя распродажа" in text.stdout and "remap jx7tq_content" in text.stdout, text.stdout
    assert dump(landing.mariadb, landing.prod_db) == before, "a dry run changes nothing"
    web1 = landing.orch.hosts["web1"]
    assert web1.run(f"ls -A {landing.site.path}/images 2>/dev/null || true").stdout == "", "no file copied"


@pytest.fixture(scope="module")
def promoted(landing):
    """The real promotion (code and content); production's rows and own new rows as they were before it."""
    before = table_rows(landing.mariadb, landing.prod_db)
    own = {
        table: landing.prod(table, f"id = {landing.lived[key]}")
        for table, key in (("jx7tq_categories", "cat"), ("jx7tq_content", "article"), ("jx7tq_menu", "item"))
    }
    out = json.loads(promote(landing, "--yes", "--json").stdout)
    assert out["code"]["status"] == "unchanged", "the copy runs production's code: only content goes"
    return out["content"], before, own


def test_the_landing_page_is_on_production_with_new_ids_and_its_references_rewritten(landing, promoted):
    done, _, _ = promoted
    assert done["status"] == "ok", done
    for kind in ("1 article", "1 category", "1 menu item", "1 module"):
        assert kind in done["summary"], done["summary"]
    article = landing.prod("jx7tq_content", "alias = 'spring-sale'")
    category = landing.prod("jx7tq_categories", "alias = 'sale'")
    item = landing.prod("jx7tq_menu", "alias = 'sale' AND client_id = 0")
    module = landing.prod("jx7tq_modules", "title = 'Sale banner'")
    built, lived = landing.built, landing.lived
    assert int(article["id"]) != lived["article"] and int(category["id"]) != lived["cat"], "new ids on production"
    assert int(item["id"]) != lived["item"]
    assert article["catid"] == category["id"]
    assert (category["parent_id"], category["level"], category["path"]) == ("1", "1", "sale")
    assets = {name: landing.prod("jx7tq_assets", f"id = {row_['asset_id']}") for name, row_ in
              (("article", article), ("category", category), ("module", module))}  # fmt: skip
    assert (assets["article"]["name"], assets["article"]["parent_id"]) == (
        f"com_content.article.{article['id']}",
        category["asset_id"],
    ), "the article's asset is named after its new id and sits under its category's asset"
    assert (assets["category"]["name"], assets["category"]["parent_id"]) == (
        f"com_content.category.{category['id']}",
        "8",
    )
    assert (assets["module"]["name"], assets["module"]["parent_id"]) == (f"com_modules.module.{module['id']}", "18")
    assert item["link"] == f"index.php?option=com_content&view=article&id={article['id']}"
    assert (item["parent_id"], item["level"], item["menutype"]) == ("1", "1", "mainmenu")
    shown_on = landing.mariadb.sql(
        f"SELECT menuid FROM jx7tq_modules_menu WHERE moduleid = {module['id']}", landing.prod_db
    )
    assert shown_on.split() == [item["id"]], "the module is shown on the new menu item"
    stage = landing.prod(
        "jx7tq_workflow_associations", f"item_id = {article['id']} AND extension = 'com_content.article'"
    )
    assert stage["stage_id"] == "1"
    # URLs: the copy's became production's
    staging_host = landing.staging["url"].split("//", 1)[1].rstrip("/")
    assert f'href="{PROD_URL}/roofing"' in article["introtext"] and f'href="{PROD_URL}/sale"' in module["content"]
    assert staging_host not in article["introtext"] + module["content"] + article["images"]
    images = json.loads(article["images"])
    assert images["image_intro"].startswith("images/sale/hero.png#joomlaImage://local-images/sale/hero.png")
    assert images["image_fulltext"].startswith("images/sale/full.png#")
    assert {built["article"], built["cat"], built["item"]} <= set(lived.values()), "the copy's ids were taken"


def test_production_keeps_its_own_new_rows_and_nothing_else_changed(landing, promoted):
    _, before, own = promoted
    for table, was in own.items():
        now = landing.prod(table, f"id = {was['id']}")
        assert {k: v for k, v in now.items() if k not in ("lft", "rgt")} == {
            k: v for k, v in was.items() if k not in ("lft", "rgt")
        }, table
    news = landing.prod("jx7tq_content", f"id = {landing.lived['article']}")
    assert landing.prod("jx7tq_assets", f"id = {news['asset_id']}")["name"] == f"com_content.article.{news['id']}"
    after = table_rows(landing.mariadb, landing.prod_db)
    assert set(after) == set(before)
    gone = {t: before[t] - after[t] for t in before if before[t] - after[t]}
    came = {t: len(after[t] - before[t]) for t in after if after[t] - before[t]}
    assert gone == {}, "no row of production changed but for its nested-set numbers"
    assert came == {
        "jx7tq_assets": 3,
        "jx7tq_categories": 1,
        "jx7tq_content": 1,
        "jx7tq_menu": 1,
        "jx7tq_modules": 1,
        "jx7tq_modules_menu": 1,
        "jx7tq_workflow_associations": 1,
    }


@pytest.mark.parametrize("table", TREES)
def test_the_nested_sets_are_valid_on_production(landing, promoted, table):
    assert nested_set_problems(landing.mariadb, landing.prod_db, table) == []


def test_the_images_are_copied_and_served_and_the_front_page_answers(landing, promoted):
    web1 = landing.orch.hosts["web1"]
    assert checksums(web1, landing.site.path, IMAGES) == landing.files
    for path in IMAGES:
        status, headers, _ = fetch(f"{PROD_URL}/{path}", connect_to=landing.listen)
        assert (status, headers.get("Content-Length")) == (200, "3000"), path
    status, _, body = fetch(f"{PROD_URL}/", connect_to=landing.listen)
    assert status == 200 and 'content="Joomla!' in body and f"{landing.prod_db}:2 users" in body, body[:300]


def test_the_promotion_is_recorded_and_a_second_run_adds_nothing(landing, promoted):
    done, _, _ = promoted
    op = landing.orch.orch_json("log", "--task", TASK, "--action", "promote-content", "--steps")[-1]
    assert op["status"] == "ok"
    assert len([a for a in op["artifacts"] if a["kind"] == "content-item"]) == len(done["items"]) == 4
    steps = [s["name"] for s in op["steps"]]
    assert steps.index("mandatory production backup") < steps.index("write the rows in one transaction")
    assert "health check" in steps
    again = landing.orch.orch_json("promote", SITE, "--from", ENV, "--content-only", "--task", TASK, "--dry-run")
    assert not [i for i in again["items"] if i["status"] == "added"], again["items"]
    assert {(i["kind"], i["id"]) for i in again["earlier"]} == {
        ("category", str(landing.built["cat"])),
        ("article", str(landing.built["article"])),
        ("menu-item", str(landing.built["item"])),
        ("module", str(landing.built["module"])),
    }
