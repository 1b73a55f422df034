"""staging.clashes: a new copy must not share a docroot (or a folder inside one), a database, a vhost or a basic-auth
file with another site's or another name's copy."""

from __future__ import annotations

import pytest

from orchestrator.backends.envs.staging import clashes

ROW = {
    "site": "shop",
    "name": "t1",
    "host": "stage1",
    "path": "/srv/stage/t1",
    "database": {"engine": "mysql", "name": "shop_t1", "user": "shop_t1", "host": "db", "port": 3306},
    "details": {"vhost": "/etc/nginx/sites/orch-shop-t1.conf", "auth_file": "/srv/stage/.orch-shop.t1.htpasswd"},
}
NEW = {
    "site": "blog",
    "name": "t1",
    "host": "stage1",
    "path": "/srv/stage/blog-t1",
    "database": {"engine": "mysql", "name": "blog_t1", "user": "blog_t1", "host": "db", "port": 3306},
    "vhost": "/etc/nginx/sites/orch-blog-t1.conf",
    "auth_file": "/srv/stage/.orch-blog.t1.htpasswd",
}


def _clashes(rows, **changes):
    new = NEW | changes
    return clashes(
        rows, new["site"], new["name"], new["host"], new["path"], new["database"], new["vhost"], new["auth_file"]
    )


def test_a_copy_with_its_own_everything_clashes_with_nothing():
    assert _clashes([ROW]) == []


def test_making_the_same_copy_again_is_no_clash():
    assert (
        _clashes(
            [ROW],
            site="shop",
            path=ROW["path"],
            database=ROW["database"],
            vhost=ROW["details"]["vhost"],
            auth_file=ROW["details"]["auth_file"],
        )
        == []
    )


@pytest.mark.parametrize(
    "changes, what",
    [
        ({"path": "/srv/stage/t1"}, "docroot"),  # a template without {site}
        ({"path": "/srv/stage/t1/"}, "docroot"),
        ({"path": "/srv/stage/t1/sub"}, "docroot"),  # inside the other copy: its destroy deletes ours
        ({"path": "/srv/stage"}, "docroot"),  # around it: our create deletes theirs
        ({"database": ROW["database"] | {"user": "x"}}, "database"),
        ({"vhost": "/etc/nginx/sites/orch-shop-t1.conf"}, "vhost"),  # site a-b/env c vs site a/env b-c
        ({"auth_file": "/srv/stage/.orch-shop.t1.htpasswd"}, "basic-auth file"),
    ],
)
def test_sharing_a_docroot_database_vhost_or_auth_file_is_a_clash(changes, what):
    assert _clashes([ROW], **changes) == [f"its {what} with shop/t1"]


@pytest.mark.parametrize(
    "changes",
    [
        # the same paths on another machine
        {
            "host": "stage2",
            "path": ROW["path"],
            "vhost": ROW["details"]["vhost"],
            "auth_file": ROW["details"]["auth_file"],
        },
        {"path": "/srv/stage/t10"},  # a prefix, not a parent
        {"database": ROW["database"] | {"port": 3307}},  # the same name on another server
        {"database": ROW["database"] | {"host": "db2"}},
        {"database": ROW["database"] | {"engine": "postgresql"}},
        {"database": None},
    ],
)
def test_the_same_names_elsewhere_are_no_clash(changes):
    assert _clashes([ROW], **changes) == []


def test_sqlite_databases_are_compared_through_their_docroot_only():
    sqlite = {"engine": "sqlite", "name": None, "user": None, "host": None, "port": None}
    assert _clashes([ROW | {"database": sqlite}], database=sqlite) == []


def test_a_copy_in_or_around_a_production_docroot_or_on_its_database_clashes_with_it():
    production = {
        "site": "blog",
        "name": "production",
        "host": "stage1",
        "path": "/srv/stage/blog",
        "database": {"engine": "mysql", "name": "shop_t1", "host": "db", "port": 3306},
    }
    assert _clashes([production], path="/srv/stage/blog") == ["its docroot with blog/production"]
    assert _clashes([production], database=production["database"]) == ["its database with blog/production"]
