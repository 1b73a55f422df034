"""The Docker staging target: a copy of a site as containers on a Docker host.

Per copy: a network `orch-SITE-ENV`, a database container (`db` on that network; MariaDB/MySQL or PostgreSQL by
the site's engine), a PHP container (`php`, FastCGI on :9000) and a web server container (nginx with the
playbook's vhost: basic auth, noindex), a volume for the docroot and one for the database. While orch works on
the copy it adds a tools container (restic, the URL replacer, database clients): the host-staging steps run
there unchanged through a ContainerConnector. One shared reverse proxy (`orch-proxy`) routes each copy's host
name to its web container; without a review domain the web container publishes a port instead.

Every object carries the labels `orch.site`, `orch.env`, `orch.task`, `orch.created` and `orch.role`, so a
destroy or gc removes exactly what orch made, however far a create got. The proxy's routes are derived from
the labels of the web containers that exist (`sync_routes`), so a removed copy leaves no route behind.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import docker
from docker.errors import APIError, BuildError, ImageNotFound, NotFound

from orchestrator.backends.remote.docker import ContainerConnector
from orchestrator.errors import OperationFailed, UsageError

PREFIX = "orch"
SITE, ENV, TASK, CREATED, ROLE, ROUTE = (
    f"{PREFIX}.{key}" for key in ("site", "env", "task", "created", "role", "route")
)
RESTART = {"Name": "unless-stopped"}  # copies come back with the Docker host, unless someone stopped them
PROXY_NAME = "orch-proxy"
CACHE_VOLUME = "orch-tools-cache"  # restic's cache and the shipped replacer, shared by every tools container
WEB_PORT = 80
PHP_PORT = 9000

# orch's own tools image, built on the Docker host from this recipe the first time it is needed.
TOOLS_RECIPE = """\
FROM debian:bookworm-slim
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    bash ca-certificates restic python3 rsync mariadb-client-core postgresql-client php-cli \\
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
"""
TOOLS_IMAGE = "orch-tools:" + hashlib.sha256(TOOLS_RECIPE.encode()).hexdigest()[:12]

# The images a user would pull; the playbook, the docker host and the site may name others (in that order).
DEFAULT_IMAGES = {
    "tools": TOOLS_IMAGE,
    "php": "php:8.2-fpm",
    "web": "nginx:1.27",
    "proxy": "nginx:1.27",
    "mysql": "mariadb:10.11",
    "postgresql": "postgres:15",
}
ROLES = ("database", "php", "web", "tools")


@dataclass(frozen=True)
class DatabaseKind:
    """How an official database image is run: where its data lives, its port, its superuser, and the variable
    naming the file its superuser password is read from (both mariadb and mysql images read MYSQL_*)."""

    data_dir: str
    port: int
    admin_user: str
    password_file_env: str


DATABASES = {
    "mysql": DatabaseKind("/var/lib/mysql", 3306, "root", "MYSQL_ROOT_PASSWORD_FILE"),
    "postgresql": DatabaseKind("/var/lib/postgresql/data", 5432, "postgres", "POSTGRES_PASSWORD_FILE"),
}


def database_kind(engine: str) -> DatabaseKind:
    if engine not in DATABASES:
        raise UsageError(f"docker copies support mysql and postgresql databases, not {engine}")
    return DATABASES[engine]


# ------------------------------------------------------------------------------------------------ images


def ensure_image(client: docker.DockerClient, name: str, on_line: Callable[[str], None]) -> str:
    """Make an image available on the Docker host: present, built (orch's tools image) or pulled. Return what
    was done; raise OperationFailed naming the image if it cannot be had."""
    try:
        client.images.get(name)
        return "present"
    except ImageNotFound:
        pass
    try:
        if name == TOOLS_IMAGE:
            # host networking: apt inside the build reaches the mirror however the host's bridges are set up
            for chunk in client.api.build(
                fileobj=io.BytesIO(TOOLS_RECIPE.encode()), tag=name, rm=True, network_mode="host", decode=True
            ):
                if "error" in chunk:
                    raise BuildError(chunk["error"], iter(()))
                if chunk.get("stream", "").strip():
                    on_line(chunk["stream"].strip())
            return "built"
        repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
        for chunk in client.api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise APIError(chunk["error"])
            if chunk.get("status") and not chunk.get("progressDetail"):
                on_line(f"{chunk.get('id', name)}: {chunk['status']}")
        return "pulled"
    except (APIError, BuildError) as exc:
        raise OperationFailed(
            f"image {name} is not on the docker host and could not be "
            f"{'built' if name == TOOLS_IMAGE else 'pulled'}: {_explain(exc)}"
        ) from None


def _explain(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or getattr(exc, "msg", None) or str(exc)
    return str(text).strip().splitlines()[-1][:300] if str(text).strip() else type(exc).__name__


# ------------------------------------------------------------------------------------------------ one copy


def now_label() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_label_time(value: str | None) -> datetime | None:
    try:
        return datetime.strptime(value or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


@dataclass
class Limits:
    """Memory and CPU limits of one container (None: unlimited)."""

    memory: str | None = None
    cpus: float | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.memory:
            out["mem_limit"] = self.memory
        if self.cpus:
            out["nano_cpus"] = int(float(self.cpus) * 1e9)
        return out


@dataclass
class Copy:
    """The objects of one copy (site, env) on a Docker host: their names and labels, and how they are made."""

    client: docker.DockerClient
    site: str
    env: str
    task: str = ""
    created: str = field(default_factory=now_label)

    def name(self, role: str | None = None) -> str:
        return f"{PREFIX}-{self.site}-{self.env}" + (f"-{role}" if role else "")

    def labels(self, role: str, **extra: str) -> dict[str, str]:
        return {SITE: self.site, ENV: self.env, TASK: str(self.task), CREATED: self.created, ROLE: role, **extra}

    @property
    def filters(self) -> dict:
        return {"label": [f"{SITE}={self.site}", f"{ENV}={self.env}"]}

    # -- objects ------------------------------------------------------------------------------------------
    def network(self):
        """Create the copy's network (or return it)."""
        found = self.client.networks.list(names=[self.name()], filters=self.filters)
        return (
            found[0]
            if found
            else self.client.networks.create(self.name(), driver="bridge", labels=self.labels("network"))
        )

    def volume(self, role: str):
        """Create one of the copy's volumes, `docroot` or `database` (or return it)."""
        try:
            return self.client.volumes.get(self.name(role))
        except NotFound:
            return self.client.volumes.create(self.name(role), labels=self.labels(role))

    def container(self, role: str):
        try:
            return self.client.containers.get(self.name(role))
        except NotFound:
            return None

    def replace_container(
        self,
        role: str,
        image: str,
        *,
        files: dict[str, tuple[bytes, int]] | None = None,
        network: str | None = None,
        aliases: tuple[str, ...] = (),
        labels: dict | None = None,
        start: bool = True,
        **kwargs,
    ):
        """(Re)create the container of a role: any old one is removed first. `files` ({path: (bytes, mode)})
        are written into it before it starts (secrets and configs never travel in its environment)."""
        old = self.container(role)
        if old is not None:
            old.remove(force=True)
        networking = None
        if network:
            endpoint = self.client.api.create_endpoint_config(aliases=list(aliases))
            # the SDK takes {network: endpoint config}; types-docker says a single EndpointConfig
            networking = self.client.api.create_networking_config({network: endpoint})  # type: ignore[arg-type]
        created = self.client.api.create_container(
            image,
            name=self.name(role),
            labels=self.labels(role, **(labels or {})),
            networking_config=networking,
            **_split_container_kwargs(self.client, kwargs),
        )
        container = self.client.containers.get(created["Id"])
        for path, (data, mode) in (files or {}).items():
            put_file(container, path, data, mode)
        if start:
            container.start()
            container.reload()
        return container

    def objects(self) -> dict[str, list]:
        """Every object carrying this copy's labels: containers, volumes, networks."""
        return {
            "containers": self.client.containers.list(all=True, filters=self.filters),
            "volumes": self.client.volumes.list(filters=self.filters),
            "networks": self.client.networks.list(filters=self.filters),
        }


def _split_container_kwargs(client, kwargs: dict) -> dict:
    """Split run()-style keyword arguments into create_container's and its host_config's."""
    host_keys = {
        "mem_limit",
        "nano_cpus",
        "restart_policy",
        "mounts",
        "port_bindings",
        "network_mode",
        "extra_hosts",
        "binds",
    }
    host = {k: v for k, v in kwargs.items() if k in host_keys}
    rest = {k: v for k, v in kwargs.items() if k not in host_keys}
    return rest | {"host_config": client.api.create_host_config(**host)}


def put_file(container, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write one file into a container (created or running) through the API."""
    folder, _, name = path.rpartition("/")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    if not container.put_archive(folder or "/", archive.getvalue()):
        raise OperationFailed(f"could not write {path} into container {container.name}")


def mount(volume: str, target: str, read_only: bool = False) -> docker.types.Mount:
    return docker.types.Mount(target=target, source=volume, type="volume", read_only=read_only)


def container_ip(container, network: str) -> str:
    container.reload()
    address = container.attrs["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress")
    if not address:
        raise OperationFailed(f"container {container.name} has no address on network {network}")
    return address


@contextmanager
def tools_container(
    copy: Copy, image: str, docroot: str, database: str | None, limits: Limits
) -> Iterator[ContainerConnector]:
    """Run the copy's tools container for the duration of a block and yield a connector into it.

    It shares the Docker host's network (the backup repository is reached as from the host itself, and so is
    any storage on the host's loopback) and reaches the copy's database by the name `db`, as PHP does. The
    docroot volume is mounted where the web containers see it; the cache volume keeps restic's cache."""
    extra_hosts = {"db": container_ip(copy.container("db"), copy.name())} if database else {}
    container = copy.replace_container(
        "tools",
        image,
        command=["sleep", "infinity"],
        network_mode="host",
        extra_hosts=extra_hosts,
        mounts=[mount(copy.name("docroot"), docroot), mount(CACHE_VOLUME, "/root/.cache")],
        **limits.kwargs(),
    )
    try:
        yield ContainerConnector(copy.client, container, f"{copy.name('tools')}")
    finally:
        try:
            container.remove(force=True)
        except (NotFound, APIError):
            pass


def ensure_cache_volume(client) -> None:
    try:
        client.volumes.get(CACHE_VOLUME)
    except NotFound:
        client.volumes.create(CACHE_VOLUME, labels={ROLE: "cache"})


def wait_for_database(conn, admin_engine, timeout: float = 120) -> None:
    """Poll the copy's database server from the tools container until the admin account logs in."""
    deadline = time.monotonic() + timeout
    login = admin_engine.script(admin_engine.db.name or admin_engine.ADMIN_DATABASE)  # as provisioning logs in
    while True:
        result = conn.run(login, stdin=b"SELECT 1;\n", check=False)
        if result.ok:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the copy's database did not accept connections within {timeout:.0f}s: {result.stderr.strip()[-300:]}"
            )
        time.sleep(0.5)


def start_web(
    copy: Copy,
    image: str,
    docroot: str,
    vhost: str,
    htpasswd: str,
    limits: Limits,
    publish: tuple[str, int] | None,
    route: str | None,
):
    """(Re)create the web container with the copy's vhost as nginx's default server; publish its port when
    asked. Raise PortTaken if the port is in use on the Docker host."""
    files = {
        "/etc/nginx/conf.d/default.conf": (vhost.encode(), 0o644),
        "/etc/nginx/orch.htpasswd": (htpasswd.encode(), 0o644),
    }
    kwargs: dict[str, Any] = {"port_bindings": {WEB_PORT: publish}} if publish else {}
    try:
        return copy.replace_container(
            "web",
            image,
            files=files,
            network=copy.name(),
            aliases=("web",),
            restart_policy=RESTART,
            mounts=[mount(copy.name("docroot"), docroot, read_only=True)],
            labels={ROUTE: route} if route else None,
            ports=[WEB_PORT] if publish else None,
            **kwargs,
            **limits.kwargs(),
        )
    except APIError as exc:
        if publish and any(s in str(exc) for s in ("already allocated", "address already in use")):
            raise PortTaken(publish[1]) from None
        raise


class PortTaken(OperationFailed):
    def __init__(self, port: int):
        super().__init__(f"port {port} is taken on the docker host")
        self.port = port


def used_ports(client) -> set[int]:
    """Host ports published by any container (running or not) on the Docker host."""
    ports = set()
    for container in client.containers.list(all=True):
        for bindings in (container.attrs.get("HostConfig", {}).get("PortBindings") or {}).values():
            for binding in bindings or []:
                if str(binding.get("HostPort", "")).isdigit():
                    ports.add(int(binding["HostPort"]))
    return ports


def exec_checked(container, argv: list[str], what: str) -> str:
    """Run a plain argv in a running container (no shell needed in its image); raise OperationFailed with its
    output if it fails."""
    result = container.exec_run(argv, demux=False)
    output = (result.output or b"").decode("utf-8", "replace").strip()
    if result.exit_code != 0:
        raise OperationFailed(f"{what} failed in {container.name} (exit {result.exit_code}): {output[-400:]}")
    return output


# ------------------------------------------------------------------------------------------------ the proxy

PROXY_BASE = """\
# Written by orch: routes live in orch-route-*.conf, derived from the labels of the copies' web containers.
resolver 127.0.0.11 valid=10s ipv6=off;
server {
    listen 80 default_server;
    server_name _;
    return 404;
}
"""
ROUTE_PREFIX = "orch-route-"


def route_conf(site: str, env: str, hostname: str, upstream: str) -> str:
    """The proxy's server block for one copy. The upstream is resolved per request (Docker's DNS), so a copy
    that is gone makes a 502, never a proxy that fails to reload."""
    return f"""\
# orch route: site={site} env={env}
server {{
    listen 80;
    server_name {hostname};
    client_max_body_size 256m;
    location / {{
        set $orch_upstream http://{upstream}:{WEB_PORT};
        proxy_pass $orch_upstream;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 300s;
    }}
}}
"""


def ensure_proxy(client, image: str, publish: tuple[str, int]):
    """Return the shared reverse proxy, creating it (and its own network) on first use."""
    try:
        proxy = client.containers.get(PROXY_NAME)
        if proxy.status != "running":
            proxy.start()
        return proxy
    except NotFound:
        pass
    labels = {ROLE: "proxy"}
    if not client.networks.list(names=[PROXY_NAME]):
        client.networks.create(PROXY_NAME, driver="bridge", labels=labels)
    networking = client.api.create_networking_config({PROXY_NAME: client.api.create_endpoint_config()})
    created = client.api.create_container(
        image,
        name=PROXY_NAME,
        labels=labels,
        ports=[WEB_PORT],
        networking_config=networking,
        host_config=client.api.create_host_config(port_bindings={WEB_PORT: publish}, restart_policy=RESTART),
    )
    proxy = client.containers.get(created["Id"])
    put_file(proxy, "/etc/nginx/conf.d/default.conf", PROXY_BASE.encode())
    try:
        proxy.start()
    except APIError as exc:
        proxy.remove(force=True)
        raise OperationFailed(
            f"the review proxy could not start on {publish[0]}:{publish[1]}: {_explain(exc)}"
        ) from None
    return proxy


def wanted_routes(client) -> dict[str, tuple[str, str, str, str]]:
    """{file name: (site, env, host name, network)} for every labelled web container that has a route."""
    routes = {}
    for web in client.containers.list(all=True, filters={"label": [ROUTE, f"{ROLE}=web"]}):
        labels = web.labels
        site, env = labels[SITE], labels[ENV]
        routes[f"{ROUTE_PREFIX}{site}--{env}.conf"] = (site, env, labels[ROUTE], f"{PREFIX}-{site}-{env}")
    return routes


def present_routes(proxy) -> set[str]:
    output = exec_checked(proxy, ["ls", "/etc/nginx/conf.d"], "listing the proxy's routes")
    return {name for name in output.split() if name.startswith(ROUTE_PREFIX)}


def sync_routes(client) -> dict[str, list[str]]:
    """Make the proxy's routes match the web containers that exist: write the missing ones, connect the proxy to
    their networks, drop the others; test and reload nginx (a route nginx refuses is removed again).
    Return {"added": [...], "removed": [...]}. Without a proxy there is nothing to do."""
    try:
        proxy = client.containers.get(PROXY_NAME)
    except NotFound:
        return {"added": [], "removed": []}
    if proxy.status != "running":
        proxy.start()
    wanted, present = wanted_routes(client), present_routes(proxy)
    added, removed = sorted(set(wanted) - present), sorted(present - set(wanted))
    attached = set((proxy.attrs["NetworkSettings"]["Networks"] or {}).keys())
    for name in added:
        site, env, hostname, network = wanted[name]
        if network not in attached:
            client.networks.get(network).connect(proxy)
        put_file(
            proxy, f"/etc/nginx/conf.d/{name}", route_conf(site, env, hostname, f"{PREFIX}-{site}-{env}-web").encode()
        )
    for name in removed:
        exec_checked(proxy, ["rm", "-f", f"/etc/nginx/conf.d/{name}"], "removing a route")
    if added or removed:
        test = proxy.exec_run(["nginx", "-t"])
        if test.exit_code != 0:
            for name in added:
                proxy.exec_run(["rm", "-f", f"/etc/nginx/conf.d/{name}"])
            raise OperationFailed(
                f"the proxy's nginx refused the route (removed again): "
                f"{test.output.decode('utf-8', 'replace').strip()[-300:]}"
            )
        exec_checked(proxy, ["nginx", "-s", "reload"], "reloading the proxy")
    wanted_networks = {network for _, _, _, network in wanted.values()} | {PROXY_NAME}
    for network in attached - wanted_networks:
        try:
            client.networks.get(network).disconnect(proxy)
        except (NotFound, APIError):
            pass
    return {"added": added, "removed": removed}


# ------------------------------------------------------------------------------------------------ removal, listing


def remove_copy(client, site: str, env: str) -> dict[str, list[str]]:
    """Remove every object labelled with (site, env): containers first (a volume in use cannot go), then
    volumes and the network (disconnecting the proxy), then the proxy route. Return what was removed."""
    copy = Copy(client, site, env)
    objects = copy.objects()
    removed: dict[str, list[str]] = {"containers": [], "volumes": [], "networks": [], "routes": []}
    for container in objects["containers"]:
        container.remove(force=True)
        removed["containers"].append(container.name)
    removed["routes"] = sync_routes(client)["removed"]
    for volume in objects["volumes"]:
        volume.remove(force=True)
        removed["volumes"].append(volume.name)
    for network in objects["networks"]:
        network.reload()
        for attached in network.containers:
            network.disconnect(attached, force=True)
        network.remove()
        removed["networks"].append(network.name)
    return removed


@dataclass
class CopyState:
    """What the Docker host says about one copy (for `staging list` and `gc`)."""

    site: str
    env: str
    task: str
    created: datetime | None
    containers: dict[str, str] = field(default_factory=dict)  # role -> status
    volumes: list[str] = field(default_factory=list)
    url: str | None = None
    size: int | None = None

    @property
    def status(self) -> str:
        states = {role: self.containers.get(role) for role in ("db", "php", "web")}
        if all(state == "running" for state in states.values()):
            return "running"
        if not any(states.values()):
            return "incomplete" if self.volumes or self.containers else "gone"
        return "degraded: " + ", ".join(
            f"{role} {state or 'missing'}" for role, state in states.items() if state != "running"
        )


def copies(client, with_sizes: bool = False) -> dict[tuple[str, str], CopyState]:
    """Every copy with at least one labelled object on the Docker host, by (site, env)."""
    found: dict[tuple[str, str], CopyState] = {}

    def state(labels: dict) -> CopyState:
        key = (labels[SITE], labels[ENV])
        if key not in found:
            found[key] = CopyState(*key, task=labels.get(TASK, ""), created=parse_label_time(labels.get(CREATED)))
        current = found[key]
        created = parse_label_time(labels.get(CREATED))
        if created and (current.created is None or created < current.created):
            current.created = created
        return current

    for container in client.containers.list(all=True, filters={"label": [SITE, ENV]}):
        current = state(container.labels)
        current.containers[container.labels.get(ROLE, "?")] = container.status
    for volume in client.volumes.list(filters={"label": [SITE, ENV]}):
        state(volume.attrs.get("Labels") or {}).volumes.append(volume.name)
    for network in client.networks.list(filters={"label": [SITE, ENV]}):
        state(network.attrs.get("Labels") or {})
    if with_sizes and found:
        sizes = {v["Name"]: (v.get("UsageData") or {}).get("Size", 0) for v in client.df().get("Volumes") or []}
        for current in found.values():
            current.size = sum(max(sizes.get(name, 0), 0) for name in current.volumes)
    return found
