"""Progress figures: restic's output parsed (lines captured from this machine's restic 0.14), a command's stdout
given line by line to a callback, and a step's meter working out rate and ETA."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

from orchestrator import progress
from orchestrator.backends.remote import Command, LocalConnector
from orchestrator.backends.remote.relay import send_files
from orchestrator.backends.remote.written import bytes_written, watching
from orchestrator.progress import Figures, Meter, restic_status

# `restic backup --json DIR` and `restic backup --json --stdin` (restic 0.14.0)
BACKUP_START = '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":30000000}'
BACKUP_MID = (
    '{"message_type":"status","percent_done":0.17536588,"total_files":2,"total_bytes":50000000,'
    '"bytes_done":8768294,"current_files":["/data/a","/data/b"]}'
)
BACKUP_END = (
    '{"message_type":"status","percent_done":1,"total_files":2,"files_done":2,"total_bytes":50000000,'
    '"bytes_done":50000000,"current_files":["/data/a"]}'
)
STDIN_MID = '{"message_type":"status","percent_done":0,"total_files":1,"bytes_done":1353737,"current_files":["/d.sql"]}'
SUMMARY = (
    '{"message_type":"summary","files_new":2,"files_changed":0,"files_unmodified":0,"dirs_new":1,'
    '"data_added":50003199,"total_files_processed":2,"total_bytes_processed":50000000,"snapshot_id":"19fa19f8"}'
)
# `restic restore --json` (restic >= 0.16, as documented in its scripting chapter)
RESTORE_MID = (
    '{"message_type":"status","seconds_elapsed":2,"percent_done":0.5,"total_files":10,"files_restored":4,'
    '"total_bytes":1000,"bytes_restored":500}'
)


def test_restic_backup_status_lines_give_bytes_and_files_done_of_the_totals():
    assert restic_status(BACKUP_START) == Figures(done=0, total=30_000_000, total_files=1)
    assert restic_status(BACKUP_MID) == Figures(done=8_768_294, total=50_000_000, total_files=2)
    end = restic_status(BACKUP_END)
    assert end is not None and (end.done, end.percent, end.files_done, end.total_files) == (50_000_000, 100, 2, 2)


def test_a_streamed_dump_has_bytes_done_and_no_total():
    figures = restic_status(STDIN_MID)
    assert figures == Figures(done=1_353_737, total=None, total_files=1) and figures.percent is None


def test_restic_restore_status_lines_count_bytes_and_files_restored():
    assert restic_status(RESTORE_MID) == Figures(done=500, total=1000, files_done=4, total_files=10)


def test_other_lines_are_no_figures():
    for line in (SUMMARY, "", "not json", '{"message_type": "status"', '["status"]', "restoring <Snapshot>"):
        assert restic_status(line) is None


class Recorder:
    def __init__(self, wanted: bool = True):
        self.shown: list[tuple[str, Figures]] = []
        self.ended: list[str] = []
        self.want = wanted

    def wanted(self) -> bool:
        return self.want

    def show(self, meter, figures):
        self.shown.append((meter.label, figures))

    def end(self, meter):
        self.ended.append(meter.label)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_meter_works_out_rate_and_eta_the_source_did_not_give():
    sink, now = Recorder(), Clock()
    meter = Meter("dump", sink, now=now)
    meter.update(Figures(done=0, total=1000))
    now.t += 2
    meter.update(Figures(done=400, total=1000))
    first, second = sink.shown[0][1], sink.shown[1][1]
    assert first.rate is None and first.eta is None  # no rate from a single reading
    assert second.rate == 200 and second.eta == 3


def test_an_expected_total_stands_in_for_a_stream_whose_size_is_unknown():
    sink, now = Recorder(), Clock()
    meter = Meter("dump", sink, now=now)
    meter.expected = 4000
    meter.update(Figures(done=1000))
    assert sink.shown[0][1].total == 4000 and sink.shown[0][1].percent == 25
    meter.update(Figures(done=5000))  # the site grew: past the guess, no percentage rather than a false one
    assert sink.shown[1][1].percent is None and sink.shown[1][1].total is None  # not `5000 / 4000`


def test_a_step_feeds_its_meter_only_when_a_sink_wants_figures():
    sink = Recorder()
    previous = progress.use(sink)
    try:
        with progress.step("backup wp/production: back up files") as meter:
            assert meter is not None and progress.current() is meter
            feed = progress.lines(restic_status)
            assert feed is not None
            feed(BACKUP_MID)
            feed(SUMMARY)
        assert progress.current() is None and progress.lines(restic_status) is None
        assert [label for label, _ in sink.shown] == ["backup wp/production: back up files"]
        assert sink.ended == ["backup wp/production: back up files"]
        sink.want = False
        with progress.step("quiet") as meter:
            assert meter is None and progress.lines(restic_status) is None
        with progress.suspended(), progress.step("fleet") as meter:
            assert meter is None
    finally:
        progress.use(previous)


def test_a_meter_belongs_to_the_thread_of_its_step():
    sink = Recorder()
    previous = progress.use(sink)
    seen = []
    try:
        with progress.step("main"):
            thread = threading.Thread(target=lambda: seen.append(progress.current()))
            thread.start()
            thread.join()
    finally:
        progress.use(previous)
    assert seen == [None]


def test_polling_feeds_the_meter_beside_the_work_and_survives_a_failed_measurement():
    sink = Recorder()
    previous = progress.use(sink)
    calls = []

    def measure():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("host busy")
        return Figures(done=len(calls) * 10, total=100)

    try:
        with progress.step("restore files"), progress.polling(measure, every=0.02):
            threading.Event().wait(0.3)
    finally:
        progress.use(previous)
    assert len(calls) >= 3 and sink.shown and all(f.total == 100 for _, f in sink.shown)
    count = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) == count  # stopped with its step


def test_a_sink_that_shows_figures_every_30_s_is_not_measured_for_twice_a_second():
    sink = Recorder()
    sink.every = 30.0  # the scheduler's log lines
    previous = progress.use(sink)
    calls = []
    try:
        with progress.step("restore files"), progress.polling(lambda: calls.append(1), every=0.02):
            threading.Event().wait(0.3)
    finally:
        progress.use(previous)
    assert calls == []  # each measurement is a command on the host


def test_a_command_stdout_reaches_the_callback_line_by_line_and_is_still_collected():
    script = (
        "import sys,time\n"
        "sys.stdout.write('one\\ntw'); sys.stdout.flush(); time.sleep(0.2)\n"
        "sys.stdout.write('o\\r50%\\rthree'); sys.stdout.flush()\n"
    )
    lines: list[str] = []
    result = LocalConnector().run(Command(sys.executable, "-c", script), on_stdout=lines.append)
    assert lines == ["one", "two", "50%", "three"]
    assert result.stdout == b"one\ntwo\r50%\rthree"


def test_bytes_written_reads_a_running_program_s_writes_on_its_host(tmp_path):
    target = tmp_path / "restored"
    proc = subprocess.Popen(["tee", str(target)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"x" * 3_000_000)
        proc.stdin.flush()
        conn = LocalConnector()
        assert wait_until(lambda: target.stat().st_size == 3_000_000)
        assert bytes_written(conn, "tee", str(target)) >= 3_000_000  # to the file (and to its stdout)
        assert bytes_written(conn, "tee", str(tmp_path / "other")) == 0
        assert bytes_written(conn, "cat", str(target)) == 0  # another program with the same words
    finally:
        proc.communicate()
    assert bytes_written(LocalConnector(), "tee", str(target)) == 0  # gone: nothing running writes


def wait_until(check, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_relay_s_bytes_are_its_step_s_figures_and_its_stream_is_untouched_when_nobody_watches(tmp_path):
    """Files sent host -> here -> host as tar (a promotion's release): the bytes relayed, of about the stream's
    length worked out from the files' total size; without a watcher the stream is read as it is."""
    src, dst, sizes = tmp_path / "src", tmp_path / "dst", [0, 1, 511, 513, 70_000, 1_500_000] * 20
    src.mkdir()
    for i, size in enumerate(sizes):
        (src / f"f{i}.bin").write_bytes(b"x" * size)
    names, conn = [f"f{i}.bin" for i in range(len(sizes))], LocalConnector()
    stream = io.BytesIO(b"data")
    assert progress.reading(stream, 4) is stream  # no step open: no counting wrapper, no parser

    sink = Recorder()
    previous = progress.use(sink)
    try:
        with progress.step("promote wp/production: build the new release"):
            send_files(conn, str(src), conn, str(dst), names, sum(sizes))
    finally:
        progress.use(previous)
    assert [(dst / n).stat().st_size for n in names] == sizes
    streamed = len(subprocess.run(["tar", "-C", str(src), "-cf", "-", *names], capture_output=True).stdout)
    last = sink.shown[-1][1]
    assert last.done == streamed and all(f.total == last.total for _, f in sink.shown)
    assert last.total is not None and abs(last.total - streamed) < 0.02 * streamed  # an estimate, within 2 %
    assert [f.done for _, f in sink.shown] == sorted(f.done for _, f in sink.shown)


def test_watching_a_program_s_writes_keeps_the_most_it_wrote_once_it_has_ended(tmp_path):
    """`restic dump` ends before the import it feeds: its figures stay at the bytes it wrote, not at 0."""
    target, sink = tmp_path / "dump.sql", Recorder()
    previous = progress.use(sink)
    try:
        with progress.step("load the dump"), watching(LocalConnector(), "tee", str(target), total=2_000_000):
            proc = subprocess.Popen(["tee", str(target)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            assert proc.stdin is not None
            proc.stdin.write(b"x" * 1_000_000)
            proc.stdin.flush()
            assert wait_until(lambda: sink.shown and sink.shown[-1][1].done >= 1_000_000)
            proc.communicate()  # gone: nothing running writes any more
            seen = len(sink.shown)
            assert wait_until(lambda: len(sink.shown) >= seen + 2)
    finally:
        progress.use(previous)
    assert all(f.done >= 1_000_000 and f.total == 2_000_000 for _, f in sink.shown[-2:]), sink.shown


def test_a_sink_that_fails_to_draw_never_fails_the_work_it_measures():
    class Broken(Recorder):
        def show(self, meter, figures):
            raise OSError("the terminal went away")

    meter = Meter("back up files", Broken())
    meter.update(Figures(done=1, total=2))  # no exception: the backup goes on
