"""How a backup drives restic, depending on the host's restic version (facts in, commands out)."""

import base64

import pytest
from backupkit import fake_target

from orchestrator.actions import backup
from orchestrator.backends.remote import Result
from orchestrator.backends.storage.restic import Version
from orchestrator.errors import OperationFailed


class RecordingConnector:
    name = "web1"

    def __init__(self):
        self.commands = []

    def run(self, cmd, **_kw):
        self.commands.append(cmd)
        return Result(0, b'{"message_type":"summary","snapshot_id":"abc","total_bytes_processed":7}\n', "")


def _target():
    return fake_target("db-secret-pw", "repo-secret-pw", name="local", type="local", path="/backups")


def test_new_restic_runs_the_dump_itself_with_the_password_in_its_environment():
    t, conn = _target(), RecordingConnector()
    summary = backup.dump_into_restic(conn, t.repository, t, ["site=shop"], Version(0, 17, 3))
    (cmd,) = conn.commands
    line = cmd.masked()
    assert "--stdin-from-command" in line and "mariadb-dump" in line and "--single-transaction" in line
    assert "MYSQL_PWD=***" in line and "db-secret-pw" not in cmd.script()
    assert summary["dump_size"] == 7


def test_old_restic_reads_the_dump_from_a_pipe_and_checks_its_tail_in_one_command():
    t, conn = _target(), RecordingConnector()
    tail = base64.b64encode(b"UNLOCK TABLES;\n-- Dump completed\n").decode()
    conn.run = lambda cmd, **kw: (
        conn.commands.append(cmd)
        or Result(
            0,
            b'{"message_type":"summary","snapshot_id":"abc"}\n',
            f"{backup.TAIL_MARK}{tail}\norch-pipestatus: 0 0 0\n",
        )
    )
    backup.dump_into_restic(conn, t.repository, t, ["site=shop"], Version(0, 14, 0))
    (pipeline,) = conn.commands
    assert "--stdin-from-command" not in pipeline.body() and "| restic backup" in pipeline.body()
    assert "tee /dev/fd/3" in pipeline.body()


def test_old_restic_without_the_tail_line_takes_the_dump_as_truncated_and_forgets_its_snapshot():
    t, conn = _target(), RecordingConnector()
    conn.run = lambda cmd, **kw: (
        conn.commands.append(cmd)
        or Result(
            0,
            b'{"message_type":"summary","snapshot_id":"abc"}\n' if "--stdin" in cmd.body() else b"[]",
            "orch-pipestatus: 0 0 0\n",
        )
    )
    with pytest.raises(OperationFailed, match="truncated"):
        backup.dump_into_restic(conn, t.repository, t, ["site=shop", "backup=1"], Version(0, 14, 0))
    assert any("snapshots" in c.body() for c in conn.commands)


def test_the_dump_tail_line_is_read_back_and_removed_from_stderr():
    line = f"{backup.TAIL_MARK}{base64.b64encode(b'-- Dump completed').decode()}\n"
    assert backup.dump_tail(f"warning: x\n{line}restic: done\n") == (b"-- Dump completed", "warning: x\nrestic: done\n")
    assert backup.dump_tail("no line\n") == (b"", "no line\n")
    assert backup.dump_tail(f"{backup.TAIL_MARK}not base64!\n")[0] == b""
