"""Promotion faults on the real WordPress (releases layout): whatever ends a promotion after its switch (a failing
php-fpm reload, SIGTERM, kill -9 of orch itself) leaves production on a release that was checked, never on one
nobody looked at.

The host's `web.php_reload` is a small script the tests steer through files in a control folder on web1:
`fail` makes the next reload exit 1, `hang` makes it create `hanging` and sleep (so orch can be signalled or
killed right after the switch, which the reload follows)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import yaml
from fleet import ORCH, Fleet, releases_layout
from testbed.inventory import host_entry

pytestmark = pytest.mark.e2e
TASK = "16001"
THEME = "wp-content/themes/twentytwentythree"
RELOAD = (
    'ctl=$1; if [ -e "$ctl/fail" ]; then rm -f "$ctl/fail"; echo "php-fpm: reload refused" >&2; exit 1; fi; '
    'if [ -e "$ctl/hang" ]; then rm -f "$ctl/hang"; touch "$ctl/hanging"; sleep 30; fi'
)


@pytest.fixture(scope="module")
def wp(wp_fleet, tmp_path_factory):
    """The session's WordPress in the releases layout, promoted from `dev` (a copy of its code on web1)."""
    host, path = wp_fleet.wordpress.host, str(wp_fleet.wordpress.path)
    releases_layout(wp_fleet, TASK)
    ctl, dev = f"{path}.faults-ctl", f"{path}.faults-dev"
    host.run(f"rm -rf {ctl} {dev} && mkdir -p {ctl} {dev} && cp -a {path}/. {dev}/")
    inventory = yaml.safe_load(wp_fleet.inventory.read_text())
    inventory["hosts"]["web1"] = host_entry(host) | {
        "web": {"sites_dir": str(wp_fleet.wordpress.nginx.sites_dir), "php_reload": ["sh", "-c", RELOAD, "reload", ctl]}
    }
    site = yaml.safe_load((wp_fleet.root / "sites" / "wp.yaml").read_text())
    site |= {"layout": "releases", "promote": {"health_timeout": 20}}
    site["environments"]["dev"] = {"host": "web1", "path": dev}
    fleet = Fleet(tmp_path_factory.mktemp("faults"), wp_fleet.env, wp_fleet.hosts)
    fleet.write_inventory(inventory, {"wp": site})
    fleet.wordpress, fleet.host, fleet.ctl, fleet.dev, fleet.step = wp_fleet.wordpress, host, ctl, dev, [0]
    yield fleet
    host.run(f"rm -rf {ctl} {dev}")


def _change(wp) -> str:
    """Make a new, healthy version of the theme in dev; return its marker."""
    wp.step[0] += 1
    marker = f"orch-faults-{wp.step[0]}"
    wp.host.run(f"echo '/* {marker} */' >> {wp.dev}/{THEME}/style.css")
    return marker


def _revision(wp) -> str:
    return wp.wordpress.get("/orch-revision.php")[2].strip()


def _current(rows: list[dict]) -> dict:
    return next(row for row in rows if row["status"] == "current")


def _last(wp, action: str) -> dict:
    return wp.orch_json("log", "--task", TASK, "--action", action)[-1]


def _start_promotion(wp, *extra) -> subprocess.Popen:
    """Start `orch promote` with the next php-fpm reload hanging; return once the switch is done."""
    wp.host.run(f"touch {wp.ctl}/hang && rm -f {wp.ctl}/hanging")
    proc = subprocess.Popen(
        [*ORCH, "-i", str(wp.inventory), "promote", "wp", "--from", "dev", "--task", TASK, "--yes", *extra],
        env=wp.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while wp.host.run(f"test -e {wp.ctl}/hanging && echo yes || echo no").stdout.strip() != "yes":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the promotion never reached its switch"
        time.sleep(0.1)
    return proc


def test_a_failing_php_reload_after_the_switch_is_rolled_back(wp):
    """The reload runs after production was switched: its failure must undo the switch, not leave it live."""
    good = _revision(wp)
    _change(wp)
    wp.host.run(f"touch {wp.ctl}/fail")
    proc = wp.orch("promote", "wp", "--from", "dev", "--task", TASK, "--yes", expect=1)
    assert "rolled back" in proc.stderr and "reload refused" in proc.stderr
    assert _revision(wp) == good
    op = _last(wp, "promote")
    assert op["status"] == "rolled_back" and [s["name"] for s in op["steps"]][-2:] == ["switch", "automatic rollback"]
    assert wp.orch_json("releases", "wp")[0]["status"] == "bad"


def test_sigterm_right_after_the_switch_rolls_back_though_it_is_no_orch_error(wp):
    good = _revision(wp)
    _change(wp)
    proc = _start_promotion(wp)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert _revision(wp) == good
    op = _last(wp, "promote")
    assert op["status"] == "rolled_back" and "interrupted" in op["error"], op
    assert wp.orch_json("releases", "wp")[0]["status"] == "bad"


def test_kill_9_right_after_the_switch_is_rolled_back_by_the_next_command(wp):
    """Defect 13: orch killed right after the switch left production on a release nobody checked, shown as plain
    `current`. Its migrations never ran, so the next command that opens the oplog rolls it back, and says so."""
    good = _revision(wp)
    _change(wp)
    proc = _start_promotion(wp)
    proc.kill()
    proc.communicate(timeout=30)
    assert _revision(wp) != good  # production is on the unchecked release now
    listing = wp.orch("--json", "releases", "wp")
    assert "was interrupted" in listing.stderr and "rolled back" in listing.stderr, listing.stderr
    rows = json.loads(listing.stdout)
    assert rows[0]["status"] == "bad" and _current(rows)["revision"] == good == _revision(wp)
    promotion, recovery = _last(wp, "promote"), _last(wp, "recover")
    assert promotion["status"] == "interrupted"
    assert recovery["status"] == "rolled_back" and recovery["params"]["promotion"] == promotion["id"]
    assert "never checked" in recovery["error"]
    wp.orch("log", "--task", TASK)  # settled once: the next command has nothing more to say
    assert len(wp.orch_json("log", "--task", TASK, "--action", "recover")) == 1


def test_kill_9_right_after_the_switch_of_a_release_without_migrations_is_checked_and_kept(wp):
    """Defect 13: the switch was the last change the promotion had to make, so the release is health-checked
    when the next command reaps the dead promotion, and stays live because it is healthy."""
    marker = _change(wp)
    proc = _start_promotion(wp, "--no-migrate")
    proc.kill()
    proc.communicate(timeout=30)
    new = _revision(wp)
    listing = wp.orch("--json", "releases", "wp")
    assert "checked now, healthy" in listing.stderr, listing.stderr
    assert json.loads(listing.stdout)[0]["status"] == "current"
    assert _revision(wp) == new and marker in wp.wordpress.get(f"/{THEME}/style.css")[2]
    assert _last(wp, "recover")["status"] == "ok"


def test_an_unfinished_promotion_on_the_host_refuses_the_next_and_rollback_takes_it_back(wp):
    """A promotion whose orch died elsewhere (not reaped here) shows as `unverified`; promote refuses until
    `orch rollback` takes it back."""
    good = _revision(wp)
    _change(wp)
    proc = _start_promotion(wp)
    proc.kill()
    proc.communicate(timeout=30)
    # as another machine's orch sees it: nothing to reap here, the journal on the host says what happened
    state = f"{wp.wordpress.path}.orch-promotions"
    assert "switched" in wp.host.run(f"cat {state}/*/STATE").stdout
    other = Fleet(wp.root.parent / (wp.root.name + "-other"), wp.env, wp.hosts)
    inventory = yaml.safe_load(wp.inventory.read_text()) | {"oplog": f"sqlite:///{other.root}/oplog.db"}
    other.write_inventory(inventory, {"wp": yaml.safe_load((wp.root / "sites" / "wp.yaml").read_text())})
    assert other.orch_json("releases", "wp")[0]["status"] == "unverified"
    _change(wp)
    proc = other.orch("promote", "wp", "--from", "dev", "--task", TASK, "--yes", expect=2)
    assert "never finished" in proc.stderr and "orch rollback" in proc.stderr
    assert other.orch_json("log", "--task", TASK, "--action", "promote")[-1]["status"] == "refused"
    other.orch("rollback", "wp", "--task", TASK, "--yes")
    assert _revision(wp) == good
    rows = other.orch_json("releases", "wp")
    assert rows[0]["status"] == "bad" and _current(rows)["revision"] == good
    wp.orch("log", "--task", TASK)  # this machine's reaper finds the promotion already settled


def test_dry_runs_of_rollback_and_adopt_print_the_plan_and_change_nothing(wp):
    before = _revision(wp)
    rows = wp.orch_json("releases", "wp")
    other = next(row["release"] for row in rows if row["status"] != "current")
    plan = wp.orch_json("rollback", "wp", "--task", TASK, "--to", other, "--dry-run")
    assert plan["dry_run"] and plan["to"] == other and plan["from"] == _current(rows)["release"]
    assert plan["plan"] == [f"switch current from releases/{plan['from']} to releases/{other}; mark {plan['from']} bad"]
    proc = wp.orch("adopt", "wp", "--layout", "releases", "--task", TASK, "--dry-run", expect=2)
    assert "already a symlink" in proc.stderr
    assert _revision(wp) == before


def test_a_production_without_url_is_refused_before_anything_changes(wp):
    site = yaml.safe_load((wp.root / "sites" / "wp.yaml").read_text())
    del site["environments"]["production"]["url"]
    (wp.root / "sites" / "wp.yaml").write_text(yaml.safe_dump(site))
    try:
        before = _revision(wp)
        proc = wp.orch("promote", "wp", "--from", "dev", "--task", TASK, "--yes", expect=2)
        assert "has no `url`" in proc.stderr
        assert _revision(wp) == before
        op = _last(wp, "promote")
        assert op["status"] == "refused" and "has no `url`" in op["error"]
    finally:
        site["environments"]["production"]["url"] = wp.wordpress.url
        (wp.root / "sites" / "wp.yaml").write_text(yaml.safe_dump(site))


def test_a_rollback_of_a_production_without_url_is_refused_before_anything_changes(wp):
    site = yaml.safe_load((wp.root / "sites" / "wp.yaml").read_text())
    del site["environments"]["production"]["url"]
    (wp.root / "sites" / "wp.yaml").write_text(yaml.safe_dump(site))
    try:
        before = _revision(wp)
        proc = wp.orch("rollback", "wp", "--task", TASK, "--yes", expect=2)
        assert "has no `url`: a rollback needs it for its health check" in proc.stderr
        assert _revision(wp) == before
    finally:
        site["environments"]["production"]["url"] = wp.wordpress.url
        (wp.root / "sites" / "wp.yaml").write_text(yaml.safe_dump(site))
