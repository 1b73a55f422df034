"""Comparison verdicts and the promotion's visual check, without a browser."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.actions import compare
from orchestrator.errors import OperationFailed


def row(path, viewport, percent, threshold=5.0):
    return {
        "path": path,
        "viewport": viewport,
        "percent": percent,
        "threshold": threshold,
        "exceeded": threshold is not None and percent > threshold,
    }


def test_exceeded_names_every_page_above_the_threshold():
    rows = [row("/", "desktop", 46.31), row("/", "mobile", 1.2), row("/shop/", "mobile", 5.01)]

    assert compare.exceeded(rows) == (
        "2 screenshot(s) changed more than 5 %: / (desktop) 46.3 %, /shop/ (mobile) 5.0 %"
    )
    assert compare.exceeded([row("/", "desktop", 5.0)]) is None
    assert compare.exceeded([row("/", "desktop", 90.0, threshold=None)]) is None


def prod(threshold=None):
    site = SimpleNamespace(name="shop", visual={}, verify={}, promote={"visual_threshold": threshold})
    return SimpleNamespace(
        site=site, env=SimpleNamespace(name="production", url="https://shop.example"), host=SimpleNamespace(web=None)
    )


def test_without_a_threshold_a_promotion_takes_no_screenshot(monkeypatch):
    monkeypatch.setattr(compare, "shoot_set", lambda *a, **k: pytest.fail("no screenshot expected"))
    look = compare.AroundPromotion(SimpleNamespace(url="sqlite:////tmp/x/oplog.db"), object(), prod(), None)

    look.before()
    look.after()


def test_a_page_above_the_threshold_fails_the_promotions_visual_check(monkeypatch):
    shots = {"before": ["b"], "after": ["a"]}
    monkeypatch.setattr(compare, "shoot_set", lambda op, root, subject, paths, label: shots[label])
    monkeypatch.setattr("orchestrator.backends.visual.urls.check_paths", lambda site, fetch, base: ["/"])
    monkeypatch.setattr(
        compare,
        "diff_sets",
        lambda op, root, before, after, threshold: (
            [row("/", "desktop", 46.3, threshold)] if (before, after) == (["b"], ["a"]) else []
        ),
    )
    look = compare.AroundPromotion(SimpleNamespace(url="sqlite:////tmp/x/oplog.db"), object(), prod(5), 5)

    look.before()
    with pytest.raises(OperationFailed, match=r"visual check failed: .* / \(desktop\) 46.3 %"):
        look.after()
