"""Docker copies end to end: the testbed's real WordPress copied into containers on a private Docker engine,
reached over its unix socket (behind the shared proxy) and over SSH (a published port)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from contextlib import closing
from urllib.parse import urlencode

import pytest
import yaml
from fleet import ORCH, Fleet, tree_checksums
from testbed.ports import free_port

from orchestrator.backends.envs.web import fetch

pytestmark = pytest.mark.e2e

TASK = "13013"
SSH_TASK = "13014"
KILLED = "t13kill"


def _prod_state(fleet):
    dump = subprocess.run(
        [
            "mariadb-dump",
            "-S",
            str(fleet.mariadb.socket),
            "--skip-dump-date",
            "--skip-comments",
            fleet.wordpress.db_name,
        ],
        capture_output=True,
        check=True,
    ).stdout
    return dump, tree_checksums(fleet.wordpress.host, str(fleet.wordpress.path), exclude="wp-content/cache")


def _docker_block(engine, url: str, **extra) -> dict:
    images = engine.images
    return {
        "url": url,
        "address": "127.0.0.1",
        "publish_address": "127.0.0.1",
        "images": {
            "mysql": images["mariadb"],
            "php": images["php-fpm"],
            "web": images["nginx"],
            "proxy": images["nginx"],
            "tools": images["tools"],
        },
        "limits": {"database": {"memory": "512m"}, "php": {"memory": "384m", "cpus": 1.5}, "web": {"memory": "128m"}},
        **extra,
    }


def _docker_fleet(wp_fleet, root, docker_host: dict) -> Fleet:
    """The wp_fleet inventory with a docker host `review` and site wp's staging template targeting it."""
    inventory = yaml.safe_load(wp_fleet.inventory.read_text())
    inventory["docker"] = {"review": docker_host}
    site = json.loads(json.dumps(wp_fleet.site))
    site["environments"]["staging"] = {
        "target": "docker",
        "docker": {"host": "review"},
        "database": {"engine": "mysql", "password": {"env": "T_WP_ADMIN_PW"}},
    }
    site["sanitize"] = {"wp_users.display_name": "fixed:Тест Тестович"}
    fleet = Fleet(root, wp_fleet.env, wp_fleet.hosts)
    fleet.write_inventory(inventory, {"wp": site})
    fleet.wordpress, fleet.mariadb = wp_fleet.wordpress, wp_fleet.mariadb
    return fleet


@pytest.fixture(scope="module")
def proxied(wp_fleet, docker_engine, tmp_path_factory):
    """A docker fleet on the unix socket with a review domain: copies behind the proxy."""
    port = free_port()
    fleet = _docker_fleet(
        wp_fleet,
        tmp_path_factory.mktemp("dockerfleet"),
        _docker_block(docker_engine, docker_engine.url, domain="review.test", proxy_port=port),
    )
    fleet.proxy_port = port
    return fleet


@pytest.fixture(scope="module")
def copy(proxied):
    before = _prod_state(proxied)
    started = time.monotonic()
    # --from fresh: other modules leave backups of a changed production behind (a refreshed title...)
    result = proxied.orch_json("staging", "create", "wp", "--task", TASK, "--from", "fresh")
    result["seconds"] = time.monotonic() - started
    return result, before


def _get(fleet_port: int, result, path="/", auth=True):
    return fetch(
        result["url"].rstrip("/") + path,
        connect_to=f"127.0.0.1:{fleet_port}",
        auth=(result["basic_auth"]["user"], result["basic_auth"]["password"]) if auth else None,
    )


def _client(engine):
    return closing(engine.client())


def _labelled(engine, site: str, env: str) -> dict[str, list[str]]:
    """Every container, volume and network carrying the copy's labels, and the proxy's routes for it."""
    filters = {"label": [f"orch.site={site}", f"orch.env={env}"]}
    with _client(engine) as client:
        found = {
            "containers": [c.name for c in client.containers.list(all=True, filters=filters)],
            "volumes": [v.name for v in client.volumes.list(filters=filters)],
            "networks": [n.name for n in client.networks.list(filters=filters)],
        }
        proxies = client.containers.list(filters={"name": "orch-proxy"})
        routes = proxies[0].exec_run(["ls", "/etc/nginx/conf.d"]).output.decode().split() if proxies else []
    found["routes"] = [r for r in routes if f"-{site}--{env}." in r]
    return found


def _db_query(engine, result, sql: str) -> str:
    """Run SQL in the copy's database container as the copy's database user (password derived like orch does)."""
    from orchestrator.backends.envs.staging import derive_secret
    from orchestrator.config import load_inventory

    tmpl = load_inventory(result["inventory"]).site("wp").environments["staging"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("T_WP_ADMIN_PW", result["admin_key"])
        password = derive_secret(tmpl, "wp", result["env"], "database").reveal()
    user = f"wp_{result['env']}"
    with _client(engine) as client:
        db = client.containers.get(f"orch-wp-{result['env']}-db")
        out = db.exec_run(
            [
                "mariadb",
                f"-u{user}",
                f"-p{password}",
                "-h",
                "127.0.0.1",
                "--batch",
                "--default-character-set=utf8mb4",
                "--skip-column-names",
                user,
                "-e",
                sql,
            ]
        )
    assert out.exit_code == 0, out.output
    return out.output.decode()


@pytest.fixture(scope="module")
def made(proxied, copy):
    result, before = copy
    return result | {"inventory": str(proxied.inventory), "admin_key": proxied.env["T_WP_ADMIN_PW"]}, before


def test_the_copy_serves_wordpress_behind_basic_auth_with_noindex(proxied, made):
    result, _ = made
    assert result["url"] == f"http://{result['env']}.wp.review.test:{proxied.proxy_port}"
    status, headers, body = _get(proxied.proxy_port, result)
    assert status == 200 and "Dachdeckerei Muster Shop" in body
    assert "noindex" in headers.get("X-Robots-Tag", "")
    assert _get(proxied.proxy_port, result, auth=False)[0] == 401
    links = re.findall(r'(?:href|src)="(https?://[^"]+)"', body)
    own = [link for link in links if "wordpress.org" not in link]
    assert len(own) > 5 and all(link.startswith(result["url"]) for link in own), own
    assert not [link for link in links if proxied.wordpress.url in link]


def test_production_is_untouched(proxied, made):
    assert _prod_state(proxied) == made[1]


def test_serialized_and_json_values_are_valid_and_no_production_email_is_left(proxied, docker_engine, made):
    result, _ = made
    raw = _db_query(docker_engine, result, "SELECT option_value FROM wp_options WHERE option_name='orch_test_widget'")
    value = raw.strip().replace("\\\\", "\\")
    out = subprocess.run(
        ["php", "-r", "var_export(unserialize(stream_get_contents(STDIN)));"],
        input=value,
        capture_output=True,
        text=True,
    ).stdout
    assert result["url"] in out and out.strip() != "false" and proxied.wordpress.url not in out and "Кровля" in out
    js = _db_query(docker_engine, result, "SELECT option_value FROM wp_options WHERE option_name='orch_test_json'")
    assert result["url"].replace("/", "\\\\/") in js
    emails = _db_query(docker_engine, result, "SELECT user_email FROM wp_users").split()
    assert emails and not set(emails) & set(proxied.wordpress.users.values())
    assert all(e.endswith("@staging.invalid") for e in emails)
    # the site's own rule, not ASCII: the tools container's database client talks utf8mb4
    names = _db_query(docker_engine, result, "SELECT DISTINCT display_name FROM wp_users").split("\n")
    assert [n for n in names if n] == ["Тест Тестович"]


def test_the_admin_logs_in_with_the_staging_password(proxied, made):
    result, _ = made
    body = urlencode(
        {"log": "admin", "pwd": result["staging_password"], "wp-submit": "Log In", "testcookie": "1"}
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{proxied.proxy_port}/wp-login.php",
        data=body,
        headers={
            "Host": result["url"].split("//")[1],
            "Cookie": "wordpress_test_cookie=WP%20Cookie%20check",
            "Authorization": "Basic "
            + base64.b64encode(f"staging:{result['basic_auth']['password']}".encode()).decode(),
        },
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(NoRedirect).open(req, timeout=10)
    assert answer.value.code == 302, "admin login with the staging password failed"


def test_every_object_is_labelled_limited_and_restarts_with_the_engine(docker_engine, made):
    result, _ = made
    found = _labelled(docker_engine, "wp", result["env"])
    env = result["env"]
    assert sorted(found["containers"]) == [f"orch-wp-{env}-{r}" for r in ("db", "php", "web")]
    assert sorted(found["volumes"]) == [f"orch-wp-{env}-database", f"orch-wp-{env}-docroot"]
    assert found["networks"] == [f"orch-wp-{env}"] and found["routes"] == [f"orch-route-wp--{env}.conf"]
    with _client(docker_engine) as client:
        for role, memory in (("db", 512 << 20), ("php", 384 << 20), ("web", 128 << 20)):
            container = client.containers.get(f"orch-wp-{env}-{role}")
            host_config = container.attrs["HostConfig"]
            assert host_config["Memory"] == memory and host_config["RestartPolicy"]["Name"] == "unless-stopped"
            assert container.labels["orch.task"] == TASK and container.labels["orch.created"]
        assert client.containers.get(f"orch-wp-{env}-php").attrs["HostConfig"]["NanoCpus"] == 1_500_000_000
        # the database superuser's password is a file in the container, not in its environment
        db_env = client.containers.get(f"orch-wp-{env}-db").attrs["Config"]["Env"]
        assert "MYSQL_ROOT_PASSWORD_FILE=/run/orch-db-password" in db_env
        assert not [e for e in db_env if e.startswith(("MYSQL_ROOT_PASSWORD=", "MARIADB_ROOT_PASSWORD="))]
        assert not client.containers.list(all=True, filters={"label": [f"orch.env={env}", "orch.role=tools"]})


def test_the_oplog_has_every_step_and_the_list_shows_url_status_size_and_age(proxied, made):
    result, _ = made
    ops = proxied.orch_json("log", "--task", TASK)
    create = next(op for op in ops if op["action"] == "staging-create")
    assert create["status"] == "ok" and all(s["status"] == "ok" for s in create["steps"])
    steps = " | ".join(s["name"] for s in create["steps"])
    for words in ("database container", "restore files", "load the dump", "sanitize", "proxy", "health check"):
        assert words in steps
    artifacts = {(a["kind"], a["ident"]) for a in create["artifacts"]}
    assert ("staging-url", result["url"]) in artifacts
    assert {v for k, v in artifacts if k == "docker-container"} >= {
        f"orch-wp-{result['env']}-{r}" for r in ("db", "php", "web")
    }
    assert result["basic_auth"]["password"] not in json.dumps(ops)
    listed = {row["name"]: row for row in proxied.orch_json("staging", "list", "wp")}
    row = listed[result["env"]]
    assert row["url"] == result["url"] and row["status"] == "running" and row["target"] == "docker"
    assert row["size"] > 50_000_000 and row["age"]


def test_refresh_brings_new_content_down_and_keeps_the_copys_code(proxied, docker_engine, made):
    result, _ = made
    wp, env = proxied.wordpress, result["env"]
    with _client(docker_engine) as client:
        php = client.containers.get(f"orch-wp-{env}-php")
        assert (
            php.exec_run(
                ["sh", "-c", "echo 'work in progress' > /var/www/html/wp-content/themes/orch-wip.txt"]
            ).exit_code
            == 0
        )
    upload = f"{wp.path}/wp-content/uploads/2026/11/after-docker-copy.txt"
    wp.host.run(f"echo 'uploaded later' > {upload}")
    proxied.mariadb.sql(
        "UPDATE wp_options SET option_value = 'Refreshed In Docker' WHERE option_name = 'blogname'", wp.db_name
    )
    try:
        out = proxied.orch_json("staging", "refresh", "wp", "--env", env, "--task", TASK, "--from", "fresh")
        assert out["staging_password"]
        with _client(docker_engine) as client:
            php = client.containers.get(f"orch-wp-{env}-php")
            cat = php.exec_run(
                [
                    "cat",
                    "/var/www/html/wp-content/uploads/2026/11/after-docker-copy.txt",
                    "/var/www/html/wp-content/themes/orch-wip.txt",
                ]
            )
        assert cat.output.decode().split("\n")[:2] == ["uploaded later", "work in progress"]
        assert "Refreshed In Docker" in _get(proxied.proxy_port, result)[2]
    finally:
        wp.host.run(f"rm -f {upload}")
        proxied.mariadb.sql(
            "UPDATE wp_options SET option_value = 'Dachdeckerei Muster Shop' WHERE option_name = 'blogname'", wp.db_name
        )
        proxied.orch("backup", "wp", "--task", TASK)  # the latest backup is production as it was again


def test_check_reaches_the_engine_and_promotion_from_a_docker_copy_is_refused_clearly(proxied, made):
    result, _ = made
    rows = proxied.orch_json("check", "wp", expect=None)
    engine = [r for r in rows if r["check"] == "docker"]
    assert engine == [engine[0]] and engine[0]["ok"] and engine[0]["host"] == "review"
    assert engine[0]["detail"].startswith("docker 20.10")
    proc = proxied.orch("promote", "wp", "--from", result["env"], "--task", TASK, "--dry-run", expect=2)
    assert "Docker copy" in proc.stderr and "Traceback" not in proc.stderr


def test_a_create_killed_half_way_is_removed_by_destroy(proxied, docker_engine, made):
    proc = subprocess.Popen(
        [*ORCH, "-i", str(proxied.inventory), "staging", "create", "wp", "--task", TASK, "--name", KILLED],
        env=proxied.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(name.endswith("-tools") for name in _labelled(docker_engine, "wp", KILLED)["containers"]):
            assert proc.poll() is None and time.monotonic() < deadline, "the create ended before its tools step"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _labelled(docker_engine, "wp", KILLED)["volumes"]
    listed = {row["name"]: row for row in proxied.orch_json("staging", "list", "wp")}
    assert listed[KILLED]["status"] != "ready"
    proxied.orch("staging", "destroy", "wp", "--env", KILLED, "--task", TASK)
    assert _labelled(docker_engine, "wp", KILLED) == {"containers": [], "volumes": [], "networks": [], "routes": []}
    assert KILLED not in {row["name"] for row in proxied.orch_json("staging", "list", "wp")}


@pytest.fixture(scope="module")
def over_ssh(wp_fleet, docker_engine, docker_ssh_host, tmp_path_factory):
    """The same engine over ssh:// with the sshd host's key pinned, and no domain: copies publish a port."""
    port = free_port()
    block = _docker_block(
        docker_engine,
        f"ssh://{docker_ssh_host.user}@{docker_ssh_host.address}:{docker_ssh_host.port}",
        host_key=docker_ssh_host.host_key,
        identity_file=str(docker_ssh_host.identity_file),
        ports=[port, port + 5],
    )
    return _docker_fleet(wp_fleet, tmp_path_factory.mktemp("dockerssh"), block)


def test_a_copy_over_ssh_publishes_a_port_and_gc_keeps_it_while_removing_an_older_one(
    proxied, over_ssh, docker_engine, made
):
    old = made[0]
    young = over_ssh.orch_json("staging", "create", "wp", "--task", SSH_TASK)
    port = int(young["url"].rsplit(":", 1)[1])
    assert young["url"] == f"http://127.0.0.1:{port}"
    status, headers, body = fetch(young["url"] + "/", auth=("staging", young["basic_auth"]["password"]))
    assert status == 200 and f'href="{young["url"]}/' in body and "noindex" in headers.get("X-Robots-Tag", "")
    assert fetch(young["url"] + "/")[0] == 401
    ages = {row["name"]: row for row in over_ssh.orch_json("staging", "list", "wp")}
    older_than = int((ages[old["env"]]["age_seconds"] + ages[young["env"]]["age_seconds"]) / 2)
    plan = over_ssh.orch_json("staging", "gc", "--older-than", f"{older_than}s", "--task", SSH_TASK, "--dry-run")
    assert [(c["site"], c["env"]) for c in plan["remove"]] == [("wp", old["env"])]
    over_ssh.orch("staging", "gc", "--older-than", f"{older_than}s", "--task", SSH_TASK)
    assert _labelled(docker_engine, "wp", old["env"]) == {"containers": [], "volumes": [], "networks": [], "routes": []}
    assert _labelled(docker_engine, "wp", young["env"])["containers"]
    over_ssh.orch("staging", "destroy", "wp", "--env", young["env"], "--task", SSH_TASK)
    assert _labelled(docker_engine, "wp", young["env"]) == {
        "containers": [],
        "volumes": [],
        "networks": [],
        "routes": [],
    }


def test_a_changed_ssh_host_key_is_refused_and_nothing_runs(wp_fleet, docker_engine, docker_ssh_host, tmp_path):
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    assert other.returncode == 0
    wrong = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    block = _docker_block(
        docker_engine,
        f"ssh://{docker_ssh_host.user}@{docker_ssh_host.address}:{docker_ssh_host.port}",
        host_key=wrong,
        identity_file=str(docker_ssh_host.identity_file),
    )
    fleet = _docker_fleet(wp_fleet, tmp_path / "inv", block)
    proc = fleet.orch("staging", "create", "wp", "--task", SSH_TASK, "--name", "t13refused", expect=2)
    assert "REFUSED" in proc.stderr and "docker host review" in proc.stderr
    assert _labelled(docker_engine, "wp", "t13refused")["containers"] == []


def test_a_postgresql_site_gets_a_postgres_container(fleet, docker_engine, tmp_path):
    """The fleet's PostgreSQL site (generic playbook) copied into Docker: its rows arrive in a postgres container."""
    inventory = yaml.safe_load(fleet.inventory.read_text())
    block = _docker_block(docker_engine, docker_engine.url, ports=[free_port(), 65000])
    block["images"]["postgresql"] = docker_engine.images["postgres"]
    inventory["docker"] = {"review": block}
    blog = json.loads(json.dumps(fleet.sites["blog"]))
    blog["environments"]["staging"] = {
        "target": "docker",
        "database": {"engine": "postgresql", "password": {"env": "T_BLOG_PW"}},
    }
    pg = Fleet(tmp_path, fleet.env, fleet.hosts)
    pg.write_inventory(inventory, {"blog": blog})
    pg.orch("backup", "blog", "--task", TASK)
    result = pg.orch_json("staging", "create", "blog", "--task", TASK)
    try:
        status, _, body = fetch(result["url"] + "/", auth=("staging", result["basic_auth"]["password"]))
        assert status == 200 and body == "home"
        with _client(docker_engine) as client:
            db = client.containers.get(f"orch-blog-{result['env']}-db")
            assert db.image.tags == [docker_engine.images["postgres"]]
            rows = db.exec_run(
                ["psql", "-U", "postgres", "-At", "-d", f"blog_{result['env']}", "-c", "SELECT count(*) FROM posts"],
                user="postgres",
            )
        assert rows.output.decode().strip() == "120"
    finally:
        pg.orch("staging", "destroy", "blog", "--env", result["env"], "--task", TASK)
    assert _labelled(docker_engine, "blog", result["env"]) == {
        "containers": [],
        "volumes": [],
        "networks": [],
        "routes": [],
    }
