"""A promotion or a rollback health-checks production through its `url`: without one, both are refused while
nothing has changed yet (a rollback used to switch back first, then fail on the missing URL)."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.actions.promote import plan_promote
from orchestrator.actions.rollback import plan_rollback
from orchestrator.config import load_inventory
from orchestrator.errors import UsageError


@pytest.fixture
def inventory(tmp_path):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        name: shop
        backup: {{enabled: false}}
        environments:
          production: {{host: here, path: {tmp_path}/www}}
          dev: {{host: here, path: {tmp_path}/dev}}
        """)
    )
    (tmp_path / "inventory.yaml").write_text("oplog: sqlite:///oplog.db\nhosts: {here: {connector: local}}\n")
    return load_inventory(tmp_path / "inventory.yaml")


def test_a_rollback_without_a_production_url_is_refused_before_the_host_is_asked(inventory):
    with pytest.raises(UsageError, match="shop/production has no `url`: a rollback needs it for its health check"):
        plan_rollback(inventory, "shop", task="14883")


def test_a_promotion_without_a_production_url_is_refused_as_before(inventory):
    with pytest.raises(UsageError, match="shop/production has no `url`: a promotion needs it for its health check"):
        plan_promote(None, inventory, "shop", source="dev", ref=None, task="14883")
