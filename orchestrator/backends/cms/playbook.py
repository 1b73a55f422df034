"""CMS playbooks: what orch knows about one kind of site, kept as data (``playbooks/NAME.yaml``) and loaded into a
typed, validated :class:`Playbook`.

A playbook says which files are code, content, cache and config; how each config file is rewritten for a staging
copy (``configfiles``); where the database table prefix is read; which columns hold URLs; how personal data is
sanitized and passwords reset (``sanitize``); how mail and cron are switched off; how migrations run; what the
homepage must contain; and the nginx server block of a staging copy (``{fastcgi}`` is where PHP requests go:
``unix:/run/php/php8.2-fpm.sock`` on a staging host, ``php:9000`` in a Docker copy), plus ``docker.images``, the
images a Docker copy of this CMS runs when the inventory names none.

Decisions
    * Files: the YAML files live in the repository's top-level ``playbooks/``, which ``orchestrator/playbooks`` links
      to; a wheel carries them there as package data (pyproject declares it), so one path serves both.
      ``load_playbook(..., directory=)`` reads another folder (tests, an agency's own playbooks).
    * Site overrides: a site adjusts its playbook with ``playbook_overrides:`` in its site file (read from
      ``site.raw``; see :func:`playbook_for_site`). They are deep-merged over the playbook's data: mappings merge
      key by key, lists and scalars replace, and a YAML ``null`` removes the key (so to set a column to NULL write
      the rule as the string ``"null"``). The merged data is validated like the file itself. The site's own
      ``sanitize:`` block is separate and is merged per column by ``sanitize.py`` once the table prefix is known.
    * Paths are relative to the environment's path, POSIX, with globs: ``*`` and ``?`` stay inside one path
      segment, ``**`` spans any number of them, a trailing ``/`` marks a directory. A pattern matches a path when
      it matches the path itself or one of its parent directories. :meth:`Playbook.classify` says ``staging`` for
      the files orch writes into staging copies (``mail_off.files``...), then tries ``cache``, ``content``,
      ``config`` and ``code``; anything else is ``other`` (files lying around in a docroot: dumps, archives,
      logs), which staging copies down but promotion never sends up.
    * ``{prefix}`` in table names (and Joomla's own ``#__``) stands for the site's table prefix.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from orchestrator.backends.remote import Command
from orchestrator.errors import UsageError

_HERE = Path(__file__).resolve()
# orchestrator/playbooks: in a checkout a symlink to the top-level playbooks/, in a wheel the package data.
PLAYBOOK_DIRS = (_HERE.parents[2] / "playbooks",)
OVERRIDES_KEY = "playbook_overrides"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
RULE = re.compile(r"^(email|name|phone|null|hash|fixed:.*)\Z", re.S)
SCHEMES = ("phpass", "md5", "bcrypt", "bitrix")
CATEGORIES = ("cache", "content", "config", "code")
VHOST_PLACEHOLDERS = ("server_name", "listen", "root", "fastcgi", "php_socket", "auth_file")
DOCKER_IMAGE_ROLES = ("php", "web", "proxy", "mysql", "postgresql", "tools")
_VHOST_VALUE = re.compile(r"^[A-Za-z0-9_.:/@~+\[\]-]+\Z")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(VHOST_PLACEHOLDERS) + r")\}")


# ------------------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class ConfigFile:
    """A config file the staging copy rewrites. ``format`` names the rewriter in ``configfiles``; ``set`` holds
    extra settings it applies (defines, properties, env keys: the format decides), with ``{path}``, ``{url}``
    and ``{host}`` replaced in string values; ``append`` is PHP code added in a marked block (PHP formats)."""

    path: str
    format: str
    required: bool = True
    set: dict[str, Any] = field(default_factory=dict)
    append: str | None = None


@dataclass(frozen=True)
class TablePrefix:
    """Where the table prefix is read: a config file (one of ``config``, read with its format), else ``default``."""

    default: str
    file: str | None = None


@dataclass(frozen=True)
class Urls:
    """Where the CMS stores URLs (informational: the replacer runs on the whole dump). ``bare_host`` says the CMS
    also stores the bare host name (Bitrix: ``b_lang.SERVER_NAME``), so staging must replace the host too."""

    columns: tuple[str, ...] = ()
    bare_host: bool = False


@dataclass(frozen=True)
class SanitizeRule:
    """One sanitize rule: ``rule`` for ``column`` ("table.column", table may hold ``{prefix}``), on the rows
    ``where`` selects (trusted SQL from the playbook or inventory). ``key`` is the column whose value makes the
    fake value unique (``user<key>@staging.invalid``). ``optional`` rules are skipped when their table is missing
    (plugin tables)."""

    column: str
    rule: str
    where: str | None = None
    key: str | None = None
    optional: bool = False

    @property
    def table(self) -> str:
        return self.column.rpartition(".")[0]

    @property
    def field(self) -> str:
        return self.column.rpartition(".")[2]


@dataclass(frozen=True)
class PasswordReset:
    """How every account gets the staging password: ``column`` of ``table`` set to a hash of ``scheme``
    (``phpass``, ``md5``, ``bitrix``: computed by orch; ``bcrypt``: by PHP on the host), plus ``also``
    (column -> literal value, None for NULL), on the rows ``where`` selects (all when None)."""

    scheme: str
    table: str
    column: str
    where: str | None = None
    also: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Measure:
    """How mail or cron is switched off: ``how`` for people (the plan, the oplog), ``files`` written into the
    copy (path -> content), ``sql`` run on its database (``{prefix}`` substituted). Config-file settings that do
    the same live in ``config[].set`` / ``append``."""

    how: str
    files: dict[str, str] = field(default_factory=dict)
    sql: tuple[str, ...] = ()


@dataclass(frozen=True)
class MigrateStep:
    """One way to run migrations: ``run`` (argv; ``{path}`` and ``{url}`` substituted, each a quoted argument),
    run in the environment's folder, if the host has ``when_command`` on its PATH and ``when_file`` in the
    folder (each only when set)."""

    run: tuple[str, ...]
    when_command: str | None = None
    when_file: str | None = None

    def probe(self, path: str) -> Command | None:
        """Given the environment's folder, return a command exiting 0 iff this step applies (None: always)."""
        probes = []
        if self.when_command:
            probes.append(Command("command", "-v", self.when_command).to_file("/dev/null"))
        if self.when_file:
            probes.append(Command("test", "-e", str(PurePosixPath(path) / self.when_file)))
        if not probes:
            return None
        probe = probes[0]
        for more in probes[1:]:
            probe = probe.then(more)
        return probe

    def command(self, path: str, url: str) -> Command:
        """Given the environment's folder and URL, return the command running this step in that folder."""
        argv = [arg.replace("{path}", path).replace("{url}", url) for arg in self.run]
        return Command("cd", path).then(Command(*argv))


@dataclass(frozen=True)
class RowMatch:
    """A condition on a row: for each column, its value is one of the patterns (``*`` matches any run of
    characters; a pattern is compared with the stored bytes as UTF-8). No columns: every row."""

    columns: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def test(self, value: Callable[[str], bytes | None]) -> bool:
        """Given a function returning a column's stored value (None for NULL), return whether the row matches."""
        for column, patterns in self.columns:
            found = value(column)
            text = "" if found is None else found.decode("utf-8", "replace")
            if not any(fnmatch.fnmatchcase(text, pattern) for pattern in patterns):
                return False
        return True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.columns)


@dataclass(frozen=True)
class Tree:
    """A nested set kept in a table: the parent column and the left, right and level columns derived from it."""

    parent: str
    left: str
    right: str
    level: str | None = None


@dataclass(frozen=True)
class MergeTable:
    """A content table of a content merge (``merge.tables``). ``refs``: column -> the table whose row it names
    (by primary key; ``table.column`` for a name in another column); ``owner``: (column, table) when a row
    belongs to the item of the row it names (meta rows); ``owns``: column -> table when the row it names belongs
    to this row's item (an article's asset); ``derived``: columns recomputed by the CMS (counters), never
    compared nor overwritten; ``where``/``skip``: the rows that take part; ``tree``: a nested set; ``unique``: a
    column that names a row on every side (an option's name): rows are matched by it, whatever their ids."""

    name: str
    refs: dict[str, str] = field(default_factory=dict)
    owner: tuple[str, str] | None = None
    owns: dict[str, str] = field(default_factory=dict)
    derived: tuple[str, ...] = ()
    where: RowMatch = RowMatch()
    skip: RowMatch | None = None
    tree: Tree | None = None
    unique: str | None = None


@dataclass(frozen=True)
class ItemKind:
    """What people make in the admin (``merge.items``): rows of ``table`` that match ``where`` and not ``skip``
    are items of this kind, named by ``title``; ``default`` says which are promoted when nothing is selected
    (None: all)."""

    kind: str
    table: str
    title: str
    where: RowMatch = RowMatch()
    skip: RowMatch | None = None
    default: RowMatch | None = None


@dataclass(frozen=True)
class ValueRef:
    """A reference inside a value (``merge.values``): ``column`` of ``table`` (rows matching ``where``, and
    having a ``sibling`` row of the same owner that matches it, when given) holds ids of rows of ``to``: the
    whole value, or, with ``pattern``, its group 1 (or whole match) in each match, and with ``ids`` each match of
    that within it; an id found may be a comma-separated list."""

    table: str
    column: str
    to: str
    where: RowMatch = RowMatch()
    sibling: RowMatch | None = None
    pattern: str | None = None
    ids: str | None = None


@dataclass(frozen=True)
class FileRule:
    """Files a row uses (``merge.files``): each match of ``pattern`` (its group 1; the whole value without a
    pattern) in ``column`` of ``table`` (rows matching ``where``) names ``path`` (``{}`` is the match, relative to
    the environment's folder). ``beside: first``: a name without a folder lies in the folder of the value's
    first match (WordPress's image sizes)."""

    table: str
    column: str
    path: str
    where: RowMatch = RowMatch()
    pattern: str | None = None
    beside: str | None = None


@dataclass(frozen=True)
class Merge:
    """What a content merge (``orch promote --content``) may touch: content tables, item kinds, references
    inside values, the files rows use; ``production`` names (globs) the tables that are production's alone and
    never touched. Table names hold ``{prefix}`` until :meth:`for_prefix`."""

    tables: dict[str, MergeTable] = field(default_factory=dict)
    items: tuple[ItemKind, ...] = ()
    values: tuple[ValueRef, ...] = ()
    files: tuple[FileRule, ...] = ()
    production: tuple[str, ...] = ()

    def for_prefix(self, prefix: str) -> Merge:
        """Given the site's table prefix, return the spec with every table name resolved."""

        def name(table: str) -> str:
            return table.replace("{prefix}", prefix).replace("#__", prefix)

        tables = {
            name(t): MergeTable(
                name(t),
                {c: name(v) for c, v in m.refs.items()},
                (m.owner[0], name(m.owner[1])) if m.owner else None,
                {c: name(v) for c, v in m.owns.items()},
                m.derived,
                m.where,
                m.skip,
                m.tree,
                m.unique,
            )
            for t, m in self.tables.items()
        }
        return Merge(
            tables,
            tuple(ItemKind(i.kind, name(i.table), i.title, i.where, i.skip, i.default) for i in self.items),
            tuple(
                ValueRef(name(v.table), v.column, name(v.to), v.where, v.sibling, v.pattern, v.ids) for v in self.values
            ),
            tuple(FileRule(name(f.table), f.column, f.path, f.where, f.pattern, f.beside) for f in self.files),
            tuple(name(p) for p in self.production),
        )


@dataclass(frozen=True)
class Playbook:
    """A validated playbook; ``data`` is the merged YAML it was built from."""

    name: str
    title: str
    notes: str
    detect: tuple[str, ...]
    code: tuple[str, ...]
    content: tuple[str, ...]
    cache: tuple[str, ...]
    config: tuple[ConfigFile, ...]
    table_prefix: TablePrefix
    urls: Urls
    sanitize: tuple[SanitizeRule, ...]
    keys: dict[str, str]
    truncate: tuple[str, ...]
    password_reset: PasswordReset | None
    mail_off: Measure
    cron_off: Measure
    migrate: tuple[MigrateStep, ...]
    health_marker: tuple[str, ...]
    health_path: str
    vhost: str
    data: dict
    docker_images: dict[str, str] = field(default_factory=dict)  # images of Docker copies, by role
    merge: Merge | None = None  # what content promotion merges (None: the CMS has no content merge)

    def classify(self, path: str) -> str:
        """Given a path relative to the environment's folder, return ``staging`` (a file orch writes into staging
        copies only: never promoted), ``cache``, ``content``, ``config``, ``code`` or ``other`` (see the module
        docstring)."""
        staging_files = [*self.mail_off.files, *self.cron_off.files]
        if any(glob_matches(pattern, path) for pattern in staging_files):
            return "staging"
        for category in CATEGORIES:
            patterns = [c.path for c in self.config] if category == "config" else getattr(self, category)
            if any(glob_matches(pattern, path) for pattern in patterns):
                return category
        return "other"

    def copy_excludes(self) -> list[str]:
        """Return the cache paths as anchored rsync ``--exclude`` patterns (``/wp-content/cache/``)."""
        return ["/" + pattern.lstrip("/") for pattern in self.cache]

    def config_file(self, path: str) -> ConfigFile:
        """Given a config file's path, return its entry; raise UsageError if the playbook has none."""
        for item in self.config:
            if item.path == path:
                return item
        raise UsageError(f"playbook {self.name}: no config file {path!r}")

    def healthy(self, html: str) -> bool:
        """Given the homepage's HTML, return whether it holds one of the health markers (True when none)."""
        return not self.health_marker or any(marker in html for marker in self.health_marker)

    def render_vhost(self, **values: str) -> str:
        """Given server_name, listen, root, fastcgi (`unix:/path` or `host:port`; from php_socket when not given)
        and auth_file, return the nginx server block; raise UsageError if one is missing or holds characters
        nginx would read as syntax."""
        if "fastcgi" not in values and values.get("php_socket"):
            values["fastcgi"] = f"unix:{values['php_socket']}"
        missing = [
            name for name in VHOST_PLACEHOLDERS if name in _PLACEHOLDER.findall(self.vhost) and name not in values
        ]
        if missing:
            raise UsageError(f"playbook {self.name}: vhost needs {', '.join(missing)}")
        for name, value in values.items():
            if not _VHOST_VALUE.match(str(value)):
                raise UsageError(f"vhost {name} {value!r}: only letters, digits and _.:/@~+[]- are allowed")
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.vhost)

    def choose_migration(self, path: str, url: str, applies: Callable[[Command], bool]) -> Command | None:
        """Given the environment's folder and URL and a function running a probe command on its host (True when
        it exits 0), return the first applicable migration command, or None when none applies."""
        for step in self.migrate:
            probe = step.probe(path)
            if probe is None or applies(probe):
                return step.command(path, url)
        return None


# ------------------------------------------------------------------------------------------------ loading


def load_playbook(name: str, overrides: Mapping | None = None, *, directory: str | Path | None = None) -> Playbook:
    """Given a playbook name and optional overrides (deep-merged, see the module docstring), return the validated
    Playbook; raise UsageError naming every problem (with its key path) or the known playbooks if unknown."""
    data = deep_merge(read_playbook_data(name, directory), overrides or {})
    label = f"playbook {name}" + (" (with site overrides)" if overrides else "")
    return build_playbook(data, label)


def playbook_for_site(site, *, directory: str | Path | None = None) -> Playbook:
    """Given an inventory Site, return its playbook with the site's ``playbook_overrides`` merged in."""
    return load_playbook(site.playbook, site.raw.get(OVERRIDES_KEY), directory=directory)


def playbook_names(directory: str | Path | None = None) -> list[str]:
    """Return the names of the playbooks found (in ``directory``, or the default folders)."""
    folders = [Path(directory)] if directory else [d for d in PLAYBOOK_DIRS if d.is_dir()]
    return sorted({f.stem for folder in folders for f in folder.glob("*.yaml") if _NAME.match(f.stem)})


def read_playbook_data(name: str, directory: str | Path | None = None) -> dict:
    """Given a playbook name, return a fresh copy of its YAML data; raise UsageError if there is none."""
    if not _NAME.match(name or ""):
        raise UsageError(f"invalid playbook name {name!r}")
    folders = [Path(directory)] if directory else list(PLAYBOOK_DIRS)
    for folder in folders:
        file = folder / f"{name}.yaml"
        if file.is_file():
            return copy.deepcopy(_read_yaml(str(file)))
    known = ", ".join(playbook_names(directory)) or "none"
    raise UsageError(f"unknown playbook {name!r} (known: {known})")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads only true/false as booleans (YAML 1.2), so `no`, `on`
    and `off` stay strings."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)


@functools.lru_cache(maxsize=32)
def _read_yaml(file: str) -> dict:
    try:
        with open(file, encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{file}: cannot read playbook: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{file}: a playbook must be a mapping")
    return data


def deep_merge(base: Mapping, overrides: Mapping) -> dict:
    """Given data and overrides, return a new dict: mappings merge recursively, other values replace, and a None
    override removes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ------------------------------------------------------------------------------------------------ validation


class _Problems:
    """Collects 'label: key.path: message' lines while a playbook is built, so all are reported at once."""

    def __init__(self, label: str):
        self.label = label
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{self.label}: {path}: {message}")

    def take(
        self,
        data: Mapping,
        key: str,
        types: type | tuple,
        path: str = "",
        *,
        required: bool = True,
        default: Any = None,
    ) -> Any:
        """Given a mapping and a key, return its value if of the types, else record a problem and return the
        default (also for an absent optional key)."""
        where = f"{path}.{key}" if path else key
        if key not in data or data[key] is None:
            if required:
                self.add(where, "required")
            return default
        value = data[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
            self.add(where, f"must be {_type_names(types)}")
            return default
        return value

    def strings(self, data: Mapping, key: str, path: str = "", *, required: bool = True) -> tuple[str, ...]:
        """Like take() for a list of strings (a single string is accepted as a one-item list)."""
        value = self.take(data, key, (list, str), path, required=required, default=[])
        value = [value] if isinstance(value, str) else value
        where = f"{path}.{key}" if path else key
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        for index in bad:
            self.add(f"{where}[{index}]", "must be a string")
        return tuple(item for item in value if isinstance(item, str))


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    names = {str: "a string", list: "a list", dict: "a mapping", bool: "true or false", int: "an integer"}
    return " or ".join(names.get(t, t.__name__) for t in _as_tuple(types))


def build_playbook(data: dict, label: str) -> Playbook:
    """Given playbook data and a label for messages, return the Playbook; raise UsageError listing every
    problem."""
    p = _Problems(label)
    config = tuple(
        _config_file(p, item, f"config[{i}]") for i, item in enumerate(p.take(data, "config", list, default=[]))
    )
    config_paths = {item.path for item in config}
    playbook = Playbook(
        name=p.take(data, "name", str, default=""),
        title=p.take(data, "title", str, default=""),
        notes=p.take(data, "notes", str, required=False, default=""),
        detect=p.strings(data, "detect", required=False),
        code=p.strings(data, "code"),
        content=p.strings(data, "content"),
        cache=p.strings(data, "cache"),
        config=config,
        table_prefix=_table_prefix(p, p.take(data, "table_prefix", dict, default={}), config_paths),
        urls=_urls(p, p.take(data, "urls", dict, default={})),
        sanitize=sanitize_rules(p.take(data, "sanitize", dict, default={}), p),
        keys=_string_map(p, p.take(data, "keys", dict, required=False, default={}), "keys"),
        truncate=p.strings(data, "truncate", required=False),
        password_reset=_password_reset(p, data),
        mail_off=_measure(p, p.take(data, "mail_off", dict, default={}), "mail_off"),
        cron_off=_measure(p, p.take(data, "cron_off", dict, default={}), "cron_off"),
        migrate=tuple(
            _migrate_step(p, item, f"migrate[{i}]") for i, item in enumerate(p.take(data, "migrate", list, default=[]))
        ),
        health_marker=p.strings(data, "health_marker"),
        health_path=p.take(data, "health_path", str, required=False, default="/"),
        vhost=p.take(data, "vhost", str, default=""),
        data=data,
        docker_images=_docker_images(p, p.take(data, "docker", dict, required=False, default={})),
        merge=_merge(p, data["merge"]) if data.get("merge") is not None else None,
    )
    unknown = sorted(set(data) - _KNOWN_KEYS)
    for key in unknown:
        p.add(key, f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})")
    _check_vhost(p, playbook.vhost)
    if p.lines:
        raise UsageError("\n".join(p.lines))
    return playbook


_KNOWN_KEYS = {
    "name",
    "title",
    "notes",
    "detect",
    "code",
    "content",
    "cache",
    "config",
    "table_prefix",
    "urls",
    "sanitize",
    "keys",
    "truncate",
    "password_reset",
    "mail_off",
    "cron_off",
    "migrate",
    "health_marker",
    "health_path",
    "vhost",
    "docker",
    "merge",
}


def _config_file(p: _Problems, item: Any, path: str) -> ConfigFile:
    from .configfiles import FORMATS  # late: configfiles does not need playbooks, this only checks names

    if not isinstance(item, dict):
        p.add(path, "must be a mapping")
        return ConfigFile(path="", format="")
    fmt = p.take(item, "format", str, path, default="")
    if fmt and fmt not in FORMATS:
        p.add(f"{path}.format", f"unknown format {fmt!r} (known: {', '.join(sorted(FORMATS))})")
    settings = p.take(item, "set", dict, path, required=False, default={})
    for key, value in settings.items():
        if not isinstance(value, str | int | bool | float):
            p.add(f"{path}.set.{key}", "must be a string, number or true/false")
    return ConfigFile(
        path=p.take(item, "path", str, path, default=""),
        format=fmt,
        required=p.take(item, "required", bool, path, required=False, default=True),
        set=dict(settings),
        append=p.take(item, "append", str, path, required=False),
    )


def _table_prefix(p: _Problems, data: dict, config_paths: set[str]) -> TablePrefix:
    prefix = TablePrefix(
        default=p.take(data, "default", str, "table_prefix", default=""),
        file=p.take(data, "file", str, "table_prefix", required=False),
    )
    if prefix.file and prefix.file not in config_paths:
        p.add("table_prefix.file", f"{prefix.file!r} is not one of the config files")
    return prefix


def _urls(p: _Problems, data: dict) -> Urls:
    return Urls(
        columns=p.strings(data, "columns", "urls"),
        bare_host=p.take(data, "bare_host", bool, "urls", required=False, default=False),
    )


def sanitize_rules(data: Mapping, problems: _Problems | None = None) -> tuple[SanitizeRule, ...]:
    """Given a sanitize mapping ("table.column" -> rule, {rule, where, key, optional}, or a list of those),
    return its rules; raise UsageError listing the bad ones (or record them in ``problems``)."""
    p = problems or _Problems("sanitize")
    rules = []
    for column, value in data.items():
        path = f"sanitize.{column}"
        if not isinstance(column, str) or "." not in column.strip(".") or column.startswith("."):
            p.add(path, "keys are table.column")
            continue
        for index, form in enumerate(value if isinstance(value, list) else [value]):
            where = f"{path}[{index}]" if isinstance(value, list) else path
            rule = _sanitize_rule(p, column, form, where)
            if rule:
                rules.append(rule)
    if problems is None and p.lines:
        raise UsageError("\n".join(p.lines))
    return tuple(rules)


def _sanitize_rule(p: _Problems, column: str, form: Any, path: str) -> SanitizeRule | None:
    if isinstance(form, str):
        form = {"rule": form}
    if not isinstance(form, dict):
        p.add(path, "must be a rule (email, name, phone, null, hash, fixed:VALUE) or {rule, where, key, optional}")
        return None
    for extra in sorted(set(form) - {"rule", "where", "key", "optional"}):
        p.add(f"{path}.{extra}", "unknown key (known: rule, where, key, optional)")
    rule = p.take(form, "rule", str, path, default="")
    if rule and not RULE.match(rule):
        p.add(f"{path}.rule", f"unknown rule {rule!r} (email, name, phone, null, hash, fixed:VALUE)")
        return None
    where = p.take(form, "where", str, path, required=False)
    if where and ";" in where:
        p.add(f"{path}.where", "must be one SQL condition (no ';')")
    return SanitizeRule(
        column=column,
        rule=rule,
        where=where,
        key=p.take(form, "key", str, path, required=False),
        optional=p.take(form, "optional", bool, path, required=False, default=False),
    )


def _string_map(p: _Problems, data: dict, path: str) -> dict[str, str]:
    for key, value in data.items():
        if not isinstance(value, str):
            p.add(f"{path}.{key}", "must be a string")
    return {key: value for key, value in data.items() if isinstance(value, str)}


def _password_reset(p: _Problems, data: dict) -> PasswordReset | None:
    if "password_reset" not in data:
        p.add("password_reset", "required (null when the CMS has no accounts orch knows)")
    item = data.get("password_reset")
    if item is None:
        return None
    if not isinstance(item, dict):
        p.add("password_reset", "must be a mapping or null")
        return None
    scheme = p.take(item, "scheme", str, "password_reset", default="")
    if scheme and scheme not in SCHEMES:
        p.add("password_reset.scheme", f"unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    also = p.take(item, "also", dict, "password_reset", required=False, default={})
    for key, value in also.items():
        if value is not None and not isinstance(value, str | int):
            p.add(f"password_reset.also.{key}", "must be a string, a number or null")
    return PasswordReset(
        scheme=scheme,
        table=p.take(item, "table", str, "password_reset", default=""),
        column=p.take(item, "column", str, "password_reset", default=""),
        where=p.take(item, "where", str, "password_reset", required=False),
        also={k: None if v is None else str(v) for k, v in also.items()},
    )


def _measure(p: _Problems, data: dict, path: str) -> Measure:
    files = p.take(data, "files", dict, path, required=False, default={})
    for name, content in files.items():
        if not isinstance(content, str):
            p.add(f"{path}.files.{name}", "must be the file's text")
    return Measure(
        how=p.take(data, "how", str, path, default=""),
        files={k: v for k, v in files.items() if isinstance(v, str)},
        sql=p.strings(data, "sql", path, required=False),
    )


def _migrate_step(p: _Problems, item: Any, path: str) -> MigrateStep:
    if not isinstance(item, dict):
        p.add(path, "must be a mapping {run, when}")
        return MigrateStep(run=())
    when = p.take(item, "when", dict, path, required=False, default={})
    for extra in sorted(set(when) - {"command", "file"}):
        p.add(f"{path}.when.{extra}", "unknown key (known: command, file)")
    run = p.strings(item, "run", path)
    if not run:
        p.add(f"{path}.run", "must not be empty")
    return MigrateStep(
        run=run,
        when_command=p.take(when, "command", str, f"{path}.when", required=False),
        when_file=p.take(when, "file", str, f"{path}.when", required=False),
    )


def _docker_images(p: _Problems, data: dict) -> dict[str, str]:
    """The `docker` block: `images` by role for Docker copies (see orchestrator/backends/envs/docker.py)."""
    for extra in sorted(set(data) - {"images"}):
        p.add(f"docker.{extra}", "unknown key (known: images)")
    images = p.take(data, "images", dict, "docker", required=False, default={}) or {}
    for role in sorted(set(images) - set(DOCKER_IMAGE_ROLES)):
        p.add(f"docker.images.{role}", f"unknown role (known: {', '.join(DOCKER_IMAGE_ROLES)})")
    return {role: str(image) for role, image in images.items() if role in DOCKER_IMAGE_ROLES}


# ------------------------------------------------------------------------------------------------ merge

_MERGE_KEYS = {"tables", "items", "values", "files", "production"}
_TABLE_KEYS = {"refs", "owner", "owns", "derived", "where", "skip", "tree", "unique"}
_ITEM_KEYS = {"table", "title", "where", "skip", "default"}
_VALUE_KEYS = {"table", "column", "to", "where", "sibling", "pattern", "ids"}
_FILE_KEYS = {"table", "column", "path", "where", "pattern", "beside"}
_TREE_KEYS = {"parent", "left", "right", "level"}


def _merge(p: _Problems, data: Any) -> Merge | None:
    """The `merge` block (content promotion), checked: every table named is a content table, patterns compile,
    no content table is one of the production-owned ones."""
    if not isinstance(data, dict):
        p.add("merge", "must be a mapping")
        return None
    _unknown(p, data, _MERGE_KEYS, "merge")
    tables = {}
    for name, body in p.take(data, "tables", dict, "merge", default={}).items():
        tables[name] = _merge_table(p, name, body if body is not None else {}, f"merge.tables.{name}")
    items = tuple(
        _item_kind(p, kind, body, f"merge.items.{kind}")
        for kind, body in p.take(data, "items", dict, "merge", default={}).items()
    )
    values = tuple(
        _value_ref(p, body, f"merge.values[{i}]")
        for i, body in enumerate(p.take(data, "values", list, "merge", required=False, default=[]))
    )
    files = tuple(
        _file_rule(p, body, f"merge.files[{i}]")
        for i, body in enumerate(p.take(data, "files", list, "merge", required=False, default=[]))
    )
    production = p.strings(data, "production", "merge", required=False)
    merge = Merge(
        tables, tuple(i for i in items if i), tuple(v for v in values if v), tuple(f for f in files if f), production
    )
    _check_merge_tables(p, merge)
    return merge


def _unknown(p: _Problems, data: dict, known: set[str], path: str) -> None:
    for extra in sorted(set(data) - known):
        p.add(f"{path}.{extra}", f"unknown key (known: {', '.join(sorted(known))})")


def _row_match(p: _Problems, data: Any, path: str) -> RowMatch:
    """A row condition: column -> value or list of values (globs)."""
    if data is None:
        return RowMatch()
    if not isinstance(data, dict):
        p.add(path, "must be a mapping of column -> value(s)")
        return RowMatch()
    columns = []
    for column, allowed in data.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not all(isinstance(a, str | int) and not isinstance(a, bool) for a in allowed):
            p.add(f"{path}.{column}", "values must be strings or numbers")
            continue
        columns.append((str(column), tuple(str(a) for a in allowed)))
    return RowMatch(tuple(columns))


def _column_map(p: _Problems, data: Any, path: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        p.add(path, "must be a mapping of column -> table")
        return {}
    return dict(data)


def _merge_table(p: _Problems, name: str, data: Any, path: str) -> MergeTable:
    if not isinstance(data, dict):
        p.add(path, "must be a mapping")
        return MergeTable(name)
    _unknown(p, data, _TABLE_KEYS, path)
    owner = _column_map(p, data.get("owner"), f"{path}.owner")
    if len(owner) > 1:
        p.add(f"{path}.owner", "names one column")
    tree = None
    if (spec := data.get("tree")) is not None:
        if not isinstance(spec, dict) or not {"parent", "left", "right"} <= set(spec):
            p.add(f"{path}.tree", "must be a mapping with parent, left, right (and level)")
        else:
            _unknown(p, spec, _TREE_KEYS, f"{path}.tree")
            tree = Tree(
                str(spec["parent"]),
                str(spec["left"]),
                str(spec["right"]),
                str(spec["level"]) if spec.get("level") else None,
            )
    return MergeTable(
        name,
        _column_map(p, data.get("refs"), f"{path}.refs"),
        next(iter(owner.items()), None),
        _column_map(p, data.get("owns"), f"{path}.owns"),
        p.strings(data, "derived", path, required=False),
        _row_match(p, data.get("where"), f"{path}.where"),
        _row_match(p, data["skip"], f"{path}.skip") if data.get("skip") else None,
        tree,
        p.take(data, "unique", str, path, required=False),
    )


def _item_kind(p: _Problems, kind: str, data: Any, path: str) -> ItemKind | None:
    if not isinstance(data, dict):
        p.add(path, "must be a mapping")
        return None
    _unknown(p, data, _ITEM_KEYS, path)
    if not _NAME.match(kind):
        p.add(path, "an item kind is a lowercase word (letters, digits, - and _)")
    return ItemKind(
        kind,
        p.take(data, "table", str, path, default=""),
        p.take(data, "title", str, path, default=""),
        _row_match(p, data.get("where"), f"{path}.where"),
        _row_match(p, data["skip"], f"{path}.skip") if data.get("skip") else None,
        _row_match(p, data["default"], f"{path}.default") if "default" in data else None,
    )


def _pattern(p: _Problems, data: dict, key: str, path: str) -> str | None:
    pattern = p.take(data, key, str, path, required=False)
    if pattern is not None:
        try:
            re.compile(pattern.encode())
        except re.error as exc:
            p.add(f"{path}.{key}", f"not a regular expression: {exc}")
            return None
    return pattern


def _value_ref(p: _Problems, data: Any, path: str) -> ValueRef | None:
    if not isinstance(data, dict):
        p.add(path, "must be a mapping")
        return None
    _unknown(p, data, _VALUE_KEYS, path)
    return ValueRef(
        p.take(data, "table", str, path, default=""),
        p.take(data, "column", str, path, default=""),
        p.take(data, "to", str, path, default=""),
        _row_match(p, data.get("where"), f"{path}.where"),
        _row_match(p, data["sibling"], f"{path}.sibling") if data.get("sibling") else None,
        _pattern(p, data, "pattern", path),
        _pattern(p, data, "ids", path),
    )


def _file_rule(p: _Problems, data: Any, path: str) -> FileRule | None:
    if not isinstance(data, dict):
        p.add(path, "must be a mapping")
        return None
    _unknown(p, data, _FILE_KEYS, path)
    target = p.take(data, "path", str, path, default="")
    if target and "{}" not in target:
        p.add(f"{path}.path", "must hold {} (where the match goes)")
    beside = p.take(data, "beside", str, path, required=False)
    if beside not in (None, "first"):
        p.add(f"{path}.beside", "must be `first`")
    return FileRule(
        p.take(data, "table", str, path, default=""),
        p.take(data, "column", str, path, default=""),
        target,
        _row_match(p, data.get("where"), f"{path}.where"),
        _pattern(p, data, "pattern", path),
        beside,
    )


def ref_table(target: str) -> str:
    """Given a reference's target (`table`, or `table.column` for a name in another column), return the table."""
    return target.rsplit(".", 1)[0] if "." in target.replace("{prefix}", "") else target


def _check_merge_tables(p: _Problems, merge: Merge) -> None:
    """Every table a merge names must be one of its content tables, and none may be production's."""
    known = set(merge.tables)
    named = [
        (f"merge.tables.{t.name}.{what}.{column}", ref_table(target))
        for t in merge.tables.values()
        for what, mapping in (("refs", t.refs), ("owns", t.owns))
        for column, target in mapping.items()
    ]
    named += [(f"merge.tables.{t.name}.owner", t.owner[1]) for t in merge.tables.values() if t.owner]
    named += [(f"merge.items.{i.kind}.table", i.table) for i in merge.items]
    named += [(f"merge.values[{n}]", ref) for n, v in enumerate(merge.values) for ref in (v.table, v.to)]
    named += [(f"merge.files[{n}].table", f.table) for n, f in enumerate(merge.files)]
    for where, table in named:
        if table and table not in known:
            p.add(where, f"{table!r} is not one of merge.tables")
    for table in known:
        if any(fnmatch.fnmatchcase(table, pattern) for pattern in merge.production):
            p.add(f"merge.tables.{table}", "is one of merge.production: production's tables are never merged")


def _check_vhost(p: _Problems, vhost: str) -> None:
    if not vhost:
        return
    for needed in ("{server_name}", "{listen}", "{root}", "X-Robots-Tag", "auth_basic"):
        if needed not in vhost:
            p.add("vhost", f"must contain {needed}")
    for name in re.findall(r"\{([a-z_]+)\}", vhost):
        if name not in VHOST_PLACEHOLDERS:
            p.add("vhost", f"unknown placeholder {{{name}}} (known: {', '.join(VHOST_PLACEHOLDERS)})")


# ------------------------------------------------------------------------------------------------ globs


@functools.lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern:
    """Given a glob (see the module docstring), return a regex matching a path it covers (or a descendant)."""
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif body[i] == "*":
            out.append("[^/]*")
            i += 1
        elif body[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(body[i]))
            i += 1
    return re.compile("".join(out) + "(?:/.*)?", re.S)


def glob_matches(pattern: str, path: str) -> bool:
    """Given a glob and a relative path, return whether the glob covers the path (itself or a parent folder)."""
    path = path.strip("/")
    if path.startswith("./"):
        path = path[2:]
    return bool(_glob_regex(pattern).fullmatch(path))
