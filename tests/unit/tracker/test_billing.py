"""Rates and costs: time per task, storage per site (`orch usage` prices what it reads)."""

from __future__ import annotations

import json
import textwrap

import pytest

from orchestrator.billing import Rates, enclosing, total_seconds
from orchestrator.cli import main


def test_time_and_storage_are_priced_only_when_a_rate_is_given():
    rates = Rates(currency="EUR", hourly_rate=90, storage_gb_month=0.05)
    assert rates.time_cost(1800) == 45.0 and rates.money(45.0) == "45.00 EUR"
    assert rates.storage_cost(3 * 10**9) == 0.15
    assert Rates().time_cost(1800) is None and Rates().money(None) == ""


def op(n, start, end, actor="anna@ops1", site="shop"):
    return {
        "id": n,
        "actor": actor,
        "host": "ops1",
        "site": site,
        "duration": end - start,
        "started_at": f"2026-11-27T10:00:{start:02d}",
        "finished_at": f"2026-11-27T10:00:{end:02d}",
    }


def test_an_operation_inside_another_is_counted_once():
    ops = [op(1, 0, 30), op(2, 5, 10), op(3, 40, 50), op(4, 6, 8, actor="bob@ops2"), op(5, 41, 45, site="blog")]
    assert enclosing(ops) == {2: 1}
    assert total_seconds(ops) == 30 + 10 + 2 + 4


def test_orch_usage_prices_the_storage(tmp_path, capsys):
    repo = tmp_path / "backups"
    (repo / "shop").mkdir(parents=True)
    (repo / "shop" / "data").write_bytes(b"x" * 1_000_000)
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        name: shop
        environments: {{production: {{host: here, path: {tmp_path}/www}}}}
        billing: {{storage_gb_month: 2000}}
        """)
    )
    (tmp_path / "inventory.yaml").write_text(
        textwrap.dedent(f"""\
        oplog: sqlite:///oplog.db
        hosts: {{here: {{connector: local}}}}
        storage: {{local: {{type: local, path: {repo}, password: pw}}}}
        defaults: {{backup: {{storage: local}}}}
        billing: {{currency: EUR, storage_gb_month: 0.05}}
        """)
    )
    with pytest.raises(SystemExit) as done:
        main(["-i", str(tmp_path / "inventory.yaml"), "--json", "usage"])
    assert done.value.code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["bytes"] >= 1_000_000 and row["currency"] == "EUR"
    assert row["monthly_cost"] == round(row["bytes"] / 10**9 * 2000, 2)
