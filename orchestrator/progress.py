"""Live progress of long steps: figures read from a command's output (restic's `--json` status lines), counted
as a stream passes through here, or polled beside a command (bytes it has written), shown on one sink.

Every oplog step opens a `Meter` (see `step`) when the sink wants progress (the CLI's sinks are in
`orchestrator/cli/live.py`: a live line on a terminal, a log line now and then in the scheduler); when none
does, no parser runs and every command runs exactly as it would without progress. The oplog never sees any of it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import BinaryIO, Protocol

log = logging.getLogger("orch.progress")


@dataclass(frozen=True)
class Figures:
    """Where a step stands: bytes done of total (None: not known), files likewise, rate (bytes/s), ETA (s)."""

    done: int
    total: int | None = None
    files_done: int | None = None
    total_files: int | None = None
    rate: float | None = None
    eta: float | None = None

    @property
    def percent(self) -> int | None:
        if not self.total or self.done > self.total:
            return None
        return int(100 * self.done / self.total)


# --- parsers: a line of a command's output -> Figures, or None ---------------------------------------------


def restic_status(line: str) -> Figures | None:
    """Given a line of `restic backup --json` (or `restore --json`, restic >= 0.16) output, return the figures
    of a status message, or None for any other line."""
    if '"status"' not in line:  # cheap test first: most calls are for other lines
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("message_type") != "status":
        return None
    return Figures(
        done=int(msg.get("bytes_done") or msg.get("bytes_restored") or 0),
        total=msg.get("total_bytes") or None,  # absent for --stdin: the size of a stream is not known
        files_done=msg.get("files_done", msg.get("files_restored")),
        total_files=msg.get("total_files"),
        eta=msg.get("seconds_remaining"),
    )


# --- where figures go ----------------------------------------------------------------------------------------


class Sink(Protocol):
    def wanted(self) -> bool:
        """Whether figures are wanted now (asked when a step starts)."""

    def show(self, meter: Meter, figures: Figures) -> None: ...

    def end(self, meter: Meter) -> None: ...


class Meter:
    """One step's progress: takes figures, works out the rate and ETA a source did not give, passes them on.
    `expected` stands in for a total the source does not know (a dump's size from the last backup)."""

    def __init__(self, label: str, sink: Sink, now: Callable[[], float] = time.monotonic):
        self.label, self.sink, self.now = label, sink, now
        self.started = now()
        self.expected: int | None = None
        self.first: tuple[float, int] | None = None

    def update(self, figures: Figures) -> None:
        now = self.now()
        if self.first is None:
            self.first = (now, figures.done)
        if figures.total is None and self.expected and self.expected >= figures.done:  # a guess passed is none
            figures = replace(figures, total=self.expected)
        rate, eta = figures.rate, figures.eta
        if rate is None and now - self.first[0] > 0.5:
            rate = max(0.0, (figures.done - self.first[1]) / (now - self.first[0]))
        if eta is None and rate and figures.total and figures.total >= figures.done:
            eta = (figures.total - figures.done) / rate
        try:
            self.sink.show(self, replace(figures, rate=rate, eta=eta))
        except Exception:  # figures are for people watching: drawing them never fails the work being measured
            log.debug("progress figures not shown", exc_info=True)

    def lines(self, parse: Callable[[str], Figures | None]) -> Callable[[str], None]:
        """Given a parser, return a callback that takes a command's output line by line into this meter."""

        def take(line: str) -> None:
            figures = parse(line)
            if figures is not None:
                self.update(figures)

        return take


_sink: Sink | None = None
_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("orch_progress_meter", default=None)


def use(sink: Sink | None) -> Sink | None:
    """Given the sink every step's figures go to from now on (None: nowhere), return the one it replaces."""
    global _sink
    previous, _sink = _sink, sink
    return previous


@contextmanager
def suspended() -> Iterator[None]:
    """No step figures inside (a fleet run: the sites-done bar owns the line), the sink back after."""
    previous = use(None)
    try:
        yield
    finally:
        use(previous)


@contextmanager
def step(label: str) -> Iterator[Meter | None]:
    """Given a step's label, open its meter for the block (the current one of this thread), or yield None when
    no sink wants figures; the sink ends its line when the block ends."""
    sink = _sink
    if sink is None or not sink.wanted():
        yield None
        return
    meter = Meter(label, sink)
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)
        sink.end(meter)


def current() -> Meter | None:
    """The meter of the step running in this thread, or None when nobody watches."""
    return _meter.get()


def lines(parse: Callable[[str], Figures | None]) -> Callable[[str], None] | None:
    """Given a parser, return the line callback that feeds the current step's meter, or None when nobody watches
    (pass it as `on_stdout`: a command then runs exactly as without progress)."""
    meter = _meter.get()
    return meter.lines(parse) if meter else None


class _Counted:
    """A readable stream that passes the bytes read through it to a meter, as done of `total`."""

    def __init__(self, source: BinaryIO, meter: Meter, total: int | None):
        self.source, self.meter, self.total, self.done = source, meter, total, 0

    def read(self, size: int = -1) -> bytes:
        return self._count(self.source.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._count(getattr(self.source, "read1", self.source.read)(size))

    def _count(self, data: bytes) -> bytes:
        self.done += len(data)
        self.meter.update(Figures(self.done, self.total))
        return data


def reading(source: BinaryIO, total: int | None = None) -> BinaryIO:
    """Given a stream a command reads (a relay) and its expected size, return a stream that feeds the current
    step's meter with the bytes read so far; the stream itself when nobody watches."""
    meter = _meter.get()
    return source if meter is None else _Counted(source, meter, total)  # type: ignore[return-value]


@contextmanager
def polling(measure: Callable[[], Figures | None], every: float = 1.0) -> Iterator[None]:
    """Given a way to measure a step's figures (a command beside the one doing the work), call it every `every`
    seconds while the block runs and feed the current meter; do nothing when nobody watches. A measurement
    that fails is skipped: progress never fails a step."""
    meter = _meter.get()
    if meter is None:
        yield
        return
    # a sink that shows figures only every so often (the scheduler's log: `every` 30 s) needs no measurement
    # in between: each one is a command on the host
    every = max(every, getattr(meter.sink, "every", 0.0))
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                figures = measure()
            except Exception:  # noqa: BLE001, S112 - a lost measurement costs a redraw, never the step
                continue
            if figures is not None and not stop.is_set():
                meter.update(figures)

    thread = threading.Thread(target=loop, name="progress-poll", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
