"""Inventory loading: YAML files -> schema validation (every problem, with its file and key path) -> secrets
wrapped -> defaults merged -> cross-references checked -> the typed model.

Nothing here raises on the first problem: each file is read and validated and all problem lines are collected,
so a user fixes a broken inventory in one pass. A broken site file costs that site alone when the caller asks
for it (`partial=True`): the valid sites load and the broken ones are listed in `Inventory.broken`.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from orchestrator.errors import InventoryError, UsageError

from .model import Inventory, build_inventory, oplog_url
from .secrets import Secret

if TYPE_CHECKING:  # jsonschema is imported when a file is validated: `orch log` reads only `oplog`, without it
    from jsonschema import Draft202012Validator, ValidationError

SCHEMA_FILE = Path(__file__).with_name("schema.yaml")
SECRET_REF = "#/$defs/secret"  # noqa: S105 -- a schema pointer, not a password
# Bounds for one YAML file. A real site file has a few hundred nodes; aliases are expanded by whatever walks
# the data (validation, merging), so an "alias bomb" of a few hundred bytes would expand to billions of nodes.
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 50_000
MAX_DEPTH = 64


def load_inventory(path: str | Path, *, partial: bool = False) -> Inventory:
    """Given the inventory file's path, return the Inventory with every site of its sites folder; raise
    InventoryError listing every problem of every file (syntax, schema, cross-references) at once.

    With partial=True a broken site file costs that site alone: the Inventory holds the valid sites, and
    `Inventory.broken` maps each broken file's site name to its problem lines. Problems of the inventory file
    itself (or a missing sites folder) are raised either way.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise InventoryError(f"{path}: inventory file not found")
    base = path.parent
    inventory, inventory_problems = read_file(path, "inventory", base)
    folder = sites_folder(inventory, base)
    sites, broken = read_sites(folder, base)
    if inventory_problems or not folder.is_dir():
        # Cross-references need a valid inventory file; checking against a broken one would only add noise.
        raise InventoryError(_unique(inventory_problems + _lines(broken)))
    defaults = copy.deepcopy(inventory.get("defaults", {}))
    merged = {file: fill_defaults(definition("site"), deep_merge(defaults, site)) for file, site in sites.items()}
    fill_defaults(definition("inventory"), _default_oplog(inventory))
    global_problems = check_inventory(inventory, path.name)
    for file, site in sites.items():
        problems = check_site(file, site, merged[file], inventory, base)
        if problems:
            broken.setdefault(file.stem, []).extend(problems)
    if global_problems or (broken and not partial):
        raise InventoryError(_unique(global_problems + _lines(broken)))
    valid = {file: site for file, site in merged.items() if file.stem not in broken}
    return build_inventory(
        path, inventory, defaults, valid, broken={name: _unique(lines) for name, lines in sorted(broken.items())}
    )


def load_oplog_url(path: str | Path) -> str:
    """Given the inventory file's path, return the oplog URL it names (or the default). Only that file, and in
    it only `oplog`, is read: `orch log` and `orch report` start quickly on a large fleet and work while a site
    file or another part of the inventory is broken (the commands using those say so). Raise InventoryError if
    the file cannot be read, or its `oplog` is not an oplog URL."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise InventoryError(f"{path}: inventory file not found")
    label = display_name(path, path.parent)
    try:
        data = read_yaml(path)
    except _FileProblem as exc:
        raise InventoryError(f"{label}: {exc}") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{label}: the file is empty" if data is None else f"{label}: expected a mapping")
    node = definition("inventory")["properties"]["oplog"]
    url = _default_oplog(data).get("oplog", node["default"])
    if not isinstance(url, str) or not _strict(node["pattern"]).search(url):
        raise InventoryError(f"{label}: oplog: not an oplog URL, e.g. {node['example']!r}")
    return oplog_url(url, path.parent)


def _lines(broken: dict[str, list[str]]) -> list[str]:
    return [line for name in sorted(broken) for line in broken[name]]


# ---------------------------------------------------------------- files


def read_file(file: Path, name: str, base: Path) -> tuple[Any, list[str]]:
    """Given a YAML file, the schema definition it must follow and the inventory's folder, return its data (with
    Secret objects in place of secret values) and no problems, or whatever was parsed and the problem lines."""
    label = display_name(file, base)
    try:
        data = read_yaml(file)
    except _FileProblem as exc:
        return None, [f"{label}: {exc}"]
    problems = validate(data, name, label)
    if not problems:
        wrap_secrets(definition(name), data, label, base)
    return data, problems


def read_sites(folder: Path, base: Path) -> tuple[dict[Path, dict], dict[str, list[str]]]:
    """Given the sites folder and the inventory's folder, return the data of each valid site file by path, and
    the problem lines of each broken one by its site name (the file name without its suffix)."""
    files, broken = site_files_in(folder, base)
    sites = {}
    for file in files:
        data, problems = read_file(file, "site", base)
        if problems:
            broken.setdefault(file.stem, []).extend(problems)
        else:
            sites[file] = data
    return sites, broken


def sites_folder(inventory: Any, base: Path) -> Path:
    """Given the inventory file's data (possibly invalid) and its folder, return the sites folder it names."""
    value = inventory.get("sites") if isinstance(inventory, dict) else None
    return base / (value if isinstance(value, str) else definition("inventory")["properties"]["sites"]["default"])


def site_files_in(folder: Path, base: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """Given the sites folder, return its site files (`*.yaml`, sorted) and the problems of the others by site
    name (a `.yml` file; a missing folder under the name "")."""
    if not folder.is_dir():
        return [], {"": [f"{display_name(folder, base)}/: sites folder not found (see `sites` in the inventory file)"]}
    files = sorted(file for file in folder.iterdir() if not file.name.startswith("."))  # editor lock files
    # A silently ignored site would silently go without backups: a `.yml` is an error, not a skip.
    broken = {
        file.stem: [f"{display_name(file, base)}: site files must be named *.yaml"]
        for file in files
        if file.suffix == ".yml"
    }
    return [file for file in files if file.suffix == ".yaml" and file.is_file()], broken


def display_name(file: Path, base: Path) -> str:
    """Given a path and the inventory's folder, return the path relative to that folder when inside it."""
    try:
        return str(file.relative_to(base))
    except ValueError:
        return str(file)


class _FileProblem(Exception):
    """A file could not be read or parsed; the message says where in it and why."""


if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:  # libyaml parses ~7x faster where present
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLoader(_SafeLoader):
    """SafeLoader with YAML 1.2 booleans (only true/false, so `on:` and `no` stay strings) that refuses
    duplicate keys (PyYAML keeps the last one silently, hiding a copy-paste slip) and documents that expand,
    through aliases, to more than MAX_NODES nodes or refer to themselves."""

    def get_single_node(self):
        node = super().get_single_node()
        if expanded_size(node) > MAX_NODES:
            raise _FileProblem(
                f"too large once its aliases are expanded (over {MAX_NODES} nodes): "
                "write the values out, or use fewer aliases"
            )
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def expanded_size(root: yaml.Node | None, limit: int = MAX_NODES) -> int:
    """Given a composed YAML node graph (aliases are shared nodes), return how many nodes the document has once
    every alias is expanded, counting no further than just past `limit`. Raise _FileProblem if an alias
    refers to a node containing it, or the values nest deeper than MAX_DEPTH (validating them would exhaust
    Python's recursion). Walks each shared node once, so it is cheap even for an alias bomb."""
    if root is None:
        return 0
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            children = _node_children(node)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(child)] for child in children))
            depths[key] = 1 + max((depths[id(child)] for child in children), default=0)
            if depths[key] > MAX_DEPTH:
                raise _FileProblem(f"nested deeper than {MAX_DEPTH} levels")
        elif key in open_nodes:
            mark = node.start_mark
            raise _FileProblem(
                f"line {mark.line + 1}, column {mark.column + 1}: an alias refers to a value that contains it"
            )
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _node_children(node))
    return sizes[id(root)]


def read_yaml(file: Path) -> Any:
    """Given a YAML file, return its data; raise _FileProblem (with line and column when known) if it cannot
    be read or parsed, is larger than MAX_FILE_BYTES or expands to more than MAX_NODES nodes."""
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise _FileProblem(f"larger than {MAX_FILE_BYTES // 1024} KiB: not an inventory file")
        text = raw.decode("utf-8")
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 -- YamlLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        raise _FileProblem(f"{where}{exc.problem}{context}") from None
    except yaml.YAMLError as exc:
        raise _FileProblem(f"cannot parse YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _FileProblem(f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    except RecursionError:
        raise _FileProblem("nested too deeply") from None
    except OSError as exc:
        raise _FileProblem(f"cannot read: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- schema


@functools.cache
def load_schema() -> dict:
    """Return the inventory schema (schema.yaml) as a dict."""
    with SCHEMA_FILE.open(encoding="utf-8") as stream:
        return yaml.load(stream, Loader=YamlLoader)  # noqa: S506 -- YamlLoader is a SafeLoader


def check_name(value: str, what: str) -> str:
    """Given a site or environment name from the command line and what it names, return it; raise UsageError if
    it does not have the form of a name (the schema's `name`: lowercase letters, digits, `-`, `_`)."""
    if not _strict(definition("name")["pattern"]).search(value):
        raise UsageError(f"{value!r} is not a valid {what} name (lowercase letters, digits, - and _)")
    return value


def definition(name: str) -> dict:
    """Given a definition name (`inventory`, `site`, `host`...), return its schema node."""
    return load_schema()["$defs"][name]


def resolve(node: dict) -> dict:
    """Given a schema node, return it with any `$ref` followed; the node's own keys (a description, an
    example) win over the referenced definition's."""
    while "$ref" in node:
        target = definition(node["$ref"].removeprefix("#/$defs/"))
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def _whole_pattern(validator, pattern: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    """The `pattern` keyword with ECMA-262's `$`, which matches only at the very end: Python's `$` also matches
    before a trailing newline, so `name: "shop\\n"` would pass `^[a-z0-9][a-z0-9_-]*$`."""
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not _strict(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _strict(pattern: str) -> re.Pattern:
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator, validators

    strict = validators.extend(Draft202012Validator, {"pattern": _whole_pattern})
    return strict({**load_schema(), "$ref": f"#/$defs/{name}"})


def children(node: dict, data: Any) -> Iterator[tuple[str | int, dict]]:
    """Given a resolved schema node and data valid against it, yield (key, child schema) for each child present
    in data. The child schema is not resolved, so a `$ref` to the secret definition stays recognisable."""
    if isinstance(data, dict):
        properties, values = node.get("properties", {}), node.get("additionalProperties")
        for key in data:
            child = properties.get(key, values)
            if isinstance(child, dict):
                yield key, child
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for index in range(len(data)):
            yield index, node["items"]


def wrap_secrets(node: dict, data: Any, label: str, base: Path, path: tuple = ()) -> Any:
    """Given a schema node, data valid against it, the file's display name and the inventory's folder, replace
    every secret value in data by a Secret that knows where it was written (in place); return data."""
    for key, child in children(resolve(node), data):
        if child.get("$ref") == SECRET_REF:
            if not isinstance(data[key], Secret):  # a mapping reached twice through a YAML alias is wrapped once
                data[key] = Secret(data[key], f"{label}: {format_path([*path, key])}", base)
        else:
            wrap_secrets(child, data[key], label, base, (*path, key))
    return data


def fill_defaults(node: dict, data: Any) -> Any:
    """Given a schema node and data valid against it, add each absent key's schema `default` (in place, at
    every depth, including inside defaults just added); return data."""
    node = resolve(node)
    if isinstance(data, dict):
        for key, child in node.get("properties", {}).items():
            child = resolve(child)
            if key not in data and "default" in child:
                data[key] = copy.deepcopy(child["default"])
    for key, child in children(node, data):
        fill_defaults(child, data[key])
    return data


def deep_merge(defaults: dict, data: dict) -> dict:
    """Given inventory defaults and a site's data, return a new dict merging them key by key: the site wins,
    mappings merge recursively, anything else (lists, Secrets) is replaced whole."""
    merged = copy.deepcopy(defaults)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _default_oplog(inventory: dict) -> dict:
    """Given the inventory data, set `oplog` to $ORCH_STATE_DIR/oplog.db when unset and that variable is set
    (the state folder orch also keeps trusted host keys in); return the data."""
    state_dir = os.environ.get("ORCH_STATE_DIR")
    if "oplog" not in inventory and state_dir:
        inventory["oplog"] = f"sqlite:///{Path(state_dir).absolute() / 'oplog.db'}"
    return inventory


# ---------------------------------------------------------------- validation messages


def validate(data: Any, name: str, label: str) -> list[str]:
    """Given a file's data, the schema definition it must follow and its display name, return one line per
    problem, `label: key.path: message`, sorted by key path (empty if valid)."""
    if data is None:
        return [f"{label}: the file is empty"]
    errors = sorted(_validator(name).iter_errors(data), key=lambda error: [str(p) for p in error.absolute_path])
    # One `required` error per missing key, but describe_error names them all: drop the repeats.
    return _unique([f"{label}: {line}" for error in errors for line in describe_error(error)])


def describe_error(error: ValidationError) -> list[str]:
    """Given a jsonschema error, return the `key.path: message` lines for it (several for unknown keys)."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = _schema(error).get("properties", {})
        allowed = ", ".join(sorted(known))
        return [_at([*path, key], f"unknown key (allowed: {allowed})") for key in error.instance if key not in known]
    if error.validator == "required":
        required: Any = error.validator_value  # jsonschema types both loosely: a list of keys, the mapping checked
        given: Any = error.instance
        return [_at(path, f"missing required key {key!r}") for key in required if key not in given]
    if "propertyNames" in error.absolute_schema_path:
        return [_at(path, f"key {_message(error)}")]
    return [_at(path, _message(error))]


_TYPE_WORDS = {
    "null": "nothing",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
}


def _schema(error: ValidationError) -> Mapping[str, Any]:
    """Given a jsonschema error, return the schema node it is about (jsonschema also types it as a bool, which
    our schema never uses for a node)."""
    return error.schema if isinstance(error.schema, Mapping) else {}


def _message(error: ValidationError) -> str:
    """Given a jsonschema error, return its message in the inventory's words."""
    value: Any = error.validator_value  # what the failing keyword asked for, e.g. the types of `type`
    schema = _schema(error)
    if error.validator == "not" and value == {}:  # a key switched off for some `type`
        return "not used with the `type` set here"
    if error.validator == "type":
        wanted = value if isinstance(value, list) else [value]
        # The value itself is not shown: it may be a secret typed in plain.
        return f"expected {' or '.join(_TYPE_WORDS[t] for t in wanted)}, got {_TYPE_WORDS[_type_of(error.instance)]}"
    if error.validator == "pattern" and "example" in schema:
        return f"{error.instance!r} does not match the expected form, e.g. {schema['example']!r}"
    if error.validator in ("minProperties", "maxProperties") and schema.get("maxProperties") == 1:
        return f"expected exactly one of: {', '.join(sorted(schema.get('properties', {})))}"
    return error.message


def _type_of(value: Any) -> str:
    """Given a YAML value, return its JSON Schema type name."""
    from jsonschema import Draft202012Validator

    checker = Draft202012Validator.TYPE_CHECKER
    return next(name for name in _TYPE_WORDS if checker.is_type(value, name))


def _at(path: list, message: str) -> str:
    return f"{format_path(path)}: {message}" if path else message


def format_path(parts: list) -> str:
    """Given key path parts, return them dotted, list indexes in brackets: `notify[0].type`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


# ---------------------------------------------------------------- cross-references


def check_inventory(inventory: dict, label: str) -> list[str]:
    """Given the inventory file's data, return problems with its own cross-references."""
    storage = inventory["defaults"].get("backup", {}).get("storage")
    return _unknown(storage, inventory["storage"], "storage", f"{label}: defaults.backup.storage")


def check_site(file: Path, site: dict, merged: dict, inventory: dict, base: Path) -> list[str]:
    """Given a site file, its data as written, its data merged with defaults and the inventory's data, return
    problems: a name not matching the file, unknown hosts or storage, backups enabled without a storage."""
    label = display_name(file, base)
    problems = []
    if site["name"] != file.stem:
        problems.append(f"{label}: name: {site['name']!r} does not match the file name (expected {file.stem!r})")
    for env, item in site["environments"].items():
        if item.get("host") is not None or item.get("target") != "docker":
            problems += _unknown(item["host"], inventory["hosts"], "host", f"{label}: environments.{env}.host")
        if item.get("target") == "docker":
            problems += _docker_host_problems(item, inventory.get("docker", {}), f"{label}: environments.{env}")
    storage = site.get("backup", {}).get("storage")
    problems += _unknown(storage, inventory["storage"], "storage", f"{label}: backup.storage")
    if merged["backup"]["enabled"] and merged["backup"].get("storage") is None:
        problems.append(
            f"{label}: backup.storage: not set, here or in the inventory's defaults.backup.storage "
            "(or set backup.enabled: false)"
        )
    return problems


def _docker_host_problems(env: dict, docker: dict, where: str) -> list[str]:
    """Given an environment whose target is docker, the inventory's docker hosts and where it was written, return
    a problem line if its docker host is unknown or, unnamed, ambiguous."""
    name = (env.get("docker") or {}).get("host")
    if name is not None:
        return _unknown(name, docker, "docker host", f"{where}.docker.host")
    if len(docker) != 1:
        return [
            f"{where}.docker.host: not set and the inventory has {len(docker) or 'no'} docker hosts "
            f"({', '.join(sorted(docker)) or 'add one under `docker`'})"
        ]
    return []


def _unknown(name: str | None, known: dict, what: str, where: str) -> list[str]:
    """Given a name (or None), the names it must be one of and where it was written, return a problem line
    if it is not known."""
    if name is None or name in known:
        return []
    return [f"{where}: unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})"]
