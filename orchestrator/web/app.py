"""`orch serve`: read-only pages over the oplog for project managers (Starlette + Jinja2, served by uvicorn).

Pages: the tasks list with search, a task (every operation, its steps and artifacts, time and cost, the
tracker link), a site (environments, backups, drills, staging copies, releases, storage and its cost) and the
fleet's health. Plain HTML and one stylesheet: readable without JavaScript, on a phone too. Everything shown
was masked when written to the oplog and is masked again on the way out (Jinja's `finalize`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from orchestrator.masking import mask

from . import views
from .security import Accounts, Guard

HERE = Path(__file__).parent


def _finalize(value):
    return mask(value) if isinstance(value, str) else ("" if value is None else value)


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(views.FILTERS)
    return env


class Pages:
    """The route handlers; each reads the oplog (and the inventory) and renders one template."""

    def __init__(self, oplog, inventory):
        self.oplog, self.inventory = oplog, inventory
        self.env = templates()
        self.css = (HERE / "static" / "orch.css").read_bytes()

    def render(self, request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        started = time.perf_counter()
        root = request.scope.get("root_path", "").rstrip("/")
        html = self.env.get_template(name).render(root=root, request=request, now=datetime.now(UTC), **context)
        took = (time.perf_counter() - started) * 1000
        return HTMLResponse(html, status_code=status, headers={"Server-Timing": f"render;dur={took:.1f}"})

    def index(self, request: Request) -> Response:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/tasks", status_code=303)

    def tasks(self, request: Request) -> Response:
        search, problems = views.parse_search(request.query_params)
        rows, more = views.tasks(self.oplog, self.inventory, search)

        def page_query(page: int) -> str:
            return urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "page"] + [("page", page)])

        return self.render(
            request,
            "tasks.html",
            search=search,
            problems=problems,
            rows=rows,
            more=more,
            sites=sorted(self.inventory.sites),
            results=views.RESULTS,
            page_query=page_query,
        )

    def task(self, request: Request) -> Response:
        task = request.path_params["task"]
        page = views.task(self.oplog, self.inventory, task)
        if not page["operations"]:
            raise HTTPException(404, f"no operation is recorded for task {task}")
        return self.render(request, "task.html", **page)

    def site(self, request: Request) -> Response:
        name = request.path_params["site"]
        if name not in self.inventory.sites:
            raise HTTPException(404, f"no site {name} in the inventory")
        return self.render(request, "site.html", **views.site(self.oplog, self.inventory, name))

    def fleet(self, request: Request) -> Response:
        return self.render(request, "fleet.html", rows=views.fleet(self.oplog, self.inventory))

    def stylesheet(self, _request: Request) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    async def error(self, request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # Starlette registers it for HTTPException only
            return await self.crash(request, exc)
        return self.render(
            request, "error.html", status=exc.status_code, status_code=exc.status_code, message=exc.detail
        )

    async def crash(self, request: Request, exc: Exception) -> Response:
        # the traceback goes to the server's log (uvicorn); the page says only that it failed
        return self.render(
            request,
            "error.html",
            status=500,
            status_code=500,
            message="This page failed to render; the server's log says why.",
        )


def create_app(oplog, inventory, *, accounts: dict | None = None) -> Guard:
    """Given an open oplog and the inventory, return the ASGI app; with `accounts` (a dict, possibly empty),
    every request must log in as one of them."""
    pages = Pages(oplog, inventory)
    routes = [
        Route("/", pages.index, name="index"),
        Route("/tasks", pages.tasks, name="tasks"),
        Route("/tasks/{task}", pages.task, name="task"),
        Route("/sites/{site}", pages.site, name="site"),
        Route("/fleet", pages.fleet, name="fleet"),
        Route("/static/orch.css", pages.stylesheet, name="css"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: pages.error, Exception: pages.crash})
    return Guard(app, None if accounts is None else Accounts(accounts))
