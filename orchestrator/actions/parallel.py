"""Run work for many sites at once under two limits: per host (`hosts.X.max_parallel`) and overall
(`scheduler.max_parallel`).

A pool of N threads each waiting for its host's slot would let a fleet listed host by host run two sites at a
time however many hosts are idle: the threads queue behind the first host's slots. Here nothing is handed to
a thread until its host has a free slot, and hosts take turns, so every global slot works while any host can
take work.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def run_limited(
    items: Sequence[Item],
    fn: Callable[[Item], Result],
    *,
    key: Callable[[Item], Hashable],
    limits: dict[Hashable, int],
    limit: int,
) -> list[Result]:
    """Given items, return [fn(item) for item in items] (in input order), computed on at most `limit` threads,
    at most limits[key(item)] at once per key (1 for a key not in limits), the keys taking turns.

    fn must not raise: an exception stops the dispatch and is raised once the started calls have ended."""
    queues: OrderedDict[Hashable, deque[int]] = OrderedDict()
    for index, item in enumerate(items):
        queues.setdefault(key(item), deque()).append(index)
    results: list = [None] * len(items)
    running: dict[Hashable, int] = dict.fromkeys(queues, 0)
    changed = threading.Condition()
    errors: list[BaseException] = []

    def done(index: int, group: Hashable, future: Future) -> None:
        with changed:
            if (error := future.exception()) is not None:
                errors.append(error)
            else:
                results[index] = future.result()
            running[group] -= 1
            changed.notify()

    def startable() -> Hashable | None:
        return next((group for group, queue in queues.items() if queue and running[group] < limits.get(group, 1)), None)

    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(items)))) as pool, changed:
        while queues and not errors:
            group = startable()
            if group is None or sum(running.values()) >= limit:
                changed.wait()
                continue
            index = queues[group].popleft()
            if queues[group]:
                queues.move_to_end(group)  # the next start goes to another host
            else:
                del queues[group]
            running[group] += 1
            pool.submit(fn, items[index]).add_done_callback(functools.partial(done, index, group))
        while any(running.values()):
            changed.wait()
    if errors:
        raise errors[0]
    return results
