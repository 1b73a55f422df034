"""The typed inventory: what the rest of orch reads. Built by `load.load_inventory` from validated data only,
so constructors here trust their input (shapes, enums, cross-references were checked before)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from orchestrator.errors import InventoryError
from orchestrator.masking import register_secret

from .secrets import Secret

if TYPE_CHECKING:
    from orchestrator.backends.remote.command import Sensitive

T = TypeVar("T")


@dataclass(frozen=True)
class Host:
    """A machine orch runs commands on (over SSH, or the local machine)."""

    name: str
    connector: str
    address: str | None
    port: int
    user: str | None
    host_key: str | None
    known_hosts: str | None
    identity_file: str | None
    max_parallel: int
    restic: str
    nightly_window: str | None
    web: dict | None = None  # nginx/php-fpm facts for staging vhosts (see schema `web`)
    stall_timeout: float = 600  # seconds without output or progress before a command is stopped (schema)


@dataclass(frozen=True)
class DockerHost:
    """A Docker engine for review copies (see schema `docker_host`). `ssh` is the SSH side of an ssh:// url, as a
    Host (so its key is checked like every host's); None for a unix socket."""

    name: str
    url: str
    ssh: Host | None
    domain: str | None
    address: str
    publish_address: str
    proxy_port: int
    ports: tuple[int, int]
    images: dict
    limits: dict


@dataclass(frozen=True)
class Storage:
    """A restic repository location: an S3 bucket (`type == "s3"`) or a folder on the site's host (`"local"`)."""

    name: str
    type: str
    path: str | None
    endpoint: str | None
    bucket: str | None
    region: str | None
    prefix: str | None
    access_key: Secret | None
    secret_key: Secret | None
    password: Secret
    create_bucket: bool


@dataclass(frozen=True)
class Database:
    """An environment's database. `path` (sqlite) is absolute or relative to the environment's path."""

    engine: str
    name: str | None
    user: str | None
    password: Secret | Sensitive | None  # Sensitive: derived at run time for a staging copy
    host: str | None
    port: int | None
    path: str | None
    socket: str | None


@dataclass(frozen=True)
class Environment:
    """One environment of a site: a docroot on a host, and its database."""

    name: str
    site: str
    host: str | None  # None only for a staging template whose target is docker
    path: str | None
    url: str | None
    production: bool
    database: Database | None
    target: str = "host"  # staging templates: where copies are made (`host` or `docker`)
    docker: dict | None = None


@dataclass(frozen=True)
class BackupOptions:
    """A site's backup settings, with inventory defaults and schema defaults applied."""

    schedule: str | None
    storage: str | None
    retention: dict
    exclude: list[str]
    max_age_hours: float
    enabled: bool


@dataclass(frozen=True)
class SchedulerOptions:
    """How the scheduler spreads work: a global concurrency limit, start jitter and misfire grace."""

    max_parallel: int
    jitter_seconds: int
    misfire_grace_seconds: int


@dataclass(frozen=True)
class Site:
    """One client site. `raw` is the merged site data (inventory defaults under the file) with defaults filled."""

    name: str
    file: Path
    playbook: str
    task: str | None
    environments: dict[str, Environment]
    backup: BackupOptions
    verify: dict
    prune: dict
    sanitize: dict
    layout: str
    raw: dict
    # keep_releases, health_paths, expect_status, health_timeout, restore_db_on_rollback (schema default: {})
    promote: dict = field(default_factory=dict)
    drill: dict | None = None  # schedule, response_time, timeout, max_php_warnings (boot drills)
    visual: dict = field(default_factory=dict)  # ignore: CSS selectors left out of screenshots (schema default: {})

    def env(self, name: str) -> Environment:
        """Given an environment name, return it; raise InventoryError listing the site's environments if unknown."""
        return _lookup(self.environments, name, "environment", f"site {self.name!r}: ")


@dataclass(frozen=True)
class Inventory:
    """The whole inventory: global settings from the inventory file and every site from the sites folder."""

    path: Path
    oplog_url: str
    storage: dict[str, Storage]
    hosts: dict[str, Host]
    defaults: dict
    notify: list[dict]
    scheduler: SchedulerOptions
    sites: dict[str, Site]
    tracker: dict | None = None  # see schema `tracker`; a site's own block merges over it
    billing: dict | None = None  # currency, hourly_rate, storage_gb_month; a site's own block merges over it
    serve: dict | None = None  # public_url, accounts
    # site name -> problem lines of its broken site file (loaded with partial=True; the site is not in `sites`)
    broken: dict[str, list[str]] = field(default_factory=dict)
    docker: dict[str, DockerHost] = field(default_factory=dict)

    def site(self, name: str) -> Site:
        """Given a site name, return the Site; raise InventoryError with the problems of its site file if that
        file is broken, or listing the known sites if the name is unknown."""
        if name in self.broken:
            raise InventoryError(self.broken[name])
        return _lookup(self.sites, name, "site")

    @property
    def problems(self) -> list[str]:
        """Return the problem lines of every broken site file, sorted by site name."""
        return [line for name in sorted(self.broken) for line in self.broken[name]]


def _lookup(items: dict[str, T], name: str, what: str, context: str = "") -> T:
    """Given a dict of named items, return items[name]; raise InventoryError naming the known names."""
    if name not in items:
        raise InventoryError(f"{context}unknown {what} {name!r} (known: {', '.join(sorted(items)) or 'none'})")
    return items[name]


def _record(cls, data: dict, **computed):
    """Given a dataclass and the validated dict for it, return an instance whose fields are the dict's keys of
    the same name (None when absent), except those passed in `computed`."""
    plain = {f.name: data.get(f.name) for f in fields(cls) if f.name not in computed}
    return cls(**plain, **computed)


def build_inventory(
    path: Path, data: dict, defaults: dict, sites: dict[Path, dict], broken: dict[str, list[str]] | None = None
) -> Inventory:
    """Given the inventory file's path, its validated data (defaults filled), its `defaults` block as written,
    each valid site file's merged data and the problems of the broken ones by site name, return the Inventory."""
    built = [build_site(file, site) for file, site in sites.items()]
    return Inventory(
        path=path,
        oplog_url=oplog_url(data["oplog"], path.parent),
        storage={name: _record(Storage, item, name=name) for name, item in data["storage"].items()},
        hosts={name: _record(Host, item, name=name) for name, item in data["hosts"].items()},
        defaults=defaults,
        notify=list(data["notify"]),
        scheduler=SchedulerOptions(
            max_parallel=data["scheduler"]["max_parallel"],
            jitter_seconds=data["scheduler"]["jitter"],
            misfire_grace_seconds=data["scheduler"]["misfire_grace"],
        ),
        sites={site.name: site for site in sorted(built, key=lambda site: site.name)},
        tracker=data.get("tracker"),
        billing=data.get("billing"),
        serve=data.get("serve"),
        broken=dict(broken or {}),
        docker={name: build_docker_host(name, item) for name, item in data["docker"].items()},
    )


def build_docker_host(name: str, data: dict) -> DockerHost:
    """Given a docker host's name and validated data, return the DockerHost."""
    url = data["url"]
    ssh: Host | None = None
    if url.startswith("ssh://"):
        parts = urlsplit(url)
        if not parts.hostname:
            raise InventoryError(f"docker host {name}: {url} names no host")
        ssh = Host(
            name=name,
            connector="ssh",
            address=parts.hostname,
            port=parts.port or 22,
            user=parts.username,
            host_key=data.get("host_key"),
            known_hosts=data.get("known_hosts"),
            identity_file=data.get("identity_file"),
            max_parallel=1,
            restic="restic",
            nightly_window=None,
        )
    return DockerHost(
        name=name,
        url=url,
        ssh=ssh,
        domain=data.get("domain"),
        address=data.get("address") or (ssh.address if ssh and ssh.address else "127.0.0.1"),
        publish_address=data["publish_address"],
        proxy_port=data["proxy_port"],
        ports=tuple(data["ports"]),
        images=dict(data.get("images", {})),
        limits=dict(data.get("limits", {})),
    )


def build_site(file: Path, data: dict) -> Site:
    """Given a site file's path and its merged, defaults-filled data, return the Site."""
    name = data["name"]
    environments = {env: build_environment(env, name, item) for env, item in data["environments"].items()}
    backup = data["backup"]
    task = data.get("task")
    return _record(
        Site,
        data,
        file=file,
        environments=environments,
        raw=data,
        task=None if task is None else str(task),
        backup=_record(
            BackupOptions,
            backup,
            max_age_hours=float(backup["max_age"]),
            exclude=list(backup["exclude"]),
            retention=dict(backup.get("retention", {})),
        ),
    )


def build_environment(name: str, site: str, data: dict) -> Environment:
    """Given an environment's name, its site's name and its data, return the Environment."""
    database = data.get("database")
    return _record(
        Environment,
        data,
        name=name,
        site=site,
        production=data.get("production", name == "production"),  # the conventional name implies the guard
        database=None if database is None else _record(Database, database),
    )


def oplog_url(url: str, base: Path) -> str:
    """Given the oplog URL as written and the inventory's folder, return it with a SQLite path made absolute
    (`~` expanded, relative to the inventory's folder); a PostgreSQL password is registered for masking."""
    if url.startswith("sqlite:///"):
        file = base / Path(url.removeprefix("sqlite:///")).expanduser()
        return f"sqlite:///{file}"
    password = urlsplit(url).password
    if password:
        register_secret(password)
    return url
