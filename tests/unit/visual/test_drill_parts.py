"""Boot drill parts without a testbed: the PHP error log reading, each check URL's verdict, the guard."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from orchestrator.actions import drill, drill_guard
from orchestrator.backends.envs import phplog

LOG = """\
[29-Nov-2026 21:23:40 UTC] PHP Warning:  Undefined variable $x in /srv/stage/drill-ab12/wp-content/a.php on line 3
[29-Nov-2026 21:23:40 UTC] PHP Fatal error:  Uncaught Error: Call to undefined function nope() in \
/srv/stage/drill-ab12/wp-content/plugins/p/p.php:2
Stack trace:
#0 /srv/stage/drill-ab12/wp-settings.php(453): include_once()
#1 {main}
  thrown in /srv/stage/drill-ab12/wp-content/plugins/p/p.php on line 2
[29-Nov-2026 21:23:41 UTC] WordPress database error Table 'wp_drill_ab12.wp_posts' doesn't exist for query SELECT 1
[29-Nov-2026 21:23:41 UTC] PHP Fatal error:  something else in /var/www/othersite/index.php on line 1
[29-Nov-2026 21:23:42 Europe/Berlin] PHP Notice:  Trying to access array offset in /srv/stage/drill-ab12/x.php on line 9
"""
TOKENS = ["/srv/stage/drill-ab12/", "wp_drill_ab12"]


def test_log_entries_keep_their_stack_traces():
    entries = phplog.entries(LOG)

    assert len(entries) == 5 and "Stack trace:" in entries[1] and entries[1].endswith("on line 2")


def test_only_the_copys_entries_count_sorted_by_kind():
    found = phplog.findings(LOG, TOKENS)

    assert len(found.fatal) == 1 and "nope()" in found.fatal[0]
    assert len(found.database) == 1 and len(found.warning) == 2
    assert found.as_dict()["fatal"]["count"] == 1


def test_problems_name_fatals_and_database_errors_and_a_flood_of_warnings():
    found = phplog.findings(LOG, TOKENS)

    problems = drill._php_problems(found, max_warnings=1)
    assert [p.split(":")[0] for p in problems] == ["PHP fatal error", "database error", "2 PHP warnings (at most 1)"]
    assert drill._php_problems(phplog.Findings(warning=["w"] * 3), max_warnings=20) == []


def checks(markers=None, limit=5):
    site = SimpleNamespace(verify={"markers": markers or {}})
    subj = SimpleNamespace(site=site)
    playbook = SimpleNamespace(healthy=lambda body: "/wp-content/" in body)
    return drill._Checks(subj, playbook, {"response_time": limit})


def test_a_check_url_must_answer_200_in_time_with_its_marker():
    c = checks({"/contact/": "Call us"})
    home = "<link href='/wp-content/x.css'>"

    assert c._judge("/", 200, {}, home, 0.2) is None
    assert (
        c._judge("/", 302, {"Location": "/wp-admin/install.php"}, "", 0.1) == "answered 302 (to /wp-admin/install.php)"
    )
    assert c._judge("/", 200, {}, "<html>", 0.2) == "lacks the playbook's health marker"
    assert c._judge("/", 200, {}, home, 7.5) == "took 7.5 s (limit 5 s)"
    assert c._judge("/contact/", 200, {}, "Write to us", 0.1) == "lacks its marker 'Call us'"
    assert c._judge("/contact/", 200, {}, "Call us now", 0.1) is None


def test_the_guard_removes_the_copy_once_the_drill_process_is_gone(monkeypatch):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    removed = []
    monkeypatch.setattr("orchestrator.config.load_inventory", lambda path: SimpleNamespace(path=path))

    class FakeOplog:
        @classmethod
        def from_inventory(cls, inventory):
            return cls()

        def reap(self):
            removed.append("reaped")

    monkeypatch.setattr("orchestrator.oplog.Oplog", FakeOplog)
    monkeypatch.setattr(drill, "remove_copy", lambda oplog, inv, site, name, task: removed.append((site, name, task)))

    assert drill_guard.watch("inv.yaml", "shop", "drill-ab12", "14883", victim.pid) == 0
    assert victim.poll() is not None and removed == ["reaped", ("shop", "drill-ab12", "14883")]


def test_drill_schedule_makes_a_scheduler_job_of_its_own():
    from orchestrator.scheduler.jobs import site_schedules

    site = SimpleNamespace(
        backup=SimpleNamespace(enabled=True, schedule="0 3 * * *"), verify={}, prune={}, drill={"schedule": "0 4 1 * *"}
    )

    assert site_schedules(site) == {"backup": "0 3 * * *", "verify": None, "prune": None, "drill": "0 4 1 * *"}
    site.backup.enabled = False
    assert site_schedules(site)["drill"] is None
