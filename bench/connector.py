"""Benchmark: what running every command under the watchdog costs, locally and over SSH.

What is compared
    * orch:     `Connector.run()`: the command under the watchdog (`python3 -I -S -c SOURCE run ... -- bash -c
                SCRIPT`), stdin as frames with heartbeats, stdout and stderr read by one select loop.
    * baseline: the same `bash -c SCRIPT` without any of it, the way the connectors ran commands before the
                watchdog: `subprocess.Popen(...).communicate()` locally; over SSH an exec channel on the SAME
                paramiko transport, stdin sent with `sendall`, output read until EOF, then the exit status.
    Three measures, each side interleaved round by round (so load changes hit both alike):
    * latency: `true`, the median of N runs (what a backup pays per command; it runs about a dozen);
    * stdin:   256 MiB written into `cat > /dev/null` (a relay, a restore fed from orch);
    * stdout:  256 MiB read from `head -c 256M /dev/zero` (a dump or tar streamed to orch).

Setup
    One testbed sshd host (user `orch-bench`, tests/testbed/sshd.py) on loopback, started and stopped here.

Usage
    .venv/bin/python bench/connector.py [--rounds 30] [--mib 256]
"""

from __future__ import annotations

import argparse
import io
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed.sshd import start_sshd  # noqa: E402

from orchestrator.backends.remote import Command, LocalConnector  # noqa: E402
from orchestrator.backends.remote.ssh import SshConnector  # noqa: E402
from orchestrator.config import Host  # noqa: E402


class Sink(io.RawIOBase):
    """Counts what it is given and keeps nothing."""

    def __init__(self):
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.count += len(data)
        return len(data)


def raw_local(cmd: Command, stdin: bytes | None = None) -> int:
    proc = subprocess.Popen(cmd.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = proc.communicate(stdin)
    return len(out)


def raw_ssh(transport, cmd: Command, stdin: bytes | None = None) -> int:
    chan = transport.open_session()
    chan.exec_command(shlex.join(cmd.argv()))
    view = memoryview(stdin or b"")
    for start in range(0, len(view), 1 << 16):  # paramiko's sendall of one huge buffer copies its rest each time
        chan.sendall(view[start : start + (1 << 16)])
    chan.shutdown_write()
    size = 0
    while data := chan.recv(1 << 16):
        size += len(data)
    chan.recv_exit_status()
    chan.close()
    return size


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def compare(name: str, rounds: int, orch, baseline, unit: str, scale: float = 1.0, setup=lambda: None) -> None:
    ours, theirs = [], []
    for _ in range(rounds):  # interleaved: a load spike hits both sides alike
        setup()
        ours.append(timed(orch))
        setup()
        theirs.append(timed(baseline))
    a, b = statistics.median(ours), statistics.median(theirs)
    if unit == "ms":
        print(f"| {name} | {a * 1000:.1f} ms | {b * 1000:.1f} ms | {a / b:.2f} |")
    else:
        print(f"| {name} | {scale / a:.0f} {unit} | {scale / b:.0f} {unit} | {b / a:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="orch-bench-connector-"))
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    host = start_sshd(work / "ssh", "bench", "127.0.0.2", "orch-bench", key)
    try:
        ssh = SshConnector(
            Host(
                name="bench",
                connector="ssh",
                address=host.address,
                port=host.port,
                user=host.user,
                host_key=host.host_key,
                known_hosts=None,
                identity_file=str(key),
                max_parallel=2,
                restic="restic",
                nightly_window=None,
            )
        )
        local = LocalConnector()

        def fresh():  # a new connection (untimed): paramiko's re-keying after 512 MiB stalls under load
            ssh.close()
            ssh.run(Command("true"))

        def transport():
            return ssh.conn.transport

        fresh()
        data = b"\0" * (args.mib << 20)
        true, cat, head = (
            Command("true"),
            Command("cat").to_file("/dev/null"),
            Command("head", "-c", f"{args.mib}M", "/dev/zero"),
        )
        throughput_rounds = max(3, args.rounds // 6)
        print(f"| measure ({args.rounds} rounds; {throughput_rounds} for throughput) | orch | baseline | ratio |")
        print("|---|---:|---:|---:|")
        compare("local: `true`, median latency", args.rounds, lambda: local.run(true), lambda: raw_local(true), "ms")
        compare(
            "ssh: `true`, median latency", args.rounds, lambda: ssh.run(true), lambda: raw_ssh(transport(), true), "ms"
        )
        compare(
            f"local: {args.mib} MiB into stdin",
            throughput_rounds,
            lambda: local.run(cat, stdin=data),
            lambda: raw_local(cat, data),
            "MiB/s",
            args.mib,
        )
        compare(
            f"ssh: {args.mib} MiB into stdin",
            throughput_rounds,
            lambda: ssh.run(cat, stdin=data),
            lambda: raw_ssh(transport(), cat, data),
            "MiB/s",
            args.mib,
            setup=fresh,
        )
        compare(
            f"local: {args.mib} MiB from stdout",
            throughput_rounds,
            lambda: local.run(head, stdout=Sink()),
            lambda: raw_local(head),
            "MiB/s",
            args.mib,
        )
        compare(
            f"ssh: {args.mib} MiB from stdout",
            throughput_rounds,
            lambda: ssh.run(head, stdout=Sink()),
            lambda: raw_ssh(transport(), head),
            "MiB/s",
            args.mib,
            setup=fresh,
        )
        ssh.close()
    finally:
        host.stop()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
