"""scripts/demo, the README's first command, runs end to end on embedded defaults and its restore really restores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Run scripts/demo once into a temp folder (no bootstrap: the suite's own bootstrap already ran)."""
    demo_dir = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "RESTIC_"))}
    venv_bin = str(Path(sys.executable).parent)
    env |= {
        "ORCH_DEMO_DIR": str(demo_dir),
        "ORCH_DEMO_SKIP_BOOTSTRAP": "1",
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
    }
    result = subprocess.run(
        ["bash", "scripts/demo"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result, demo_dir


def line(output: str, prefix: str) -> str:
    found = [ln for ln in output.splitlines() if ln.startswith(prefix)]
    assert found, f"no line starting with {prefix!r} in:\n{output}"
    return found[-1]


def test_demo_exits_zero(demo):
    result, _ = demo
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"


def test_restore_brings_the_file_and_rows_back(demo):
    out = demo[0].stdout
    before, broken, after = (line(out, p).split(":", 1)[1].strip() for p in ("before:", "broken:", "after:"))
    assert broken != before, "the demo did not actually break the site"
    assert "missing" in broken and "HACKED" in broken
    assert after == before  # same row counts, same title, same file checksum
    assert re.search(r"posts=3 comments=5 post1='Hello, world'", after)
    assert "demo: restore OK" in out


def test_every_step_is_shown_and_logged(demo):
    out = demo[0].stdout
    for command in (
        "check",
        "backup sample --task 14883",
        "backups sample",
        "restore sample --backup latest --to production --task 14883 --yes",
        "verify sample --task 14883",
        "log --task 14883 --steps",
    ):
        assert re.search(rf"^\$ orch -i \S+ {re.escape(command)}$", out, re.M), command
    # the PM's view: backup, restore (with its safety backup taken inside it) and verify, all ok, against the task
    log = out[out.rindex("log --task 14883 --steps") :]
    assert re.findall(r"^#\d+ .* task 14883 +sample/production +(\w+) .* (\w+)$", log, re.M) == [
        ("backup", "OK"),
        ("restore", "OK"),
        ("backup", "OK"),
        ("verify", "OK"),
    ]
    assert "-> safety-backup:" in log and "-> restored-backup:" in log
    # the SQLite file lives in the docroot: restored after the files' sync, never beside it (the sync would
    # delete its temp file or overwrite it with the files part's copy)
    restore = log[log.index(" restore ") : log.index(" verify ")]
    assert restore.index("restore files") < restore.index("restore database") and "beside the files" not in restore
    # each operation's steps line up: the status column starts at one place, however long a step's name
    verify = log[log.rindex(" verify ") :]
    columns = {m.start(1) - m.start() for m in re.finditer(r"^ +\d+\. .*? (ok|failed) ", verify, re.M)}
    assert len(columns) == 1, verify


def test_demo_stays_in_its_folder(demo):
    result, demo_dir = demo
    assert (demo_dir / "restic.key").stat().st_mode & 0o077 == 0
    assert (demo_dir / "oplog.db").is_file()
    assert (demo_dir / "repository" / "sample" / "config").is_file()
    key = (demo_dir / "restic.key").read_text().strip()
    assert key not in result.stdout + result.stderr
    assert key not in (demo_dir / "inventory.yaml").read_text()


def test_a_database_restore_whose_dump_cannot_be_read_leaves_the_sqlite_database_as_it_was(demo):
    """The repository's data damaged after the backup was listed (its packs overwritten): `restic dump` streams
    nothing, and the live SQLite file must stay as it is, not become the empty stream."""
    result, demo_dir = demo
    assert result.returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "RESTIC_"))}
    env |= {"ORCH_STATE_DIR": str(demo_dir / "state"), "RESTIC_CACHE_DIR": str(demo_dir / "state" / "restic-cache")}
    orch = [sys.executable, "-m", "orchestrator", "-i", str(demo_dir / "inventory.yaml")]
    db = demo_dir / "www" / "sample" / "data" / "site.sqlite"
    before = db.read_bytes()
    for pack in (demo_dir / "repository" / "sample" / "data").glob("*/*"):
        pack.write_bytes(b"\0" * pack.stat().st_size)  # the index still lists every blob: the plan is made
    args = ("restore", "sample", "--backup", "latest", "--to", "production", "--db-only", "--task", "14884", "--yes")
    proc = subprocess.run([*orch, *args], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert db.read_bytes() == before  # not the 0-byte file of the failed dump
