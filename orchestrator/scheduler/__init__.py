"""The scheduler: APScheduler jobs built from the inventory, persisted in the oplog database, one active
daemon per database, per-host concurrency, catch-up of missed runs, health and notifications."""

from .daemon import Daemon
from .jobs import JobSpec, job_specs
from .plan import plan

__all__ = ["Daemon", "JobSpec", "job_specs", "plan"]
