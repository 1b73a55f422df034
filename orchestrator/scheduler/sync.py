"""Make the persistent job store match the inventory's job specs.

A stored job whose name (the spec's fingerprint: schedule, jitter, grace) is unchanged is kept as it is,
with its stored next run time: that is what lets a run missed while the daemon was down be caught up.
Changed jobs are replaced (their next run is computed afresh), jobs of removed sites are deleted. The jobs of a
site whose file is broken are kept as they are: its runs then fail loudly (and notify) until the file is fixed,
and a fixed file finds its schedule, missed runs included, where it was.
"""

from __future__ import annotations

from collections.abc import Collection

from . import cron
from .jobs import JobSpec, job_site
from .runner import run_job

JOBSTORE = "default"


def add_options(spec: JobSpec, jitter: int, grace: int) -> dict:
    """Given a spec and the scheduler options, return the keyword arguments of its `add_job`."""
    return {
        "trigger": cron.trigger(spec.schedule, jitter=jitter),
        "args": [spec.site, spec.env, spec.kind],
        "id": spec.id,
        "name": spec.fingerprint(jitter, grace),
        "jobstore": JOBSTORE,
        "executor": "default",
        "replace_existing": True,
        "coalesce": True,
        "max_instances": 1,
        # 0 would make every run "missed" by its first microsecond
        "misfire_grace_time": max(grace, 1),
    }


def sync_jobs(
    scheduler, specs: list[JobSpec], jitter: int, grace: int, broken: Collection[str] = ()
) -> dict[str, list[str]]:
    """Given a started (possibly paused) scheduler, the wanted specs, the scheduler options and the sites whose
    files are broken, add, replace and remove stored jobs (a broken site's stored jobs stay as they are); return
    {"added", "changed", "removed", "kept"} lists of job ids."""
    existing = {job.id: job for job in scheduler.get_jobs(jobstore=JOBSTORE)}
    wanted = {spec.id: spec for spec in specs}
    changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "kept": []}
    for job_id in sorted(set(existing) - set(wanted)):
        if job_site(job_id) in broken:
            changes["kept"].append(job_id)
            continue
        scheduler.remove_job(job_id, jobstore=JOBSTORE)
        changes["removed"].append(job_id)
    for spec in specs:
        options = add_options(spec, jitter, grace)
        job = existing.get(spec.id)
        if job is not None and (job.name == options["name"] or spec.site in broken):
            changes["kept"].append(spec.id)
            continue
        scheduler.add_job(run_job, **options)
        changes["added" if job is None else "changed"].append(spec.id)
    return changes


def describe(changes: dict[str, list[str]]) -> str:
    """Given sync_jobs' result, return a one-line summary for the log."""
    parts = [f"{len(changes['kept'])} kept"]
    parts += [f"{key} {', '.join(changes[key])}" for key in ("added", "changed", "removed") if changes[key]]
    return "; ".join(parts)
