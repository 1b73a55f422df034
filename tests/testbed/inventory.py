"""Inventory pieces naming testbed daemons, shared by the e2e fixtures and the benchmarks: a host entry for an sshd
host (with its web stack), an S3 storage whose secrets come from environment variables, and those variables."""

from __future__ import annotations

import os


def host_entry(host, **extra) -> dict:
    """Given a testbed sshd host, return its `hosts:` entry (strict host key, key login), plus ``extra`` keys."""
    return {
        "address": host.address,
        "port": host.port,
        "user": host.user,
        "host_key": host.host_key,
        "identity_file": str(host.identity_file),
        **extra,
    }


def web_block(stack, **extra) -> dict:
    """Given a web stack (nginx + php-fpm running as a host's user), return a host's `web:` block: vhosts go to
    that nginx, health checks are sent to it; plus ``extra`` keys."""
    nginx = stack.nginx
    return {
        "sites_dir": str(nginx.sites_dir),
        "listen": nginx.listen,
        "connect": nginx.listen,
        "php_socket": str(stack.php.socket),
        "test": nginx.test_command.split(),
        "reload": nginx.reload_command.split(),
        **extra,
    }


def web_host_entry(host, stack, **web) -> dict:
    """Given a testbed host and its web stack, return the host's entry with a `web:` block (plus ``web`` keys)."""
    return host_entry(host, web=web_block(stack, **web))


def s3_storage(s3, bucket: str, env_prefix: str) -> dict:
    """Given a running S3 server, return a `storage:` entry for ``bucket`` (prefix `orch`, created if missing)
    whose keys and restic password are read from ``{env_prefix}_S3_KEY``, ``_S3_SECRET`` and ``_RESTIC_PW``."""
    return {
        "type": "s3",
        "endpoint": s3.endpoint,
        "bucket": bucket,
        "prefix": "orch",
        "access_key": {"env": f"{env_prefix}_S3_KEY"},
        "secret_key": {"env": f"{env_prefix}_S3_SECRET"},
        "password": {"env": f"{env_prefix}_RESTIC_PW"},
        "create_bucket": True,
    }


def s3_secrets(s3, env_prefix: str) -> dict[str, str]:
    """Given a running S3 server, return the environment variables `s3_storage` names (a new restic password)."""
    return {
        f"{env_prefix}_S3_KEY": s3.access_key,
        f"{env_prefix}_S3_SECRET": s3.secret_key,
        f"{env_prefix}_RESTIC_PW": "pw-" + os.urandom(8).hex(),
    }
