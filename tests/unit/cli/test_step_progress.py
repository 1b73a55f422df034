"""Where a step's figures show: one live line on a terminal (at most 4 redraws a second, cleared at the step's
end), a log line per step now and then in the scheduler, nothing with -q, --json or off a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from orchestrator import progress
from orchestrator.cli.app import App
from orchestrator.cli.live import LineSafeHandler, LogLines, Terminal, describe, fit, side_by_side
from orchestrator.progress import Figures, Meter

MIB = 1024 * 1024


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_line_says_bytes_of_total_percent_rate_and_eta():
    text = describe("back up files", Figures(int(12.3 * MIB), int(40.1 * MIB), rate=5.2 * MIB, eta=5.4))
    assert text == "back up files  12.3 MiB / 40.1 MiB  30%  5.2 MiB/s  ETA 0:05"
    assert describe("dump", Figures(2048)) == "dump  2.0 KiB"
    assert "3/10 files" in describe("restore", Figures(1, 2, files_done=3, total_files=10))
    assert "ETA 1:01:01" in describe("x", Figures(1, 2, eta=3661))


def test_a_line_too_long_for_the_terminal_loses_the_middle_of_its_label_not_its_figures():
    label = "staging-create wp/t14883: load the dump, replacing production URLs"
    line = describe(label, Figures(24 * MIB, 40 * MIB, rate=2 * MIB, eta=6))
    cut = fit(line, 79)
    assert len(cut) == 79 and cut.startswith("staging-create wp/") and "…" in cut
    assert cut.endswith("24.0 MiB / 40.0 MiB  60%  2.0 MiB/s  ETA 0:06")
    assert fit(line, len(line)) == line and fit("abc", 1) == "a"


def test_the_terminal_redraws_at_most_four_times_a_second_and_clears_the_line_at_the_end():
    out, now = io.StringIO(), Clock()
    sink = Terminal(out, interval=0.25, now=now)
    meter = Meter("back up files", sink, now=now)
    for i in range(10):  # ten readings within 0.18 s: one redraw
        now.t = i * 0.02
        meter.update(Figures(i * MIB, 10 * MIB))
    assert out.getvalue().count("\r") == 1 and "0%" in out.getvalue()
    now.t = 0.3
    meter.update(Figures(5 * MIB, 10 * MIB))
    assert out.getvalue().count("\x1b[K") == 2 and "5.0 MiB / 10.0 MiB  50%" in out.getvalue()
    sink.end(meter)
    assert out.getvalue().endswith("\r\x1b[K")
    sink.end(meter)  # nothing drawn: nothing to clear
    assert out.getvalue().count("\r\x1b[K") == 1


def test_a_log_line_takes_the_live_line_off_first():
    out = io.StringIO()
    sink = Terminal(out)
    sink.show(Meter("dump", sink), Figures(MIB, 2 * MIB))
    handler = LineSafeHandler(out, sink)
    handler.emit(logging.LogRecord("orch", logging.WARNING, __file__, 1, "some files unreadable", None, None))
    assert out.getvalue().endswith("50%\x1b[K\r\x1b[Ksome files unreadable\n")


def test_the_scheduler_logs_a_step_s_figures_at_most_every_n_seconds_and_none_for_a_short_step(caplog):
    logger, now = logging.getLogger("test-step-figures"), Clock()  # outside `orch`: its lines reach caplog
    logger.setLevel(logging.INFO)
    sink = LogLines(logger, every=30, now=now)
    short, long = Meter("backup a/production: dump", sink, now=now), Meter("backup b/production: files", sink, now=now)
    with caplog.at_level(logging.INFO, logger=logger.name):
        for t in range(0, 95, 1):
            now.t = float(t)
            long.update(Figures(t * MIB, 100 * MIB))
            if t < 20:
                short.update(Figures(t, 100))
        sink.end(short)
        sink.end(long)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "backup b/production: files  30.0 MiB / 100.0 MiB  30%  1.0 MiB/s  ETA 1:10",
        "backup b/production: files  60.0 MiB / 100.0 MiB  60%  1.0 MiB/s  ETA 0:40",
        "backup b/production: files  90.0 MiB / 100.0 MiB  90%  1.0 MiB/s  ETA 0:10",
    ]
    logger.setLevel(logging.WARNING)  # -q
    assert not sink.wanted()


@pytest.mark.parametrize(
    ("stdout_tty", "stderr_tty", "json", "verbosity", "live"),
    [
        (True, True, False, 1, True),
        (True, True, False, 2, True),  # -v: log lines clear the live line first
        (True, True, False, -1, False),  # -q
        (True, True, True, 1, False),  # --json
        (False, True, False, 1, False),  # stdout piped
        (True, False, False, 1, False),  # stderr to a file
    ],
)
def test_the_cli_draws_only_on_a_terminal_without_quiet_or_json(
    monkeypatch, stdout_tty, stderr_tty, json, verbosity, live
):
    monkeypatch.setattr("sys.stdout.isatty", lambda: stdout_tty)
    monkeypatch.setattr("sys.stderr.isatty", lambda: stderr_tty)
    out = io.StringIO()
    app = App(None, json, verbosity)
    previous = progress.use(Terminal(out, when=app.live_progress))
    try:
        with progress.step("backup wp/production: back up files") as meter:
            if meter:
                meter.update(Figures(MIB, 2 * MIB))
    finally:
        progress.use(previous)
    assert ("50%" in out.getvalue()) is live


def test_steps_side_by_side_share_the_line_and_the_last_one_gets_it_back_whole():
    """A staging copy loads its database while its files come down: the line names the operation once and
    each step's percentage; when one ends, the other's full figures at once; cleared when the last one ends."""
    out, now = io.StringIO(), Clock()
    sink = Terminal(out, interval=0.25, now=now)
    label = "staging-create wp/t1: "
    files, load = Meter(label + "restore files", sink, now=now), Meter(label + "load the dump", sink, now=now)
    files.update(Figures(MIB, 10 * MIB))
    assert out.getvalue() == "\rstaging-create wp/t1: restore files  1.0 MiB / 10.0 MiB  10%\x1b[K"
    now.t = 0.3
    load.update(Figures(2 * MIB))  # a total not known: bytes done
    now.t = 0.6
    load.update(Figures(4 * MIB, 8 * MIB))
    assert out.getvalue().endswith(
        "\rstaging-create wp/t1: restore files 10% | load the dump 2.0 MiB\x1b[K"
        "\rstaging-create wp/t1: restore files 10% | load the dump 50%\x1b[K"
    )
    sink.end(files)
    assert out.getvalue().endswith("\r\x1b[K\rstaging-create wp/t1: load the dump  4.0 MiB / 8.0 MiB  50%\x1b[K")
    now.t = 0.7  # within the interval of that redraw: not drawn again yet
    load.update(Figures(8 * MIB, 8 * MIB))
    assert "8.0 MiB / 8.0 MiB" not in out.getvalue()
    sink.end(load)
    assert out.getvalue().endswith("50%\x1b[K\r\x1b[K") and not sink.latest
    assert side_by_side([("a: x", Figures(1, 2)), ("b: y", Figures(1))]) == "a: x 50% | b: y 1 B"  # no shared step
