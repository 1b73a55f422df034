"""`orch snap`: full-page screenshots of a site environment's check URLs, at desktop and mobile widths.

The shots are taken by a fresh headless Chromium (backends/visual/browser.py) and kept beside the oplog, one
`screenshot` artifact each, so `orch compare` and `orch report` find them by operation. Snapping changes
nothing on the site, so it takes no site lock; it is still an operation of its task, so a PM sees it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

from orchestrator.backends.envs import staging as staging_model
from orchestrator.backends.envs import web
from orchestrator.backends.visual import shots as store
from orchestrator.backends.visual.urls import check_paths
from orchestrator.config.model import Environment, Site
from orchestrator.errors import UsageError

from .plan import SitePlan, execute


@dataclass
class Subject:
    """A site environment as a browser reaches it: base URL, the address its host answers at, credentials."""

    site: Site
    env: Environment
    base_url: str
    connect_to: str | None = None
    auth: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.site.name}/{self.env.name}"

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def fetch(self, url: str) -> tuple[int, dict, str]:
        """GET one of its URLs (redirects not followed); return status, headers, body."""
        return web.fetch(url, connect_to=self.connect_to, auth=self.auth, follow_redirects=False)

    @property
    def ignore(self) -> list[str]:
        return list((self.site.visual or {}).get("ignore") or [])


def subject(oplog, inventory, site_name: str, env_name: str) -> Subject:
    """Given a site and an environment of the inventory or a staging copy orch made, return the Subject;
    raise UsageError if there is no such environment or it has no URL."""
    site = inventory.site(site_name)
    if env_name in site.environments and env_name != staging_model.TEMPLATE:
        env, auth = site.environments[env_name], None
    elif any(row["name"] == env_name for row in oplog.envs(site.name)):
        staged = staging_model.derive(site, env_name)
        env, auth = staged.env, (staging_model.AUTH_USER, staged.auth_password.reveal())
    else:
        raise UsageError(f"{site.name} has no environment {env_name!r} (see `orch sites` and `orch staging list`)")
    if not env.url:
        raise UsageError(f"{site.name}/{env_name} has no url: nothing to screenshot")
    host = inventory.hosts[env.host]
    return Subject(site, env, env.url, (host.web or {}).get("connect"), auth)


@dataclass
class SnapPlan(SitePlan):
    """Which pages of which environment are shot, at which widths."""

    subject: Subject
    paths: list[str]

    def lines(self) -> list[str]:
        from orchestrator.backends.visual.browser import VIEWPORTS

        widths = ", ".join(f"{v.name} {v.width}x{v.height}" for v in VIEWPORTS)
        ignore = f" (ignoring {', '.join(self.subject.ignore)})" if self.subject.ignore else ""
        return [f"screenshot {self.subject.url(path)} at {widths}{ignore}" for path in self.paths]

    def params(self) -> dict:
        return {"url": self.subject.base_url, "paths": self.paths}


def plan_snap(oplog, inventory, site_name: str, env_name: str, *, task: str, paths=None) -> SnapPlan:
    """Given a site environment, return what a snap would shoot (reads its sitemap, changes nothing)."""
    subj = subject(oplog, inventory, site_name, env_name)
    chosen = list(paths) if paths else check_paths(subj.site, subj.fetch, subj.base_url)
    return SnapPlan("snap", subj.site.name, subj.env.name, str(task), subj, chosen)


def shoot_set(op, shots_root, subj: Subject, paths: list[str], label: str, cam=None) -> list[store.Shot]:
    """Given an operation, the screenshots folder, a subject and its paths, shoot every path at every viewport as
    set `label`, record each shot as an artifact and return them (one step; a camera may be passed in)."""
    from orchestrator.backends.visual import browser, diff

    opened = nullcontext(cam) if cam else browser.camera(subj.base_url, connect_to=subj.connect_to, auth=subj.auth)
    with op.step(f"screenshots of {subj.label} ({label}): {len(paths)} page(s)") as step, opened as cam:
        taken = []
        folder = store.folder(shots_root, op.id, label).relative_to(shots_root)
        for path in paths:
            for viewport in browser.VIEWPORTS:
                capture = cam.shoot(subj.url(path), viewport, subj.ignore)
                image = diff.load(capture.png)
                shot = store.Shot(
                    label,
                    path,
                    viewport.name,
                    f"{folder}/{store.slug(path)}-{viewport.name}.png",
                    image.width,
                    image.height,
                    capture.status,
                    capture.error,
                    capture.ignore,
                )
                store.record(op, shot, store.write(shots_root, shot.file, capture.png))
                taken.append(shot)
                step.output(
                    f"{path} {viewport.name}: HTTP {capture.status or '-'}, {image.width}x{image.height}"
                    + (f", {capture.error}" if capture.error else "")
                    + "\n"
                )
        return taken


def snap(oplog, plan: SnapPlan) -> dict:
    """Given a snap plan, take its screenshots as one operation; return where they are and what was shot."""
    root = store.root(oplog.url)

    def apply(op, p: SnapPlan) -> dict:
        taken = shoot_set(op, root, p.subject, p.paths, p.env)
        return {
            "site": p.site,
            "env": p.env,
            "operation_id": op.id,
            "folder": str(root / f"op-{op.id}"),
            "shots": [asdict(shot) for shot in taken],
        }

    return execute(oplog, plan, apply, lock=False)
