"""load_inventory: every problem of every file reported at once, one clear line each; defaults merged."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.config import load_inventory
from orchestrator.errors import InventoryError

INVENTORY = """\
storage:
  offsite: {type: local, path: /backups, password: pw-offsite}
hosts:
  web1: {address: 192.0.2.1}
  stage1: {address: 192.0.2.2, port: 2222}
defaults:
  backup:
    schedule: "0 3 * * *"
    storage: offsite
    retention: {daily: 7, weekly: 4}
    exclude: [cache/, tmp/]
"""

SITE = """\
name: shop
environments:
  production:
    host: web1
    path: /var/www/shop
    database: {engine: mysql, name: shop, user: shop, password: {env: SHOP_DB_PW}}
  staging: {host: stage1, path: /var/www/stage/shop}
"""


def write_inventory(root: Path, inventory: str = INVENTORY, **sites: str) -> Path:
    """Given a folder, the inventory file's text and site texts by file stem, write them; return the inventory path."""
    (root / "sites").mkdir(exist_ok=True)
    for stem, text in sites.items():
        (root / "sites" / f"{stem}.yaml").write_text(textwrap.dedent(text))
    path = root / "inventory.yaml"
    path.write_text(textwrap.dedent(inventory))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return caught.value.problems


def test_a_valid_inventory_loads_with_its_sites(tmp_path):
    inventory = load_inventory(write_inventory(tmp_path, shop=SITE))

    assert list(inventory.sites) == ["shop"]
    assert inventory.site("shop").env("staging").host == "stage1"
    assert inventory.hosts["stage1"].port == 2222


def test_problems_in_two_files_are_all_reported_at_once(tmp_path):
    inventory = INVENTORY.replace("web1: {address: 192.0.2.1}", "web1: {address: 192.0.2.1, prot: 22}")
    site = SITE.replace("engine: mysql", "engine: mysqll")
    path = write_inventory(tmp_path, inventory, shop=site, blog="name: blog\n")

    assert problems_of(path) == [
        "inventory.yaml: hosts.web1.prot: unknown key (allowed: address, connector, host_key, identity_file, "
        "known_hosts, max_parallel, nightly_window, port, restic, stall_timeout, user, web)",
        "sites/blog.yaml: missing required key 'environments'",
        "sites/shop.yaml: environments.production.database.engine: 'mysqll' is not one of "
        "['mysql', 'postgresql', 'sqlite']",
    ]


def test_a_wrong_enum_value_is_one_line_with_file_key_path_and_choices(tmp_path):
    site = SITE.replace("name: shop", "name: shinglas").replace("engine: mysql", "engine: mysqll")
    path = write_inventory(tmp_path, shinglas=site)

    assert problems_of(path) == [
        "sites/shinglas.yaml: environments.production.database.engine: 'mysqll' is not "
        "one of ['mysql', 'postgresql', 'sqlite']"
    ]


def test_an_unknown_key_is_named_with_the_allowed_ones(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("database:", "databse:"))

    assert problems_of(path) == [
        "sites/shop.yaml: environments.production.databse: unknown key (allowed: database, "
        "docker, host, path, production, target, url)"
    ]


def test_a_missing_required_key_is_named(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("host: web1", "url: https://shop.example"))

    assert problems_of(path) == ["sites/shop.yaml: environments.production: missing required key 'host'"]


def test_a_yaml_syntax_error_gives_file_line_and_column(tmp_path):
    broken = "name: shop\nenvironments:\n  production:\n    host: web1\n     path: /var/www/shop\n"
    path = write_inventory(tmp_path, shop=broken)

    (problem,) = problems_of(path)  # libyaml says "in this context", PyYAML's own parser "here"
    assert problem.startswith("sites/shop.yaml: line 5, column 10: mapping values are not allowed ")


def test_a_duplicate_key_is_an_error_not_a_silent_override(tmp_path):
    path = write_inventory(tmp_path, shop=SITE + "name: shop2\n")

    assert problems_of(path) == ["sites/shop.yaml: line 8, column 1: duplicate key 'name'"]


def test_an_empty_site_file_is_reported(tmp_path):
    assert problems_of(write_inventory(tmp_path, shop="")) == ["sites/shop.yaml: the file is empty"]


def test_a_wrong_type_is_reported_without_echoing_the_value(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("password: {env: SHOP_DB_PW}", "password: 918273"))

    assert problems_of(path) == [
        "sites/shop.yaml: environments.production.database.password: expected a string or a mapping, got an integer"
    ]


def test_a_secret_reference_must_have_exactly_one_key(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("{env: SHOP_DB_PW}", "{env: A, file: /b}"))

    assert problems_of(path) == [
        "sites/shop.yaml: environments.production.database.password: expected exactly one of: command, env, file"
    ]


def test_a_malformed_value_is_shown_with_an_example_of_the_right_form(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("path: /var/www/shop", "path: var/www/shop"))

    assert problems_of(path) == [
        "sites/shop.yaml: environments.production.path: 'var/www/shop' does not match the "
        "expected form, e.g. '/var/www/shinglas'"
    ]


def test_a_key_of_the_other_storage_type_is_refused(tmp_path):
    inventory = INVENTORY.replace("path: /backups,", "path: /backups, bucket: b,")

    assert problems_of(write_inventory(tmp_path, inventory, shop=SITE)) == [
        "inventory.yaml: storage.offsite.bucket: not used with the `type` set here"
    ]


def test_an_environment_on_an_unknown_host_is_reported_with_its_key_path(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("host: stage1", "host: stage9"))

    assert problems_of(path) == [
        "sites/shop.yaml: environments.staging.host: unknown host 'stage9' (known: stage1, web1)"
    ]


def test_an_unknown_storage_is_reported_where_it_is_written(tmp_path):
    inventory = INVENTORY.replace("storage: offsite", "storage: offsit")
    site = SITE + "backup: {storage: cloud}\n"

    assert problems_of(write_inventory(tmp_path, inventory, shop=site)) == [
        "inventory.yaml: defaults.backup.storage: unknown storage 'offsit' (known: offsite)",
        "sites/shop.yaml: backup.storage: unknown storage 'cloud' (known: offsite)",
    ]


def test_enabled_backups_need_a_storage_from_the_site_or_the_defaults(tmp_path):
    inventory = INVENTORY.replace("    storage: offsite\n", "")
    path = write_inventory(
        tmp_path, inventory, shop=SITE, old=SITE.replace("shop", "old") + "backup: {enabled: false}\n"
    )

    assert problems_of(path) == [
        "sites/shop.yaml: backup.storage: not set, here or in the inventory's "
        "defaults.backup.storage (or set backup.enabled: false)"
    ]


def test_a_site_name_must_match_its_file_name(tmp_path):
    path = write_inventory(tmp_path, shop=SITE.replace("name: shop", "name: shop-old"))

    assert problems_of(path) == ["sites/shop.yaml: name: 'shop-old' does not match the file name (expected 'shop')"]


def test_a_yml_site_file_is_an_error_rather_than_a_site_silently_not_backed_up(tmp_path):
    path = write_inventory(tmp_path, shop=SITE)
    (tmp_path / "sites" / "blog.yml").write_text(SITE.replace("shop", "blog"))

    assert problems_of(path) == ["sites/blog.yml: site files must be named *.yaml"]


def test_a_missing_inventory_file_is_named(tmp_path):
    assert problems_of(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: inventory file not found"]


def test_a_missing_sites_folder_is_named(tmp_path):
    path = write_inventory(tmp_path, INVENTORY + "sites: clients/\n")

    assert problems_of(path) == ["clients/: sites folder not found (see `sites` in the inventory file)"]


def test_defaults_merge_under_the_site_which_wins_key_by_key(tmp_path):
    site = SITE + "backup: {retention: {daily: 14}, exclude: [var/], max_age: 50}\n"
    backup = load_inventory(write_inventory(tmp_path, shop=site)).site("shop").backup

    assert backup.retention == {"daily": 14, "weekly": 4}  # nested: the site's daily, the default's weekly
    assert backup.exclude == ["var/"]  # lists are replaced, not concatenated
    assert (backup.schedule, backup.storage, backup.max_age_hours) == ("0 3 * * *", "offsite", 50.0)


def test_a_site_does_not_share_mutable_defaults_with_another(tmp_path):
    inventory = load_inventory(write_inventory(tmp_path, shop=SITE, blog=SITE.replace("shop", "blog")))

    inventory.site("shop").backup.exclude.append("mutated/")
    assert inventory.site("blog").backup.exclude == ["cache/", "tmp/"]
    assert inventory.defaults["backup"]["exclude"] == ["cache/", "tmp/"]


def test_schema_defaults_are_filled_in(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCH_STATE_DIR", raising=False)
    inventory = load_inventory(write_inventory(tmp_path, shop=SITE))
    site, web1 = inventory.site("shop"), inventory.hosts["web1"]

    assert (web1.connector, web1.port, web1.max_parallel, web1.restic) == ("ssh", 22, 2, "restic")
    assert (site.playbook, site.layout, site.task, site.backup.enabled) == ("generic", "inplace", None, True)
    assert inventory.scheduler.max_parallel == 4 and inventory.scheduler.misfire_grace_seconds == 21600
    assert inventory.oplog_url == f"sqlite:///{Path.home()}/.local/state/orch/oplog.db"


def test_only_the_environment_named_production_is_production_by_default(tmp_path):
    site = SITE.replace("staging: {host: stage1,", "staging: {production: true, host: stage1,")
    site += "  preview: {host: stage1, path: /var/www/preview}\n"
    envs = load_inventory(write_inventory(tmp_path, shop=site)).site("shop").environments

    assert {name: env.production for name, env in envs.items()} == {
        "production": True,
        "staging": True,
        "preview": False,
    }


def test_a_task_number_is_kept_as_a_string(tmp_path):
    site = load_inventory(write_inventory(tmp_path, shop=SITE + "task: 10001\n")).site("shop")

    assert site.task == "10001"


def test_notify_keys_named_on_stay_strings_not_yaml_1_1_booleans(tmp_path):
    inventory = INVENTORY + "notify:\n  - {type: webhook, url: https://hooks.example/x, on: [failure]}\n"
    notify = load_inventory(write_inventory(tmp_path, inventory, shop=SITE)).notify

    assert notify == [{"type": "webhook", "url": "https://hooks.example/x", "on": ["failure"]}]


def test_a_relative_sqlite_oplog_is_relative_to_the_inventory_folder(tmp_path):
    inventory = load_inventory(write_inventory(tmp_path, INVENTORY + "oplog: sqlite:///state/oplog.db\n"))

    assert inventory.oplog_url == f"sqlite:///{tmp_path}/state/oplog.db"


def test_orch_state_dir_moves_the_default_oplog(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "state"))

    assert load_inventory(write_inventory(tmp_path)).oplog_url == f"sqlite:///{tmp_path}/state/oplog.db"


def test_unknown_site_and_environment_errors_list_the_known_names(tmp_path):
    inventory = load_inventory(write_inventory(tmp_path, shop=SITE))

    with pytest.raises(InventoryError, match=r"^unknown site 'shob' \(known: shop\)$"):
        inventory.site("shob")
    with pytest.raises(
        InventoryError,
        match=r"^site 'shop': unknown environment 'prod' "
        r"\(known: production, staging\)$",
    ):
        inventory.site("shop").env("prod")


def test_partial_loading_keeps_the_valid_sites_and_lists_each_broken_file_by_site(tmp_path):
    path = write_inventory(
        tmp_path,
        shop=SITE,
        blog="name: blog\nenvironments: {production: [unclosed\n",
        lost=SITE.replace("shop", "lost").replace("host: web1", "host: nowhere"),
    )
    (tmp_path / "sites" / "old.yml").write_text(SITE)

    inventory = load_inventory(path, partial=True)

    assert list(inventory.sites) == ["shop"]
    assert sorted(inventory.broken) == ["blog", "lost", "old"]
    assert inventory.broken["lost"] == [
        "sites/lost.yaml: environments.production.host: unknown host 'nowhere' (known: stage1, web1)"
    ]
    assert inventory.broken["old"] == ["sites/old.yml: site files must be named *.yaml"]
    with pytest.raises(InventoryError) as caught:
        inventory.site("blog")
    assert caught.value.problems[0].startswith("sites/blog.yaml: line 3, column 1: ")
    assert inventory.problems == [*inventory.broken["blog"], *inventory.broken["lost"], *inventory.broken["old"]]
    assert sorted(problems_of(path)) == sorted(inventory.problems), "strict loading still refuses it all"


def test_partial_loading_still_refuses_a_broken_inventory_file(tmp_path):
    path = write_inventory(tmp_path, INVENTORY.replace("storage: offsite\n", "storage: elsewhere\n"), shop=SITE)
    with pytest.raises(InventoryError, match="unknown storage 'elsewhere'"):
        load_inventory(path, partial=True)


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    bomb = ["a0: &a0 [" + ", ".join(['"lol"'] * 10) + "]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]  # 10**12 strings
    path = write_inventory(tmp_path, shop="name: shop\nsanitize:\n" + "\n".join(f"  {line}" for line in bomb))
    assert problems_of(path) == [
        "sites/shop.yaml: too large once its aliases are expanded (over 50000 nodes): "
        "write the values out, or use fewer aliases"
    ]


def test_a_few_ordinary_aliases_and_merge_keys_still_load(tmp_path):
    site = SITE.replace("    database: {engine: mysql", "    database: &db {engine: mysql")
    site += "  test: {host: stage1, path: /var/www/test, database: *db}\n"
    site += "  demo: {host: stage1, path: /var/www/demo, database: {<<: *db, name: shop_demo}}\n"
    envs = load_inventory(write_inventory(tmp_path, shop=site)).site("shop").environments
    assert envs["test"].database.name == "shop" and envs["demo"].database.name == "shop_demo"
    assert envs["demo"].database.password.describe() == "environment variable SHOP_DB_PW"


def test_a_recursive_alias_a_huge_file_and_non_utf8_text_are_one_line_each(tmp_path):
    path = write_inventory(tmp_path, a="a: &x [1, *x]\n", b="x: " + "y" * (1024 * 1024) + "\n")
    (tmp_path / "sites" / "c.yaml").write_bytes(b"name: c\nenvironments: caf\xe9\n")
    (tmp_path / "sites" / "d.yaml").write_text("[" * 100_000)
    (tmp_path / "sites" / "e.yaml").write_text("".join("  " * i + f"k{i}:\n" for i in range(500)) + "  " * 500 + "v\n")
    *problems, deep, block = problems_of(path)
    assert problems == [
        "sites/a.yaml: line 1, column 4: an alias refers to a value that contains it",
        "sites/b.yaml: larger than 1024 KiB: not an inventory file",
        "sites/c.yaml: line 2: not UTF-8 text (byte 0xe9)",
    ]
    assert block == "sites/e.yaml: nested deeper than 64 levels"
    assert deep.startswith("sites/d.yaml: ") and "nest" in deep  # libyaml's own limit, or our RecursionError
