"""Where step progress shows: one live line on a terminal (`Terminal`), or a log line per step now and then in
the scheduler (`LogLines`). The figures come from `orchestrator.progress`."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import TextIO

from orchestrator.progress import Figures, Meter

from .output import human_size


def clock(seconds: float) -> str:
    """Given seconds, return 'H:MM:SS' or 'M:SS'."""
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def describe(label: str, f: Figures) -> str:
    """Given a step's label and figures, return `label  12.3 MiB / 40.1 MiB  31%  5.2 MiB/s  ETA 0:05`."""
    parts = [label, human_size(f.done) + (f" / {human_size(f.total)}" if f.total else "")]
    if f.percent is not None:
        parts.append(f"{f.percent}%")
    if f.files_done is not None and f.total_files:
        parts.append(f"{f.files_done}/{f.total_files} files")
    if f.rate:
        parts.append(f"{human_size(f.rate)}/s")
    if f.eta is not None and f.percent is not None:
        parts.append(f"ETA {clock(f.eta)}")
    return "  ".join(parts)


def side_by_side(steps: list[tuple[str, Figures]]) -> str:
    """Given steps running at once (labels and figures), return one line for all: the one step's `describe`, or
    their shared `action site/env: ` once and each step's name with its percentage (or bytes done), e.g.
    `staging-create wp/t1: restore files 56% | load the dump 30%`."""
    if len(steps) == 1:
        return describe(*steps[0])
    shared = os.path.commonprefix([label for label, _ in steps])
    shared = shared[: shared.rfind(": ") + 2] if ": " in shared else ""
    return shared + " | ".join(
        f"{label[len(shared) :]} {f'{f.percent}%' if f.percent is not None else human_size(f.done)}"
        for label, f in steps
    )


def fit(line: str, width: int) -> str:
    """Given a live line and the terminal's width, return it cut to fit: from the middle of the line (`…`), so
    its start (what runs where) and its end (the figures: the point of the line) stay on screen."""
    if len(line) <= width:
        return line
    head = width // 3
    tail = width - head - 1
    return line[:head] + "…" + line[-tail:] if tail > 0 else line[:width]


class Terminal:
    """One live line on a terminal, redrawn at most every `interval` seconds, cleared when its step ends.
    `when` says whether to draw at all (a terminal, no -q, no --json); it is asked at each step's start.

    Steps that run side by side (a staging copy's files and database) share the line (see `side_by_side`)."""

    def __init__(
        self,
        file: TextIO,
        when: Callable[[], bool] = lambda: True,
        interval: float = 0.25,
        now: Callable[[], float] = time.monotonic,
    ):
        self.file, self.when, self.interval, self.now = file, when, interval, now
        self.lock, self.drawn, self.last = threading.Lock(), False, float("-inf")
        self.latest: dict[Meter, Figures] = {}  # the steps reporting now and their last figures

    def wanted(self) -> bool:
        return self.when()

    def show(self, meter: Meter, figures: Figures) -> None:
        with self.lock:
            self.latest[meter] = figures
            if self.now() - self.last >= self.interval:
                self._draw()

    def end(self, meter: Meter) -> None:
        self.clear()
        with self.lock:
            self.latest.pop(meter, None)
            self.last = float("-inf")  # the next step draws its first figures at once
            if self.latest:  # the steps still running, at once
                self._draw()

    def _draw(self) -> None:
        self.last = self.now()
        width = shutil.get_terminal_size((100, 24)).columns - 1
        line = side_by_side([(meter.label, figures) for meter, figures in self.latest.items()])
        self.file.write("\r" + fit(line, width) + "\x1b[K")
        self.file.flush()
        self.drawn = True

    def clear(self) -> None:
        """Take the live line off the screen (before a log line is written); the next figures redraw it."""
        with self.lock:
            if self.drawn:
                self.file.write("\r\x1b[K")
                self.file.flush()
                self.drawn = False


class LogLines:
    """The scheduler's progress: a log line per step at most every `every` seconds, the first one `every`
    seconds into the step (a short step logs none)."""

    def __init__(self, logger: logging.Logger, every: float = 30.0, now: Callable[[], float] = time.monotonic):
        self.logger, self.every, self.now = logger, every, now
        self.lock, self.last = threading.Lock(), dict[int, float]()

    def wanted(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def show(self, meter: Meter, figures: Figures) -> None:
        with self.lock:
            if self.now() - self.last.get(id(meter), meter.started) < self.every:
                return
            self.last[id(meter)] = self.now()
        self.logger.info("%s", describe(meter.label, figures))

    def end(self, meter: Meter) -> None:
        with self.lock:
            self.last.pop(id(meter), None)


class LineSafeHandler(logging.StreamHandler):
    """A log handler that takes the live progress line off the terminal before it writes (the line comes back
    with the next figures), so that a log line never lands in the middle of it."""

    def __init__(self, stream: TextIO, live: Terminal):
        super().__init__(stream)
        self.live = live

    def emit(self, record: logging.LogRecord) -> None:
        self.live.clear()
        super().emit(record)
