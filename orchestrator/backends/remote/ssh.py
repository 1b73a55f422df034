"""The `ssh` connector: fabric/paramiko with strict host keys and commands streamed over one channel."""

from __future__ import annotations

import shlex
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection

from orchestrator.errors import ConnectError, HostKeyError

from .base import Connector, HostLost
from .command import Command
from .hostkeys import RefuseUnknown, changed_key_error, trusted_keys
from .supervise import CHUNK, Limits, Session, Sink, Source, watched_argv

CONNECT_TIMEOUT = 15
KEEPALIVE = 15  # seconds: SSH keepalives keep NATs open; TCP keepalives notice a dead peer between commands


def strict_client(host) -> paramiko.SSHClient:
    """Return an SSHClient that trusts only the host's configured key (never auto-adds, never ~/.ssh)."""
    client = paramiko.SSHClient()
    keys = trusted_keys(host)
    for name in keys.keys():
        for keytype, key in keys[name].items():
            client.get_host_keys().add(name, keytype, key)
    client.set_missing_host_key_policy(RefuseUnknown(host.name))
    return client


class SshConnector(Connector):
    def __init__(self, host):
        self.host, self.name, self.stall = host, host.name, host.stall_timeout
        connect_kwargs: dict[str, Any] = {
            "look_for_keys": host.identity_file is None,
            "allow_agent": host.identity_file is None,
        }
        if host.identity_file:
            connect_kwargs["key_filename"] = str(Path(host.identity_file).expanduser())
        self.conn = Connection(
            host.address,
            user=host.user,
            port=host.port,
            connect_timeout=CONNECT_TIMEOUT,
            connect_kwargs=connect_kwargs,
            config=Config(overrides={"load_ssh_configs": False}),
        )
        self.conn.client = strict_client(host)  # fabric's own client would auto-add unknown keys
        self._lock = threading.Lock()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if not self.conn.is_connected:
                self._open()
            return self.conn.transport

    def _open(self) -> None:
        try:
            self.conn.open()
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise changed_key_error(self.host, exc) from None
        except paramiko.AuthenticationException as exc:
            raise ConnectError(
                f"host {self.name}: {self.host.user}@{self.host.address} refused our key ({exc})"
            ) from None
        except (OSError, socket.timeout, paramiko.SSHException) as exc:
            raise ConnectError(f"host {self.name} ({self.host.address}:{self.host.port}) unreachable: {exc}") from None
        transport = self.conn.transport
        transport.set_keepalive(KEEPALIVE)
        sock = transport.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", KEEPALIVE), ("TCP_KEEPINTVL", KEEPALIVE), ("TCP_KEEPCNT", 4)):
            if hasattr(socket, option):  # Linux names
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    def _start(self, cmd: Command, limits: Limits) -> Session:
        return SshSession(self, self._transport(), shlex.join(watched_argv(cmd, limits)))

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        self._transport()
        self.conn.put(str(local), remote)
        if mode is not None:
            self.conn.sftp().chmod(remote, mode)

    def get(self, remote: str, local: Path) -> None:
        self._transport()
        self.conn.get(remote, str(local))

    def close(self) -> None:
        self.conn.close()


class SshSession(Session):
    """The watchdog in an SSH exec channel; sshd makes it a session (and process group) leader on the host."""

    def __init__(self, connector: SshConnector, transport: paramiko.Transport, line: str):
        self.name, self.transport = connector.name, transport
        try:
            self.chan = transport.open_session(timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostLost(f"host {self.name}: cannot open an SSH session: {exc or type(exc).__name__}") from None
        # exec_command waits for the host's answer without a deadline: a frozen host must not hang us here
        late = threading.Event()

        def give_up() -> None:
            late.set()
            self.chan.close()

        guard = threading.Timer(CONNECT_TIMEOUT, give_up)
        guard.start()
        try:
            self.chan.exec_command(line)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.chan.close()
            why = f"no answer within {CONNECT_TIMEOUT} s" if late.is_set() else str(exc) or "connection closed"
            raise HostLost(f"host {self.name}: could not start a command ({why})") from None
        finally:
            guard.cancel()

    def sources(self, out: Sink, err: Sink) -> list[Source]:
        return [ChannelSource(self.chan, out, err)]

    def send(self, data: bytes) -> None:
        self.chan.sendall(data)

    def wait(self, timeout: float) -> int | None:
        if not self.chan.status_event.wait(timeout):
            return None
        if self.chan.exit_status != -1:
            return self.chan.exit_status
        if not self.chan.eof_received or not self.transport.is_active():
            raise HostLost(f"host {self.name}: the SSH connection dropped while a command ran")
        return 255  # ended without an exit status: killed by a signal on the host

    def abort(self, why: str) -> None:
        """Close the channel: the host's watchdog sees its stdin end and stops the command's group. A host
        that went silent gets its whole connection closed (the next command reconnects, or says it cannot)."""
        self.chan.close()
        if why == "silent":
            self.transport.close()

    def close(self) -> None:
        self.chan.close()


class ChannelSource(Source):
    """An SSH channel: one pollable fd for both streams."""

    def __init__(self, chan: paramiko.Channel, out: Sink, err: Sink):
        self.chan, self.out, self.err = chan, out, err

    def fileno(self) -> int:
        return self.chan.fileno()

    def read(self) -> bool:
        ended = self.chan.eof_received or self.chan.closed  # data before the end is buffered by now
        while self.chan.recv_stderr_ready():
            self.err(self.chan.recv_stderr(CHUNK))
        while self.chan.recv_ready():
            self.out(self.chan.recv(CHUNK))
        return not ended
