"""The Command type: hostile values stay single arguments; secrets never reach argv or logs."""

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.backends.remote import Command, LocalConnector, Sensitive
from orchestrator.errors import RemoteError

HOSTILE = [
    "plain",
    "with space",
    "it's",
    'double "quoted"',
    "$(touch /tmp/orch-pwned)",
    "`touch /tmp/orch-pwned`",
    "a; touch /tmp/orch-pwned",
    "line\nbreak",
    "--leading-dash",
    "-rf",
    "юникод ✓ 🚀",
    "$HOME ${PATH} $((1+1))",
    "back\\slash",
    "glob * ? [a]",
    "&& || | > < >> 2>&1",
    "",
]


@pytest.fixture
def local():
    return LocalConnector()


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_arrives_as_exactly_one_argument(local, value):
    result = local.run(Command("printf", "%s\\0", value, "sentinel"))
    assert result.stdout.split(b"\0")[:2] == [value.encode(), b"sentinel"]
    assert not Path("/tmp/orch-pwned").exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_survives_a_pipe_and_a_redirect(local, value, tmp_path):
    target = tmp_path / "out file; $(x)"
    local.run(Command("printf", "%s", value).pipe(Command("cat")).to_file(target))
    assert target.read_bytes() == value.encode()


def test_secrets_are_refused_as_arguments():
    with pytest.raises(TypeError, match="env"):
        Command("mysql", Sensitive("hunter2-secret"))


def test_a_secret_reaches_the_process_environment_but_not_its_argv(local):
    secret = "s3cr3t $(rm -rf /) 'quote\" \\ ✓"
    cmd = Command("sh", "-c", 'printf %s "$DB_PW"; cat /proc/$$/cmdline').env(DB_PW=Sensitive(secret))
    out = local.run(cmd).stdout
    assert out.startswith(secret.encode())
    assert secret.encode() not in out[len(secret.encode()) :]  # not in the shell's own cmdline
    assert secret not in cmd.script()
    assert secret not in " ".join(cmd.argv())
    assert "DB_PW=***" in cmd.masked() and secret not in cmd.masked()


def test_a_secret_is_not_visible_in_ps_while_the_command_runs(local, tmp_path):
    secret = "ps-visible-canary-4711"
    marker = tmp_path / "started"
    cmd = Command("sh", "-c", f"touch {marker}; sleep 2").env(TOKEN=Sensitive(secret))
    import threading

    runner = threading.Thread(target=local.run, args=(cmd,))
    runner.start()
    while not marker.exists():
        pass
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    runner.join()
    assert secret not in ps


def test_secret_prefix_is_followed_by_the_callers_stdin(local):
    cmd = Command("sh", "-c", 'printf "%s|" "$PW"; cat').env(PW=Sensitive("pw-value"))
    assert local.run(cmd, stdin=b"payload\nmore").stdout == b"pw-value|payload\nmore"


def test_a_failure_raises_with_the_masked_command_and_stderr_tail(local):
    cmd = Command("sh", "-c", 'echo "boom $PW" >&2; exit 3').env(PW=Sensitive("leaky-password"))
    with pytest.raises(RemoteError) as err:
        local.run(cmd)
    assert err.value.exit_status == 3
    assert "leaky-password" not in str(err.value)
    assert "boom ***" in str(err.value)


def test_pipefail_makes_a_failing_producer_fail_the_pipeline(local):
    result = local.run(Command("false").pipe(Command("cat")), check=False)
    assert result.exit_status != 0


def test_non_secret_env_values_are_quoted(local):
    out = local.run(Command("sh", "-c", 'printf %s "$X"').env(X="a b; $(echo no)")).text
    assert out == "a b; $(echo no)"


def test_invalid_env_names_are_refused():
    with pytest.raises(ValueError):
        Command("true").env(**{"A;B": "x"})


def test_big_streams_do_not_deadlock(local, tmp_path):
    data = os.urandom(8 << 20)
    out = tmp_path / "out"
    with open(out, "wb") as fh:
        local.run(Command("cat"), stdin=data, stdout=fh)
    assert out.read_bytes() == data


def test_body_is_the_line_without_environment():
    cmd = Command("mariadb-dump", "it's").env(MYSQL_PWD=Sensitive("zzz-secret"))
    assert cmd.body() == "mariadb-dump 'it'\"'\"'s'"
