"""Every command explains itself with an example, and click's shell completion works through `main`."""
import os
import subprocess
import sys

import click
import pytest

from orchestrator.cli import _register, cli


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


_register()
ALL = list(_commands(cli))


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_with_an_example(path, command):
    text = command.help or ""
    assert len(text.split()) >= 5, path
    assert "orch " + " ".join(path) in text or "Example" in text, f"orch {' '.join(path)} --help shows no example"


def test_bash_completion_completes_subcommands():
    env = os.environ | {"_ORCH_COMPLETE": "bash_complete", "COMP_WORDS": "orch back", "COMP_CWORD": "1"}
    out = subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True).stdout
    assert "backup" in out and "backups" in out


def test_exit_code_2_for_usage_errors():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "backup", "--no-such-flag"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_an_orch_error_is_one_line_and_its_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "-i", str(tmp_path / "missing.yaml"), "sites"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("orch: ") and "missing.yaml" in proc.stderr
