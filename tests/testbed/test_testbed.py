"""Proof that each testbed fixture gives a real, correctly locked-down daemon."""

from __future__ import annotations

import base64
import subprocess

import paramiko
import psycopg
import pytest
import sqlalchemy
from botocore.exceptions import ClientError

from testbed import TestbedError, spawn, wait_ready

TOOLS = "restic mariadb-dump mariadb pg_dump psql pg_restore"


def ssh_connect(host, host_key: str | None = None) -> paramiko.SSHClient:
    """Key-only login that trusts exactly ``host_key`` (default: the host's own) and nothing else."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key_type, key_data = (host_key or host.host_key).split()
    key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    client.get_host_keys().add(f"[{host.address}]:{host.port}", key_type, key)
    client.connect(
        host.address,
        host.port,
        username=host.user,
        key_filename=str(host.identity_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def ssh_run(client: paramiko.SSHClient, cmd: str) -> str:
    _, stdout, stderr = client.exec_command(cmd)
    out, rc = stdout.read().decode(), stdout.channel.recv_exit_status()
    assert rc == 0, f"{cmd}: rc={rc} {stderr.read().decode()}"
    return out


@pytest.mark.parametrize("name,user", [("web1", "orch-web1"), ("stage1", "orch-stage1")])
def test_ssh_login_with_exact_host_key(ssh_hosts, name, user):
    host = ssh_hosts[name]
    assert (host.user, host.address) == (user, {"web1": "127.0.0.2", "stage1": "127.0.0.3"}[name])
    with ssh_connect(host) as client:
        assert ssh_run(client, "whoami").strip() == user
        assert ssh_run(client, "pwd").strip() == str(host.home)
        # the orchestrator's remote commands must find these on a plain non-interactive ssh PATH
        ssh_run(client, f"command -v {TOOLS} && pg_dump --version && restic version")
        with client.open_sftp() as sftp:
            assert ".ssh" in sftp.listdir(".")


def test_ssh_rejects_other_host_key(ssh_hosts):
    web1, stage1 = ssh_hosts["web1"], ssh_hosts["stage1"]
    assert web1.host_key != stage1.host_key
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_connect(web1, host_key=stage1.host_key)


def test_ssh_hosts_do_not_share_files(ssh_hosts):
    web1, stage1 = ssh_hosts["web1"], ssh_hosts["stage1"]
    stage1.run("echo secret > testbed-probe.txt")
    assert web1.run("stat -c %a ~").stdout.strip() == "700"
    with pytest.raises(subprocess.CalledProcessError):
        web1.run(f"cat {stage1.home}/testbed-probe.txt")
    with pytest.raises(subprocess.CalledProcessError):
        stage1.run(f"ls {web1.home}")
    stage1.run("rm testbed-probe.txt")


def test_mariadb_tcp_checks_password_and_allows_dump(mariadb):
    mariadb.create_database("tb_app", "tb_user", "right'pw")
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (42)", "tb_app")
    tcp = ["--no-defaults", "-h", mariadb.host, "-P", str(mariadb.port), "-u", "tb_user"]

    def client(password: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mariadb", *tcp, f"-p{password}", "-N", "-B", "-e", "SELECT id FROM t", "tb_app"],
            capture_output=True,
            text=True,
        )

    assert client("right'pw").stdout.strip() == "42"
    wrong = client("wrong")
    assert wrong.returncode != 0 and "Access denied" in wrong.stderr
    dump = subprocess.run(
        ["mariadb-dump", *tcp, "-pright'pw", "--single-transaction", "--routines", "--triggers", "--events", "tb_app"],
        capture_output=True,
        text=True,
    )
    assert dump.returncode == 0, dump.stderr
    assert "INSERT INTO `t` VALUES" in dump.stdout and "(42)" in dump.stdout  # 10.11 breaks the line here


def test_postgres_tcp_checks_password(postgres):
    postgres.create_database("tb_app", "tb_user", "right'pw")
    dsn = dict(host=postgres.host, port=postgres.port, dbname="tb_app", user="tb_user")
    with psycopg.connect(**dsn, password="right'pw") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("tb_user",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**dsn, password="wrong")
    engine = sqlalchemy.create_engine(postgres.url("tb_app"))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar() == "postgres"
    engine.dispose()
    assert postgres.sql("SELECT datname FROM pg_database WHERE datname = 'tb_app'").strip() == "tb_app"


def test_s3_checks_signature_and_stores_objects(s3):
    with pytest.raises(ClientError):
        s3.client(secret_key="wrong-secret").list_buckets()
    client = s3.client()
    client.create_bucket(Bucket="tb-bucket")
    client.put_object(Bucket="tb-bucket", Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket="tb-bucket", Key="a/b.txt")["Body"].read() == b"hello"
    assert (s3.root / "tb-bucket" / "a" / "b.txt").read_bytes() == b"hello"


def test_start_failure_reports_log_tail(tmp_path):
    log = tmp_path / "daemon.log"
    proc = spawn(["sh", "-c", "echo 'bind: address in use'; exit 3"], log)
    with pytest.raises(TestbedError, match="(?s)exited with code 3.*bind: address in use"):
        wait_ready(proc, lambda: False, "fake daemon", log)
