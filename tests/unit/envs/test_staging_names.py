"""The staging name and derive helpers (backends/envs/staging.py): what a copy is called, where it lives, which
database, user, URL and basic-auth file it gets, and which names are refused. Sites come from a real inventory."""

from __future__ import annotations

import json

import pytest

from orchestrator.backends.envs import staging as model
from orchestrator.config import load_inventory
from orchestrator.errors import Refused, UsageError


def _site(tmp_path, staging: dict | None, name: str = "shop", extra_envs: dict | None = None):
    production = {
        "host": "web1",
        "path": "/var/www/shop",
        "url": "https://shop.example",
        "database": {"engine": "mysql", "name": "shop", "user": "shop", "password": "pw-prod"},
    }
    envs = {"production": production, **({"staging": staging} if staging else {}), **(extra_envs or {})}
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "sites" / f"{name}.yaml").write_text(json.dumps({"name": name, "environments": envs}))
    (tmp_path / "inventory.yaml").write_text(
        json.dumps(
            {
                "storage": {"local": {"type": "local", "path": "/backups", "password": "pw-restic"}},
                "hosts": {"web1": {"address": "192.0.2.1"}, "stage1": {"address": "192.0.2.2"}},
                "defaults": {"backup": {"storage": "local"}},
            }
        )
    )
    return load_inventory(tmp_path / "inventory.yaml").site(name)


TEMPLATE = {
    "host": "stage1",
    "path": "/srv/stage/{site}",
    "url": "https://{env}.{site}.stage.example",
    "database": {"engine": "mysql", "name": "mysql", "user": "orch_admin", "password": "pw-admin"},
}


@pytest.mark.parametrize("task, expected", [("14883", "t14883"), ("ABC-7", "tabc-7"), ("x", "tx")])
def test_the_default_name_is_t_and_the_task(task, expected):
    assert model.default_name(task) == expected


@pytest.mark.parametrize("name", ["t14883", "t1", "a", "0", "t14883-b", "a" * 31])
def test_a_plain_label_is_a_valid_name(tmp_path, name):
    assert model.check_name(_site(tmp_path, TEMPLATE), name) == name


@pytest.mark.parametrize(
    "name",
    ["", "T14883", "-t1", "t_1", "t.1", "a" * 32, "../x", "x/y", "t1;rm -rf /", "$(id)", "t1\n", "t1 ", "тест", "t1\0"],
)
def test_a_name_that_is_not_a_plain_label_is_a_usage_error(tmp_path, name):
    with pytest.raises(UsageError, match="lowercase letters, digits and dashes"):
        model.check_name(_site(tmp_path, TEMPLATE), name)


def test_production_and_environments_configured_as_production_are_refused(tmp_path):
    live = {"host": "web1", "path": "/var/www/live", "production": True}
    site = _site(tmp_path, TEMPLATE, extra_envs={"live": live})
    for name in ("production", "live"):
        with pytest.raises(Refused, match="production environment"):
            model.check_name(site, name)


def test_the_template_itself_is_not_a_copy_name(tmp_path):
    with pytest.raises(UsageError, match="template"):
        model.check_name(_site(tmp_path, TEMPLATE), "staging")


def test_a_site_without_a_template_cannot_have_copies(tmp_path):
    with pytest.raises(UsageError, match="no environments.staging"):
        model.derive(_site(tmp_path, None), "t1")


def test_a_template_database_without_the_admin_password_is_a_usage_error(tmp_path):
    template = json.loads(json.dumps(TEMPLATE))
    del template["database"]["password"]
    with pytest.raises(UsageError, match="needs the admin password"):
        model.derive(_site(tmp_path, template), "t1")


@pytest.mark.parametrize(
    "path, url, expected_path, expected_url",
    [
        (
            "/srv/stage/{site}",
            "https://{env}.{site}.stage.example",
            "/srv/stage/shop/t1",
            "https://t1.shop.stage.example",
        ),
        (
            "/srv/stage/{site}-{env}",
            "http://stage.example:8080/{site}/{env}",
            "/srv/stage/shop-t1",
            "http://stage.example:8080/shop/t1",
        ),
        ("/srv/stage", "https://{site}.stage.example", "/srv/stage/t1", "https://t1.shop.stage.example"),
        ("/srv/stage/", "https://stage.example:8443", "/srv/stage/t1", "https://t1.stage.example:8443"),
        ("/srv/{env}/{site}/{env}", None, "/srv/t1/shop/t1", None),
    ],
)
def test_derive_fills_path_and_url_from_the_template(tmp_path, path, url, expected_path, expected_url):
    template = TEMPLATE | {"path": path, "url": url}
    if url is None:
        del template["url"]
    staged = model.derive(_site(tmp_path, template), "t1")
    assert (staged.env.path, staged.env.url, staged.env.production) == (expected_path, expected_url, False)


def test_derive_names_database_and_user_after_site_and_env_and_keeps_the_admin_account(tmp_path):
    staged = model.derive(_site(tmp_path, TEMPLATE, name="my-shop"), "t14883-b")
    db = staged.env.database
    assert (db.name, db.user, db.host, db.engine) == ("my_shop_t14883_b", "my_shop_t14883_b", None, "mysql")
    assert staged.admin_db.user == "orch_admin" and staged.admin_db.password.reveal() == "pw-admin"


@pytest.mark.parametrize(
    "site, name, expected",
    [
        ("shop", "t1", "shop_t1"),
        ("my-shop", "t-1", "my_shop_t_1"),
        ("Shop", "t1", "shop_t1"),
        ("a" * 60, "t14883", ("a" * 60 + "_t14883")[:63]),  # PostgreSQL's 63-byte identifier limit
    ],
)
def test_db_ident_is_lowercase_with_underscores_and_fits_postgresql(site, name, expected):
    ident = model.db_ident(site, name)
    assert ident == expected and len(ident) <= 63


def test_derived_passwords_are_stable_per_site_env_and_purpose_and_never_the_admin_password(tmp_path):
    site = _site(tmp_path, TEMPLATE)
    one, again, other = model.derive(site, "t1"), model.derive(site, "t1"), model.derive(site, "t2")
    assert one.auth_password.reveal() == again.auth_password.reveal() != other.auth_password.reveal()
    assert one.env.database.password.reveal() == again.env.database.password.reveal()
    assert one.env.database.password.reveal() != one.auth_password.reveal()
    assert "pw-admin" not in (one.auth_password.reveal(), one.env.database.password.reveal())
    assert len(one.auth_password.reveal()) == 24


def test_another_site_with_the_same_env_name_gets_other_passwords(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shop = model.derive(_site(tmp_path / "a", TEMPLATE), "t1")
    blog = model.derive(_site(tmp_path / "b", TEMPLATE, name="blog"), "t1")
    assert shop.auth_password.reveal() != blog.auth_password.reveal()


@pytest.mark.parametrize(
    "site, path, name, expected",
    [
        ("shop", "/srv/stage/shop/t1", "t1", "/srv/stage/shop/.orch-shop.t1.htpasswd"),
        ("shop", "/srv/stage/shop-t1/", "t1", "/srv/stage/.orch-shop.t1.htpasswd"),
        # the copies that used to share `.orch-c.htpasswd` (same folder, same env name) no longer do, and a dash
        # moved between site and env name cannot make two sites meet: `.` is in neither name
        ("a-b", "/srv/stage/a-b-c", "c", "/srv/stage/.orch-a-b.c.htpasswd"),
        ("a", "/srv/stage/a-b-c", "b-c", "/srv/stage/.orch-a.b-c.htpasswd"),
    ],
)
def test_the_basic_auth_file_is_named_after_site_and_env(site, path, name, expected):
    assert model.auth_file_path(site, path, name) == expected


def test_derive_gives_each_site_its_own_basic_auth_file_in_a_shared_folder(tmp_path):
    template = TEMPLATE | {"path": "/srv/stage/{site}-{env}"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shop = model.derive(_site(tmp_path / "a", template), "t1")
    blog = model.derive(_site(tmp_path / "b", template, name="blog"), "t1")
    assert shop.auth_file == "/srv/stage/.orch-shop.t1.htpasswd"
    assert blog.auth_file == "/srv/stage/.orch-blog.t1.htpasswd"
