"""Strict SSH host keys: a host's key comes from the inventory (`host_key`) or a known_hosts file, never from
the network on first sight. Unknown or changed keys are refused with the offered fingerprint, so the user can
compare it out of band and run `orch hosts trust HOST`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import socket
from pathlib import Path

import paramiko

from orchestrator.errors import ConnectError, HostKeyError, UsageError


def state_dir() -> Path:
    """Return orch's state folder (oplog default, trusted keys): $ORCH_STATE_DIR or ~/.local/state/orch."""
    return Path(os.environ.get("ORCH_STATE_DIR") or Path.home() / ".local/state/orch")


def default_known_hosts() -> Path:
    return state_dir() / "known_hosts"


def entry_name(address: str, port: int) -> str:
    """Return the known_hosts name for an address and port (`[addr]:port` unless port 22)."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """Return the OpenSSH-style SHA256 fingerprint of a key (what `ssh-keygen -lf` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_key_line(line: str, where: str) -> paramiko.PKey:
    """Given a public key line `ssh-ed25519 AAAA... [comment]`, return the key; raise UsageError naming where."""
    try:
        keytype, blob = line.split()[:2]
        return paramiko.PKey.from_type_string(keytype, base64.b64decode(blob))
    except (ValueError, paramiko.SSHException, binascii.Error) as exc:
        raise UsageError(f"{where}: not a valid public host key line ({exc})") from exc


def known_hosts_files(host) -> list[Path]:
    """Return the known_hosts files consulted for a host: the one it names, and orch's own."""
    files = [Path(host.known_hosts).expanduser()] if host.known_hosts else []
    return files + [default_known_hosts()]


def trusted_keys(host) -> paramiko.HostKeys:
    """Given an inventory Host, return the HostKeys it is allowed to present (may be empty)."""
    keys = paramiko.HostKeys()
    name = entry_name(host.address, host.port)
    if host.host_key:
        key = parse_key_line(host.host_key, f"hosts.{host.name}.host_key")
        keys.add(name, key.get_name(), key)
        return keys  # an inventory-pinned key is authoritative: known_hosts files cannot widen it
    for path in known_hosts_files(host):
        if path.exists():
            keys.load(str(path))
    return keys


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key we do not know, saying which key it offered."""

    def __init__(self, host_name: str):
        self.host_name = host_name

    def missing_host_key(self, client, hostname, key):
        raise HostKeyError(
            f"host {self.host_name} ({hostname}) offered an unknown {key.get_name()} key {fingerprint(key)}; "
            f"nothing was run. Verify it, then `orch hosts trust {self.host_name}` or set hosts.{self.host_name}"
            ".host_key"
        )


def changed_key_error(host, exc: paramiko.BadHostKeyException) -> HostKeyError:
    return HostKeyError(
        f"host {host.name} ({exc.hostname}) offered {exc.key.get_name()} key {fingerprint(exc.key)} but the "
        f"trusted key is {fingerprint(exc.expected_key)}: REFUSED (possible man-in-the-middle or a rebuilt "
        "host); nothing was run"
    )


def fetch_server_key(address: str, port: int, timeout: float = 10) -> paramiko.PKey:
    """Return the host key a server offers, after a key exchange only (no authentication, nothing run)."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise ConnectError(f"cannot reach {address}:{port}: {exc}") from exc
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def record_key(host, key: paramiko.PKey) -> Path:
    """Append a host's key to the known_hosts file orch writes for it and return that file's path."""
    path = Path(host.known_hosts).expanduser() if host.known_hosts else default_known_hosts()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{entry_name(host.address, host.port)} {key.get_name()} {key.get_base64()}\n"
    with open(path, "a", encoding="ascii") as fh:
        fh.write(line)
    path.chmod(0o600)
    return path
