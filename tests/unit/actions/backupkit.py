"""A fake backup Target for the unit tests of actions/backup.py: a MySQL site `shop` on host web1, its storage
given by the test (secrets are Sensitive, so the tests can check they are masked)."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.actions import backup
from orchestrator.backends.remote import Sensitive


def fake_target(db_password: str, repo_password: str, **storage) -> backup.Target:
    """Given the two secrets and the storage's fields (name, type, ...), return a Target of shop/production."""
    db = SimpleNamespace(
        engine="mysql",
        name="shop",
        user="shop",
        password=Sensitive(db_password),
        host="db",
        port=3306,
        socket=None,
        path=None,
    )
    env = SimpleNamespace(name="production", path="/var/www/shop", database=db)
    site = SimpleNamespace(name="shop", backup=SimpleNamespace(exclude=[]))
    fields = {"access_key": None, "secret_key": None, "region": None, "prefix": None, "path": None, "endpoint": None}
    store = SimpleNamespace(**(fields | storage | {"password": Sensitive(repo_password)}))
    return backup.Target(site, env, SimpleNamespace(name="web1", restic="restic"), store)
