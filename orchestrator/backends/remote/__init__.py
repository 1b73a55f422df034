"""Connectors (where commands run) and the one Command type (how command lines are built)."""

from __future__ import annotations

from .base import Connector, HostLost, Result
from .command import AND, PIPE, Command, Raw, Sensitive, sh
from .local import LocalConnector


def connect(host) -> Connector:
    """Given an inventory Host, return its connector (not yet connected: SSH connects on first use)."""
    if host.connector == "local":
        return LocalConnector(host.name, stall=host.stall_timeout)
    from .ssh import SshConnector  # paramiko import costs ~0.2 s; local-only runs skip it

    return SshConnector(host)


__all__ = [
    "AND",
    "PIPE",
    "Command",
    "Connector",
    "HostLost",
    "LocalConnector",
    "Raw",
    "Result",
    "Sensitive",
    "connect",
    "sh",
]
