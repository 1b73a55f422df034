"""What the scheduler runs, derived from the inventory: one job per (kind, site, production environment).

A job is identified by `kind:site:env` and described by its spec's `fingerprint`; the daemon keeps a stored
job whose fingerprint is unchanged (so a run missed while it was down is still caught up) and replaces the
others.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.tasks import UNATTENDED

from . import cron

KINDS = ("backup", "verify", "prune", "drill")
FALLBACK_TASK = UNATTENDED  # a site without `task` still gets its nightly backup; the plan warns about it


@dataclass(frozen=True)
class JobSpec:
    """One scheduled action: run `kind` on `site`/`env` (on `host`) at `schedule`, logged against `task`."""

    kind: str
    site: str
    env: str
    host: str
    schedule: str
    task: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.site}:{self.env}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.site}/{self.env}"

    def fingerprint(self, jitter: int, grace: int) -> str:
        """Given the scheduler's jitter and misfire grace, return the job name that also identifies its setup."""
        return f"{self.label} @ {self.schedule} (jitter {jitter}s, grace {grace}s)"


def job_site(job_id: str) -> str:
    """Given a job id `kind:site:env`, return its site."""
    return job_id.split(":")[1]


def site_schedules(site) -> dict[str, str | None]:
    """Given a Site, return {kind: its cron schedule or None} (backup, verify, prune, drill: a boot drill of the
    latest backup; defaults already merged)."""
    if not site.backup.enabled:
        return dict.fromkeys(KINDS)
    return {
        "backup": site.backup.schedule,
        "verify": (site.verify or {}).get("schedule"),
        "prune": (site.prune or {}).get("schedule"),
        "drill": (site.drill or {}).get("schedule"),
    }


def scheduled_envs(site) -> list:
    """Given a Site, return the environments the scheduler looks after: the production ones."""
    return [env for env in site.environments.values() if env.production]


def job_specs(inventory) -> tuple[list[JobSpec], dict[str, list[str]]]:
    """Given an Inventory, return (every job spec, problems by site name): a broken site file and an unparsable
    schedule are problems of that site alone, not jobs."""
    specs: list[JobSpec] = []
    problems = {name: list(lines) for name, lines in inventory.broken.items()}
    for site in inventory.sites.values():
        for kind, schedule in site_schedules(site).items():
            if not schedule:
                continue
            try:
                cron.trigger(schedule)
            except cron.CronError as exc:
                problems.setdefault(site.name, []).append(f"site {site.name}: {kind}.schedule: {exc}")
                continue
            for env in scheduled_envs(site):
                specs.append(JobSpec(kind, site.name, env.name, env.host, schedule, site.task or FALLBACK_TASK))
    return specs, problems


def problem_lines(problems: dict[str, list[str]]) -> list[str]:
    """Given problems by site name (as job_specs returns them), return their lines, sorted by site."""
    return [line for name in sorted(problems) for line in problems[name]]


def warnings(inventory) -> list[str]:
    """Given an Inventory, return what a human should know about its scheduling (not errors)."""
    found = []
    for site in inventory.sites.values():
        schedules = site_schedules(site)
        if not site.backup.enabled:
            continue
        if not schedules["backup"]:
            found.append(f"site {site.name}: backups enabled but no backup.schedule: only manual backups")
        if not scheduled_envs(site):
            found.append(f"site {site.name}: no production environment: nothing is scheduled for it")
        if any(schedules.values()) and site.task is None:
            found.append(f"site {site.name}: no `task`: scheduled runs are logged against task '{FALLBACK_TASK}'")
    return found
