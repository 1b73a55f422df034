"""The Docker target's pure parts: settings resolution, URLs, ages, routes, stream frames, states."""

from __future__ import annotations

import io
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.actions import staging_docker
from orchestrator.actions.staging import age
from orchestrator.ages import age_text, parse_age
from orchestrator.backends.envs import docker as dock
from orchestrator.backends.remote import Command, Sensitive
from orchestrator.backends.remote.docker import ContainerConnector, _Hijacked
from orchestrator.config import load_inventory
from orchestrator.errors import InventoryError, UsageError

INVENTORY = """\
storage:
  offsite: {type: s3, endpoint: "https://s3.example.net", bucket: b, access_key: k, secret_key: s, password: p}
hosts:
  web1: {address: 192.0.2.1}
docker:
  review:
    url: ssh://deploy@review.example.net:2222
    host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOrchExampleKeyOnlyNotReal0000000000000000
    domain: review.example.net
    proxy_port: 8080
    images: {php: "registry.example/php:8.2-fpm", mysql: "mysql:8.0"}
    limits: {database: {memory: 1g, cpus: 2}, php: {memory: 256m}}
  laptop: {url: "unix:///var/run/docker.sock", ports: [8100, 8199]}
defaults:
  backup: {storage: offsite}
"""

SITE = """\
name: shop
playbook: wordpress
environments:
  production:
    host: web1
    path: /var/www/shop
    url: https://shop.example
    database: {engine: mysql, name: shop, user: shop, password: pw}
  staging:
    target: docker
    docker: {host: review, images: {web: "nginx:1.25"}, limits: {php: {cpus: 0.5}}}
    database: {engine: mysql, password: key-for-derived-passwords}
"""


def inventory(tmp_path: Path, site: str = SITE, text: str = INVENTORY):
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "sites" / "shop.yaml").write_text(textwrap.dedent(site))
    (tmp_path / "inventory.yaml").write_text(textwrap.dedent(text))
    return load_inventory(tmp_path / "inventory.yaml")


def test_images_come_from_defaults_then_playbook_then_engine_then_site(tmp_path):
    inv = inventory(tmp_path)
    setup = staging_docker.docker_site(inv, inv.site("shop"))
    assert setup.host.name == "review" and setup.host.ssh.port == 2222 and setup.host.ssh.user == "deploy"
    assert setup.images["php"] == "registry.example/php:8.2-fpm"  # the engine's over the playbook's
    assert setup.images["web"] == "nginx:1.25"  # the site's over the default
    assert setup.images["database"] == "mysql:8.0" and setup.images["tools"] == dock.TOOLS_IMAGE
    assert setup.limits["database"].kwargs() == {"mem_limit": "1g", "nano_cpus": 2_000_000_000}
    assert setup.limits["php"].kwargs() == {"mem_limit": "256m", "nano_cpus": 500_000_000}
    assert setup.limits["web"].kwargs() == {}


def test_a_copy_is_named_by_env_and_site_under_the_review_domain_and_its_database_is_its_own(tmp_path):
    inv = inventory(tmp_path)
    site = inv.site("shop")
    setup = staging_docker.docker_site(inv, site)
    url = staging_docker.copy_url(site, "t14883", setup, None)
    staged = staging_docker.derive(site, "t14883", setup, url)
    assert url == "http://t14883.shop.review.example.net:8080"
    assert staging_docker.connect_address(setup, url) == "review.example.net:8080"
    db, admin = staged.env.database, staged.admin_db
    assert (db.host, db.port, db.name, db.user) == ("db", 3306, "shop_t14883", "shop_t14883")
    assert (admin.user, admin.host) == ("root", "db") and admin.password.reveal() != db.password.reveal()
    assert staged.env.path == "/var/www/html" and staged.env.host == "review"


def test_without_a_domain_a_copy_publishes_a_port_on_the_engines_address(tmp_path):
    inv = inventory(tmp_path, SITE.replace("host: review,", "host: laptop,"))
    setup = staging_docker.docker_site(inv, inv.site("shop"))
    assert not setup.proxied and setup.host.address == "127.0.0.1" and setup.host.ports == (8100, 8199)
    url = staging_docker.copy_url(inv.site("shop"), "t1", setup, 8100)
    assert url == "http://127.0.0.1:8100" and staging_docker.connect_address(setup, url) == "127.0.0.1:8100"


def test_the_docker_host_must_be_named_when_there_are_several(tmp_path):
    with pytest.raises(InventoryError) as caught:
        inventory(tmp_path, SITE.replace("docker: {host: review, ", "docker: {"))
    assert "environments.staging.docker.host: not set and the inventory has 2 docker hosts" in str(caught.value)
    with pytest.raises(InventoryError) as caught:
        inventory(tmp_path, SITE.replace("host: review,", "host: nowhere,"))
    assert "unknown docker host 'nowhere'" in str(caught.value)


def test_a_docker_url_must_be_ssh_or_a_unix_socket(tmp_path):
    with pytest.raises(InventoryError) as caught:
        inventory(tmp_path, text=INVENTORY.replace('"unix:///var/run/docker.sock"', '"tcp://10.0.0.1:2375"'))
    assert "docker.laptop.url" in str(caught.value)


def test_a_local_folder_storage_is_refused_for_docker_copies(tmp_path):
    inv = inventory(
        tmp_path,
        text=INVENTORY.replace(
            'offsite: {type: s3, endpoint: "https://s3.example.net", bucket: b, access_key: k, secret_key: s, '
            "password: p}",
            "offsite: {type: local, path: /backups, password: p}",
        ),
    )
    from orchestrator.actions.targets import target

    with pytest.raises(UsageError, match="restore from an s3 storage"):
        staging_docker.repository(target(inv, "shop", "production"))


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("30m", 1800), ("12h", 43200), ("14d", 14 * 86400), ("2w", 14 * 86400)]
)
def test_gc_ages_read_a_number_and_a_unit(text, seconds):
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["14", "d", "-1d", "1.5d", "14 days", "14d\n", "١٤d"])
def test_a_gc_age_without_a_unit_is_refused(text):
    assert parse_age(text) is None


def test_ages_print_in_their_largest_unit_and_thresholds_exactly():
    assert [age_text(s) for s in (0, 59, 90, 7200, 20 * 86400)] == ["0s", "59s", "1m", "2h", "20d"]
    assert [age_text(s, exact=True) for s in (90, 1209600, 86400 * 3)] == ["90s", "2w", "3d"]


def test_ages_of_copies_are_shown_in_their_largest_unit():
    assert age(None) == {"age_seconds": None, "age": ""}
    assert age("2000-01-01T00:00:00+00:00")["age"].endswith("d")


def test_a_route_resolves_its_copy_per_request_and_keeps_the_host_header():
    text = dock.route_conf("shop", "t1", "t1.shop.review.example.net", "orch-shop-t1-web")
    assert "server_name t1.shop.review.example.net;" in text
    assert "set $orch_upstream http://orch-shop-t1-web:80;" in text and "proxy_pass $orch_upstream;" in text
    assert "proxy_set_header Host $http_host;" in text and "resolver 127.0.0.11" in dock.PROXY_BASE


def test_a_copys_state_says_which_container_is_not_running():
    state = dock.CopyState("shop", "t1", "1", None, containers={"db": "running", "php": "running", "web": "running"})
    assert state.status == "running"
    state.containers["web"] = "exited"
    assert state.status == "degraded: web exited"
    assert dock.CopyState("shop", "t1", "1", None, volumes=["v"]).status == "incomplete"


def test_multiplexed_frames_are_split_by_stream():
    def frame(kind: int, data: bytes) -> bytes:
        return bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    stream = _Hijacked.__new__(_Hijacked)
    stream.reader = io.BytesIO(frame(1, b"out") + frame(2, b"err") + frame(1, b"") + frame(1, b"more") + b"\x01\x00")
    assert list(stream.frames()) == [(1, b"out"), (2, b"err"), (1, b""), (1, b"more")]


def test_a_container_without_a_shell_gets_plain_argv_and_never_secrets():
    conn = ContainerConnector(None, None, "proxy", shell=False)
    assert conn._argv(Command("nginx", "-s", "reload")) == ["nginx", "-s", "reload"]
    with pytest.raises(ValueError, match="needs a shell"):
        conn._argv(Command("true").env(SECRET=Sensitive("x")))
    assert ContainerConnector(None, None, "tools")._argv(Command("true"))[:2] == ["bash", "-c"]
