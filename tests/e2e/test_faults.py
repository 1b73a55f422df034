"""Faults, end to end: the SSH connector's one clock, frozen and dropped hosts, kill -9 of orch, S3 down or
refusing, a full disk, a database that goes away. After each: nothing reported `ok`, nothing left running, the
site unlocked, the repository sound, earlier backups restorable, the next run fine."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

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


def connector(host, stall: float = 600) -> SshConnector:
    return SshConnector(Host(name=host.name, connector="ssh", address=host.address, port=host.port, user=host.user,
                             host_key=host.host_key, known_hosts=None, identity_file=str(host.identity_file),
                             max_parallel=2, restic="restic", nightly_window=None, stall_timeout=stall))


def pids_pipeline(path: str) -> Command:
    """`sleep | sleep` on a host, each side appending its pid to `path` first."""
    side = Command("bash", "-c", 'echo "$BASHPID" >> "$1"; exec sleep 120', "side", path)
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
    assert result.exit_status == 124 and time.monotonic() - started < 5
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

        import threading
        runner = threading.Thread(target=run)
        runner.start()
        pids = remote_pids(host, path)
        for pid in set(session_processes(host)) - before:
            os.kill(pid, signal.SIGKILL)
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
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)

            import threading
            threading.Thread(target=freeze, daemon=True).start()
            started = time.monotonic()
            with pytest.raises(HostLost, match="host web1: no sign of life for 2 s"):
                conn.run(pids_pipeline(path))
            assert time.monotonic() - started < 8
        pids = remote_pids(host, path)
        # the host side, unable to hear orch, stops the command by itself (the frozen sshd cannot tell it)
        assert wait_for(lambda: not any(alive(pid) for pid in pids), 15), "the remote pipeline outlived orch"
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
