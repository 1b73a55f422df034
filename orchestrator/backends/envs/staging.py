"""Per-task staging environments derived from a site's `environments.staging` template.

The template names the staging host, a base path, the database server (with an admin account that may
create databases and users) and a URL template such as `https://{env}.{site}.stage.example.net`. An
environment `t14883` gets its own folder, database, database user and basic-auth login. Their passwords
are DERIVED (HMAC of the template's admin password), so orch stores none of them anywhere and can always
recompute them for a refresh, a promotion or a destroy.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from orchestrator.backends.envs.docroot import is_within
from orchestrator.backends.remote import Sensitive
from orchestrator.config.model import Database, Environment
from orchestrator.errors import Refused, UsageError

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}\Z")
TEMPLATE = "staging"
AUTH_USER = "staging"


def default_name(task: str) -> str:
    return f"t{task}".lower()


def check_name(site, name: str) -> str:
    """Refuse a name that is not a plain label, or that is (or is configured as) production."""
    if not NAME.match(name):
        raise UsageError(f"environment name {name!r}: use lowercase letters, digits and dashes (max 31)")
    configured = site.environments.get(name)
    if name == "production" or (configured is not None and configured.production):
        raise Refused(f"{site.name}/{name} is a production environment: staging commands never touch it")
    if name == TEMPLATE:
        raise UsageError(f"'{TEMPLATE}' is the template of staging environments; pick another name")
    return name


def target_of(site, override: str | None = None) -> str:
    """Given a site and an optional --target, return where its staging copies are made: `host` or `docker`."""
    if override:
        return override
    env = site.environments.get(TEMPLATE)
    return getattr(env, "target", None) or "host"


def template(site):
    """Return the site's staging template environment; raise UsageError if it has none."""
    env = site.environments.get(TEMPLATE)
    if env is None:
        raise UsageError(f"site {site.name} has no environments.{TEMPLATE} (the template of staging copies)")
    if env.database is not None and not env.database.password and env.database.engine != "sqlite":
        raise UsageError(f"sites/{site.name}.yaml: environments.{TEMPLATE}.database needs the admin password")
    return env


def derive_secret(tmpl, site: str, name: str, purpose: str) -> Sensitive:
    """Return a stable password for (site, env, purpose), keyed by the template's admin password."""
    key = (
        tmpl.database.password.reveal() if tmpl.database and tmpl.database.password else tmpl.path or tmpl.site
    ).encode()
    digest = hmac.new(key, f"orch:{site}:{name}:{purpose}".encode(), hashlib.sha256).hexdigest()
    return Sensitive(digest[:24])


def _url(template_url: str | None, site: str, name: str) -> str | None:
    if not template_url:
        return None
    if "{env}" in template_url:
        return template_url.replace("{env}", name).replace("{site}", site)
    parts = urlsplit(template_url.replace("{site}", site))
    return urlunsplit(parts._replace(netloc=f"{name}.{parts.netloc}"))


def _path(template_path: str | None, site: str, name: str) -> str | None:
    if template_path is None:  # a docker template: the copy's docroot is in its containers
        return None
    if "{env}" in template_path:
        return template_path.replace("{env}", name).replace("{site}", site)
    return posixpath.join(template_path.replace("{site}", site), name)


def db_ident(site: str, name: str) -> str:
    """Database and user name of an environment (MySQL user names are at most 80 chars, PG 63)."""
    return re.sub(r"[^a-z0-9_]", "_", f"{site}_{name}".lower())[:63]


@dataclass(frozen=True)
class StagingEnv:
    """A derived staging environment: an inventory-shaped Environment plus what orch needs around it."""

    env: Environment
    admin_db: Database | None  # the template's Database (admin account on the staging DB server)
    auth_password: Sensitive
    auth_file: str | None  # the vhost's basic-auth file: beside the docroot, one per site and environment

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def path(self) -> str:
        """The copy's docroot on its host; raise UsageError if the template gives none (docker copies)."""
        if self.env.path is None:
            raise UsageError(f"{self.env.site}/{self.name}: the staging template has no path on a host")
        return self.env.path

    @property
    def url(self) -> str:
        """The copy's URL; raise UsageError if the template gives none."""
        if self.env.url is None:
            raise UsageError(f"{self.env.site}/{self.name}: the staging template has no url")
        return self.env.url


def derive(site, name: str) -> StagingEnv:
    """Given a site and an environment name, return the staging environment orch makes (or made) for it."""
    tmpl = template(site)
    check_name(site, name)
    database = None
    if tmpl.database is not None:
        ident = db_ident(site.name, name)
        if tmpl.database.engine == "sqlite":
            database = replace(tmpl.database, password=None)
        else:
            database = replace(
                tmpl.database, name=ident, user=ident, password=derive_secret(tmpl, site.name, name, "database")
            )
    env = replace(
        tmpl,
        name=name,
        path=_path(tmpl.path, site.name, name),
        url=_url(tmpl.url, site.name, name),
        production=False,
        database=database,
    )
    return StagingEnv(
        env,
        tmpl.database,
        derive_secret(tmpl, site.name, name, "basic-auth"),
        auth_file_path(site.name, env.path, name) if env.path else None,
    )


def auth_file_path(site: str, path: str, name: str) -> str:
    """Given a site, an environment's docroot and its name, return its basic-auth file: beside the docroot, named
    after site AND environment (`.` joins them: neither may contain one), so copies of two sites that share a
    parent folder and an environment name never share their credentials."""
    return posixpath.join(posixpath.dirname(path.rstrip("/")), f".orch-{site}.{name}.htpasswd")


def clashes(
    rows: list[dict], site: str, name: str, host: str, path: str, database: dict | None, vhost: str, auth_file: str
) -> list[str]:
    """Given environments as registry rows (the live copies, or the inventory's environments) and a copy about to
    be made, return what it would share with one of them, one line each: its docroot (the same folder, or one
    inside the other: a create or destroy of one deletes the other), its database (same engine, server and
    name), its vhost or its basic-auth file."""
    found = []
    for row in rows:
        if (row["site"], row["name"]) == (site, name):
            continue
        details, other, same_host = row.get("details") or {}, f"{row['site']}/{row['name']}", row["host"] == host
        mine, theirs = path.rstrip("/"), row["path"].rstrip("/")
        if same_host and (is_within(mine, theirs) or is_within(theirs, mine)):
            found.append(f"its docroot with {other}")
        if database and database.get("name") and _db_key(database) == _db_key(row.get("database")):
            found.append(f"its database with {other}")
        for what, own, its in (
            ("vhost", vhost, details.get("vhost")),
            ("basic-auth file", auth_file, details.get("auth_file")),
        ):
            if same_host and own and own == its:
                found.append(f"its {what} with {other}")
    return found


def _db_key(db: dict | None) -> tuple | None:
    return (db.get("engine"), db.get("host"), db.get("port"), db.get("name")) if db else None
