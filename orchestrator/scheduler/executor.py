"""An APScheduler thread-pool executor that tells each run whether it is a catch-up.

APScheduler calls job functions with their stored arguments only; the scheduled time is known to the
executor. A run is a catch-up when its scheduled time lies before the daemon became active (it was missed
while no scheduler ran), when several missed times were coalesced into it, or when it starts later than
LATE_SECONDS after its time. The flag travels to the job function in a thread-local (`context`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor

LATE_SECONDS = 60
context = threading.local()


def is_catch_up(run_times: list[datetime], now: datetime, active_since: datetime) -> bool:
    """Given the run times APScheduler submits at once, now and when the daemon became active, return whether
    this run makes up for missed ones."""
    last = run_times[-1]
    return len(run_times) > 1 or last < active_since or (now - last).total_seconds() > LATE_SECONDS


def _run_marked(job, jobstore_alias, run_times, logger_name, catch_up: bool):
    context.catch_up, context.scheduled = catch_up, run_times[-1]
    try:
        return run_job(job, jobstore_alias, run_times, logger_name)
    finally:
        context.catch_up, context.scheduled = False, None


class CatchUpExecutor(ThreadPoolExecutor):
    """ThreadPoolExecutor whose runs see `context.catch_up` and `context.scheduled`."""

    def __init__(self, max_workers: int, active_since: datetime):
        super().__init__(max_workers)
        self.active_since = active_since

    def _do_submit_job(self, job, run_times):
        catch_up = is_catch_up(run_times, datetime.now(UTC), self.active_since)

        def callback(future):  # as BasePoolExecutor's: report the outcome back to the scheduler
            exc = future.exception()
            if exc:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        future = self._pool.submit(_run_marked, job, job._jobstore_alias, run_times, self._logger.name, catch_up)
        future.add_done_callback(callback)
