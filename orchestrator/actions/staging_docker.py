"""`orch staging` on a Docker host: the verbs, plans and steps of host staging (actions/staging.py), with the copy
in containers (backends/envs/docker.py).

The copy is made by the same functions as on a staging host: restic restores the files and streams the dump
through the URL replacer, the playbook rewrites the config files, sanitizes, resets passwords and switches mail
and cron off. They run in a short-lived tools container through a ContainerConnector, against the copy's own
database container, which the tools container reaches as `db` just as PHP does. The web container serves the
playbook's vhost (basic auth, noindex); the shared proxy routes the copy's host name to it, or, without a review
domain, it publishes a port of its own.

Passwords are derived as for host copies (`derive_secret`, keyed by the template's database password): the
database superuser's, the copy's database user's and the basic-auth one. None is stored, none sits in a
container's environment (the superuser's is a file the image reads, `*_PASSWORD_FILE`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from typing import ClassVar
from urllib.parse import urlsplit

from orchestrator.backends.cms import apply
from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.engines import engine_for
from orchestrator.backends.envs import docker as dock
from orchestrator.backends.envs import staging as model
from orchestrator.backends.envs import web
from orchestrator.backends.envs.docroot import resolve_all
from orchestrator.backends.remote.docker import docker_client
from orchestrator.backends.storage.restic import Repository
from orchestrator.config.model import Database, DockerHost
from orchestrator.errors import OperationFailed, OrchError, UsageError

from . import staging
from .targets import target

DOCROOT = "/var/www/html"  # where the official PHP images (and their web servers) keep the site
DB_HOST = "db"  # the database container's name on the copy's network (and in the tools one)
PASSWORD_FILE = "/run/orch-db-password"  # noqa: S105 - where the superuser's password file goes, not one
AUTH_FILE = "/etc/nginx/orch.htpasswd"
PHP_USER = "www-data"  # the official PHP images run PHP as www-data


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class DockerSite:
    """A site's Docker settings, resolved: the engine, the image and limits of each role (the database's by the
    site's engine) and how its database image is run."""

    host: DockerHost
    images: dict[str, str]  # role (database, php, web, proxy, tools) -> image
    limits: dict[str, dock.Limits]
    kind: dock.DatabaseKind | None
    own_url: bool  # the template names the URL (its target is docker and it has a url)

    @property
    def database_kind(self) -> dock.DatabaseKind:
        """How the site's database image runs; raise UsageError if the site has no database."""
        if self.kind is None:
            raise UsageError(f"docker host {self.host.name}: the site has no database to run")
        return self.kind

    @property
    def proxied(self) -> bool:
        """Whether copies sit behind the shared proxy (else each publishes a port)."""
        return bool(self.host.domain) or self.own_url


def docker_site(inventory, site) -> DockerSite:
    """Given a site, return its Docker settings; raise UsageError if no docker host can be chosen."""
    tmpl = model.template(site)
    settings = tmpl.docker or {}
    name = settings.get("host")
    if name is None:
        if len(inventory.docker) != 1:
            raise UsageError(
                f"site {site.name}: name the docker host in environments.staging.docker.host "
                f"(the inventory has {', '.join(sorted(inventory.docker)) or 'none'})"
            )
        name = next(iter(inventory.docker))
    if name not in inventory.docker:
        raise UsageError(f"site {site.name}: docker host {name!r} is not in the inventory's `docker`")
    host = inventory.docker[name]
    images = dock.DEFAULT_IMAGES | playbook_for_site(site).docker_images | host.images | settings.get("images", {})
    engine = tmpl.database.engine if tmpl.database else None
    kind = dock.database_kind(engine) if engine else None
    limits = {
        role: dock.Limits(**(host.limits.get(role, {}) | settings.get("limits", {}).get(role, {})))
        for role in dock.ROLES
    }
    return DockerSite(
        host,
        images | {"database": images[engine] if engine else ""},
        limits,
        kind,
        own_url=tmpl.target == "docker" and bool(tmpl.url),
    )


def derive(site, name: str, setup: DockerSite, url: str) -> model.StagingEnv:
    """Given a site, a copy's name, its Docker settings and URL, return the copy as a StagingEnv: the template's
    database with the copy's derived name, user and password on `db`, and the superuser as its admin."""
    staged = model.derive(site, name)
    database, admin = staged.env.database, None
    if database is not None:
        kind = setup.database_kind
        port = kind.port
        database = replace(database, host=DB_HOST, port=port, socket=None)
        admin = Database(
            engine=database.engine,
            name=None,
            user=kind.admin_user,
            host=DB_HOST,
            port=port,
            password=model.derive_secret(model.template(site), site.name, name, "database-admin"),
            path=None,
            socket=None,
        )
    env = replace(staged.env, host=setup.host.name, path=DOCROOT, url=url, database=database)
    return replace(staged, env=env, admin_db=admin, auth_file=AUTH_FILE)


def copy_url(site, name: str, setup: DockerSite, port: int | None) -> str:
    """The copy's URL: the template's own URL, else `{env}.{site}.DOMAIN` behind the proxy, else the engine's
    address and the copy's published port."""
    host = setup.host
    if setup.own_url:
        return model.derive(site, name).url
    if host.domain:
        return f"http://{name}.{site.name}.{host.domain}" + ("" if host.proxy_port == 80 else f":{host.proxy_port}")
    return f"http://{host.address}:{port}"


def connect_address(setup: DockerSite, url: str) -> str:
    """Where orch's health check sends a copy's requests (its host name need not be in DNS)."""
    port = setup.host.proxy_port if setup.proxied else urlsplit(url).port
    return f"{setup.host.address}:{port}"


def repository(prod) -> Repository:
    """The site's repository as the tools container reaches it: an S3 storage (a folder on the production host
    is out of its reach)."""
    if prod.storage is None:
        raise UsageError(f"site {prod.site.name}: no backup storage, so nothing to copy from")
    if prod.storage.type == "local":
        raise UsageError(
            f"site {prod.site.name}: storage {prod.storage.name} is a folder on {prod.host.name}; "
            "docker copies restore from an s3 storage"
        )
    return Repository(prod.storage, prod.site.name, "restic")


def engine_version(inventory, site) -> tuple[str, str]:
    """Given a site whose copies go to Docker, return (docker host, a line saying its engine's version); raise
    ConnectError/HostKeyError if it cannot be reached."""
    host = docker_site(inventory, site).host
    started = time.monotonic()
    with closing(docker_client(host)) as client:
        version = client.version()
        return host.name, (
            f"docker {version.get('Version')} (API {client.api.api_version}) reached in "
            f"{time.monotonic() - started:.2f}s"
        )


def _registered_or_none(oplog, site: str, name: str) -> dict | None:
    return next((row for row in oplog.envs(site) if row["name"] == name), None)


# ------------------------------------------------------------------------------------------------ create


@dataclass
class DockerCreatePlan(staging.CopyPlan):
    """Make (or make again) a copy in containers on a Docker host."""

    setup: DockerSite
    publish: tuple[str, int] | None  # (address, port) the web container publishes; None behind the proxy
    replaces: bool
    target: ClassVar[str] = "docker"

    def roles(self) -> list[str]:
        return [
            "tools",
            "php",
            "web",
            *(["database"] if self.staged.env.database else []),
            *(["proxy"] if self.setup.proxied else []),
        ]

    def lines(self) -> list[str]:
        env, db, setup = self.staged.env, self.staged.env.database, self.setup
        lines = (
            [f"remove the existing copy {self.label}: its containers and volumes are made anew"]
            if self.replaces
            else []
        )
        lines += [
            f"register {self.label} (status creating) before the first change",
            *staging.source_lines(self),
            f"docker host {setup.host.name}: make images available: "
            f"{', '.join(sorted({setup.images[r] for r in self.roles()}))}",
            f"create network {dock.PREFIX}-{self.site}-{self.env} and volumes for the docroot"
            + (" and the database" if db else ""),
        ]
        if db is not None:
            lines.append(
                f"start the database container ({setup.images['database']}): {db.engine} database "
                f"{db.name} and its user {db.user}"
            )
        lines += [
            f"start the PHP ({setup.images['php']}) and web ({setup.images['web']}) containers"
            + (f", publishing port {self.publish[1]}" if self.publish else ""),
            f"in a tools container ({setup.images['tools']}): restore the files, load the dump replacing "
            f"{self.prod.env.url} with {env.url}, point config files at the copy, sanitize, reset passwords, "
            "switch mail and cron off",
            *(
                []
                if self.publish
                else [f"route {urlsplit(self.staged.url).hostname} through the proxy (port {setup.host.proxy_port})"]
            ),
            f"wait until {env.url} answers (basic auth {model.AUTH_USER}, noindex)",
        ]
        return lines

    def params(self) -> dict:
        return {
            "backup_id": self.backup["backup_id"] if self.backup else None,
            "from": self.source,
            "url": self.staged.env.url,
            "target": "docker",
            "docker_host": self.setup.host.name,
        }

    def as_dict(self) -> dict:
        env = self.staged.env
        return {
            "site": self.site,
            "env": self.env,
            "target": "docker",
            "host": self.setup.host.name,
            "path": env.path,
            "url": env.url,
            "from": self.source,
            "backup_id": self.params()["backup_id"],
            "playbook": self.playbook.name,
            "basic_auth_user": model.AUTH_USER,
            "images": {role: self.setup.images[role] for role in self.roles()},
            "plan": self.lines(),
        }


def plan_create(
    oplog, inventory, site_name: str, *, task: str, name: str | None = None, source: str = "latest"
) -> DockerCreatePlan:
    """Given a site, a task and latest|fresh|ID, return the plan of a Docker copy (reads only; without a review
    domain it asks the engine which port the copy may publish). Raise Refused for production, UsageError for a
    bad name or settings, ConnectError/HostKeyError if the engine cannot be reached."""
    site = inventory.site(site_name)
    name = model.check_name(site, name or model.default_name(task))
    setup = docker_site(inventory, site)
    prod = target(inventory, site.name, "production")
    repository(prod)
    publish = None
    with closing(docker_client(setup.host)) as client:
        replaces = bool(dock.Copy(client, site.name, name).objects()["containers"])
        if not setup.proxied:
            publish = (setup.host.publish_address, _port_for(client, setup, site.name, name))
    staged = derive(site, name, setup, copy_url(site, name, setup, publish[1] if publish else None))
    replaces = replaces or _registered_or_none(oplog, site.name, name) is not None
    return DockerCreatePlan(
        "staging-create",
        site.name,
        name,
        task,
        staged,
        setup.host,
        prod,
        playbook_for_site(site),
        source,
        staging.pick_backup(oplog, prod, source),
        setup,
        publish,
        replaces,
    )


def _port_for(client, setup: DockerSite, site: str, name: str) -> int:
    """The port a copy publishes: the one it has if it exists, else the first free one of the engine's range."""
    existing = dock.Copy(client, site, name).container("web")
    if existing is not None:
        for bindings in (existing.attrs["HostConfig"].get("PortBindings") or {}).values():
            for binding in bindings or []:
                if str(binding.get("HostPort", "")).isdigit():
                    return int(binding["HostPort"])
    used = dock.used_ports(client)
    first, last = setup.host.ports
    for port in range(first, last + 1):
        if port not in used:
            return port
    raise UsageError(f"docker host {setup.host.name}: every port of {first}-{last} is published already")


def apply_create(oplog, op, plan: DockerCreatePlan) -> dict:
    """Make the copy (staging.create runs this under the lock): registered first, marked ready or failed at the
    end; every object it gets carries its labels, so `destroy` removes whatever a failure left."""
    env = plan.staged.env
    oplog.record_env(
        plan.site,
        plan.env,
        task=plan.task,
        host=plan.setup.host.name,
        path=env.path,
        url=env.url,
        database=staging.db_summary(env.database),
        details={"status": "creating", "operation_id": op.id, "target": "docker", "basic_auth_user": model.AUTH_USER},
    )
    try:
        backup = plan.backup or staging.backup_now(oplog, op, plan.prod, plan.task)
        op.artifact("source-backup", backup["backup_id"], details={"snapshots": backup["snapshots"]})
        with closing(docker_client(plan.setup.host)) as client:
            result = _build(op, client, plan, backup)
    except BaseException:
        staging.mark_status(oplog, plan, status="failed")
        raise
    staging.mark_status(oplog, plan, status="ready", backup_id=backup["backup_id"])
    op.artifact("staging-url", env.url, details={"basic_auth_user": model.AUTH_USER, "target": "docker"})
    return result | {"backup_id": backup["backup_id"], "task": plan.task}


def _build(op, client, plan: DockerCreatePlan, backup: dict) -> dict:
    setup, env = plan.setup, plan.staged.env
    copy = dock.Copy(client, plan.site, plan.env, task=plan.task)
    with op.step(f"make the images available on docker host {setup.host.name}") as step:
        lines: list[str] = []
        for image in sorted({setup.images[role] for role in plan.roles()}):
            lines.append(f"{image}: {dock.ensure_image(client, image, lines.append)}")
        step.output("\n".join(lines[-50:]))
    if plan.replaces:
        with op.step("remove the previous copy's containers and volumes") as step:
            step.output(_removed_text(dock.remove_copy(client, plan.site, plan.env)))
    with op.step("create the network and the volumes") as step:
        dock.ensure_cache_volume(client)
        made = [copy.network().name, copy.volume("docroot").name]
        step.output(", ".join(made + ([copy.volume("database").name] if env.database else [])))
    if env.database is not None:
        with op.step("start the database container") as step:
            step.output(_start_database(copy, plan).name)
    with op.step("start the PHP and web containers") as step:
        step.output(
            ", ".join(c.name for c in _start_php_and_web(copy, plan))
            + (f"; published on port {plan.publish[1]}" if plan.publish else "")
        )
    flatten = plan.prod.files_root != plan.prod.env.path

    def files(conn) -> str:
        staging.restore_files(
            conn, repository(plan.prod), backup["snapshots"]["files"], plan.staged.path, plan.playbook, flatten=flatten
        )
        return f"{env.path} from snapshot {backup['snapshots']['files']}"

    db_result = _in_tools(
        op, copy, plan, backup, ("restore files into the docroot volume", files), database=True, guard=True
    )
    if setup.proxied:
        with op.step("route the copy's host name through the proxy") as step:
            dock.ensure_proxy(client, setup.images["proxy"], (setup.host.publish_address, setup.host.proxy_port))
            step.output(", ".join(dock.sync_routes(client)["added"]) or "route already in place")
    with op.step("health check through the web container") as step:
        step.output(
            staging.health_check(plan.staged, {"connect": connect_address(setup, plan.staged.url)}, plan.playbook)
        )
    containers = copy.objects()["containers"]
    for container in containers:
        op.artifact(
            "docker-container",
            container.name,
            details={
                "id": container.id,
                "image": container.attrs["Config"]["Image"],
                "role": container.labels.get(dock.ROLE),
                "docker_host": setup.host.name,
            },
        )
    return {
        "site": plan.site,
        "env": plan.env,
        "url": env.url,
        "path": env.path,
        "host": setup.host.name,
        "target": "docker",
        "containers": sorted(c.name for c in containers),
        "basic_auth": {"user": model.AUTH_USER, "password": plan.staged.auth_password.reveal()},
        **db_result,
    }


def _in_tools(
    op, copy: dock.Copy, plan, backup: dict, files: tuple[str, Callable] | None, *, database: bool, guard: bool
) -> dict:
    """Run the host-staging steps in a tools container: the files step (`files`: step name and a function of
    the connector), the database (when `database`), the guard files (when `guard`); then give the docroot to
    PHP's user. Return what the database step returns."""
    env, setup, result = plan.staged.env, plan.setup, {}
    with dock.tools_container(
        copy, setup.images["tools"], env.path, DB_HOST if env.database else None, setup.limits["tools"]
    ) as conn:
        if env.database is not None:
            with op.step("wait for the database"):
                dock.wait_for_database(conn, engine_for(plan.staged.admin_db, env.path))
        if files is not None:
            with op.step(files[0]) as step:
                step.output(files[1](conn))
        if database and env.database is not None:
            result = staging.copy_database(op, conn, plan, repository(plan.prod), backup)
        if guard:
            with op.step("switch mail and cron off") as step:
                step.output(", ".join(apply.write_guard_files(conn, plan.playbook, env.path)) or "nothing to write")
    with op.step("give the docroot to PHP's user") as step:
        dock.exec_checked(copy.container("php"), ["chown", "-R", f"{PHP_USER}:{PHP_USER}", env.path], "chown")
        step.output(f"{env.path}: {PHP_USER}")
    return result


def _start_database(copy: dock.Copy, plan: DockerCreatePlan):
    setup, admin, kind = plan.setup, plan.staged.admin_db, plan.setup.database_kind
    if admin is None or admin.password is None:  # derive() gives every copy with a database its superuser
        raise UsageError(f"{plan.label}: no database superuser was derived for the copy")
    return copy.replace_container(
        "db",
        setup.images["database"],
        network=copy.name(),
        aliases=(DB_HOST,),
        restart_policy=dock.RESTART,
        files={PASSWORD_FILE: (admin.password.reveal().encode(), 0o444)},
        environment={kind.password_file_env: PASSWORD_FILE},
        mounts=[dock.mount(copy.name("database"), kind.data_dir)],
        **setup.limits["database"].kwargs(),
    )


def _start_php_and_web(copy: dock.Copy, plan: DockerCreatePlan) -> list:
    setup, staged = plan.setup, plan.staged
    host_name = urlsplit(staged.url).hostname or ""
    php = copy.replace_container(
        "php",
        setup.images["php"],
        network=copy.name(),
        aliases=("php",),
        restart_policy=dock.RESTART,
        mounts=[dock.mount(copy.name("docroot"), staged.path)],
        **setup.limits["php"].kwargs(),
    )
    vhost = plan.playbook.render_vhost(
        server_name=host_name,
        listen=str(dock.WEB_PORT),
        root=staged.path,
        fastcgi=f"php:{dock.PHP_PORT}",
        auth_file=AUTH_FILE,
    )
    htpasswd = web.htpasswd_line(model.AUTH_USER, staged.auth_password.reveal())
    try:
        web_container = dock.start_web(
            copy,
            setup.images["web"],
            staged.path,
            vhost,
            htpasswd,
            setup.limits["web"],
            plan.publish,
            None if plan.publish else urlsplit(staged.url).hostname,
        )
    except dock.PortTaken as exc:
        raise OperationFailed(f"{exc} (taken since the plan was made): run the create again") from None
    return [php, web_container]


def _removed_text(removed: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in removed.items() if names) or "nothing left"


# ------------------------------------------------------------------------------------------------ refresh


@dataclass
class DockerRefreshPlan(staging.RefreshPlan):
    """Bring production's content (or everything) down again into a Docker copy."""

    setup: DockerSite
    target: ClassVar[str] = "docker"


def plan_refresh(
    oplog,
    inventory,
    site_name: str,
    *,
    name: str,
    task: str,
    source: str = "latest",
    files: bool = True,
    db: bool = True,
    with_code: bool = False,
) -> DockerRefreshPlan:
    """Given an existing Docker copy and what to bring down, return the refresh plan (reads only). Raise
    UsageError if the copy is not one orch made ready or there is no backup."""
    site = inventory.site(site_name)
    model.check_name(site, name)
    row = staging.registered(oplog, site.name, name)
    if staging.status_of(oplog, row) != "ready":
        raise UsageError(
            f"{site.name}/{name} is {staging.status_of(oplog, row)}, not ready: `orch staging "
            "destroy` it, then create it again"
        )
    setup = docker_site(inventory, site)
    if row["host"] != setup.host.name:
        raise UsageError(
            f"{site.name}/{name} lives on docker host {row['host']}, the site now names "
            f"{setup.host.name}: destroy it and create it again"
        )
    prod = target(inventory, site.name, "production")
    repository(prod)
    # The content folders to mirror are resolved in the copy, under the lock (it takes a tools container).
    backup = staging.pick_backup(oplog, prod, source)
    return DockerRefreshPlan(
        "staging-refresh",
        site.name,
        name,
        task,
        derive(site, name, setup, row["url"]),
        setup.host,
        prod,
        playbook_for_site(site),
        source,
        backup,
        files,
        db,
        with_code,
        {},
        setup,
    )


def apply_refresh(oplog, op, plan: DockerRefreshPlan) -> dict:
    """Bring the content (or everything) down again (staging.refresh runs this under the lock)."""
    env = plan.staged.env
    backup = plan.backup or staging.backup_now(oplog, op, plan.prod, plan.task)
    op.artifact("source-backup", backup["backup_id"], details={"snapshots": backup["snapshots"]})

    def files(conn) -> str:
        resolved = plan
        if not plan.with_code:
            plain = [p.strip("/") for p in plan.playbook.content if not any(c in p for c in "*?[")]
            resolved = replace(plan, mirrored=dict(zip(plain, resolve_all(conn, plan.staged.path, plain), strict=True)))
        return staging.refresh_files(conn, repository(plan.prod), backup["snapshots"]["files"], resolved)

    with closing(docker_client(plan.setup.host)) as client:
        copy = dock.Copy(client, plan.site, plan.env, task=plan.task)
        if copy.container("php") is None:
            raise OperationFailed(f"{plan.label} has no PHP container any more: destroy it and create it again")
        step_files = ("refresh " + ("all files" if plan.with_code else "content files"), files) if plan.files else None
        result = _in_tools(op, copy, plan, backup, step_files, database=plan.db, guard=plan.with_code)
    oplog.update_env(plan.site, plan.env, backup_id=backup["backup_id"])
    return {"site": plan.site, "env": plan.env, "backup_id": backup["backup_id"], "url": env.url, **result}


# ------------------------------------------------------------------------------------------------ destroy


@dataclass
class DockerDestroyPlan(staging.StagingPlan):
    """Remove every object of a Docker copy (by its labels), however far its create got."""

    row: dict | None
    objects: dict[str, list[str]]
    target: ClassVar[str] = "docker"

    def lines(self) -> list[str]:
        found = [f"{kind}: {', '.join(names)}" for kind, names in self.objects.items() if names]
        return [
            f"docker host {self.host.name}: remove {'; '.join(found) or 'nothing (no object left)'}",
            "drop the proxy's route and disconnect it from the copy's network",
            f"unregister {self.label}" if self.row else f"{self.label} is not registered",
        ]

    def params(self) -> dict:
        return {"target": "docker", "docker_host": self.host.name, "objects": self.objects}


def plan_destroy(oplog, inventory, site_name: str, *, name: str, task: str) -> DockerDestroyPlan:
    """Given a Docker copy, return the plan removing it: what its engine holds with its labels, registered or not.
    Raise Refused for production, UsageError if there is neither a registry row nor any object."""
    site = inventory.site(site_name)
    model.check_name(site, name)
    row = _registered_or_none(oplog, site.name, name)
    host = inventory.docker.get(row["host"]) if row else docker_site(inventory, site).host
    if host is None:
        raise UsageError(
            f"{site.name}/{name} lives on docker host {(row or {}).get('host')}, which the inventory no longer has"
        )
    with closing(docker_client(host)) as client:
        objects = {
            kind: sorted(o.name for o in found) for kind, found in dock.Copy(client, site.name, name).objects().items()
        }
    if row is None and not any(objects.values()):
        raise UsageError(
            f"{site.name}/{name} is not a staging environment orch made (see `orch staging list {site.name}`)"
        )
    return DockerDestroyPlan("staging-destroy", site.name, name, task, model.derive(site, name), host, row, objects)


def apply_destroy(oplog, op, plan: DockerDestroyPlan) -> dict:
    """Remove every labelled object, then the route (staging.destroy runs this under the lock)."""
    with op.step(f"remove the copy's containers, volumes, network and route on {plan.host.name}") as step:
        with closing(docker_client(plan.host)) as client:
            removed = dock.remove_copy(client, plan.site, plan.env)
        step.output(_removed_text(removed))
    if plan.row is not None:
        oplog.env_destroyed(plan.site, plan.env)
    return {
        "site": plan.site,
        "env": plan.env,
        "destroyed": True,
        "target": "docker",
        "path": plan.host.name,
        "removed": removed,
    }


# ------------------------------------------------------------------------------------------------ listing


def annotate(inventory, rows: list[dict], site: str | None) -> list[dict]:
    """Given registry rows, add to each Docker copy what its engine reports (state as status once it is ready,
    size of its volumes) and add the copies an engine holds that the registry does not know (status
    `unregistered`). An engine that cannot be reached says so in its copies' status."""
    hosts = {row["host"] for row in rows if row["target"] == "docker"} | set(inventory.docker)
    rows = list(rows)
    for name in sorted(hosts):
        host = inventory.docker.get(name)
        mine = [row for row in rows if row["target"] == "docker" and row["host"] == name]
        try:
            if host is None:
                raise UsageError(f"docker host {name} is not in the inventory")
            with closing(docker_client(host)) as client:
                found = dock.copies(client, with_sizes=True)
        except OrchError as exc:
            for row in mine:
                row["status"] = f"unreachable: {exc}"[:120]
            continue
        for row in mine:
            state = found.pop((row["site"], row["name"]), None)
            row["size"] = state.size if state else 0
            if row["status"] == "ready":
                row["status"] = state.status if state else "gone"
        rows += [
            _unregistered(name, state) for (copy_site, _), state in sorted(found.items()) if site in (None, copy_site)
        ]
    return rows


def _unregistered(host: str, state: dock.CopyState) -> dict:
    return {
        "site": state.site,
        "name": state.env,
        "task": state.task,
        "host": host,
        "url": None,
        "path": None,
        "target": "docker",
        "status": "unregistered",
        "size": state.size,
        "details": {},
        "created_at": state.created.isoformat() if state.created else None,
    }
