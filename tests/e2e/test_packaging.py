"""The package as a user installs it: a wheel built from the repository (not an editable checkout) carries the
playbooks and the inventory schema, and runs a real `orch staging create` from outside the repository."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without its dependencies, which this venv has) into a
    folder of its own; returns that folder."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            str(root / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((root / "dist").glob("orch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "orchestrator/playbooks/wordpress.yaml",
        "orchestrator/playbooks/joomla.yaml",
        "orchestrator/config/schema.yaml",
    ):
        assert needed in names, f"{needed} missing from {wheel.name}"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root / "site"), str(wheel)],
        check=True,
        capture_output=True,
    )
    return root


def test_the_installed_wheel_creates_a_staging_copy_from_outside_the_repository(wp_fleet, installed):
    env = wp_fleet.env | {"PYTHONPATH": str(installed / "site")}

    def orch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "-i", str(wp_fleet.inventory), *args],
            cwd=installed,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=installed,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(installed / "site")), where  # the wheel's code runs, not the checkout's
    created = orch("--json", "staging", "create", "wp", "--task", "14890", "--name", "pkgwheel")
    assert created.returncode == 0, created.stderr[-2000:]
    copy = json.loads(created.stdout)
    from orchestrator.backends.envs.web import fetch

    status, _, body = fetch(
        copy["url"],
        connect_to=f"127.0.0.3:{copy['url'].rsplit(':', 1)[1]}",
        auth=(copy["basic_auth"]["user"], copy["basic_auth"]["password"]),
    )
    assert status == 200 and "Dachdeckerei Muster Shop" in body
    destroyed = orch("staging", "destroy", "wp", "--env", "pkgwheel", "--task", "14890")
    assert destroyed.returncode == 0, destroyed.stderr[-2000:]
