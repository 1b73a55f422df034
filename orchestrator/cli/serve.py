"""`orch serve`: the read-only web pages over the oplog (tasks, a task, a site, the fleet's health)."""

from __future__ import annotations

import sys

import click

from orchestrator.errors import UsageError

from .app import pass_app


@click.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback requires a login (serve.accounts).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The path prefix a reverse proxy serves the pages under, e.g. /orch.",
)
@click.option(
    "--hash-password",
    is_flag=True,
    help="Read a password (prompt, or one line on stdin) and print its hash for serve.accounts.",
)
@click.option("--new-token", is_flag=True, help="Print a new Bearer token and the hash for serve.accounts.")
@pass_app
def serve_cmd(app, host, port, root_path, hash_password, new_token):
    """Web pages for project managers: every task's operations, time and cost; sites; fleet health.

    Read-only, over the oplog (SQLite or PostgreSQL). On 127.0.0.1 (the default) nobody logs in; bound to any
    other address every request must log in with one of the inventory's `serve.accounts` (HTTP Basic, or a
    Bearer token). Put TLS in front (a reverse proxy), and give it --root-path when it serves a sub-path.

    \b
    Examples:
      orch serve                                   http://127.0.0.1:8765/tasks
      orch serve --host 0.0.0.0 --root-path /orch  behind nginx, logins required
      orch serve --hash-password                   for serve.accounts.NAME.password_hash
    """
    from orchestrator.web.security import hash_password as make_hash
    from orchestrator.web.security import is_loopback
    from orchestrator.web.security import new_token as make_token

    if hash_password:
        password = (
            click.prompt("password", hide_input=True, confirmation_prompt=True)
            if sys.stdin.isatty()
            else sys.stdin.readline().rstrip("\n")
        )
        if not password:
            raise UsageError("an empty password cannot be hashed")
        click.echo(make_hash(password))
        return
    if new_token:
        token, digest = make_token()
        click.echo(f"token (give it to its user; shown once): {token}\ntoken_sha256: {digest}")
        return
    if root_path and not root_path.startswith("/"):
        raise UsageError("--root-path must start with / (e.g. /orch)")
    accounts = (app.inventory.serve or {}).get("accounts") or {}
    if not is_loopback(host) and not accounts:
        raise UsageError(
            f"serving on {host} needs logins: add serve.accounts to the inventory "
            "(orch serve --hash-password), or serve on 127.0.0.1 behind a proxy"
        )
    import uvicorn

    from orchestrator.web.app import create_app
    from orchestrator.web.reader import read_only

    web = create_app(read_only(app.oplog), app.inventory, accounts=None if is_loopback(host) else accounts)
    app.say(
        f"orch serve: http://{host}:{port}{root_path.rstrip('/')}/tasks "
        f"({'open to this machine' if is_loopback(host) else 'login required'}); Ctrl-C stops"
    )
    uvicorn.run(
        web,
        host=host,
        port=port,
        root_path=root_path.rstrip("/"),
        log_level="warning",
        server_header=False,
        proxy_headers=False,
    )


COMMANDS = [serve_cmd]
