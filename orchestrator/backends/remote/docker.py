"""Docker hosts: a client over the unix socket or over SSH (orch's strict host keys, never ~/.ssh/known_hosts),
and a connector that runs orch's Commands inside a container (`docker exec`).

The connector is what lets the staging machinery run unchanged on a Docker host: restic, the URL replacer and
the database clients run in a short-lived tools container exactly as they run on a staging host over SSH
(`bash -c` with secrets read from stdin, never argv).
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath

import docker
import paramiko
import requests
from docker.constants import DEFAULT_DOCKER_API_VERSION, MINIMUM_DOCKER_API_VERSION
from docker.transport.sshconn import SSHHTTPAdapter
from docker.utils import version_lt

from orchestrator.errors import ConnectError, HostKeyError

from .base import Connector
from .command import Command, Raw
from .hostkeys import RefuseUnknown, changed_key_error, fingerprint
from .ssh import CONNECT_TIMEOUT, strict_client
from .supervise import Limits, PipeSource, Session, Sink, Source

API_TIMEOUT = 120  # seconds for one API call (image pulls and builds stream, so they are not bound by it)
FRAME_HEADER = 8  # docker's multiplexed stream: 1 byte stream id, 3 padding, 4 bytes big-endian length


class RefuseUnknownDocker(RefuseUnknown):
    """Refuse a docker host whose SSH key we do not know, saying which key it offered and where to pin it."""

    def missing_host_key(self, client, hostname, key):
        raise HostKeyError(
            f"docker host {self.host_name} ({hostname}) offered an unknown {key.get_name()} key {fingerprint(key)}; "
            f"nothing was run. Verify it, then set docker.{self.host_name}.host_key (or add it to a known_hosts "
            "file the entry names)"
        )


class StrictSSHAdapter(SSHHTTPAdapter):
    """The SDK's paramiko transport with orch's host key policy: only the pinned key (or orch's known_hosts) is
    accepted, an unknown or changed key is refused before anything runs, and ~/.ssh/config is not read."""

    def __init__(self, host, timeout: int = API_TIMEOUT):
        self.orch_host = host
        super().__init__(f"ssh://{host.user}@{host.address}:{host.port}", timeout)

    def _create_paramiko_client(self, base_url):
        host = self.orch_host
        self.ssh_client = strict_client(host)
        self.ssh_client.set_missing_host_key_policy(RefuseUnknownDocker(host.name))
        self.ssh_params = {
            "hostname": host.address,
            "port": host.port,
            "username": host.user,
            "timeout": CONNECT_TIMEOUT,
            "look_for_keys": host.identity_file is None,
            "allow_agent": host.identity_file is None,
        }
        if host.identity_file:
            self.ssh_params["key_filename"] = str(Path(host.identity_file).expanduser())

    def _connect(self):
        host = self.orch_host
        if self.ssh_client is None:  # the SDK calls _create_paramiko_client first, which makes it
            raise ConnectError(f"docker host {host.name}: no SSH client was made to connect with")
        try:
            self.ssh_client.connect(**self.ssh_params)
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(f"docker {changed_key_error(host, exc)}") from None
        except paramiko.AuthenticationException as exc:
            raise ConnectError(f"docker host {host.name}: {host.user}@{host.address} refused our key ({exc})") from None
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectError(f"docker host {host.name} ({host.address}:{host.port}) unreachable: {exc}") from None


def docker_client(dhost) -> docker.DockerClient:
    """Given an inventory DockerHost, return a client speaking the highest API version both sides know; raise
    ConnectError if the engine cannot be reached, HostKeyError if its SSH host key is not the trusted one."""
    if dhost.ssh is not None:
        # use_ssh_client=True builds the SDK's shell-out adapter, which connects nowhere; ours replaces it.
        client = docker.DockerClient(
            base_url=dhost.url, use_ssh_client=True, timeout=API_TIMEOUT, version=MINIMUM_DOCKER_API_VERSION
        )
        adapter = StrictSSHAdapter(dhost.ssh)
        client.api._custom_adapter = adapter  # type: ignore[attr-defined]  # the SDK's own slot, not in its stubs
        client.api.mount("http+docker://ssh", adapter)
    else:
        client = docker.DockerClient(base_url=dhost.url, timeout=API_TIMEOUT, version=MINIMUM_DOCKER_API_VERSION)
    try:
        server = client.api.version(api_version=False)["ApiVersion"]
    except (requests.exceptions.ConnectionError, docker.errors.DockerException, OSError) as exc:
        client.close()
        raise ConnectError(f"docker host {dhost.name} ({dhost.url}) unreachable: {_short(exc)}") from None
    newest = DEFAULT_DOCKER_API_VERSION
    client.api._version = server if version_lt(server, newest) else newest  # type: ignore[attr-defined]  # ditto  # the SDK's own negotiation, minus a request
    return client


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


class _Hijacked:
    """The two halves of an upgraded `exec start` connection: buffered reads (nothing the HTTP parser already
    buffered is lost), raw writes, and a half-close that tells the command its stdin ended."""

    def __init__(self, response):
        self.response = response
        self.reader = response.raw._fp.fp
        channel = getattr(self.reader, "channel", None)  # SSH: a paramiko ChannelFile
        if channel is not None:
            self.write, self.close_write, self.cut = channel.sendall, channel.shutdown_write, channel.close
        else:  # unix socket: a BufferedReader over SocketIO
            sock = self.reader.raw._sock
            self.write = sock.sendall
            self.close_write = lambda: sock.shutdown(socket.SHUT_WR)
            self.cut = lambda: sock.shutdown(socket.SHUT_RDWR)

    def frames(self):
        """Yield (stream id, bytes) until the command's output ends: 1 = stdout, 2 = stderr."""
        while len(header := self.reader.read(FRAME_HEADER)) == FRAME_HEADER:
            kind, length = header[0], int.from_bytes(header[4:], "big")
            data = self.reader.read(length) if length else b""
            if len(data) < length:
                return
            yield kind, data

    def close(self) -> None:
        """End the connection, also under a read blocked in another thread (the buffer's lock would make
        `response.close()` wait for that read)."""
        try:
            self.cut()
        except OSError:
            pass
        self.response.close()


class ContainerConnector(Connector):
    """Commands run inside a running container (`docker exec`, as `user`, default the image's).

    With shell=False a command is exec'd as its plain argv, for images without bash (nginx:alpine...); such a
    command may hold neither shell syntax nor environment."""

    stall = None  # no watchdog in an image (it may lack python3): a wall-clock timeout only

    def __init__(self, client: docker.DockerClient, container, name: str, user: str = "", shell: bool = True):
        self.client, self.container, self.name, self.user, self.shell = client, container, name, user, shell

    def _argv(self, cmd: Command) -> list[str]:
        if self.shell:
            return cmd.argv()
        if cmd.environment or any(isinstance(part, Raw) for part in cmd.parts):
            raise ValueError(f"{self.name}: `{cmd.masked()}` needs a shell, which this container is not given")
        return [str(part) for part in cmd.parts]

    def _start(self, cmd: Command, limits: Limits) -> Session:
        return ExecSession(self.client.api, self.container.id, self._argv(cmd), self.user)

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        self.put_bytes(Path(local).read_bytes(), remote, mode=0o644 if mode is None else mode)

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o600) -> None:
        """Write bytes to a path in the container (one tar member through the API; no shell, no temp file)."""
        path = PurePosixPath(remote)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        if not self.container.put_archive(str(path.parent), archive.getvalue()):
            raise ConnectError(f"{self.name}: could not write {remote}")

    def get(self, remote: str, local: Path) -> None:
        chunks, _ = self.container.get_archive(remote)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.next()
            source = tar.extractfile(member) if member else None
            if source is None:
                raise ConnectError(f"{self.name}: {remote} is not a file")
            Path(local).write_bytes(source.read())


class ExecSession(Session):
    """One `docker exec`: its multiplexed output split into two pipes for the pump by a thread, its stdin
    written as it is (no watchdog: containers are throw-away copies, and images may lack python3)."""

    watched = False

    def __init__(self, api, container_id: str, argv: list[str], user: str):
        self.api = api
        self.exec_id = api.exec_create(container_id, argv, stdin=True, stdout=True, stderr=True, user=user)["Id"]
        # exec_start(socket=True) hands back the raw socket and loses what the HTTP parser buffered after the
        # 101 answer, so the upgrade is done here (as the SDK does it) and reads go through the buffer.
        response = api._post_json(
            api._url("/exec/{0}/start", self.exec_id),
            data={"Tty": False, "Detach": False},
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
            stream=True,
        )
        api._raise_for_status(response)
        self.stream = _Hijacked(response)
        self.out, self.err = os.pipe(), os.pipe()
        threading.Thread(target=self._split, daemon=True).start()

    def _split(self) -> None:
        try:
            for kind, data in self.stream.frames():
                view = memoryview(data)
                while view:
                    view = view[os.write(self.err[1] if kind == 2 else self.out[1], view) :]
        except Exception:  # noqa: BLE001,S110 - aborted: the pipes or the stream were closed under us; output ends
            pass
        finally:
            for fd in (self.out[1], self.err[1]):
                _close(fd)

    def sources(self, out: Sink, err: Sink) -> list[Source]:
        return [PipeSource(self.out[0], out), PipeSource(self.err[0], err)]

    def send(self, data: bytes) -> None:
        self.stream.write(data)

    def end_stdin(self) -> None:
        self.stream.close_write()

    def wait(self, timeout: float) -> int | None:
        """The exec's exit code; the engine may report it a moment after the output stream closed."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.api.exec_inspect(self.exec_id)
            if not info["Running"]:
                return info["ExitCode"] if info["ExitCode"] is not None else 255
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def abort(self, why: str) -> None:
        self.stream.close()  # docker has no way to kill an exec: the command sees its stdin and output go

    def close(self) -> None:
        self.stream.close()
        for fd in (self.out[0], self.err[0]):
            _close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
