"""The e2e fleet: a MariaDB-backed site on web1 and a PostgreSQL-backed site on stage1, backed up to S3."""

from __future__ import annotations

import json

import pytest
from fleet import Fleet, make_tree, new_password, orch_env
from testbed.inventory import host_entry, s3_secrets, s3_storage, web_host_entry

SHOP_ROWS = 250
BLOG_ROWS = 120


def seed_shop(mariadb, name: str, user: str, password: str) -> None:
    mariadb.create_database(name, user, password)
    # a scratch-database grant for `orch verify` drills (production users rarely may CREATE DATABASE)
    mariadb.sql(f"GRANT ALL ON `orch\\_verify\\_%`.* TO '{user}'@'%'")
    mariadb.sql(f"GRANT ALL ON `orch\\_verify\\_%`.* TO '{user}'@'localhost'")
    mariadb.sql(
        "CREATE TABLE wp_options (option_id INT PRIMARY KEY AUTO_INCREMENT, option_name VARCHAR(191), "
        "option_value LONGTEXT) ENGINE=InnoDB",
        name,
    )
    mariadb.sql(
        "CREATE TABLE wp_users (ID INT PRIMARY KEY AUTO_INCREMENT, user_email VARCHAR(100), "
        "display_name VARCHAR(250)) ENGINE=InnoDB",
        name,
    )
    values = ",".join(f"('opt{i}', 'a:1:{{s:3:\"url\";s:20:\"https://shop.example\";}}')" for i in range(SHOP_ROWS))
    mariadb.sql(f"INSERT INTO wp_options (option_name, option_value) VALUES {values}", name)
    users = ",".join(f"('client{i}@mail.example', 'Клиент {i}')" for i in range(40))
    mariadb.sql(f"INSERT INTO wp_users (user_email, display_name) VALUES {users}", name)


def seed_blog(postgres, name: str, user: str, password: str) -> None:
    postgres.create_database(name, user, password)
    postgres.sql(f"ALTER ROLE {user} CREATEDB")
    postgres.sql(
        f"SET ROLE {user}; CREATE TABLE posts (id serial PRIMARY KEY, title text, body text); "
        f"INSERT INTO posts (title, body) SELECT 'post ' || g, repeat('lorem ', 50) "
        f"FROM generate_series(1, {BLOG_ROWS}) g;",
        name,
    )


def base_inventory(ssh_hosts, s3, state_dir) -> dict:
    return {
        "oplog": f"sqlite:///{state_dir}/oplog.db",
        "storage": {"offsite": s3_storage(s3, "agency-backups", "T")},
        "hosts": {name: host_entry(h) for name, h in ssh_hosts.items()},
        "defaults": {"backup": {"storage": "offsite", "exclude": ["wp-content/cache"], "retention": {"daily": 7}}},
    }


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, ssh_hosts, mariadb, postgres, s3) -> Fleet:
    root = tmp_path_factory.mktemp("fleet")
    state = root / "state"
    shop_pw, blog_pw = new_password(), new_password()
    seed_shop(mariadb, "shop", "shop", shop_pw)
    seed_blog(postgres, "blog", "blog", blog_pw)
    web1, stage1 = ssh_hosts["web1"], ssh_hosts["stage1"]
    # unique per session: the host users' homes outlive a session and may be shared by concurrent ones
    run = root.name + "-" + new_password()[3:9]
    shop_path, blog_path = f"{web1.home}/sites-{run}/shop", f"{stage1.home}/sites-{run}/blog"
    make_tree(web1, shop_path)
    make_tree(stage1, blog_path, files=10)
    env = orch_env(state, **s3_secrets(s3, "T"), T_SHOP_PW=shop_pw, T_BLOG_PW=blog_pw)
    fleet = Fleet(root, env, ssh_hosts)
    fleet.sites = {
        "shop": {
            "name": "shop",
            "playbook": "wordpress",
            "task": "10001",
            "environments": {
                "production": {
                    "host": "web1",
                    "path": shop_path,
                    "url": "https://shop.example",
                    "database": {
                        "engine": "mysql",
                        "name": "shop",
                        "user": "shop",
                        "password": {"env": "T_SHOP_PW"},
                        "host": mariadb.host,
                        "port": mariadb.port,
                    },
                }
            },
        },
        "blog": {
            "name": "blog",
            "playbook": "generic",
            "task": "10002",
            "environments": {
                "production": {
                    "host": "stage1",
                    "path": blog_path,
                    "url": "https://blog.example",
                    "database": {
                        "engine": "postgresql",
                        "name": "blog",
                        "user": "blog",
                        "password": {"env": "T_BLOG_PW"},
                        "host": postgres.host,
                        "port": postgres.port,
                    },
                }
            },
        },
    }
    fleet.base = base_inventory(ssh_hosts, s3, state)
    fleet.write_inventory(fleet.base, fleet.sites)
    fleet.secrets = [shop_pw, blog_pw, env["T_RESTIC_PW"], s3.secret_key]
    return fleet


@pytest.fixture(scope="session")
def wp_fleet(fleet, wordpress, stage1_web, mariadb, ssh_hosts, tmp_path_factory):
    """The fleet inventory plus site `wp`: production = the real WordPress, staging template on stage1."""
    admin_pw = "admin-" + wordpress.db_password[-8:]
    mariadb.sql(f"CREATE USER IF NOT EXISTS 'orch_admin'@'%' IDENTIFIED BY '{admin_pw}'")
    mariadb.sql("GRANT ALL PRIVILEGES ON *.* TO 'orch_admin'@'%' WITH GRANT OPTION")
    stage1, nginx = ssh_hosts["stage1"], stage1_web.nginx
    inventory = json.loads(json.dumps(fleet.base))
    inventory["hosts"]["stage1"] = web_host_entry(stage1, stage1_web)
    port = nginx.listen.rsplit(":", 1)[1]
    site = {
        "name": "wp",
        "playbook": "wordpress",
        "task": "10010",
        "environments": {
            "production": {
                "host": "web1",
                "path": str(wordpress.path),
                "url": wordpress.url,
                "database": {
                    "engine": "mysql",
                    "name": wordpress.db_name,
                    "user": wordpress.db_user,
                    "password": {"env": "T_WP_PW"},
                    "host": mariadb.host,
                    "port": mariadb.port,
                },
            },
            "staging": {
                "host": "stage1",
                "path": f"{stage1.home}/stage-{tmp_path_factory.getbasetemp().name}",
                "url": f"http://{{env}}.wp.stage.test:{port}",
                "database": {
                    "engine": "mysql",
                    "name": "mysql",
                    "user": "orch_admin",
                    "password": {"env": "T_WP_ADMIN_PW"},
                    "host": mariadb.host,
                    "port": mariadb.port,
                },
            },
        },
    }
    wp = Fleet(
        tmp_path_factory.mktemp("wpfleet"),
        fleet.env | {"T_WP_PW": wordpress.db_password, "T_WP_ADMIN_PW": admin_pw},
        fleet.hosts,
    )
    wp.write_inventory(inventory, {"wp": site})
    wp.wordpress, wp.mariadb, wp.stage1 = wordpress, mariadb, stage1
    wp.orch("backup", "wp", "--task", "14883")
    wp.site = site
    return wp
