"""The daemon's live state, reachable from job functions.

Stored jobs hold only a function reference and (site, env, kind), so they stay picklable and survive
restarts; everything else a run needs (the current inventory, the oplog, the slots, the notifier) lives here,
installed by the daemon and swapped on reload.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from orchestrator.notify import Notifier

from .slots import Slots

if TYPE_CHECKING:
    from orchestrator.config.model import Inventory
    from orchestrator.oplog.store import Oplog


@dataclass
class Runtime:
    """What job functions read: replace `inventory`/`notifier` whole (attribute assignment is atomic)."""

    inventory: Inventory
    oplog: Oplog
    slots: Slots
    notifier: Notifier
    active_since: datetime
    stopping: threading.Event = field(default_factory=threading.Event)
    _inflight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(init=False)

    def __post_init__(self):
        self._idle = threading.Condition(self._lock)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count the calling job as in flight while inside."""
        with self._lock:
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self._idle.notify_all()

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every job to finish; return whether none is left."""
        with self._lock:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Given the daemon's Runtime (or None when it stops), make it the one job functions see."""
    global _current
    _current = runtime


def current() -> Runtime:
    """Return the installed Runtime; raise RuntimeError outside a running daemon."""
    if _current is None:
        raise RuntimeError("no scheduler runtime: scheduled jobs run only inside `orch scheduler run`")
    return _current
