"""Faults, end to end: the SSH connector's one clock, frozen and dropped hosts, kill -9 of orch, S3 down or
refusing, a full disk, a database that goes away. After each: nothing reported `ok`, nothing left running, the
site unlocked, the repository sound, earlier backups restorable, the next run fine."""

from __future__ import annotations

import itertools
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fleet import ORCH, Fleet, make_tree, new_password, orch_env
from testbed import spawn, wait_ready
from testbed.inventory import host_entry, s3_secrets, s3_storage
from testbed.mariadb import MariaDB, start_mariadb
from testbed.ports import port_open
from testbed.s3 import S3Server, start_s3
from testbed.sshd import SshHost

from orchestrator.backends.remote import Command, HostLost, Raw
from orchestrator.backends.remote.ssh import SshConnector
from orchestrator.config import Host

pytestmark = pytest.mark.e2e


# --- helpers: processes on the testbed machine (every testbed host is a user on this machine) -----------------


def processes(user: str) -> dict[int, str]:
    """Return {pid: full command line} of a Unix user's processes (`ps -ww`: lines are never cut)."""
    out = subprocess.run(["ps", "-ww", "-u", user, "-o", "pid=,args="], capture_output=True, text=True).stdout
    return {int(pid): args for pid, _, args in (line.strip().partition(" ") for line in out.splitlines())}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(check, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    return check()


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def session_processes(host) -> list[int]:
    """The per-connection sshd processes of a testbed host (children of its listener, and theirs)."""
    found, parents = [], [host._proc.pid]
    while parents:
        out = subprocess.run(["pgrep", "-P", ",".join(map(str, parents))], capture_output=True, text=True).stdout
        parents = [int(pid) for pid in out.split() if command_line(int(pid)).startswith("sshd")]
        found += parents
    return found


def signal_all(pids, signum: int) -> None:
    """Send a signal to processes that may have ended meanwhile (one sshd process takes its partner along)."""
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def connector(host, stall: float = 600) -> SshConnector:
    return SshConnector(
        Host(
            name=host.name,
            connector="ssh",
            address=host.address,
            port=host.port,
            user=host.user,
            host_key=host.host_key,
            known_hosts=None,
            identity_file=str(host.identity_file),
            max_parallel=2,
            restic="restic",
            nightly_window=None,
            stall_timeout=stall,
        )
    )


def pids_pipeline(path: str, busy: bool = False) -> Command:
    """`sleep | sleep` on a host, each side appending its pid to `path` first; `busy`: each side starts a short
    sleep after another instead (progress the watchdog reports, no output)."""
    work = "while :; do sleep 0.2; done" if busy else "exec sleep 120"
    side = Command("bash", "-c", f'echo "$BASHPID" >> "$1"; {work}', "side", path)
    return side.pipe(side)


def remote_pids(host, path: str, count: int = 2) -> list[int]:
    def read():
        try:
            pids = [int(p) for p in host.run(f"cat {path} 2>/dev/null || true").stdout.split()]
        except subprocess.CalledProcessError:
            return None
        return pids if len(pids) >= count else None

    pids = wait_for(read, 15, 0.1)
    assert pids, "the remote command never started"
    return pids


# --- the SSH connector: one wall-clock timeout, the stall rule, dropped and frozen hosts ------------------------


@pytest.fixture
def path(ssh_hosts):
    """A fresh file in web1's home for a remote command to write its pids to; removed afterwards."""
    host = ssh_hosts["web1"]
    name = f"{host.home}/pids-{secrets.token_hex(6)}"
    yield name
    host.run(f"rm -f {name}")


def test_ssh_a_timeout_stops_the_remote_pipeline_and_keeps_stderr(ssh_hosts, path):
    host = ssh_hosts["web1"]
    cmd = Command("echo", "starting", Raw(">&2"), Raw("&&"), *pids_pipeline(path).parts)
    started = time.monotonic()
    with connector(host) as conn:
        result = conn.run(cmd, check=False, timeout=2)
    assert result.exit_status == 124 and time.monotonic() - started < 12
    assert result.stderr.startswith("starting\n") and "timed out after 2 s" in result.stderr
    pids = remote_pids(host, path)
    assert wait_for(lambda: not any(alive(pid) for pid in pids), 8), "the remote pipeline outlived its timeout"


def test_ssh_a_command_without_output_or_progress_is_stopped(ssh_hosts, path):
    host = ssh_hosts["web1"]
    with connector(host, stall=2) as conn:
        result = conn.run(pids_pipeline(path), check=False)
        assert result.exit_status == 124 and "no output and no progress for 2 s" in result.stderr
        assert conn.run(Command("echo", "next")).text == "next\n"  # the connection stays usable
    assert wait_for(lambda: not any(alive(pid) for pid in remote_pids(host, path)), 8)


def test_ssh_a_long_silent_command_that_works_is_not_stopped(ssh_hosts):
    busy = Command("bash", "-c", "end=$((SECONDS + 4)); while [ $SECONDS -lt $end ]; do :; done; echo done")
    with connector(ssh_hosts["web1"], stall=1.5) as conn:
        assert conn.run(busy).text == "done\n"


def test_ssh_a_dropped_connection_blames_the_host_not_the_command(ssh_hosts, path):
    host = ssh_hosts["web1"]
    with connector(host) as conn:
        before = set(session_processes(host))
        errors = []

        def run():
            try:
                conn.run(pids_pipeline(path), check=False)
            except HostLost as exc:
                errors.append(exc)

        runner = threading.Thread(target=run)
        runner.start()
        pids = remote_pids(host, path)
        signal_all(set(session_processes(host)) - before, signal.SIGKILL)
        runner.join(timeout=20)
    assert errors and "host web1: the SSH connection dropped" in str(errors[0])
    assert wait_for(lambda: not any(alive(pid) for pid in pids), 8), "the remote pipeline outlived its connection"


def test_ssh_a_frozen_host_fails_the_command_and_the_watchdog_stops_it(ssh_hosts, path):
    host = ssh_hosts["web1"]
    stopped = []
    try:
        with connector(host, stall=2) as conn:
            before = set(session_processes(host))
            conn.run(Command("true"))  # connected
            stopped = sorted(set(session_processes(host)) - before)

            def freeze():
                remote_pids(host, path)
                signal_all(stopped, signal.SIGSTOP)

            threading.Thread(target=freeze, daemon=True).start()
            started = time.monotonic()
            with pytest.raises(HostLost, match="host web1: no sign of life for 2 s"):
                conn.run(pids_pipeline(path, busy=True))  # busy: only the silence can stop it
            assert time.monotonic() - started < 15
        pids = remote_pids(host, path)
        # the host side, unable to hear orch, stops the command by itself (the frozen sshd cannot tell it)
        assert wait_for(lambda: not any(alive(pid) for pid in pids), 15), "the remote pipeline outlived orch"
    finally:
        signal_all(stopped, signal.SIGCONT)


# --- the fault matrix: a site of its own, with its own S3 server and MariaDB (both get broken here) -----------

SITE = "faultshop"
BIG_ROWS = 10_000  # ~10 MB of dump: long enough to catch mid-stream, short enough to back up in seconds


@dataclass
class Bed:
    fleet: Fleet
    s3: S3Server
    mariadb: MariaDB
    host: SshHost
    root: Path
    restic_env: dict
    baseline: str = ""
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    prefix: str = field(default_factory=lambda: str(secrets.randbelow(9000) + 1000))

    def task(self) -> str:
        """A task number of this session only: restic's tags then never match another run's processes."""
        return f"{self.prefix}{next(self.counter):03d}"

    def restic(self, *args, repository: str | None = None) -> subprocess.CompletedProcess:
        env = self.restic_env | ({"RESTIC_REPOSITORY": repository} if repository else {})
        return subprocess.run(["restic", "--no-cache", *args], capture_output=True, text=True, env=env, timeout=300)

    def snapshots(self, task: str) -> list[dict]:
        """The snapshots a task's backups saved (none for a run stopped half-way)."""
        out = self.restic("snapshots", "--json", "--tag", f"task={task}")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout or "[]")

    def rows(self) -> str:
        return self.mariadb.sql("SELECT COUNT(*), SUM(CRC32(payload)) FROM big", SITE).strip()


@pytest.fixture(scope="module")
def bed(tmp_path_factory, ssh_hosts) -> Bed:
    root = tmp_path_factory.mktemp("faults")
    s3, db = start_s3(root / "s3"), start_mariadb(root / "mariadb")
    try:
        host = ssh_hosts["web1"]
        db_pw, s3_env = new_password(), s3_secrets(s3, "T")
        db.create_database(SITE, SITE, db_pw)
        for where in ("%", "localhost"):
            db.sql(f"GRANT ALL ON `orch\\_verify\\_%`.* TO '{SITE}'@'{where}'")
        db.sql("CREATE TABLE big (id INT PRIMARY KEY AUTO_INCREMENT, payload TEXT) ENGINE=InnoDB", SITE)
        db.sql(f"INSERT INTO big (payload) SELECT REPEAT(MD5(seq), 30) FROM seq_1_to_{BIG_ROWS}", SITE)
        path = f"{host.home}/faults-{root.name}-{secrets.token_hex(3)}/{SITE}"
        make_tree(host, path, files=24, size=128 * 1024)
        env = orch_env(root / "state", **s3_env, T_DB_PW=db_pw)
        fleet = Fleet(root / "inventory", env, ssh_hosts)
        fleet.base = {
            "oplog": f"sqlite:///{root}/state/oplog.db",
            "storage": {"vault": s3_storage(s3, "fault-bucket", "T")},
            "hosts": {"web1": host_entry(host, stall_timeout=5)},
            "defaults": {"backup": {"storage": "vault", "exclude": ["wp-content/cache"]}},
        }
        fleet.sites = {
            SITE: {
                "name": SITE,
                "task": "10001",
                "environments": {
                    "production": {
                        "host": "web1",
                        "path": path,
                        "database": {
                            "engine": "mysql",
                            "name": SITE,
                            "user": SITE,
                            "password": {"env": "T_DB_PW"},
                            "host": db.host,
                            "port": db.port,
                        },
                    }
                },
            }
        }
        fleet.write_inventory(fleet.base, fleet.sites)
        restic_env = os.environ | {
            "RESTIC_PASSWORD": s3_env["T_RESTIC_PW"],
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "RESTIC_REPOSITORY": f"s3:{s3.endpoint}/fault-bucket/orch/{SITE}",
        }
        bed = Bed(fleet, s3, db, host, root, restic_env)
        bed.baseline = fleet.orch_json("backup", SITE, "--task", bed.task())[0]["backup_id"]
        yield bed
    finally:
        s3.stop()
        db.stop()


def ps() -> dict[int, tuple[str, str]]:
    """{pid: (user, full command line)} of every process (`ps -eww`: lines are never cut)."""
    out = subprocess.run(["ps", "-eww", "-o", "pid=,user:32=,args="], capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        pid, user, args = (line.split(None, 2) + ["", ""])[:3]
        rows[int(pid)] = (user, args)
    return rows


def of_owner(owner: str) -> dict[int, str]:
    """Processes started for one orchestrator process (the watchdog tags them ORCH_OWNER=machine:pid)."""
    tag, found = f"ORCH_OWNER={owner}".encode(), {}
    for pid, (_, args) in ps().items():
        try:
            if tag in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") and alive(pid):
                found[pid] = args
        except OSError:
            continue
    return found


def start_orch(bed: Bed, *args) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [*ORCH, "-i", str(bed.fleet.inventory), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=bed.fleet.env,
    )
    return proc, f"{socket.gethostname()}:{proc.pid}"


def wait_for_process(
    bed: Bed, proc: subprocess.Popen, owner: str, starts: tuple[str, ...], contains: str = ""
) -> dict[int, str]:
    """Wait until orch runs, on the host, a process whose command line starts with one of `starts`."""

    def found():
        assert proc.poll() is None, f"orch ended first: {proc.stderr.read()}"
        return {pid: args for pid, args in of_owner(owner).items() if args.startswith(starts) and contains in args}

    hits = wait_for(found, 90, 0.02)
    assert hits, f"orch never ran {starts}"
    return hits


def mid_dump(bed: Bed, proc, owner) -> dict[int, str]:
    return wait_for_process(bed, proc, owner, ("/usr/bin/mariadb-dump", "/usr/bin/mysqldump"))


def kill_9(proc: subprocess.Popen, hold: dict[int, str] | None = None) -> None:
    """kill -9 orch. `hold`: its commands on the host are stopped first, so that they stand for work that would
    go on for long (a big import): only something that kills them ends them, they cannot finish by themselves
    or trip over the closed channel."""
    signal_all(hold or {}, signal.SIGSTOP)
    proc.kill()
    proc.wait()


def assert_nothing_left(owner: str, seen: dict[int, str]) -> None:
    """Nothing of the dead run goes on: not what we saw running, nor anything else it started."""
    assert wait_for(lambda: not any(alive(pid) for pid in seen) and not of_owner(owner), 20), {
        pid: args[:120] for pid, args in of_owner(owner).items()
    }


def aftermath(
    bed: Bed,
    task: str,
    error: str | None = None,
    *,
    site: str = SITE,
    action: str = "backup",
    baseline: str | None = None,
    repository: str | None = None,
    next_run=None,
) -> dict:
    """After a fault: the operation failed or was interrupted (never ok), the site is not held, the repository
    passes `restic check`, the baseline backup still restores (the verify drill), the next run works."""
    op = next(op for op in bed.fleet.orch_json("log", "--task", task) if op["action"] == action)
    assert op["status"] in ("failed", "interrupted"), op
    if error:
        assert error in op["error"], op["error"]
    assert all(lock["stale"] for lock in bed.fleet.orch_json("locks") if lock["site"] == site)
    bed.restic("unlock", repository=repository)  # a hard-killed restic's lock is stale: orch prune removes it too
    check = bed.restic("check", repository=repository)
    assert check.returncode == 0, check.stdout + check.stderr
    report = bed.fleet.orch_json("verify", site, "--backup", baseline or bed.baseline, "--task", task)
    assert report["status"] == "ok", report
    if next_run:
        next_run()
    else:
        assert bed.fleet.orch_json("backup", site, "--task", task)[0]["status"] == "ok"
    return op


def test_kill_9_of_orch_during_a_dump_stops_the_dump_and_restic_on_the_host(bed):
    task = bed.task()
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    seen = mid_dump(bed, proc, owner)
    seen |= wait_for_process(bed, proc, owner, ("restic backup",), f"task={task}")
    kill_9(proc, hold=seen)
    assert_nothing_left(owner, seen)
    assert not bed.snapshots(task), "the dump went on after orch died and was saved"
    aftermath(bed, task, "ended without finishing the operation")


def test_kill_9_of_orch_during_the_files_part_leaves_an_incomplete_backup(bed):
    task = bed.task()
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    seen = wait_for_process(bed, proc, owner, ("restic backup",), "part=files")
    kill_9(proc, hold=seen)
    assert_nothing_left(owner, seen)
    assert [tag for snap in bed.snapshots(task) for tag in snap["tags"] if tag.startswith("part=")] == ["part=db"]
    listed = {b["task"]: b["status"] for b in bed.fleet.orch_json("backups", SITE)}
    assert listed[task] == "incomplete"
    aftermath(bed, task, "ended without finishing the operation")


def test_kill_9_of_orch_during_a_restore_stops_it_and_a_second_restore_completes(bed):
    before = bed.rows()
    bed.mariadb.sql("DELETE FROM big WHERE id % 3 = 0", SITE)
    task = bed.task()
    proc, owner = start_orch(
        bed, "restore", SITE, "--backup", bed.baseline, "--to", "production", "--task", task, "--yes"
    )
    seen = wait_for_process(bed, proc, owner, ("restic restore", "restic dump"))
    kill_9(proc, hold=seen)
    assert_nothing_left(owner, seen)

    def restore_again():
        bed.fleet.orch("restore", SITE, "--backup", bed.baseline, "--to", "production", "--task", task, "--yes")
        assert bed.rows() == before

    aftermath(bed, task, "ended without finishing the operation", action="restore", next_run=restore_again)


def test_what_a_dead_orch_left_running_is_stopped_by_the_next_command(bed):
    """Its watchdog killed too (nothing on the host can stop the dump now): the next command that reaps the
    dead operation finds and stops what is left, and says so in the operation's error."""
    task = bed.task()
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    mid_dump(bed, proc, owner)
    seen = wait_for_process(bed, proc, owner, ("restic backup",), f"task={task}")
    seen = of_owner(owner)
    signal_all(seen, signal.SIGSTOP)  # held mid-stream, so they cannot finish on their own either
    watchdogs = [pid for pid, (_, args) in ps().items() if f" run {owner} " in args]
    assert watchdogs
    signal_all(watchdogs, signal.SIGKILL)
    kill_9(proc)
    time.sleep(0.5)
    assert all(alive(pid) for pid in seen), "orphans expected"
    op = bed.fleet.orch_json("log", "--task", task)[0]  # the command that reaps
    assert "leftover process(es) on host web1" in op["error"] and "mariadb-dump" in op["error"], op["error"]
    assert_nothing_left(owner, seen)
    aftermath(bed, task)


def test_a_dropped_ssh_connection_mid_backup_names_the_host(bed):
    task = bed.task()
    before = set(session_processes(bed.host))
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    seen = mid_dump(bed, proc, owner)
    signal_all(set(session_processes(bed.host)) - before, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1
    assert "host web1: the SSH connection dropped" in proc.stderr.read()
    assert_nothing_left(owner, seen)
    aftermath(bed, task, "host web1: the SSH connection dropped")


def test_a_frozen_host_mid_backup_fails_the_backup_frees_the_site_and_the_host_stops_the_dump(bed):
    task = bed.task()
    before = set(session_processes(bed.host))
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    seen = mid_dump(bed, proc, owner)
    frozen = sorted(set(session_processes(bed.host)) - before)
    started = time.monotonic()
    signal_all(frozen, signal.SIGSTOP)
    try:
        assert proc.wait(timeout=60) == 1
        assert time.monotonic() - started < 30  # stall_timeout 5 s, then forgetting the half-made snapshot
        assert "host web1: no sign of life for 5 s" in proc.stderr.read()
        assert not [lock for lock in bed.fleet.orch_json("locks") if lock["site"] == SITE]
        assert_nothing_left(owner, seen)  # the host's watchdog heard nothing from orch and stopped them
    finally:
        signal_all(frozen, signal.SIGCONT)
    aftermath(bed, task, "no sign of life")


def test_s3_stopped_mid_upload_fails_the_backup_naming_the_storage(bed):
    task = bed.task()
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    seen = wait_for_process(bed, proc, owner, ("restic backup",), "part=files")
    signal_all(seen, signal.SIGSTOP)  # caught before it uploaded everything...
    bed.s3.stop()
    try:
        signal_all(seen, signal.SIGCONT)  # ...it goes on against a dead endpoint
        assert proc.wait(timeout=150) == 1
        error = proc.stderr.read()
        assert "storage vault (s3:" in error and "restic backup failed" in error, error
        assert "restic restic" not in error and "exit -1" not in error
    finally:
        bed.s3.start()
    aftermath(bed, task, "storage vault")


def test_wrong_s3_credentials_name_the_storage_not_the_database(bed):
    task = bed.task()
    proc = bed.fleet.orch("backup", SITE, "--task", task, env={"T_S3_SECRET": "not-the-secret"}, expect=1)
    error = next(line for line in proc.stderr.splitlines() if line.startswith("orch: "))
    assert error.startswith(f"orch: {SITE}/production: storage vault (s3:") and "refused our credentials" in error
    assert "dump" not in error and "database" not in error
    aftermath(bed, task, "storage vault")


def test_the_database_going_away_mid_dump_names_the_database(bed):
    task = bed.task()
    proc, owner = start_orch(bed, "backup", SITE, "--task", task)
    seen = mid_dump(bed, proc, owner)
    signal_all(seen, signal.SIGSTOP)  # the dump holds its place mid-table while the server dies
    server = bed.mariadb._proc
    server.kill()
    server.wait()
    try:
        signal_all(seen, signal.SIGCONT)
        assert proc.wait(timeout=60) == 1
        error = proc.stderr.read()
        assert f"database {SITE} (mysql at 127.0.0.1:{bed.mariadb.port}): dump failed: " in error, error
        assert "Lost connection" in error or "server has gone away" in error, error
    finally:
        restart_mariadb(bed.mariadb)
    aftermath(bed, task, f"database {SITE} (mysql")


def restart_mariadb(db: MariaDB) -> None:
    """Start a killed test MariaDB again on the same data, port and socket (InnoDB recovers)."""
    argv = db._proc.args
    log = Path(next(a for a in argv if a.startswith("--log-error=")).split("=", 1)[1])
    db._proc = spawn(argv, log.with_name("mysqld.out"))
    wait_ready(db._proc, lambda: db.socket.exists() and port_open("127.0.0.1", db.port), "mariadbd", log, 60)


def small_site(bed: Bed, name: str, storage: str = "vault", files: int = 3) -> dict:
    """A files-only site on web1 (no database), backed up to `storage`."""
    path = f"{bed.host.home}/faults-{bed.root.name}-{secrets.token_hex(3)}/{name}"
    make_tree(bed.host, path, files=files, size=64 * 1024)
    return {
        "name": name,
        "task": "10001",
        "backup": {"storage": storage},
        "environments": {"production": {"host": "web1", "path": path}},
    }


@pytest.fixture
def with_sites(bed):
    """Add sites (and storages, host settings) to the bed's inventory for one test; put it back afterwards."""

    def add(sites: dict, storage: dict | None = None, web1: dict | None = None, scheduler: dict | None = None):
        base = json.loads(json.dumps(bed.fleet.base))
        base["storage"] |= storage or {}
        base["hosts"]["web1"] |= web1 or {}
        if scheduler:
            base["scheduler"] = scheduler
        bed.fleet.write_inventory(base, bed.fleet.sites | sites)

    yield add
    bed.fleet.write_inventory(bed.fleet.base, bed.fleet.sites)


@pytest.fixture
def tiny_disk(bed):
    """An 8 MiB tmpfs in web1's home, owned by its user: a filesystem that fills up."""
    mount = Path(f"{bed.host.home}/tiny-{secrets.token_hex(3)}")
    owner = pwd.getpwnam(bed.host.user)
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=8m,mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}", "tmpfs", str(mount)],
        check=True,
    )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)
    mount.rmdir()


def test_a_full_disk_fails_the_backup_naming_the_storage(bed, tiny_disk, with_sites):
    site = small_site(bed, "fullsite", storage="tiny", files=40)  # 2.5 MiB: fits
    with_sites(
        {"fullsite": site},
        storage={"tiny": {"type": "local", "path": str(tiny_disk), "password": {"env": "T_RESTIC_PW"}}},
    )
    baseline = bed.fleet.orch_json("backup", "fullsite", "--task", bed.task())[0]["backup_id"]
    path = site["environments"]["production"]["path"]
    bed.host.run(f"head -c 12M /dev/urandom > {path}/video.bin")  # does not fit any more
    task = bed.task()
    proc = bed.fleet.orch("backup", "fullsite", "--task", task, expect=1)
    assert f"storage tiny ({tiny_disk}/fullsite)" in proc.stderr and "no space left on device" in proc.stderr
    assert "restic restic" not in proc.stderr  # the old message doubled the word
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)  # the admin makes room
    aftermath(
        bed, task, "no space left on device", site="fullsite", baseline=baseline, repository=f"{tiny_disk}/fullsite"
    )


def test_a_deleted_repository_says_how_to_start_a_new_one(bed, with_sites):
    with_sites({"gone": small_site(bed, "gone")})
    bed.fleet.orch("backup", "gone", "--task", bed.task())
    s3 = bed.s3.client()  # someone deletes the repository's objects
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="fault-bucket", Prefix="orch/gone/"):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket="fault-bucket", Key=item["Key"])
    task = bed.task()
    proc = bed.fleet.orch("backup", "gone", "--task", task, expect=1)
    assert "storage vault (s3:" in proc.stderr and "no restic repository there" in proc.stderr
    assert f"orch backup gone --env production --init --task {task}" in proc.stderr
    assert bed.fleet.orch_json("log", "--task", task)[0]["status"] == "failed"
    bed.fleet.orch("backup", "gone", "--env", "production", "--init", "--task", task)
    assert [b["status"] for b in bed.fleet.orch_json("backups", "gone")] == ["ok"]


class SlowLink:
    """A TCP proxy in front of the S3 server that holds each answer back for `delay` seconds: a distant
    endpoint, where first backups started together all find the bucket missing before any has made it."""

    def __init__(self, target_port: int, delay: float):
        self.target, self.delay = ("127.0.0.1", target_port), delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._copy, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._copy, args=(upstream, client, self.delay), daemon=True).start()

    @staticmethod
    def _copy(source, sink, delay):
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                sock.close()

    def close(self):
        self.server.close()


def test_parallel_first_backups_into_a_new_bucket_all_succeed(bed, with_sites):
    link = SlowLink(int(bed.s3.endpoint.rsplit(":", 1)[1]), delay=0.3)
    try:
        storage = {
            "fresh": bed.fleet.base["storage"]["vault"]
            | {"endpoint": f"http://127.0.0.1:{link.port}", "bucket": f"fresh-{secrets.token_hex(4)}"}
        }
        sites = {f"first{i}": small_site(bed, f"first{i}", storage="fresh", files=1) for i in range(6)}
        with_sites(sites, storage=storage, web1={"max_parallel": 6}, scheduler={"max_parallel": 6})
        results = bed.fleet.orch_json("backup", *sites, "--task", bed.task(), expect=None)
    finally:
        link.close()
    assert [r["status"] for r in results] == ["ok"] * len(sites), [r.get("error") for r in results]


def test_a_container_command_streams_both_ways_and_keeps_its_wall_clock_timeout(docker_engine):
    """`docker exec` has no watchdog (an image may lack python3), but the same pump and clock."""
    from orchestrator.backends.remote import Sensitive
    from orchestrator.backends.remote.docker import ContainerConnector

    client = docker_engine.client()
    box = client.containers.run(docker_engine.images["debian"], ["sleep", "infinity"], detach=True, remove=True)
    try:
        conn = ContainerConnector(client, box, "box")
        data = os.urandom(3 << 20)
        assert conn.run(Command("cat"), stdin=data).stdout == data
        said = conn.run(
            Command("bash", "-c", 'echo "$PW"; echo err >&2; exit 3').env(PW=Sensitive("box-secret-1")), check=False
        )
        assert (said.exit_status, said.stdout, said.stderr) == (3, b"box-secret-1\n", "err\n")
        started = time.monotonic()
        late = conn.run(Command("bash", "-c", "echo partial; sleep 30"), check=False, timeout=1)
        assert late.exit_status == 124 and late.stdout == b"partial\n" and "timed out after 1 s" in late.stderr
        assert time.monotonic() - started < 15  # the sleep's 30 s would be a timeout that never fired
    finally:
        box.kill()
        client.close()
