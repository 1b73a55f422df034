"""Every command explains itself with an example, `orch --help` lists exactly the commands there are (from the
lazy registry, with their own short help), and click's shell completion works through `main`."""

import os
import subprocess
import sys
from importlib import import_module

import click
import pytest

from orchestrator.cli import COMMANDS, cli


def _commands(group: click.Group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


ALL = list(_commands(cli))


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_with_an_example(path, command):
    text = command.help or ""
    assert len(text.split()) >= 5, path
    assert "orch " + " ".join(path) in text or "Example" in text, f"orch {' '.join(path)} --help shows no example"


def test_the_lazy_registry_lists_every_command_of_every_module_with_its_own_short_help():
    modules = {module for module, _ in COMMANDS.values()}
    defined = {
        command.name: (module, command)
        for module in modules
        for command in import_module(f"orchestrator.cli.{module}").COMMANDS
    }
    assert set(defined) == set(COMMANDS), "add new commands to orchestrator.cli.COMMANDS"
    for name, (module, command) in defined.items():
        assert COMMANDS[name] == (module, command.get_short_help_str(10**6)), f"orch {name}: registry out of date"


def test_help_imports_no_command_module():
    code = (
        "import sys; from orchestrator.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "loaded = [m for m in sys.modules if m.startswith(('orchestrator.cli.', 'orchestrator.actions', "
        "'orchestrator.oplog', 'paramiko', 'sqlalchemy', 'boto3', 'jsonschema'))]\n"
        "print(sorted(loaded), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Commands:" in proc.stdout and "verify" in proc.stdout
    assert proc.stderr.strip() == "['orchestrator.cli.app', 'orchestrator.cli.live', 'orchestrator.cli.output']", (
        proc.stderr
    )


def test_log_imports_neither_paramiko_nor_other_commands(tmp_path):
    code = (
        "import sys; from orchestrator.cli import main\n"
        "try: main(['log', '--help'])\nexcept SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('orchestrator.cli.', 'paramiko', 'boto3'))), "
        "file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (
        proc.stderr.strip()
        == "['orchestrator.cli.app', 'orchestrator.cli.live', 'orchestrator.cli.log', 'orchestrator.cli.output']"
    )


def test_bash_completion_completes_subcommands():
    env = os.environ | {"_ORCH_COMPLETE": "bash_complete", "COMP_WORDS": "orch back", "COMP_CWORD": "1"}
    out = subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True).stdout
    assert "backup" in out and "backups" in out and "verify" not in out


def test_bash_completion_completes_subcommands_of_a_group_and_options():
    env = os.environ | {"_ORCH_COMPLETE": "bash_complete", "COMP_WORDS": "orch scheduler p", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True).stdout
    assert out.split() == ["plain,plan"]
    env |= {"COMP_WORDS": "orch log --st", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "orchestrator"], env=env, capture_output=True, text=True).stdout
    assert "--steps" in out


def test_exit_code_2_for_usage_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "backup", "--no-such-flag"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_an_unknown_command_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "bakcup"], capture_output=True, text=True)
    assert proc.returncode == 2 and "No such command 'bakcup'" in proc.stderr


def test_an_orch_error_is_one_line_and_its_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "-i", str(tmp_path / "missing.yaml"), "sites"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("orch: ") and "missing.yaml" in proc.stderr


def test_the_command_list_uses_no_click_api_that_click_9_removes():
    # click.utils.make_default_short_help is deprecated (removed in click 9): `orch --help` must not need it
    import warnings

    from click.testing import CliRunner

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        result = CliRunner().invoke(cli, ["--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    section = result.output.split("Commands:\n")[1].split("\n\n")[0]
    listed = dict(line.split(None, 1) for line in section.splitlines())
    assert set(listed) == set(COMMANDS)
    assert all(text.strip() for text in listed.values())
    assert any(text.strip().endswith("...") for text in listed.values()), "long help is cut to the width"
