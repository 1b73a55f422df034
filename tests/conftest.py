"""Session-scoped fixtures for the real testbed (see tests/testbed/).

Every daemon starts lazily, the first time a test asks for it, and is stopped at the end of the session. A
daemon that cannot start makes the fixture raise (the tests error with the daemon's log tail); nothing is
skipped.

tests/ has no __init__.py, so pytest puts tests/ itself on sys.path: import helpers as ``testbed.<module>``
(e.g. ``from testbed.sshd import SshHost``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.mariadb import MariaDB, start_mariadb
from testbed.postgres import Postgres, start_postgres
from testbed.s3 import S3Server, start_s3
from testbed.sshd import SshHost, start_sshd

# name -> (loopback address, Unix user)
SSH_HOSTS = {"web1": ("127.0.0.2", "orch-web1"), "stage1": ("127.0.0.3", "orch-stage1")}


@pytest.fixture(scope="session")
def testbed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session temp dir holding the daemons' configs, data and logs."""
    return tmp_path_factory.mktemp("testbed")


@pytest.fixture(scope="session")
def ssh_identity(testbed_dir: Path) -> Path:
    """The ed25519 private key (no passphrase) the orchestrator logs in with; ``<path>.pub`` is next to it."""
    key = testbed_dir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orch-tests", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return key


@pytest.fixture(scope="session")
def ssh_hosts(testbed_dir: Path, ssh_identity: Path) -> Iterator[dict[str, SshHost]]:
    """{"web1": host at 127.0.0.2 (user orch-web1), "stage1": host at 127.0.0.3 (user orch-stage1)}."""
    hosts: dict[str, SshHost] = {}
    try:
        for name, (address, user) in SSH_HOSTS.items():
            hosts[name] = start_sshd(testbed_dir / "ssh", name, address, user, ssh_identity)
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()


@pytest.fixture(scope="session")
def mariadb(testbed_dir: Path) -> Iterator[MariaDB]:
    server = start_mariadb(testbed_dir / "mariadb")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(testbed_dir: Path) -> Iterator[Postgres]:
    server = start_postgres(testbed_dir / "postgres")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(testbed_dir: Path) -> Iterator[S3Server]:
    server = start_s3(testbed_dir / "s3")
    yield server
    server.stop()


# --- nginx + php-fpm as the hosts' users, and a real WordPress (tests/testbed/webserver.py, wordpress.py) ---

import secrets  # noqa: E402
import shutil  # noqa: E402

from testbed.webserver import WebStack, start_web_stack  # noqa: E402
from testbed.wordpress import WordPress, install_wordpress  # noqa: E402


def _web_stack(host: SshHost, testbed_dir: Path) -> Iterator[WebStack]:
    stack = start_web_stack(host.user, host.address, parent=host.home)
    try:
        yield stack
    finally:
        stack.stop(keep_logs_in=testbed_dir / f"web-{host.name}-logs")


@pytest.fixture(scope="session")
def web1_web(ssh_hosts: dict[str, SshHost], testbed_dir: Path) -> Iterator[WebStack]:
    """php-fpm + nginx running AS orch-web1 on http://127.0.0.2:<free port>, work dir ~orch-web1/web-<port>/.

    ``.nginx.sites_dir`` (owned by orch-web1) holds the vhosts; ``.nginx.test_command``/``.reload_command`` and
    ``.php.socket`` are what orch needs to add a site over SSH."""
    yield from _web_stack(ssh_hosts["web1"], testbed_dir)


@pytest.fixture(scope="session")
def stage1_web(ssh_hosts: dict[str, SshHost], testbed_dir: Path) -> Iterator[WebStack]:
    """Like ``web1_web``, on stage1: AS orch-stage1 on http://127.0.0.3:<free port>."""
    yield from _web_stack(ssh_hosts["stage1"], testbed_dir)


@pytest.fixture(scope="session")
def wordpress(ssh_hosts: dict[str, SshHost], mariadb: MariaDB, web1_web: WebStack) -> Iterator[WordPress]:
    """A real WordPress on web1 in ~orch-web1/wp-<random>/, served by ``web1_web`` at its URL
    (http://127.0.0.2:<port>), database ``wp`` (user ``wp``) on the session MariaDB. Admin ``admin``
    (``.admin_password``), more users, posts with absolute links, serialized/JSON options, an upload."""
    host = ssh_hosts["web1"]
    path = host.home / f"wp-{secrets.token_hex(4)}"
    try:
        site = install_wordpress(
            host, path, mariadb, "wp", "wp", f"wp-{secrets.token_hex(6)}", web1_web.url, web1_web.nginx, web1_web.php
        )
        yield site
    finally:
        (web1_web.nginx.sites_dir / f"{path.name}.conf").unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's) driven by Playwright; see testbed/browser.py for pages and screenshots."""
    from testbed.browser import chromium

    with chromium() as running:
        yield running


# --- a private Docker engine with locally built images, reached over its socket and over SSH (testbed/docker.py) ---

from testbed.docker import DockerEngine, ensure_images, start_dockerd  # noqa: E402

DOCKER_SSH_HOST = ("dock1", "127.0.0.4", "orch-dock1")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (unix socket in a temp dir) holding the testbed's images (``.images`` by role: mariadb,
    php-fpm, nginx, tools); the first session on a machine builds them (minutes), later ones load a cache."""
    engine = start_dockerd()
    try:
        engine.images = ensure_images(engine)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def docker_ssh_host(testbed_dir: Path, ssh_identity: Path, docker_engine: DockerEngine) -> Iterator[SshHost]:
    """An sshd host (127.0.0.4, user orch-dock1) whose sessions talk to ``docker_engine``: DOCKER_HOST is set for
    them and the user owns the socket, so the SDK's SSH transport (`docker system dial-stdio`) reaches it."""
    name, address, user = DOCKER_SSH_HOST
    host = start_sshd(
        testbed_dir / "ssh", name, address, user, ssh_identity, extra_config=f"SetEnv DOCKER_HOST={docker_engine.url}\n"
    )
    docker_engine.grant(user)
    yield host
    host.stop()


@pytest.fixture(scope="session")
def redmine(testbed_dir: Path):
    """A private Redmine 5 (Debian's package under puma) on 127.0.0.1, REST API on, project `orch` holding the
    issues 71001-71006 (tasks of the PM tests); `.api_key` is the admin's. ~40 s to start."""
    from testbed.redmine import remove_redmine, start_redmine

    running = start_redmine(testbed_dir / "redmine", issues=list(range(71001, 71007)))
    yield running
    remove_redmine(running)
