"""Sanitizing a staging database: personal data replaced by fake values, sessions and queues emptied, every
password reset to one staging password. This module only builds SQL text; the engines run it.

Rules (``"table.column": rule``; the playbook's ``sanitize`` block, then the site's, which replaces the playbook's
rules for the same column once the table prefix is substituted)
    ``email``   ``user<key>@staging.invalid``  (deterministic per row; unique when the key is)
    ``name``    ``User <key>``
    ``phone``   ``+1555`` and the key padded to 7 digits (``+15550000042``)
    ``hash``    the SHA-256 hex of the value (equal values stay equal, so joins on them still work)
    ``null``    NULL
    ``fixed:V`` the literal V (``fixed:`` alone is the empty string)
``<key>`` is the rule's ``key`` column, else the playbook's ``keys`` entry for the table, else (SQLite) the
rowid. Without any, ``email`` and ``name`` use the first 12 / 8 hex digits of the value's SHA-256 and ``phone``
is ``+15550000000``. ``email``, ``name``, ``phone`` and ``hash`` leave NULL and empty values alone (a user
without a phone keeps none); ``null`` and ``fixed`` set every row the rule's ``where`` selects.

Dialects: ``mysql`` (backticks, CONCAT, SHA2, TRUNCATE), ``postgresql`` (double quotes, ``||``, sha256(),
TRUNCATE), ``sqlite`` (double quotes, ``||``, DELETE; ``hash`` calls ``orch_sha256()``, which the runner must
register: :func:`register_sqlite_functions` or :data:`SQLITE_PRELUDE`). Identifiers are checked against
``^[A-Za-z0-9_$#]+$`` after prefix substitution and quoted; values are literals escaped for the dialect (MySQL
and PostgreSQL values holding a backslash are written so that no server setting changes their meaning).
``where`` conditions and the playbook's ``sql`` are trusted SQL from the playbook or the inventory, with
``{prefix}`` (or ``#__``) substituted.

Schema: pass the staging database's tables (a collection of names, or a mapping table -> its columns) and
optional rules, truncations and ``also`` columns whose table or column is missing are skipped and reported; a
required rule on a missing table raises UsageError (a wrong prefix, a typo). Without it, optional rules and
truncations are skipped (reported as unchecked): they would fail on a site that lacks the table.

Passwords: ``phpass`` (WordPress's ``$P$``), ``md5`` and ``bitrix`` (8-char salt + md5(salt . password)) are
computed here; ``bcrypt`` by PHP's password_hash() on the host (:func:`bcrypt_command`: the password travels in
the environment, never in argv).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from orchestrator.backends.remote import Command
from orchestrator.backends.remote.command import Revealable, Sensitive
from orchestrator.errors import UsageError

from .playbook import Playbook, SanitizeRule, sanitize_rules

_IDENT = re.compile(r"^[A-Za-z0-9_$#]+\Z")
_PREFIX = re.compile(r"^[A-Za-z0-9_$]*\Z")
FAKE_DOMAIN = "staging.invalid"
PHONE_PREFIX, PHONE_DIGITS = "+1555", 7
PASSWORD_ENV = "ORCH_STAGING_PASSWORD"  # noqa: S105 -- the variable's name, not a password
Schema = Mapping[str, Collection[str]] | Collection[str] | None


# ------------------------------------------------------------------------------------------------ dialects


class Dialect:
    """How one database engine spells identifiers, literals and the few functions the rules need."""

    name = ""

    def ident(self, name: str) -> str:
        """Given a checked identifier, return it quoted."""
        return '"' + name.replace('"', '""') + '"'

    def literal(self, value: str) -> str:
        """Given a string, return it as a literal of this dialect."""
        if "\0" in value:
            raise UsageError("a SQL value cannot hold a NUL byte")
        return "'" + value.replace("'", "''") + "'"

    def concat(self, *parts: str) -> str:
        return " || ".join(parts)

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS TEXT)"

    def sha256(self, expr: str) -> str:
        raise NotImplementedError

    def left(self, expr: str, count: int) -> str:
        return f"substr({expr}, 1, {count})"

    def pad(self, expr: str, width: int) -> str:
        return f"lpad({self.text(expr)}, {width}, '0')"

    def not_empty(self, column: str) -> str:
        return f"{column} IS NOT NULL AND {column} <> ''"

    def truncate(self, table: str) -> str:
        return f"TRUNCATE TABLE {table}"


class MySQLDialect(Dialect):
    name = "mysql"

    def ident(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def literal(self, value: str) -> str:
        # '' is read the same with or without NO_BACKSLASH_ESCAPES; a backslash is not, so such values go as hex.
        if "\\" in value or "\0" in value:
            return f"CONVERT(X'{value.encode().hex()}' USING utf8mb4)"
        return "'" + value.replace("'", "''") + "'"

    def concat(self, *parts: str) -> str:
        return f"CONCAT({', '.join(parts)})"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS CHAR)"

    def sha256(self, expr: str) -> str:
        return f"SHA2({expr}, 256)"

    def left(self, expr: str, count: int) -> str:
        return f"LEFT({expr}, {count})"

    def pad(self, expr: str, width: int) -> str:
        return f"LPAD({expr}, {width}, '0')"


class PostgreSQLDialect(Dialect):
    name = "postgresql"

    def literal(self, value: str) -> str:
        if "\0" in value:
            raise UsageError("a SQL value cannot hold a NUL byte")
        if "\\" in value:  # E'' reads backslashes the same whatever standard_conforming_strings says
            return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
        return "'" + value.replace("'", "''") + "'"

    def sha256(self, expr: str) -> str:
        return f"encode(sha256(convert_to({self.text(expr)}, 'UTF8')), 'hex')"

    def not_empty(self, column: str) -> str:
        return f"{column} IS NOT NULL AND {self.text(column)} <> ''"


class SQLiteDialect(Dialect):
    name = "sqlite"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS TEXT)"

    def sha256(self, expr: str) -> str:
        return f"orch_sha256({expr})"

    def pad(self, expr: str, width: int) -> str:
        return f"substr('{'0' * width}' || {expr}, -{width}, {width})"

    def truncate(self, table: str) -> str:
        return f"DELETE FROM {table}"


DIALECTS: dict[str, Dialect] = {d.name: d for d in (MySQLDialect(), PostgreSQLDialect(), SQLiteDialect())}


def dialect(engine: str) -> Dialect:
    """Given an engine name (mysql, postgresql, sqlite), return its Dialect; raise UsageError if unknown."""
    if engine not in DIALECTS:
        raise UsageError(f"unknown database engine {engine!r} (known: {', '.join(DIALECTS)})")
    return DIALECTS[engine]


def _sqlite_sha256(value):
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else str(value).encode()
    return hashlib.sha256(raw).hexdigest()


def register_sqlite_functions(connection) -> None:
    """Given a sqlite3 connection, register ``orch_sha256()`` (what the sqlite ``hash`` rule calls)."""
    connection.create_function("orch_sha256", 1, _sqlite_sha256, deterministic=True)


# The same, as source for a python3 script on a host (it expects a sqlite3 connection named `db`).
SQLITE_PRELUDE = """import hashlib
def orch_sha256(value):
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else str(value).encode()
    return hashlib.sha256(raw).hexdigest()
db.create_function("orch_sha256", 1, orch_sha256, deterministic=True)
"""


# ------------------------------------------------------------------------------------------------ names


def substitute_prefix(text: str, prefix: str) -> str:
    """Given a table name or SQL text holding ``{prefix}`` or ``#__``, return it with the prefix in place; raise
    UsageError for a prefix that is not ``[A-Za-z0-9_$]*``."""
    if not _PREFIX.match(prefix or ""):
        raise UsageError(f"invalid table prefix {prefix!r}")
    return text.replace("{prefix}", prefix or "").replace("#__", prefix or "")


def checked(name: str, what: str = "identifier") -> str:
    """Given an identifier (prefix already substituted), return it; raise UsageError unless ``^[A-Za-z0-9_$#]+$``."""
    if not _IDENT.match(name):
        raise UsageError(f"invalid {what} {name!r}: only letters, digits, _, $ and # are allowed")
    return name


class _Schema:
    """The tables (and maybe columns) of the staging database, or None when unknown."""

    def __init__(self, schema: Schema):
        self.known = schema is not None
        if isinstance(schema, Mapping):
            self.tables = {t: {c.lower() for c in cols} for t, cols in schema.items()}
            self.columns_known = True
        else:
            self.tables = {t: set() for t in (schema or ())}
            self.columns_known = False

    def missing(self, table: str, column: str | None = None) -> str | None:
        """Return why table(.column) is not there, None when it is (or cannot be known)."""
        if not self.known:
            return None
        if table not in self.tables:
            return f"no table {table}"
        if column and self.columns_known and column.lower() not in self.tables[table]:
            return f"no column {table}.{column}"
        return None


# ------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class SanitizePlan:
    """SQL statements to run, in order, and one line per rule or table left out (and why)."""

    statements: tuple[str, ...]
    skipped: tuple[str, ...]


def resolve_rules(playbook: Playbook, site_rules: Mapping | None, prefix: str) -> list[SanitizeRule]:
    """Given a playbook, the site's sanitize mapping and the table prefix, return the rules with the prefix
    substituted; a site rule replaces the playbook's rules for the same column."""
    site = [_with_prefix(rule, prefix) for rule in sanitize_rules(site_rules or {})]
    replaced = {rule.column for rule in site}
    own = [_with_prefix(rule, prefix) for rule in playbook.sanitize]
    return [rule for rule in own if rule.column not in replaced] + site


def _with_prefix(rule: SanitizeRule, prefix: str) -> SanitizeRule:
    where = substitute_prefix(rule.where, prefix) if rule.where else None
    return SanitizeRule(
        column=substitute_prefix(rule.column, prefix), rule=rule.rule, where=where, key=rule.key, optional=rule.optional
    )


def sanitize_statements(
    playbook: Playbook, site_rules: Mapping | None, engine: str, prefix: str, schema: Schema = None
) -> SanitizePlan:
    """Given a playbook, the site's sanitize mapping, the engine name, the table prefix and (best) the staging
    database's schema, return the statements that sanitize it: rule updates, then truncations, then the
    playbook's mail_off/cron_off SQL. Raise UsageError for a bad identifier or a required rule whose table or
    column is missing."""
    d, known = dialect(engine), _Schema(schema)
    keys = {substitute_prefix(table, prefix): column for table, column in playbook.keys.items()}
    statements: list[str] = []
    skipped: list[str] = []
    errors: list[str] = []
    for rule in resolve_rules(playbook, site_rules, prefix):
        why = known.missing(rule.table, rule.field)
        if why is None and rule.optional and not known.known:
            why = "optional rule, table list not given"
        if why:
            (skipped if rule.optional or why.endswith("not given") else errors).append(f"{rule.column}: {why}")
            continue
        key = rule.key or keys.get(rule.table) or ("rowid" if d.name == "sqlite" else None)
        statements.append(rule_statement(d, rule, key))
    if errors:
        raise UsageError("sanitize: " + "; ".join(errors))
    for table, why in truncate_tables(playbook, prefix, known):
        if why:
            skipped.append(f"truncate {table}: {why}")
        else:
            statements.append(d.truncate(d.ident(checked(table, "table"))))
    statements += [
        substitute_prefix(sql, prefix).strip().rstrip(";").rstrip()
        for sql in (*playbook.mail_off.sql, *playbook.cron_off.sql)
    ]
    return SanitizePlan(tuple(statements), tuple(skipped))


def truncate_tables(playbook: Playbook, prefix: str, known: _Schema) -> Iterable[tuple[str, str | None]]:
    """Yield (table, None) for each table to empty, or (name, why) for one that is skipped; ``*`` patterns
    expand against the schema."""
    for entry in playbook.truncate:
        name = substitute_prefix(entry, prefix)
        if not known.known:
            yield name, "table list not given"
        elif "*" in name:
            for table in sorted(t for t in known.tables if fnmatch.fnmatchcase(t, name)):
                yield table, None
        elif name in known.tables:
            yield name, None
        else:
            yield name, "no such table"


def rule_statement(d: Dialect, rule: SanitizeRule, key: str | None) -> str:
    """Given a dialect, a rule (prefix substituted) and its key column (None: none known), return its UPDATE."""
    table, column = d.ident(checked(rule.table, "table")), d.ident(checked(rule.field, "column"))
    key_expr = None if key is None else ("rowid" if key == "rowid" else d.ident(checked(key, "key column")))
    value = _value(d, rule.rule, column, key_expr)
    conditions = [f"({rule.where})"] if rule.where else []
    if rule.rule in ("email", "name", "phone", "hash"):
        conditions.append(d.not_empty(column))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"UPDATE {table} SET {column} = {value}{where}"


def _value(d: Dialect, rule: str, column: str, key: str | None) -> str:
    """Given a dialect, a rule, the quoted column and the key expression (or None), return the new value's SQL."""
    if rule.startswith("fixed:"):
        return d.literal(rule.removeprefix("fixed:"))
    if rule == "null":
        return "NULL"
    if rule == "hash":
        return d.sha256(column)
    if rule == "email":
        unique = d.text(key) if key else d.left(d.sha256(column), 12)
        return d.concat(d.literal("user"), unique, d.literal("@" + FAKE_DOMAIN))
    if rule == "name":
        unique = d.text(key) if key else d.left(d.sha256(column), 8)
        return d.concat(d.literal("User "), unique)
    if rule == "phone":
        if not key:
            return d.literal(PHONE_PREFIX + "0" * PHONE_DIGITS)
        return d.concat(d.literal(PHONE_PREFIX), d.pad(key, PHONE_DIGITS))
    raise UsageError(f"unknown sanitize rule {rule!r}")


# ------------------------------------------------------------------------------------------------ passwords


def password_reset_statements(
    playbook: Playbook, engine: str, prefix: str, password_hash: str, schema: Schema = None
) -> list[str]:
    """Given a playbook, the engine name, the table prefix, the staging password's hash (in the playbook's
    scheme) and optionally the schema, return the UPDATE setting every account's password (and ``also``
    columns, those missing from a known schema left out); [] when the playbook has no password_reset."""
    reset = playbook.password_reset
    if reset is None:
        return []
    d, known = dialect(engine), _Schema(schema)
    table = checked(substitute_prefix(reset.table, prefix), "table")
    why = known.missing(table, reset.column)
    if why:
        raise UsageError(f"password_reset: {why}")
    sets = [f"{d.ident(checked(reset.column, 'column'))} = {d.literal(password_hash)}"]
    for column, value in reset.also.items():
        if known.missing(table, column) is None:
            sets.append(f"{d.ident(checked(column, 'column'))} = {'NULL' if value is None else d.literal(value)}")
    where = f" WHERE ({substitute_prefix(reset.where, prefix)})" if reset.where else ""
    return [f"UPDATE {d.ident(table)} SET {', '.join(sets)}{where}"]


_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALNUM = string.ascii_letters + string.digits


def hash_password(scheme: str, password: str | Revealable, *, salt: str | None = None) -> str:
    """Given a scheme (phpass, md5, bitrix) and a password, return its hash; raise UsageError for bcrypt (PHP on
    the host computes it: :func:`bcrypt_command`) or an unknown scheme. ``salt`` fixes the salt (tests)."""
    text = password.reveal() if isinstance(password, Revealable) else password
    if scheme == "md5":
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 -- the CMS's own legacy format
    if scheme == "phpass":
        return phpass_hash(text, salt)
    if scheme == "bitrix":
        salt = salt if salt is not None else "".join(secrets.choice(_ALNUM) for _ in range(8))
        return salt + hashlib.md5((salt + text).encode()).hexdigest()  # noqa: S324 -- Bitrix's format
    if scheme == "bcrypt":
        raise UsageError("bcrypt hashes are computed by PHP on the host: use bcrypt_command()")
    raise UsageError(f"unknown password scheme {scheme!r}")


def phpass_hash(password: str, salt: str | None = None, count_log2: int = 8) -> str:
    """Given a password, return its phpass "portable" hash (``$P$B`` + 8 salt chars + 22 chars), as WordPress's
    PasswordHash(8, true) writes it. ``salt`` is 8 characters of ``./0-9A-Za-z`` (random when None)."""
    if salt is None:
        salt = _encode64(secrets.token_bytes(6), 6)
    if len(salt) != 8 or any(ch not in _ITOA64 for ch in salt):
        raise UsageError("a phpass salt is 8 characters of ./0-9A-Za-z")
    setting = "$P$" + _ITOA64[count_log2 + 5] + salt
    raw = password.encode()
    digest = hashlib.md5(salt.encode() + raw).digest()  # noqa: S324 -- phpass is md5-based by design
    for _ in range(1 << (count_log2 + 5)):
        digest = hashlib.md5(digest + raw).digest()  # noqa: S324
    return setting + _encode64(digest, 16)


def _encode64(data: bytes, count: int) -> str:
    """phpass's own base64 (little-endian groups over ``./0-9A-Za-z``)."""
    out, i = [], 0
    while i < count:
        value = data[i]
        i += 1
        out.append(_ITOA64[value & 0x3F])
        if i < count:
            value |= data[i] << 8
        out.append(_ITOA64[(value >> 6) & 0x3F])
        if i >= count:
            break
        i += 1
        if i < count:
            value |= data[i] << 16
        out.append(_ITOA64[(value >> 12) & 0x3F])
        if i >= count:
            break
        i += 1
        out.append(_ITOA64[(value >> 18) & 0x3F])
    return "".join(out)


def bcrypt_command(password: str | Revealable) -> Command:
    """Given the staging password, return the command printing its bcrypt hash (``$2y$10$...``) with the host's
    PHP; the password reaches PHP through the environment (stdin to the host), never argv."""
    secret = password if isinstance(password, Revealable) else Sensitive(password)
    code = f"echo password_hash(getenv('{PASSWORD_ENV}'), PASSWORD_BCRYPT), PHP_EOL;"
    return Command("php", "-r", code).env(**{PASSWORD_ENV: secret})
