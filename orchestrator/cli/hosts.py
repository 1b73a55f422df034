"""`orch hosts`: list hosts and trust a host's SSH key after showing its fingerprint."""

from __future__ import annotations

import sys

import click

from orchestrator.backends.remote.hostkeys import fetch_server_key, fingerprint, record_key, trusted_keys
from orchestrator.errors import Refused, UsageError

from .app import json_option, pass_app


@click.group("hosts")
def hosts_group():
    """Hosts of the inventory and their SSH host keys."""


@hosts_group.command("list")
@json_option
@pass_app
def hosts_list(app):
    """List hosts with address, user, connector and whether a host key is trusted.

    \b
    Example:
      orch hosts list
    """
    rows = []
    for host in app.inventory.hosts.values():
        trusted = host.connector == "local" or bool(trusted_keys(host).keys())
        rows.append(
            {
                "host": host.name,
                "connector": host.connector,
                "address": host.address,
                "port": host.port,
                "user": host.user,
                "max_parallel": host.max_parallel,
                "key_trusted": trusted,
            }
        )
    app.emit(
        rows,
        [
            ("host", "host"),
            ("connector", "connector"),
            ("address", "address"),
            ("port", "port"),
            ("user", "user"),
            ("max_parallel", "max parallel"),
            ("key_trusted", "key trusted"),
        ],
    )


@hosts_group.command("trust")
@click.argument("host_name", metavar="HOST")
@click.option(
    "--fingerprint",
    "expected",
    metavar="SHA256:...",
    help="Trust only if the host offers this fingerprint (non-interactive use).",
)
@click.option("--yes", is_flag=True, help="Trust whatever key is offered, without asking (first-contact risk).")
@pass_app
def hosts_trust(app, host_name, expected, yes):
    """Fetch HOST's SSH key, show its fingerprint, and record it after you confirm.

    Compare the fingerprint with the one the host's admin sees (`ssh-keygen -lf
    /etc/ssh/ssh_host_ed25519_key.pub`). Keys are written to the host's `known_hosts`
    file from the inventory, or orch's own (~/.local/state/orch/known_hosts).

    \b
    Examples:
      orch hosts trust web1
      orch hosts trust web1 --fingerprint SHA256:3f1c...
    """
    host = app.inventory.hosts.get(host_name)
    if host is None:
        raise UsageError(f"unknown host '{host_name}' (known: {', '.join(sorted(app.inventory.hosts))})")
    if host.host_key:
        raise UsageError(f"hosts.{host_name}.host_key is set in the inventory: edit it there to change the key")
    key = fetch_server_key(host.address, host.port)
    offered = fingerprint(key)
    app.say(f"host {host_name} ({host.address}:{host.port}) offers {key.get_name()} key {offered}")
    if expected and expected != offered:
        raise Refused(f"fingerprint mismatch: expected {expected}, host offers {offered}; nothing recorded")
    if not expected and not yes:
        if not sys.stdin.isatty():
            raise Refused("no terminal to confirm on: pass --fingerprint SHA256:... (or --yes)")
        click.confirm("Trust this key?", abort=True)
    path = record_key(host, key)
    app.emit({"host": host_name, "fingerprint": offered, "known_hosts": str(path)})
    app.say(f"recorded in {path}")


COMMANDS = [hosts_group]
