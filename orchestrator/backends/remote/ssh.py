"""The `ssh` connector: fabric/paramiko with strict host keys and commands streamed over one channel."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paramiko
from fabric import Config, Connection

from orchestrator.errors import ConnectError, HostKeyError

from .base import CHUNK, Connector, Result, StderrTail, StdinFeeder
from .command import Command
from .hostkeys import RefuseUnknown, changed_key_error, trusted_keys

CONNECT_TIMEOUT = 15


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
        self.host, self.name = host, host.name
        connect_kwargs = {"look_for_keys": host.identity_file is None, "allow_agent": host.identity_file is None}
        if host.identity_file:
            connect_kwargs["key_filename"] = str(Path(host.identity_file).expanduser())
        self.conn = Connection(host.address, user=host.user, port=host.port, connect_timeout=CONNECT_TIMEOUT,
                               connect_kwargs=connect_kwargs,
                               config=Config(overrides={"load_ssh_configs": False}))
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
            raise ConnectError(f"host {self.name}: {self.host.user}@{self.host.address} refused our key "
                               f"({exc})") from None
        except (OSError, socket.timeout, paramiko.SSHException) as exc:
            raise ConnectError(f"host {self.name} ({self.host.address}:{self.host.port}) unreachable: "
                               f"{exc}") from None

    def _run(self, cmd: Command, stdin, stdout, timeout, stderr: StderrTail) -> Result:
        chan = self._transport().open_session()
        chan.exec_command(cmd.remote_line())
        feeder = StdinFeeder(cmd.stdin_prefix(), stdin, chan.sendall, chan.shutdown_write)
        feeder.start()
        err_reader = threading.Thread(target=_pump, args=(chan.recv_stderr, stderr.feed), daemon=True)
        err_reader.start()
        collected = bytearray()
        deadline = time.monotonic() + timeout if timeout else None
        chan.settimeout(timeout)
        try:
            _pump(chan.recv, stdout.write if stdout is not None else collected.extend)
        except socket.timeout:
            chan.close()
            return Result(124, bytes(collected), stderr.text() + f"\ntimed out after {timeout}s")
        status = chan.recv_exit_status()
        err_reader.join(timeout=max(1.0, deadline - time.monotonic()) if deadline else None)
        feeder.join(timeout=5)
        chan.close()
        return Result(status, bytes(collected), stderr.text())

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


def _pump(recv, sink) -> None:
    while data := recv(CHUNK):
        sink(data)
