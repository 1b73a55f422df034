"""Render the inventory reference (docs/inventory.md) from schema.yaml, so the doc cannot drift from what the
loader accepts: `python -m orchestrator.config.docgen > docs/inventory.md` (a unit test compares the two)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from .load import SECRET_REF, definition, resolve

SECTIONS = [  # (definition, heading)
    ("inventory", "Inventory file (`inventory.yaml`)"),
    ("site", "Site files (`sites/NAME.yaml`)"),
    ("secret", "Secrets"),
]

INTRO = """\
<!-- Generated from orchestrator/config/schema.yaml by `python -m orchestrator.config.docgen > docs/inventory.md`.
     Do not edit by hand: change the schema and regenerate. -->

# Inventory reference

The inventory is one global file (`inventory.yaml`, see `inventory.example.yaml`) and one file per site in its
`sites` folder (see `sites/example.yaml`). `orch` validates every file before doing anything and lists every
problem at once, as `file: key.path: message`.

In key paths, `<name>` stands for a name you choose (a host, a storage, an environment...) and `[]` for each
item of a list. Keys marked *secret* take a plain string or a reference: see [Secrets](#secrets).
"""


@dataclass(frozen=True)
class Key:
    """One documented key: its dotted path, its (resolved) schema node, and how it is written."""

    path: str
    node: dict
    required: bool
    secret: bool


def keys_below(node: dict, prefix: str) -> Iterator[Key]:
    """Given a resolved schema node and the key path leading to it, yield every key below it, depth first, in
    schema order: properties, then a map's `<name>` entries, then a list's items."""
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        yield from _key_and_below(f"{prefix}.{name}" if prefix else name, child, name in required)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _key_and_below(f"{prefix}.<name>", node["additionalProperties"], False)
    items = resolve(node["items"]) if isinstance(node.get("items"), dict) else {}
    if "properties" in items:
        yield from keys_below(items, f"{prefix}[]")


def _key_and_below(path: str, raw: dict, required: bool) -> Iterator[Key]:
    secret = raw.get("$ref") == SECRET_REF
    node = resolve(raw)
    yield Key(path, node, required, secret)
    if not secret:  # a secret's own keys (env, file, command) are documented once, in the Secrets section
        yield from keys_below(node, path)


def type_text(node: dict) -> str:
    """Given a resolved schema node, return its type in words: `list of string`, `map of name → object`..."""
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    words = []
    for kind in types:
        if kind == "array" and isinstance(node.get("items"), dict):
            words.append(f"list of {type_text(resolve(node['items']))}")
        elif kind == "object" and isinstance(node.get("additionalProperties"), dict):
            words.append(f"map of name → {type_text(resolve(node['additionalProperties']))}")
        else:
            words.append(kind)
    text = " or ".join(words)
    if "enum" in node:
        text += ": " + ", ".join(f"`{value}`" for value in node["enum"])
    return text


def render_key(key: Key) -> str:
    """Given a documented key, return its Markdown entry."""
    facts = ["*secret*" if key.secret else type_text(key.node)]
    if key.required:
        facts.append("**required**")
    if key.node.get("default") not in (None, {}):  # an empty mapping default is an implementation detail
        facts.append(f"default `{_inline(key.node['default'])}`")
    return (
        f"### `{key.path}`\n\n{' · '.join(facts)}\n\n{key.node['description']}\n\n"
        f"Example: `{_inline(key.node['example'])}`\n"
    )


def _inline(value) -> str:
    """Given a YAML value, return it on one line; JSON is valid YAML flow syntax."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render() -> str:
    """Return the whole reference document."""
    parts = [INTRO]
    for name, heading in SECTIONS:
        node = definition(name)
        parts.append(f"## {heading}\n\n{node['description']}\n")
        parts.extend(render_key(key) for key in keys_below(node, ""))
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
