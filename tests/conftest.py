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
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orch-tests", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)
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
