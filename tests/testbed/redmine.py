"""A real Redmine (Debian's `redmine` 5.0 + `redmine-sqlite`, served by `puma`) on loopback, one per session.

Each session gets its own Redmine instance (Debian's multi-tenancy: `REDMINE_INSTANCE=<name>` reads
/usr/share/redmine/instances/<name>/config/database.yml), so its SQLite database is private. Set-up migrates the
database, loads Redmine's default data, enables the REST API, creates a project and the issues the tests name
(with the numbers they ask for) and reads the admin's API key. Start-up takes ~40 s (Rails in production mode).
`stop()` and `start()` let a test take the tracker away and bring it back on the same port.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, spawn, stop_process, wait_ready
from .ports import free_port

REDMINE = Path("/usr/share/redmine")
INSTANCES = Path("/var/lib/redmine")
GEMFILE_LOCAL = REDMINE / "Gemfile.local"
PROJECT = "orch"

SETUP = """
Setting.rest_api_enabled = "1"
Setting.text_formatting = "common_mark"
admin = User.find_by_login("admin")
admin.update_columns(must_change_passwd: false)
project = Project.find_by_identifier("%(project)s") || Project.create!(name: "Orch tests",
  identifier: "%(project)s", tracker_ids: Tracker.pluck(:id), enabled_module_names: %%w[issue_tracking time_tracking])
status = IssueStatus.first
priority = IssuePriority.default || IssuePriority.first
%(issues)s.each do |number|
  next if Issue.exists?(number)
  issue = Issue.new(project: project, tracker: project.trackers.first, subject: "Task #{number}",
                    author: admin, status: status, priority: priority)
  issue.id = number
  issue.save!
end
puts "KEY=" + (admin.api_key || admin.api_token&.value || Token.create!(user: admin, action: "api").value)
"""


@dataclass
class Redmine:
    """A running private Redmine. `api_key` is the admin's; issues named at start exist in project `orch`."""

    port: int
    api_key: str
    instance: str
    root: Path
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        """Call the REST API as the admin; return (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"X-Redmine-API-Key": self.api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
                text = response.read()
                return response.status, json.loads(text) if text.strip() else None
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def notes(self, issue: int) -> list[str]:
        """The non-empty notes (journals) of an issue, oldest first."""
        _, data = self.api("GET", f"/issues/{issue}.json?include=journals")
        return [j["notes"] for j in data["issue"]["journals"] if j.get("notes")]

    def time_entries(self, issue: int) -> list[dict]:
        _, data = self.api("GET", f"/time_entries.json?issue_id={issue}&limit=100")
        return data["time_entries"]

    def start(self) -> None:
        """Start (or restart) the server on its port; return once /issues.json answers."""
        if self._proc is not None and self._proc.poll() is None:
            return
        log = self.root / "server.log"
        self._proc = spawn(
            [
                "ruby",
                "bin/rails",
                "server",
                "-u",
                "puma",
                "-p",
                str(self.port),
                "-b",
                "127.0.0.1",
                "-P",
                str(self.root / "server.pid"),
            ],
            log,
            cwd=REDMINE,
            env=_env(self.instance),
        )
        wait_ready(self._proc, self._answers, "redmine", log, timeout=180)

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def _answers(self) -> bool:
        try:
            return self.api("GET", "/issues.json?limit=1")[0] == 200
        except OSError:
            return False


def _env(instance: str) -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("BUNDLE_", "GEM_", "RUBY"))} | {
        "RAILS_ENV": "production",
        "REDMINE_INSTANCE": instance,
        "REDMINE_LANG": "en",
    }


def _run(argv: list[str], instance: str, what: str) -> str:
    done = subprocess.run(argv, cwd=REDMINE, env=_env(instance), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise TestbedError(f"redmine {what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[:1500]}")
    return done.stdout


def start_redmine(workdir: Path, issues: list[int]) -> Redmine:
    """Set up a private Redmine instance with a database in `workdir` and `issues` created; start it."""
    if not REDMINE.is_dir():
        raise TestbedError("Redmine is not installed (scripts/bootstrap installs redmine, redmine-sqlite, puma)")
    if 'gem "puma"' not in (GEMFILE_LOCAL.read_text() if GEMFILE_LOCAL.exists() else ""):
        GEMFILE_LOCAL.write_text('gem "puma"\n')  # Debian's Gemfile names no web server
    instance = f"orchtest-{secrets.token_hex(4)}"
    root = INSTANCES / instance
    for sub in ("config", "log", "tmp/cache", "tmp/pids", "files", "public/plugin_assets"):
        (root / sub).mkdir(parents=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (root / "config" / "database.yml").write_text(
        f"production:\n  adapter: sqlite3\n  database: {workdir / 'redmine.sqlite3'}\n  encoding: utf8\n"
    )
    (root / "config" / "secret_key.txt").write_text(secrets.token_hex(32))
    redmine = Redmine(port=free_port(), api_key="", instance=instance, root=root)
    try:
        # two processes: one that migrated keeps the old column lists and cannot load the default data
        _run(["ruby", "bin/rake", "db:migrate"], instance, "database migration")
        _run(["ruby", "bin/rake", "redmine:load_default_data"], instance, "default data")
        out = _run(
            ["ruby", "bin/rails", "runner", SETUP % {"project": PROJECT, "issues": json.dumps(issues)}],
            instance,
            "project set-up",
        )
        redmine.api_key = next(line[4:] for line in out.splitlines() if line.startswith("KEY="))
        redmine.start()
    except BaseException:
        remove_redmine(redmine)
        raise
    return redmine


def remove_redmine(redmine: Redmine) -> None:
    """Stop the server and delete the instance folder (the database lives in the session's temp dir)."""
    redmine.stop()
    shutil.rmtree(redmine.root, ignore_errors=True)
