"""Concurrency slots shared by every job of the daemon: `hosts.X.max_parallel` per host and
`scheduler.max_parallel` overall.

A job takes its host's slot first and the global slot second: a job queued behind a busy host then never
holds a global slot another host could use. Limits follow inventory reloads; a job already running keeps
(and returns) the slot object it took.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


class Stopping(Exception):
    """The daemon is stopping: a job still waiting for a slot gives up instead of starting."""


class Slots:
    """Per-host and global semaphores, resized when the limits change."""

    def __init__(self, global_limit: int, host_limits: dict[str, int]):
        self._lock = threading.Lock()
        self._global = (global_limit, threading.Semaphore(global_limit))
        self._hosts: dict[str, tuple[int, threading.Semaphore]] = {}
        self.resize(global_limit, host_limits)

    def resize(self, global_limit: int, host_limits: dict[str, int]) -> None:
        """Given new limits, use fresh semaphores where a limit changed (running holders keep their old one)."""
        with self._lock:
            if self._global[0] != global_limit:
                self._global = (global_limit, threading.Semaphore(global_limit))
            for host, limit in host_limits.items():
                if self._hosts.get(host, (None,))[0] != limit:
                    self._hosts[host] = (limit, threading.Semaphore(limit))

    def _semaphores(self, host: str) -> list[threading.Semaphore]:
        with self._lock:
            if host not in self._hosts:
                self._hosts[host] = (1, threading.Semaphore(1))  # an unknown host: be careful, one at a time
            return [self._hosts[host][1], self._global[1]]

    @contextmanager
    def hold(self, host: str, stopping: threading.Event, poll: float = 0.5) -> Iterator[None]:
        """Given a host, wait for its slot and a global one, hold both inside the block.

        Raise Stopping if `stopping` is set while waiting.
        """
        with ExitStack() as stack:
            for semaphore in self._semaphores(host):
                while not semaphore.acquire(timeout=poll):
                    if stopping.is_set():
                        raise Stopping(f"not started: the scheduler is stopping (waited for a slot on {host})")
                stack.callback(semaphore.release)
            if stopping.is_set():
                raise Stopping("not started: the scheduler is stopping")
            yield
