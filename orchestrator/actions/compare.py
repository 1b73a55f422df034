"""`orch compare`: how much two sets of screenshots differ, per page and width, with a picture of where.

A set is the shots one operation took under one label: `orch snap` takes one (labelled with the environment),
a promotion takes `before` and `after`. The comparison is an operation of its own: each page's diff image is
kept beside the oplog and recorded as a `visual-diff` artifact, which `orch report` shows next to the two shots.
"""

from __future__ import annotations

from typing import Any

from orchestrator.backends.visual import shots as store
from orchestrator.errors import OperationFailed, UsageError
from orchestrator.oplog.run import locked_operation

from .snap import plan_snap, shoot_set


def diff_sets(
    op, shots_root, before: list[store.Shot], after: list[store.Shot], *, threshold: float | None, label: str = "diff"
) -> list[dict]:
    """Given two sets of shots, compare each page and width found in both; save and record each diff image.
    Return one row per page and width: percent changed, the three files, and whether it exceeds `threshold`."""
    from orchestrator.backends.visual import diff

    earlier = {shot.key: shot for shot in before}
    rows = []
    with op.step(f"compare {len(after)} screenshot(s)") as step:
        folder = store.folder(shots_root, op.id, label).relative_to(shots_root)
        for shot in after:
            old = earlier.get(shot.key)
            if old is None:
                step.output(f"{shot.path} {shot.viewport}: no earlier shot to compare with\n")
                continue
            found = diff.compare(
                diff.load(str(shots_root / old.file)), diff.load(str(shots_root / shot.file)), old.ignore + shot.ignore
            )
            row: dict[str, Any] = {
                "path": shot.path,
                "viewport": shot.viewport,
                "percent": found.percent,
                "changed": found.changed,
                "compared": found.compared,
                "before": old.file,
                "after": shot.file,
                "diff": f"{folder}/{store.slug(shot.path)}-{shot.viewport}.png",
                "threshold": threshold,
                "exceeded": threshold is not None and found.percent > threshold,
            }
            size = store.write(shots_root, row["diff"], diff.png(found.image))
            op.artifact(store.DIFF_KIND, f"{shot.path} {shot.viewport}: {found.percent:.2f} %", size=size, details=row)
            rows.append(row)
            step.output(f"{shot.path} {shot.viewport}: {found.percent:.2f} % changed\n")
    return rows


def exceeded(rows: list[dict]) -> str | None:
    """Given comparison rows, return a one-line summary of the pages above their threshold, or None."""
    over = [row for row in rows if row["exceeded"]]
    if not over:
        return None
    worst = ", ".join(f"{row['path']} ({row['viewport']}) {row['percent']:.1f} %" for row in over)
    return f"{len(over)} screenshot(s) changed more than {over[0]['threshold']:g} %: {worst}"


def resolve(oplog, ref: str) -> tuple[dict, str, list[store.Shot]]:
    """Given `OPERATION` or `OPERATION:SET`, return (operation, set label, shots); raise UsageError if there is
    no such set, or the operation holds several and none was named."""
    op_id, _, label = str(ref).partition(":")
    if not op_id.isdigit():
        raise UsageError(f"{ref!r}: give an operation id (see `orch log`), optionally with :SET")
    operation = oplog.operation(int(op_id))
    sets = store.sets_of(operation)
    if not sets:
        raise UsageError(f"operation {op_id} ({operation['action']}) took no screenshots")
    if not label and len(sets) > 1:
        raise UsageError(f"operation {op_id} holds several sets ({', '.join(sets)}): write {op_id}:SET")
    label = label or next(iter(sets))
    if label not in sets:
        raise UsageError(f"operation {op_id} has no set {label!r} (it has: {', '.join(sets)})")
    return operation, label, sets[label]


def default_threshold(inventory, site_name: str | None) -> float | None:
    if not site_name or site_name not in inventory.sites:
        return None
    return (inventory.sites[site_name].promote or {}).get("visual_threshold")


def compare(oplog, inventory, before_ref: str, after_ref: str, *, task: str, threshold: float | None = None) -> dict:
    """Compare two recorded sets of screenshots as one operation; return its rows. The operation ends failed
    when a page changed more than the threshold (given, else the site's promote.visual_threshold)."""
    before_op, before_label, before = resolve(oplog, before_ref)
    after_op, after_label, after = resolve(oplog, after_ref)
    site = before_op["site"]
    threshold = threshold if threshold is not None else default_threshold(inventory, site)
    params = {
        "before": f"{before_op['id']}:{before_label}",
        "after": f"{after_op['id']}:{after_label}",
        "threshold": threshold,
    }
    with locked_operation(
        oplog, site=site, env=after_op["env"], task=task, action="compare", params=params, lock=False
    ) as op:
        rows = diff_sets(op, store.root(oplog.url), before, after, threshold=threshold)
        return _finish(op, rows) | params


def compare_envs(
    oplog, inventory, site_name: str, before_env: str, after_env: str, *, task: str, threshold: float | None = None
) -> dict:
    """Snap two environments of a site on the same pages (the first one's check URLs) and compare them, as one
    operation; return its rows. Used by `promote --dry-run --visual` and `staging create --snap`."""
    first = plan_snap(oplog, inventory, site_name, before_env, task=task)
    second = plan_snap(oplog, inventory, site_name, after_env, task=task, paths=first.paths)
    threshold = threshold if threshold is not None else default_threshold(inventory, site_name)
    params = {"before": before_env, "after": after_env, "paths": first.paths, "threshold": threshold}
    root = store.root(oplog.url)
    with locked_operation(
        oplog, site=first.site, env=after_env, task=task, action="compare", params=params, lock=False
    ) as op:
        before = shoot_set(op, root, first.subject, first.paths, before_env)
        after = shoot_set(op, root, second.subject, second.paths, after_env)
        rows = diff_sets(op, root, before, after, threshold=threshold)
        return _finish(op, rows) | params


def _finish(op, rows: list[dict]) -> dict:
    problem = exceeded(rows)
    if problem:
        op.finish("failed", error=problem)
    return {"operation_id": op.id, "status": "failed" if problem else "ok", "error": problem, "rows": rows}


class AroundPromotion:
    """The visual check of one promotion: production's check URLs shot before anything changes (`before`) and
    after the health check (`after`), compared page by page. A page that changed more than the threshold
    (promote.visual_threshold) fails the check and the promotion rolls back like after a failed health check,
    naming the page and the share; the diff images stay with the operation either way. Without a threshold
    both calls do nothing."""

    def __init__(self, oplog, op, prod, threshold: float | None):
        from .snap import Subject

        self.op, self.root, self.threshold = op, store.root(oplog.url), threshold
        self.subject = Subject(prod.site, prod.env, prod.env.url, (prod.host.web or {}).get("connect"))
        self.paths: list[str] = []
        self.shots: list[store.Shot] = []

    def before(self) -> None:
        """Shoot production as it is."""
        if self.threshold is None:
            return
        from orchestrator.backends.visual.urls import check_paths

        self.paths = check_paths(self.subject.site, self.subject.fetch, self.subject.base_url)
        self.shots = shoot_set(self.op, self.root, self.subject, self.paths, "before")

    def after(self) -> None:
        """Shoot production again and compare; raise OperationFailed if a page changed more than the threshold."""
        if self.threshold is None:
            return
        after = shoot_set(self.op, self.root, self.subject, self.paths, "after")
        problem = exceeded(diff_sets(self.op, self.root, self.shots, after, threshold=float(self.threshold)))
        if problem:
            raise OperationFailed(f"visual check failed: {problem}")
