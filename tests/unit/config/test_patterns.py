"""Validators match whole values: a `$`-anchored pattern accepts a trailing newline in Python (`777\\n` was once a
task nobody could find), so the code anchors with `\\Z` and the schema's `$` is read as ECMA-262 means it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_inventory_load import SITE, problems_of, write_inventory

from orchestrator.tasks import is_task

PACKAGE = Path(__file__).parents[3] / "orchestrator"
DOLLAR_ANCHORED = re.compile(r"""re\.compile\(\s*r?b?(["'])\^.*?(?<!\\)\$\1""")


def test_no_regex_in_the_code_is_anchored_with_a_dollar():
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if DOLLAR_ANCHORED.search(line)
    ]
    assert found == [], "anchor with \\Z (or use fullmatch): `$` also matches before a trailing newline"


@pytest.mark.parametrize("value", ["14883", "1", "0042"])
def test_a_task_number_is_digits(value):
    assert is_task(value)


@pytest.mark.parametrize("value", ["777\n", "-1", "abc", "14883; rm -rf /", "", " 1", "1" * 21, "１２"])
def test_anything_else_is_not_a_task(value):
    assert not is_task(value)


def test_the_schema_refuses_a_trailing_newline_in_a_patterned_value(tmp_path):
    site = SITE.replace("name: shop", 'name: "shop\\n"').replace("  staging:", '  "stage\\n":')
    problems = problems_of(write_inventory(tmp_path, shop=site))
    assert "sites/shop.yaml: name: 'shop\\n' does not match the expected form, e.g. 'staging-2'" in problems
    assert any(line.startswith("sites/shop.yaml: environments: key 'stage\\n' does not match") for line in problems)
