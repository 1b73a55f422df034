"""The schema is data: well-formed, fully described, rendered to the committed doc, and the examples obey it."""

from __future__ import annotations

from pathlib import Path

from jsonschema import Draft202012Validator

from orchestrator.config import load_inventory
from orchestrator.config.docgen import SECTIONS, keys_below, render
from orchestrator.config.load import definition, load_schema

ROOT = Path(__file__).resolve().parents[3]


def documented_keys():
    return [key for name, _ in SECTIONS for key in keys_below(definition(name), "")]


def test_the_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(load_schema())


def test_every_key_has_a_type_a_description_and_an_example():
    missing = [
        f"{key.path}: {field}"
        for key in documented_keys()
        for field in ("type", "description", "example")
        if field not in key.node
    ]

    assert missing == []


def test_every_object_says_which_keys_it_allows():
    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object" or "object" in (node.get("type") or []):
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    assert [node["description"] for node in objects(load_schema()) if "additionalProperties" not in node] == []


def test_every_example_and_default_is_valid_for_its_key():
    def problems(key, field):
        node = {**key.node, "$defs": load_schema()["$defs"]}
        return [
            f"{key.path} {field}: {error.message}" for error in Draft202012Validator(node).iter_errors(key.node[field])
        ]

    assert [
        line
        for key in documented_keys()
        for field in ("example", "default")
        if field in key.node
        for line in problems(key, field)
    ] == []


def test_the_committed_reference_doc_is_up_to_date():
    committed = (ROOT / "docs" / "inventory.md").read_text()

    assert committed == render(), "regenerate: python -m orchestrator.config.docgen > docs/inventory.md"


def test_the_example_inventory_and_site_load(monkeypatch):
    monkeypatch.delenv("ORCH_STATE_DIR", raising=False)
    inventory = load_inventory(ROOT / "inventory.example.yaml")
    site = inventory.site("example")

    assert set(inventory.storage) == {"offsite", "local"} and set(inventory.hosts) == {"web1", "stage1"}
    assert site.playbook == "wordpress" and set(site.environments) == {"production", "staging"}
    assert site.env("production").database.password.where == (
        "sites/example.yaml: environments.production.database.password"
    )
    assert site.backup.retention == {"daily": 14, "weekly": 4, "monthly": 6}
