"""Database engines: how to ping, dump, restore and count rows of a site's database, as Commands.

Every command runs on the site's host with the host's own client tools (a dump tool older than the server
is a known trap when dumping from elsewhere). Passwords travel in the environment (MYSQL_PWD, PGPASSWORD),
fed through the Command's stdin prefix, never in argv.
"""

from __future__ import annotations

from .base import Engine, TableCounts
from .mysql import MySQL
from .postgresql import PostgreSQL
from .sqlite import SQLite

ENGINES: dict[str, type[Engine]] = {"mysql": MySQL, "postgresql": PostgreSQL, "sqlite": SQLite}


def engine_for(db, env_path: str | None = None) -> Engine:
    """Given an inventory Database (and the env's docroot for relative SQLite paths), return its Engine."""
    return ENGINES[db.engine](db, env_path)


__all__ = ["ENGINES", "Engine", "TableCounts", "engine_for"]
