"""Staging vhosts on a host's nginx: write the server block, test the config, reload; remove on destroy.

A vhost that fails `nginx -t` is removed again before anything reloads, so a bad template never takes the
staging host's web server down.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import secrets
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from orchestrator.backends.remote import Command
from orchestrator.errors import OrchError, UsageError


class WebError(OrchError):
    """The web server refused a vhost or did not come back."""


def web_config(host) -> dict:
    """Return the host's `web` block; raise UsageError if staging vhosts cannot be written there."""
    if not host.web:
        raise UsageError(f"hosts.{host.name}.web is not set: orch does not know where this host's nginx vhosts go")
    return host.web


def vhost_path(host, site: str, env: str) -> str:
    return posixpath.join(web_config(host)["sites_dir"], f"orch-{site}-{env}.conf")


def htpasswd_line(user: str, password: str) -> str:
    """Return an nginx auth_basic_user_file line with a salted SHA-1 ({SSHA}) of the password."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - the format nginx understands
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n"


def render(template: str, **values: str) -> str:
    """Fill `{name}` placeholders of a playbook's vhost template (other braces, nginx's own, stay)."""
    out = template
    for name, value in values.items():
        if any(c in str(value) for c in ";{}\n\"'"):
            raise UsageError(f"vhost value {name}={value!r} contains characters nginx would misread")
        out = out.replace("{" + name + "}", str(value))
    return out


def install_vhost(conn, host, site: str, env: str, text: str) -> str:
    """Write the vhost, test nginx's config (removing the vhost if it fails), reload. Return its path."""
    path = vhost_path(host, site, env)
    conn.put_bytes(text.encode(), path, mode=0o644)
    test = conn.run(Command(*web_config(host)["test"]), check=False)
    if not test.ok:
        conn.run(Command("rm", "-f", "--", path), check=False)
        raise WebError(f"nginx rejected the vhost for {site}/{env} (removed again): {test.stderr.strip()[-300:]}")
    conn.run(Command(*web_config(host)["reload"]))
    return path


def remove_vhost(conn, host, site: str, env: str) -> bool:
    """Remove the vhost if present and reload. Return whether one was there."""
    path = vhost_path(host, site, env)
    if not conn.ok(Command("test", "-e", path)):
        return False
    conn.run(Command("rm", "-f", "--", path))
    conn.run(Command(*web_config(host)["reload"]))
    return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx itself is the answer


def fetch(
    url: str,
    *,
    connect_to: str | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 10,
    follow_redirects: bool = True,
) -> tuple[int, dict, str]:
    """GET a URL (optionally sending it to another address, keeping the Host header). Return status, headers, body.

    With follow_redirects=False a 3xx is returned as it is (a site redirecting to its installer is not up)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"not an http(s) URL: {url}")
    target = url if not connect_to else parts._replace(netloc=connect_to).geturl()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        target, headers={"Host": parts.netloc, "User-Agent": "orch-health"}
    )
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        opener = urllib.request.build_opener(*([] if follow_redirects else [_NoRedirect()]))
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")


def wait_until(check, timeout: float = 15, interval: float = 0.2, streak: int = 1):
    """Call check() until it returns a truthy value `streak` times in a row, or timeout passes; return the last
    value.

    A streak above 1 waits out an nginx reload: `nginx -s reload` returns at once, and for a moment old workers
    (old config: a new vhost answers 404) and new ones take requests in turn, so one good answer does not yet
    mean that every answer comes from the new config."""
    deadline = time.monotonic() + timeout
    good = 0
    while True:
        value = check()
        good = good + 1 if value else 0
        if good >= streak or time.monotonic() > deadline:
            return value
        time.sleep(interval)
