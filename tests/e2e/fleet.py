"""A small agency fleet on the testbed: real sites on real hosts, an inventory describing them, and a way to
run the real `orch` CLI against it."""

from __future__ import annotations

import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from testbed.terminal import run_on_terminal

ORCH = [sys.executable, "-m", "orchestrator"]


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss: int  # bytes


@dataclass
class Fleet:
    root: Path  # inventory dir
    env: dict  # environment for orch (secrets as env vars, state dir)
    hosts: dict
    sites: dict = field(default_factory=dict)  # name -> {"host", "path", "db": {...}}

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    def orch(
        self, *args, expect: int | None = 0, env: dict | None = None, timeout: int = 300, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run the real CLI; assert its exit code unless expect is None."""
        proc = subprocess.run(
            [*ORCH, "-i", str(self.inventory), *map(str, args)],
            capture_output=True,
            text=True,
            env=self.env | (env or {}),
            timeout=timeout,
            input=stdin or "",
        )
        if expect is not None:
            assert proc.returncode == expect, (
                f"orch {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def orch_json(self, *args, expect: int | None = 0, env: dict | None = None):
        return json.loads(self.orch("--json", *args, expect=expect, env=env).stdout)

    def orch_measured(self, *args, memory_limit: int | None = None, timeout: float = 120) -> Measured:
        """Run the real CLI and measure it: wall time and peak RSS of that process alone (wait4's rusage).
        memory_limit (bytes of address space) keeps a runaway from taking the machine down."""

        def limit():
            if memory_limit:
                resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = subprocess.Popen(
                [*ORCH, "-i", str(self.inventory), *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                preexec_fn=limit,
            )
            deadline = started + timeout
            while (waited := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
                if time.monotonic() > deadline:
                    proc.kill()
                time.sleep(0.005)
            seconds = time.monotonic() - started
            proc.returncode = os.waitstatus_to_exitcode(waited[1])  # reaped here: keep Popen from waiting again
            out.seek(0)
            err.seek(0)
            return Measured(
                proc.returncode,
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
                seconds,
                waited[2].ru_maxrss * 1024,
            )

    def orch_on_terminal(self, *args, timeout: float = 300) -> tuple[int, str]:
        """Run the real CLI with stdout and stderr on a pseudo-terminal, as a person at a terminal would;
        return its exit code and everything it wrote there."""
        env = {k: v for k, v in self.env.items() if k not in ("COLUMNS", "LINES")}  # the terminal's size rules
        return run_on_terminal([*ORCH, "-i", str(self.inventory), *map(str, args)], env, timeout)

    def write_inventory(self, inventory: dict, sites: dict[str, dict]) -> None:
        sites_dir = self.root / "sites"
        sites_dir.mkdir(parents=True, exist_ok=True)
        for old in sites_dir.glob("*.yaml"):
            old.unlink()
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
        for name, site in sites.items():
            (sites_dir / f"{name}.yaml").write_text(yaml.safe_dump(site, sort_keys=False))


def orch_env(state_dir: Path, **secrets_env) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return env | {"ORCH_STATE_DIR": str(state_dir), "PYTHONPATH": str(Path(__file__).parents[2])} | secrets_env


def new_password() -> str:
    return "pw-" + secrets.token_hex(8)


def make_tree(host, path: str, files: int = 40, size: int = 4096) -> None:
    """Create a small site docroot on a host (as its user): text files, a binary, nested folders, a cache."""
    host.run(f"mkdir -p {path}/wp-content/uploads/2026 {path}/wp-content/cache {path}/wp-content/themes/t")
    uploads = "wp-content/uploads/2026"
    host.run(f"cd {path} && for i in $(seq 1 {files}); do head -c {size} /dev/urandom > {uploads}/f$i.bin; done")
    host.run(
        f"cd {path} && echo '<?php echo \"home\";' > index.php && echo cached > wp-content/cache/page.html && "
        f"echo 'theme v1' > wp-content/themes/t/style.css && "
        f"printf 'ünïcødé\\n' > '{uploads}/Файл с пробелом.txt'"
    )


def releases_layout(wp, task: str) -> str:
    """Given the session's WordPress fleet, put its production into the releases layout unless an earlier module
    did (`orch adopt`: release 1), say so in its site file, and return the release that is current now."""
    host, path = wp.wordpress.host, str(wp.wordpress.path)
    if host.run(f"test -L {path} && echo releases || echo inplace").stdout.strip() == "inplace":
        assert wp.orch_json("adopt", "wp", "--layout", "releases", "--task", task, "--yes")["release"] == "1"
    # later modules back up and copy the release tree, not a symlink
    wp.site = wp.site | {"layout": "releases"}
    wp.write_inventory(yaml.safe_load(wp.inventory.read_text()), {"wp": wp.site})
    return next(r["release"] for r in wp.orch_json("releases", "wp") if r["status"] == "current")


def tree_checksums(host, path: str, exclude: str = "wp-content/cache") -> dict[str, str]:
    out = host.run(f"cd {path} && find . -type f ! -path './{exclude}/*' -print0 | sort -z | xargs -0 sha256sum").stdout
    return {line[66:]: line[:64] for line in out.splitlines()}
