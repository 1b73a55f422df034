"""The local connector under its watchdog: one wall-clock timeout over both streams, the stall rule, and commands
that die with their orchestrator (kill -9, or frozen)."""

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.backends.remote import Command, LocalConnector, Raw
from orchestrator.backends.remote.supervise import Beats, sweep_command
from orchestrator.backends.remote.watchdog import ALIVE, PROGRESS
from orchestrator.errors import RemoteError


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def read_pids(path: Path, count: int, timeout: float = 10) -> list[int]:
    assert wait_until(lambda: path.exists() and len(path.read_text().split()) >= count, timeout), "never started"
    return [int(pid) for pid in path.read_text().split()]


def pipeline_recording_pids(pids: Path) -> Command:
    """`sleep | sleep`, each side writing its pid to `pids` first (so the test can look for it afterwards)."""
    side = Command("bash", "-c", 'echo "$BASHPID" >> "$1"; exec sleep 60', "side", pids)
    return side.pipe(side)


def test_a_timeout_stops_a_command_that_would_run_longer():
    started = time.monotonic()
    result = LocalConnector().run(Command("sleep", "4"), check=False, timeout=1)
    assert result.exit_status == 124
    assert 0.9 < time.monotonic() - started < 3.5  # before the sleep's 4 s
    assert "timed out after 1 s" in result.stderr


def test_a_timeout_keeps_what_the_command_wrote_to_stderr_and_stdout():
    cmd = Command("bash", "-c", "echo partial; echo 'working on it' >&2; sleep 10")
    result = LocalConnector().run(cmd, check=False, timeout=1)
    assert result.exit_status == 124 and result.stdout == b"partial\n"
    assert result.stderr.startswith("working on it\n") and result.stderr.endswith("stopped")


def test_a_timeout_with_check_raises_with_status_124():
    with pytest.raises(RemoteError, match="exited 124"):
        LocalConnector().run(Command("sleep", "5"), timeout=0.5)


def test_a_timeout_kills_every_process_of_the_pipeline(tmp_path):
    pids = tmp_path / "pids"
    result = LocalConnector().run(pipeline_recording_pids(pids), check=False, timeout=1)
    assert result.exit_status == 124
    found = read_pids(pids, 2)
    assert all(gone(pid) for pid in found), [pid for pid in found if not gone(pid)]


def test_a_timeout_counts_wall_clock_even_while_output_flows():
    chatty = Command("bash", "-c", "while :; do echo tick; sleep 0.1; done")
    started = time.monotonic()
    result = LocalConnector().run(chatty, check=False, timeout=1.5)
    assert result.exit_status == 124 and result.stdout.count(b"tick") >= 3
    # it would run forever (an idle timeout never fires on it): a wide bound, a loaded CI machine is slow
    assert time.monotonic() - started < 20


def test_a_command_with_neither_output_nor_progress_is_stopped_after_the_stall_time():
    started = time.monotonic()
    result = LocalConnector(stall=1.5).run(Command("sleep", "30"), check=False)
    assert result.exit_status == 124 and "no output and no progress for 1.5 s" in result.stderr
    assert time.monotonic() - started < 15  # well before the sleep's 30 s, with room for a loaded machine


def test_a_silent_command_that_works_is_not_a_stall():
    """No output at all, but CPU time (and I/O) in its processes: the watchdog reports progress."""
    busy = Command("bash", "-c", "end=$((SECONDS + 3)); while [ $SECONDS -lt $end ]; do :; done; echo done")
    result = LocalConnector(stall=1).run(busy)
    assert result.text == "done\n"


def test_output_now_and_then_keeps_a_command_alive():
    slow = Command("bash", "-c", "for i in 1 2 3 4 5; do sleep 0.6; echo $i; done")
    assert LocalConnector(stall=1).run(slow).text.split() == ["1", "2", "3", "4", "5"]


def test_no_stall_limit_lets_an_idle_command_finish():
    assert LocalConnector(stall=None).run(Command("sleep", "1.2")).ok


def test_stdin_arrives_whole_and_beats_never_reach_stdout_or_stderr():
    data = os.urandom(3 << 20) + ALIVE + PROGRESS  # even the markers' bytes pass through stdin/stdout intact
    busy_then_cat = Command("bash", "-c", "for i in $(seq 300000); do :; done; cat; echo err >&2")
    result = LocalConnector(stall=0.8).run(busy_then_cat, stdin=data)  # beats come while it is busy
    assert result.stdout == data and result.stderr == "err\n"


def test_a_slow_stdin_source_does_not_make_the_command_look_dead(tmp_path):
    """The watchdog hears heartbeats while orch waits on its own stdin source (a relay from another host)."""
    read_end, write_end = os.pipe()

    def trickle():
        with open(write_end, "wb") as sink:
            for _ in range(4):
                time.sleep(0.7)
                sink.write(b"x")
                sink.flush()

    import threading

    threading.Thread(target=trickle, daemon=True).start()
    with open(read_end, "rb") as source:
        result = LocalConnector(stall=1).run(Command("cat"), stdin=source)
    assert result.stdout == b"xxxx"


def test_a_command_that_ignores_its_stdin_still_finishes():
    result = LocalConnector().run(Command("bash", "-c", "exec 0<&-; echo ok"), stdin=os.urandom(1 << 20))
    assert result.text == "ok\n"


def test_exit_status_and_signal_deaths_come_back():
    local = LocalConnector()
    assert local.run(Command("bash", "-c", "exit 7"), check=False).exit_status == 7
    assert local.run(Command("bash", "-c", "kill -TERM $$"), check=False).exit_status == 128 + signal.SIGTERM


def test_a_pipeline_still_gets_sigpipe():
    """The watchdog is Python, which ignores SIGPIPE; the commands it starts must not inherit that."""
    result = LocalConnector().run(Command("yes").pipe(Command("head", "-n", "2")), check=False, timeout=10)
    assert result.text == "y\ny\n" and result.stderr == ""  # not "yes: standard output: Broken pipe"
    assert result.exit_status == 128 + signal.SIGPIPE  # pipefail: `yes` died of SIGPIPE, as in any shell


ORCHESTRATOR = textwrap.dedent("""
    import sys
    from orchestrator.backends.remote import Command, LocalConnector
    side = Command("bash", "-c", 'echo "$BASHPID" >> "$1"; exec sleep 60', "side", sys.argv[1])
    LocalConnector(stall=float(sys.argv[2])).run(side.pipe(side))
""")


def start_orchestrator(pids: Path, stall: float = 600) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(pids), str(stall)], cwd=Path(__file__).parents[3])


def test_kill_9_of_the_orchestrator_stops_its_commands(tmp_path):
    pids = tmp_path / "pids"
    orch = start_orchestrator(pids)
    try:
        found = read_pids(pids, 2)
        orch.kill()
        assert wait_until(lambda: all(gone(pid) for pid in found), timeout=3), "the pipeline outlived orch"
    finally:
        orch.kill()
        orch.wait()


def test_a_frozen_orchestrator_has_its_commands_stopped_after_the_silence(tmp_path):
    pids = tmp_path / "pids"
    orch = start_orchestrator(pids, stall=1)
    try:
        found = read_pids(pids, 2)
        orch.send_signal(signal.SIGSTOP)
        assert not wait_until(lambda: all(gone(pid) for pid in found), timeout=1), "stopped too early"
        assert wait_until(lambda: all(gone(pid) for pid in found), timeout=4), "the pipeline outlived orch"
    finally:
        orch.kill()
        orch.wait()


def test_sweep_stops_what_a_dead_orchestrator_left_and_lists_it(tmp_path):
    # an owner of this run alone: the same test running beside this one (another checkout) sweeps its own
    owner = f"gone-{secrets.token_hex(4)}:4242"
    leftover = subprocess.Popen(["sleep", "60"], env=os.environ | {"ORCH_OWNER": owner})
    bystander = subprocess.Popen(["sleep", "60"], env=os.environ | {"ORCH_OWNER": owner + "2"})
    try:
        out = LocalConnector().run(sweep_command(owner)).text
        assert leftover.wait(timeout=5) == -signal.SIGTERM
        assert f"{leftover.pid} sleep 60" in out
        assert bystander.poll() is None
    finally:
        for proc in (leftover, bystander):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("split", range(1, len(PROGRESS)))
def test_beats_split_across_reads_are_removed_and_noticed(split):
    beats = Beats()
    data = b"line one\n" + ALIVE + b"line two" + PROGRESS + b"\n"
    cut = data.index(PROGRESS) + split
    first, beat1, _ = beats.strip(data[:cut])
    second, beat2, progress = beats.strip(data[cut:])
    assert first + second == b"line one\nline two\n" and beat1 and beat2 and progress


def test_a_nul_byte_in_stderr_that_is_no_beat_is_kept():
    beats = Beats()
    first, _, _ = beats.strip(b"binary\x00")
    second, beat, _ = beats.strip(b"junk")
    assert first + second == b"binary\x00junk" and not beat


def test_raw_shell_runs_under_the_watchdog_too():
    assert LocalConnector().run(Command("echo", "a", Raw("&&"), "echo", "b")).text == "a\nb\n"


def test_progress_means_real_work_not_an_idle_runtime_ticking():
    from orchestrator.backends.remote.watchdog import progressed

    idle = {10: (6949, 15), 11: (0, 3)}
    assert not progressed(idle, {10: (6951, 15), 11: (0, 3)})  # restic waiting: a byte now and then
    assert progressed(idle, {10: (6949 + 65536, 15), 11: (0, 3)})  # it reads and writes
    assert progressed(idle, {10: (6949, 40), 11: (0, 3)})  # it computes
    assert progressed(idle, {10: (6949, 15)})  # a process ended
    assert progressed(None, idle)  # the first look


def test_a_host_without_python3_is_told_plainly(monkeypatch, tmp_path):
    """What the watchdog's start looks like where python3 is missing: the shell cannot find it (127)."""
    from orchestrator.backends.remote import HostLost

    monkeypatch.setattr(
        "orchestrator.backends.remote.local.watched_argv",
        lambda cmd, limits, python: ["env", f"PATH={tmp_path}", "/bin/bash", "-c", "python3 -I"],
    )
    with pytest.raises(HostLost, match="local: has no python3, which orch needs"):
        LocalConnector().run(Command("true"), check=False)
