"""nginx + php-fpm running unprivileged AS a host's Unix user (e.g. orch-web1), on that host's loopback address.

Both daemons (masters and workers) run as the host user, with configs, sockets, pid files, temp dirs and logs in
a work dir the user owns (``~/web-<port>/``). So the orchestrator, logged in over SSH as that user, can do what it
does on a real host without root:

- drop a vhost file into :attr:`Nginx.sites_dir` (``<workdir>/sites-enabled/*.conf`` is included by nginx);
- test and reload nginx with :attr:`Nginx.test_command` / :attr:`Nginx.reload_command` (absolute paths: /usr/sbin
  is not on a non-root user's ssh PATH);
- point vhosts at :attr:`PhpFpm.socket` (mode 0666) and reload php-fpm with :attr:`PhpFpm.reload_command`.

Pitfalls handled here:

- Debian's ``fastcgi_params`` sets ``HTTP_HOST $host`` (drops the port): WordPress on a non-80 port then
  redirects forever. :func:`php_vhost` adds ``fastcgi_param HTTP_HOST $http_host;`` after the include.
- ``SCRIPT_FILENAME``/``DOCUMENT_ROOT`` use ``$realpath_root``, so switching a ``current -> releases/N`` symlink
  is seen by PHP (and OPcache) at once; OPcache revalidates on every request (``revalidate_freq=0``).
- Unprivileged nginx: no ``user`` directive, ``-e`` for the error log it opens before reading the config, and
  every ``*_temp_path`` moved out of /var/lib/nginx.
- ``nginx -s reload`` only sends SIGHUP and returns; old workers may still answer the next requests with the old
  config. :meth:`Nginx.reload` waits until the old workers are gone (a caller of ``reload_command`` must poll).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, log_tail, stop_process, wait_ready
from .ports import free_port, port_open

NGINX = "/usr/sbin/nginx"
NGINX_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def php_fpm_binary() -> str:
    """The newest installed php-fpm (Debian: /usr/sbin/php-fpm8.2)."""
    found = sorted(glob.glob("/usr/sbin/php-fpm[0-9]*"))
    if not found:
        raise TestbedError("php-fpm is not installed (apt-get install php-fpm)")
    return found[-1]


# --------------------------------------------------------------------------------------------------- as the user


def user_env(user: str) -> dict[str, str]:
    pw = pwd.getpwnam(user)
    return {
        "HOME": pw.pw_dir,
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    }


def _as_user(user: str) -> dict:
    """Popen kwargs that drop root to ``user`` (uid, gid, no supplementary groups: root's group 0 must go)."""
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": user_env(user)}


def run_as(
    user: str,
    argv: list[str],
    *,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user`` (directly, no shell, no login); text output. Raises TestbedError on failure."""
    kwargs = _as_user(user)
    kwargs["env"].update(env or {})
    text = not isinstance(input, bytes)
    proc = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=text,
        cwd=cwd,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
        **kwargs,
    )
    if check and proc.returncode:
        out, err = (
            (proc.stdout, proc.stderr)
            if text
            else (proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        )
        raise TestbedError(f"{user}$ {' '.join(argv)} failed ({proc.returncode}):\n{out[-3000:]}{err[-3000:]}")
    return proc


def make_user_dir(path: Path, user: str, mode: int = 0o755) -> Path:
    """mkdir -p ``path`` (as root) and hand the new dir to ``user``."""
    pw = pwd.getpwnam(user)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(mode)
    return path


def write_user_file(path: Path, text: str, user: str, mode: int = 0o644) -> Path:
    pw = pwd.getpwnam(user)
    path.write_text(text)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(mode)
    return path


def _spawn_as(user: str, argv: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start a foreground daemon as ``user`` in its own session (stop_process kills the whole group)."""
    if not log.exists():
        write_user_file(log, "", user)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            **_as_user(user),
        )


def _pid_written(path: Path) -> bool:
    try:
        return path.read_text().strip().isdigit()
    except FileNotFoundError:
        return False


def _children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        return set()


# ------------------------------------------------------------------------------------------------------- php-fpm


@dataclass
class PhpFpm:
    """A php-fpm master + static pool running as ``user``; FastCGI on the unix socket ``socket`` (mode 0666)."""

    user: str
    workdir: Path
    socket: Path
    conf_path: Path
    pid_file: Path
    error_log: Path  # the master's log; PHP errors of the pool go to php_error_log
    php_error_log: Path
    binary: str
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def reload_command(self) -> str:
        """Shell command (for the user) that gracefully reloads the pool (SIGUSR2: new workers, OPcache reset)."""
        return f"kill -USR2 $(cat {self.pid_file})"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def reload(self) -> None:
        """SIGUSR2 and wait until the re-executed master accepts again."""
        old = _children(self.pid)
        os.kill(self.pid, signal.SIGUSR2)
        _wait(
            lambda: _children(self.pid) and not (_children(self.pid) & old) and _unix_socket_open(self.socket),
            "php-fpm reload",
            self.error_log,
            self._proc,
        )

    def stop(self) -> None:
        stop_process(self._proc)


def start_php_fpm(workdir: Path, user: str, *, children: int = 3) -> PhpFpm:
    """Start php-fpm as ``user`` with its config, pid, logs and socket ``<workdir>/php-fpm.sock`` in ``workdir``
    (created and given to ``user``). ``pm = static`` with ``children`` workers. Returns when the socket accepts."""
    make_user_dir(workdir, user)
    logs = make_user_dir(workdir / "logs", user)
    fpm = PhpFpm(
        user=user,
        workdir=workdir,
        socket=workdir / "php-fpm.sock",
        conf_path=workdir / "php-fpm.conf",
        pid_file=workdir / "php-fpm.pid",
        error_log=logs / "php-fpm.log",
        php_error_log=logs / "php-errors.log",
        binary=php_fpm_binary(),
    )
    fpm.socket.unlink(missing_ok=True)
    write_user_file(
        fpm.conf_path,
        f"""\
[global]
pid = {fpm.pid_file}
error_log = {fpm.error_log}
log_level = notice
daemonize = no

[orch]
; no user/group: the master is not root, the workers run as {user} like the master
listen = {fpm.socket}
listen.mode = 0666
pm = static
pm.max_children = {children}
catch_workers_output = yes
decorate_workers_output = no
php_admin_value[error_log] = {fpm.php_error_log}
php_admin_flag[log_errors] = on
php_admin_value[memory_limit] = 256M
; see changed PHP files at once (tests rewrite wp-config.php, switch releases)
php_admin_value[opcache.revalidate_freq] = 0
""",
        user,
    )
    fpm._proc = _spawn_as(
        user, [fpm.binary, "--nodaemonize", "--fpm-config", str(fpm.conf_path)], logs / "php-fpm.out", workdir
    )
    wait_ready(fpm._proc, lambda: _unix_socket_open(fpm.socket), f"php-fpm ({user})", fpm.error_log)
    return fpm


def _unix_socket_open(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


# --------------------------------------------------------------------------------------------------------- nginx


@dataclass
class Nginx:
    """An nginx master + workers running as ``user``, listening on ``address:port``.

    Server blocks come from ``sites_dir/*.conf`` (owned by ``user``). A built-in fallback server keeps the port
    open while that dir is empty; a site listening on ``listen`` becomes the default server when it is the first
    (alphabetically) or says ``default_server``.
    """

    user: str
    address: str
    port: int
    workdir: Path
    conf_path: Path
    sites_dir: Path
    pid_file: Path
    error_log: Path
    access_log: Path
    binary: str = NGINX
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def listen(self) -> str:
        """What a vhost's ``listen`` directive must say, e.g. ``127.0.0.2:41234``."""
        return f"{self.address}:{self.port}"

    @property
    def base_command(self) -> str:
        return f"{self.binary} -e {self.error_log} -c {self.conf_path}"

    @property
    def test_command(self) -> str:
        """Shell command (for the user) that checks the configuration, sites included."""
        return f"{self.base_command} -t -q"

    @property
    def reload_command(self) -> str:
        """Shell command (for the user) that makes the running nginx re-read its configuration (asynchronous)."""
        return f"{self.base_command} -s reload"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def test(self) -> None:
        """``nginx -t`` as the user; TestbedError with nginx's message if the configuration is bad."""
        run_as(self.user, self.test_command.split())

    def reload(self, timeout: float = 10) -> None:
        """Test the config, signal a reload as the user, and wait until only workers of the new config are left.

        (New workers appear first; the old ones keep accepting until the master tells them to quit, so waiting
        for the new ones alone still lets the next request see the old config.)
        """
        self.test()
        old = _children(self.pid)
        run_as(self.user, self.reload_command.split())

        def reloaded() -> bool:
            now = _children(self.pid)
            return bool(now - old) and not (now & old)

        _wait(reloaded, "nginx reload", self.error_log, self._proc, timeout)

    def stop(self) -> None:
        stop_process(self._proc)  # SIGTERM to the group: master and workers exit at once


def start_nginx(workdir: Path, port: int, *, user: str, address: str = "127.0.0.1", workers: int = 2) -> Nginx:
    """Start nginx as ``user`` on ``address:port`` with its own ``-c`` config in ``workdir`` (created and given
    to ``user``; pid, temp paths and logs inside). Returns once the port accepts connections."""
    make_user_dir(workdir, user)
    logs = make_user_dir(workdir / "logs", user)
    temp = make_user_dir(workdir / "tmp", user)
    nginx = Nginx(
        user=user,
        address=address,
        port=port,
        workdir=workdir,
        conf_path=workdir / "nginx.conf",
        sites_dir=make_user_dir(workdir / "sites-enabled", user),
        pid_file=workdir / "nginx.pid",
        error_log=logs / "nginx-error.log",
        access_log=logs / "nginx-access.log",
    )
    temp_paths = "\n".join(f"    {name}_temp_path {temp / name};" for name in NGINX_TEMP_PATHS)
    # Like a packaged nginx, keep the shared snippets next to nginx.conf: vhosts `include fastcgi_params;`.
    for snippet in ("fastcgi_params", "mime.types"):
        write_user_file(workdir / snippet, Path("/etc/nginx", snippet).read_text(), user)
    write_user_file(
        nginx.conf_path,
        f"""\
# testbed nginx running as {user} (no 'user' directive: the master is not root)
worker_processes {workers};
pid {nginx.pid_file};
error_log {nginx.error_log} notice;

events {{
    worker_connections 512;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 15;
    server_tokens off;
    client_max_body_size 64m;
    server_names_hash_bucket_size 128;
    access_log {nginx.access_log};
{temp_paths}

    include {nginx.sites_dir}/*.conf;

    # Fallback so the port listens while sites-enabled is empty; listed after the sites so that it is the
    # default server only when no site is.
    server {{
        listen {nginx.listen};
        server_name testbed-fallback.invalid;
        location = /__testbed_nginx {{ return 200 "ok\\n"; }}
        location / {{ return 404; }}
    }}
}}
""",
        user,
    )
    log = logs / "nginx.out"
    nginx._proc = _spawn_as(user, [*nginx.base_command.split(), "-g", "daemon off;"], log, workdir)
    try:
        # the pid file too: `nginx -s reload` reads it, and nginx may listen before writing it
        wait_ready(
            nginx._proc,
            lambda: port_open(address, port) and _pid_written(nginx.pid_file),
            f"nginx ({user})",
            nginx.error_log,
        )
    except TestbedError as e:
        raise TestbedError(f"{e}\n{log_tail(log)}") from e
    return nginx


def php_vhost(
    *,
    listen: str,
    root: Path | str,
    php_socket: Path | str,
    server_name: str = "_",
    default_server: bool = False,
    extra: str = "",
) -> str:
    """A server block for a PHP front-controller site (WordPress): static files, else ``/index.php?$args``."""
    default = " default_server" if default_server else ""
    return f"""\
server {{
    listen {listen}{default};
    server_name {server_name};
    root {root};
    index index.php index.html;
{extra}
    location / {{
        try_files $uri $uri/ /index.php?$args;
    }}

    location ~ /\\.(?!well-known) {{
        deny all;
    }}

    location ~ \\.php$ {{
        try_files $uri =404;
        include /etc/nginx/fastcgi_params;
        # Debian's fastcgi_params says HTTP_HOST $host, which drops the port: WordPress would redirect forever
        fastcgi_param HTTP_HOST $http_host;
        # realpath: a switched 'current' symlink is seen at once (by PHP and OPcache)
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
        fastcgi_pass unix:{php_socket};
    }}
}}
"""


# ------------------------------------------------------------------------------------------------------ together


@dataclass
class WebStack:
    """php-fpm + nginx of one host, both running as its user in ``workdir`` (``~/web-<port>/``)."""

    user: str
    workdir: Path
    nginx: Nginx
    php: PhpFpm

    @property
    def url(self) -> str:
        return self.nginx.url

    def stop(self, *, keep_logs_in: Path | None = None, remove: bool = True) -> None:
        """Stop both daemons; copy the logs to ``keep_logs_in`` (if given) and delete ``workdir`` (if ``remove``)."""
        try:
            self.nginx.stop()
        finally:
            self.php.stop()
        if keep_logs_in is not None and (self.workdir / "logs").is_dir():
            shutil.copytree(self.workdir / "logs", keep_logs_in, dirs_exist_ok=True)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_web_stack(user: str, address: str, *, parent: Path | None = None, php_children: int = 3) -> WebStack:
    """php-fpm and nginx as ``user`` on ``address``:<free port>, in ``<parent or the user's home>/web-<port>/``."""
    port = free_port(address)
    workdir = (parent or Path(pwd.getpwnam(user).pw_dir)) / f"web-{port}"
    php = start_php_fpm(workdir, user, children=php_children)
    try:
        nginx = start_nginx(workdir, port, user=user, address=address)
    except BaseException:
        php.stop()
        raise
    return WebStack(user=user, workdir=workdir, nginx=nginx, php=php)


def _wait(ready, what: str, log: Path, proc: subprocess.Popen | None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise TestbedError(f"{what}: the daemon exited with code {proc.returncode}\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise TestbedError(f"{what}: not done after {timeout:.0f} s\n{log_tail(log)}")
        time.sleep(0.02)
