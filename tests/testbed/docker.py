"""A private Docker engine (Debian's docker.io) and the images the Docker staging target runs, built here.

No image registry is reachable from the testbed, so the images are built locally from Debian packages, in the
shape of the official images a user would pull (same entry points, ports, paths and environment variables
where orch relies on them):

- ``debian`` -- a ``debootstrap --variant=minbase bookworm`` root, ``docker import``-ed; tagged
  ``debian:bookworm-slim`` inside the private engine so that orch's own tools image recipe builds FROM it;
- ``server`` -- the base plus php-fpm, nginx and mariadb-server (one shared layer: less disk, faster loads);
- ``postgres`` -- honours ``POSTGRES_PASSWORD[_FILE]``, data in /var/lib/postgresql/data (like ``postgres:15``);
- ``mariadb`` -- honours ``MARIADB_ROOT_PASSWORD[_FILE]``/``MYSQL_ROOT_PASSWORD[_FILE]``, data in /var/lib/mysql;
- ``php-fpm`` -- FastCGI on :9000, docroot /var/www/html, workers as www-data (like ``php:8.2-fpm``);
- ``nginx`` -- ``nginx -g 'daemon off;'`` reading /etc/nginx/conf.d/*.conf (like ``nginx``);
- ``orch-tools`` -- built by orch's own code (`orchestrator.backends.envs.docker.ensure_image`), as for a user.

The first build on a machine (debootstrap, apt inside build containers) takes a few minutes and is stored with
``docker save`` under $ORCH_TESTBED_CACHE (default /var/cache/orch-testbed), keyed by a hash of the recipes; later
sessions (and concurrent ones: a file lock) only ``docker load`` it. Each session runs its own dockerd on a
private socket with data and exec roots in temp dirs, no iptables (several engines share this machine: each
would rewrite the others' chains) and an address pool of its own; containers reach host loopback services only
with host networking, which is how orch runs its tools container anyway.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import ipaddress
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, log_tail, spawn, stop_process, wait_ready

DOCKERD = "/usr/sbin/dockerd"
CACHE = Path(os.environ.get("ORCH_TESTBED_CACHE", "/var/cache/orch-testbed"))
MIRROR = "http://deb.debian.org/debian"
RECIPE_VERSION = "1"

SERVER_PACKAGES = "ca-certificates php8.2-fpm php8.2-mysql php8.2-pgsql nginx-light mariadb-server"
POSTGRES_PACKAGES = "postgresql-15"

APT = r"""RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {packages} \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
"""

# bash: print the value of $NAME, or the contents of the file $NAME_FILE names (the official images' file_env)
SECRET_FN = r"""secret() {
  local file_var="${1}_FILE"
  if [ -n "${!file_var:-}" ]; then cat "${!file_var}"; else printf %s "${!1:-}"; fi
}
"""

MARIADB_ENTRYPOINT = r"""#!/bin/bash
# The parts of the official mariadb image's contract orch uses: a root password from the environment (or a
# *_FILE), root reachable over TCP from the copy's network, data in /var/lib/mysql.
set -eo pipefail
{SECRET_FN}if [ "${1:-}" = mariadbd ]; then
  root_pw="$(secret MARIADB_ROOT_PASSWORD)"; [ -n "$root_pw" ] || root_pw="$(secret MYSQL_ROOT_PASSWORD)"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql
  if [ ! -d /var/lib/mysql/mysql ]; then
    [ -n "$root_pw" ] || { echo "entrypoint: set MARIADB_ROOT_PASSWORD or MARIADB_ROOT_PASSWORD_FILE" >&2; exit 1; }
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
      --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking --socket=/run/mysqld/init.sock \
      --skip-log-bin &
    pid=$!
    for _ in $(seq 300); do mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1 && break; sleep 0.1; done
    esc=$(printf %s "$root_pw" | sed "s/\\\\/\\\\\\\\/g; s/'/''/g")
    mariadb --socket=/run/mysqld/init.sock -uroot <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '$esc';
CREATE USER 'root'@'%' IDENTIFIED BY '$esc';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
    MYSQL_PWD="$root_pw" mariadb-admin --socket=/run/mysqld/init.sock -uroot shutdown
    wait "$pid" || true
  fi
  exec "$@" --user=mysql --datadir=/var/lib/mysql --bind-address=0.0.0.0 --port=3306 --skip-log-bin \
    --skip-name-resolve
fi
exec "$@"
"""

POSTGRES_ENTRYPOINT = r"""#!/bin/bash
# The parts of the official postgres image's contract orch uses: the superuser's password from the environment
# (or a *_FILE), password logins over TCP from anywhere, data in $PGDATA.
set -eo pipefail
export PGDATA=${PGDATA:-/var/lib/postgresql/data} PATH=/usr/lib/postgresql/15/bin:$PATH
{SECRET_FN}if [ "${1:-}" = postgres ]; then
  mkdir -p "$PGDATA" /run/postgresql && chown postgres:postgres "$PGDATA" /run/postgresql && chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pw="$(secret POSTGRES_PASSWORD)"
    [ -n "$pw" ] || { echo "entrypoint: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2; exit 1; }
    printf '%s\n' "$pw" > /run/postgresql/.pw && chown postgres /run/postgresql/.pw
    setpriv --reuid=postgres --regid=postgres --init-groups initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" \
      --pwfile=/run/postgresql/.pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f /run/postgresql/.pw
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -D "$PGDATA"
fi
exec "$@"
"""

MARIADB_ENTRYPOINT = MARIADB_ENTRYPOINT.replace("{SECRET_FN}", SECRET_FN)
POSTGRES_ENTRYPOINT = POSTGRES_ENTRYPOINT.replace("{SECRET_FN}", SECRET_FN)

PHP_FPM_POOL = """[global]
error_log = /proc/self/fd/2
daemonize = no

[www]
listen = 9000
clear_env = no
catch_workers_output = yes
decorate_workers_output = no
"""

NGINX_DEFAULT = """server {
    listen 80;
    server_name localhost;
    root /usr/share/nginx/html;
    location / { index index.html; }
}
"""

DOCKERFILES = {
    "server": "FROM {debian}\n"
    + APT.format(packages=SERVER_PACKAGES)
    + (
        # an empty datadir, as in the official image: a new volume starts empty and the entrypoint initialises it
        "RUN rm -rf /etc/nginx/sites-enabled/default /var/lib/mysql/* \\\n"
        " && mkdir -p /run/php /var/www/html /usr/share/nginx/html \\\n"
        " && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log\n"
    ),
    "mariadb": (
        "FROM {server}\nCOPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
        "RUN chmod 755 /usr/local/bin/docker-entrypoint.sh\nEXPOSE 3306\n"
        'ENTRYPOINT ["docker-entrypoint.sh"]\nCMD ["mariadbd"]\n'
    ),
    "postgres": (
        "FROM {server}\n"
        + APT.format(packages=POSTGRES_PACKAGES)
        + "COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
        "RUN chmod 755 /usr/local/bin/docker-entrypoint.sh\nEXPOSE 5432\n"
        'ENTRYPOINT ["docker-entrypoint.sh"]\nCMD ["postgres"]\n'
    ),
    "php-fpm": (
        "FROM {server}\nCOPY zz-docker.conf /etc/php/8.2/fpm/pool.d/zz-docker.conf\n"
        'WORKDIR /var/www/html\nEXPOSE 9000\nCMD ["php-fpm8.2", "-F"]\n'
    ),
    "nginx": (
        "FROM {server}\nCOPY default.conf /etc/nginx/conf.d/default.conf\nEXPOSE 80\n"
        'STOPSIGNAL SIGQUIT\nCMD ["nginx", "-g", "daemon off;"]\n'
    ),
}
CONTEXT_FILES = {
    "mariadb": {"mariadb-entrypoint.sh": MARIADB_ENTRYPOINT},
    "postgres": {"postgres-entrypoint.sh": POSTGRES_ENTRYPOINT},
    "php-fpm": {"zz-docker.conf": PHP_FPM_POOL},
    "nginx": {"default.conf": NGINX_DEFAULT},
}


def recipe_key() -> str:
    """A hash of everything the images are built from (orch's tools recipe included)."""
    from orchestrator.backends.envs.docker import TOOLS_RECIPE

    text = "\n".join(
        [
            RECIPE_VERSION,
            MIRROR,
            TOOLS_RECIPE,
            repr(sorted(DOCKERFILES.items())),
            repr(sorted((k, sorted(v.items())) for k, v in CONTEXT_FILES.items())),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def image_names(key: str | None = None) -> dict[str, str]:
    """The images of the testbed by role, as the test inventory names them."""
    from orchestrator.backends.envs.docker import TOOLS_IMAGE

    key = key or recipe_key()
    names = {
        role: f"orch-testbed/{role}:{key}" for role in ("debian", "server", "mariadb", "postgres", "php-fpm", "nginx")
    }
    return names | {"tools": TOOLS_IMAGE}


@dataclass
class DockerEngine:
    """A running private dockerd. ``url`` is what an inventory's docker host names (unix://...)."""

    socket: Path
    workdir: Path
    log: Path
    images: dict[str, str] = field(default_factory=dict)
    build_seconds: float | None = None  # set when this session built the images (first run on a machine)
    load_seconds: float | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.url, version="auto", timeout=300)

    def cli(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run Debian's docker CLI against this engine."""
        proc = subprocess.run(
            ["/usr/bin/docker", "-H", self.url, *args],
            input=input,
            capture_output=True,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode:
            raise TestbedError(f"docker {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        return proc

    def grant(self, user: str) -> None:
        """Let a Unix user (an sshd host's) use this engine's socket."""
        shutil.chown(self.socket, user=user)

    def stop(self) -> None:
        """Remove every container (so no mount stays busy), stop dockerd, delete its data."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                with closing(self.client()) as client:
                    for container in client.containers.list(all=True):
                        container.remove(force=True, v=True)
            except Exception:  # noqa: BLE001 - best effort before the daemon goes
                pass
        stop_process(self._proc, timeout=30)
        subprocess.run(["umount", "-R", "-l", str(self.workdir / "root")], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free_pool() -> str:
    """A 10.x.0.0/16 no route of this machine touches (another session's engine may own one)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = []
    for line in routes.splitlines():
        try:
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
        except ValueError:
            continue
    for _ in range(200):
        pool = ipaddress.ip_network(f"10.{secrets.choice(range(100, 250))}.0.0/16")
        if not any(pool.overlaps(net) for net in used):
            return str(pool)
    raise TestbedError("no free 10.x.0.0/16 for the docker engine's networks")


def start_dockerd() -> DockerEngine:
    """Start a private dockerd; return once its API answers. Its socket folder is reachable by other users
    (the ssh host's user is granted the socket itself)."""
    workdir = Path(tempfile.mkdtemp(prefix="orch-dockerd-"))
    workdir.chmod(0o711)
    tag = secrets.token_hex(4)  # containerd namespaces allow letters and digits (mkdtemp's suffix may hold a _)
    engine = DockerEngine(socket=workdir / "docker.sock", workdir=workdir, log=workdir / "dockerd.log")
    argv = [
        DOCKERD,
        "--host",
        engine.url,
        "--data-root",
        str(workdir / "root"),
        "--exec-root",
        str(workdir / "exec"),
        "--pidfile",
        str(workdir / "dockerd.pid"),
        "--bridge",
        "none",
        "--iptables=false",
        "--ip-masq=false",
        "--default-address-pool",
        f"base={_free_pool()},size=24",
        "--containerd-namespace",
        f"orch-{tag}",
        "--containerd-plugins-namespace",
        f"orch-{tag}-plugins",
        "--group",
        "root",
    ]
    # No registry is reachable: a pull must fail at once (through a closed proxy port), not after DNS timeouts.
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "localhost,127.0.0.1",
    }
    engine._proc = spawn(argv, engine.log, env=env)
    wait_ready(engine._proc, lambda: _answers(engine), "dockerd", engine.log, timeout=60)
    return engine


def _answers(engine: DockerEngine) -> bool:
    if not engine.socket.exists():
        return False
    return engine.cli("version", "--format", "{{.Server.Version}}", check=False).returncode == 0


# ------------------------------------------------------------------------------------------------ images


def ensure_images(engine: DockerEngine) -> dict[str, str]:
    """Make the testbed images available in the engine (load the cache, or build and cache them); return the
    image names by role."""
    key = recipe_key()
    names = image_names(key)
    archive = CACHE / f"images-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building right now: wait for it
        if not archive.exists():
            started = time.monotonic()
            _build(engine, names)
            engine.build_seconds = time.monotonic() - started
            partial = archive.with_suffix(".partial")
            engine.cli("save", "-o", str(partial), *names.values(), "debian:bookworm-slim")
            partial.rename(archive)
            for old in CACHE.glob("images-*.tar"):
                if old != archive:
                    old.unlink()
            return names
    started = time.monotonic()
    engine.cli("load", "-q", "-i", str(archive))
    engine.load_seconds = time.monotonic() - started
    return names


def _build(engine: DockerEngine, names: dict[str, str]) -> None:
    _import_debian(engine, names["debian"])
    engine.cli("tag", names["debian"], "debian:bookworm-slim")
    for role in ("server", "mariadb", "postgres", "php-fpm", "nginx"):
        dockerfile = DOCKERFILES[role].format(debian=names["debian"], server=names["server"])
        _docker_build(engine, names[role], dockerfile, CONTEXT_FILES.get(role, {}))
    from orchestrator.backends.envs.docker import ensure_image

    with closing(engine.client()) as client:
        ensure_image(client, names["tools"], on_line=lambda line: None)


def _import_debian(engine: DockerEngine, name: str) -> None:
    """debootstrap a minbase bookworm root (cached as a tarball: the slowest step) and import it."""
    rootfs_tar = CACHE / "debian-bookworm-minbase.tar"
    if not rootfs_tar.exists():
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            root = Path(tmp) / "root"
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode:
                raise TestbedError(f"debootstrap failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(root / cache, ignore_errors=True)
            partial = rootfs_tar.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.rename(rootfs_tar)
    with open(rootfs_tar, "rb") as fh:
        proc = subprocess.run(["/usr/bin/docker", "-H", engine.url, "import", "-", name], stdin=fh, capture_output=True)
    if proc.returncode:
        raise TestbedError(f"docker import failed: {proc.stderr.decode(errors='replace')}")


def _docker_build(engine: DockerEngine, name: str, dockerfile: str, files: dict[str, str]) -> None:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for path, text in {"Dockerfile": dockerfile, **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    proc = subprocess.run(
        ["/usr/bin/docker", "-H", engine.url, "build", "--network", "host", "-t", name, "-"],
        input=context.getvalue(),
        capture_output=True,
    )
    if proc.returncode:
        raise TestbedError(
            f"building {name} failed:\n{proc.stdout.decode(errors='replace')[-3000:]}"
            f"{proc.stderr.decode(errors='replace')[-2000:]}"
        )


def engine_log_tail(engine: DockerEngine) -> str:
    return log_tail(engine.log)
