"""Resolve what an action runs on: a site's environment, its host, its storage and repository."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.backends.engines import Engine, engine_for
from orchestrator.backends.storage.restic import Repository
from orchestrator.config.model import Database, Environment, Host, Site, Storage
from orchestrator.errors import UsageError


@dataclass
class Target:
    """Everything needed to act on one environment of one site."""

    site: Site
    env: Environment
    host: Host
    storage: Storage | None

    @property
    def label(self) -> str:
        return f"{self.site.name}/{self.env.name}"

    @property
    def engine(self) -> Engine | None:
        return engine_for(self.env.database, self.env.path) if self.env.database else None

    @property
    def database(self) -> Database:
        """The environment's database; raise UsageError if it has none (callers checked it has, mostly)."""
        if self.env.database is None:
            raise UsageError(f"{self.label}: no database configured (environments.{self.env.name}.database)")
        return self.env.database

    @property
    def db_engine(self) -> Engine:
        """The engine of `database`; raise UsageError if the environment has no database."""
        return engine_for(self.database, self.env.path)

    @property
    def backup_storage(self) -> Storage:
        """The site's backup storage; raise UsageError if none is configured."""
        if self.storage is None:
            raise UsageError(f"site {self.site.name}: no backup storage configured (backup.storage)")
        return self.storage

    @property
    def repository(self) -> Repository:
        return Repository(self.backup_storage, self.site.name, self.host.restic)

    @property
    def path(self) -> str:
        """The environment's root on its host; raise UsageError if it has none (only a docker template lacks it)."""
        if self.env.path is None:
            raise UsageError(f"{self.label}: no path configured (environments.{self.env.name}.path)")
        return self.env.path

    @property
    def files_root(self) -> str:
        """The folder a files backup covers: the docroot, or in the releases layout the whole release tree
        (releases/, shared/ and current), since restic does not follow the symlinks into shared/."""
        if self.env.production and self.site.layout == "releases":
            return self.path.rstrip("/") + ".releases"
        return self.path

    @property
    def restic_host(self) -> str:
        """The restic --host of this environment's snapshots: stable whichever machine ran restic."""
        return f"{self.site.name}.{self.env.name}"


def target(inventory, site_name: str, env_name: str = "production") -> Target:
    """Given site and env names, return the Target; raise UsageError naming what is unknown."""
    site = inventory.site(site_name)
    if env_name == "staging" and "staging" in site.environments:
        # environments.staging is the TEMPLATE of staging copies: its path and database are not a site
        raise UsageError(
            f"{site.name}: `staging` is the template of staging copies, not an environment to act "
            "on; name a copy (see `orch staging list`)"
        )
    env = site.env(env_name)
    storage_name = site.backup.storage
    if storage_name and storage_name not in inventory.storage:
        raise UsageError(f"site {site.name}: backup.storage '{storage_name}' is not in the inventory's storage")
    return Target(site, env, inventory.hosts[env.host], inventory.storage.get(storage_name) if storage_name else None)


def targets(inventory, site_names: list[str], all_sites: bool, env_name: str) -> list[Target]:
    """Given names (or --all), return targets for env_name; --all skips sites without that env or backups off."""
    if all_sites and site_names:
        raise UsageError("give site names or --all, not both")
    if not all_sites and not site_names:
        raise UsageError("name at least one site (or --all)")
    if site_names:
        return [target(inventory, name, env_name) for name in site_names]
    return [
        target(inventory, site.name, env_name)
        for site in inventory.sites.values()
        if env_name in site.environments and site.backup.enabled
    ]
