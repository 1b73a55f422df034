"""Foundation, end to end: inventory errors, strict host keys, check, the oplog, locks, secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from fleet import ORCH
from testbed.inventory import host_entry

from orchestrator.cli.output import human_duration

pytestmark = pytest.mark.e2e


def test_check_reaches_every_host_database_and_storage(fleet):
    rows = fleet.orch_json("check")
    assert {(r["site"], r["check"]) for r in rows} >= {
        ("shop", "connect"),
        ("shop", "database"),
        ("shop", "tools"),
        ("blog", "database"),
        ("blog", "storage"),
    }
    assert all(r["ok"] for r in rows), rows
    tools = next(r for r in rows if r["site"] == "shop" and r["check"] == "tools")["detail"]
    assert "restic 0." in tools and "mariadb-dump" in tools


def test_sites_lists_every_environment(fleet):
    rows = fleet.orch_json("sites")
    assert {(r["site"], r["env"], r["host"]) for r in rows} == {
        ("shop", "production", "web1"),
        ("blog", "production", "stage1"),
    }


def test_a_broken_inventory_reports_every_problem_with_file_and_key_path(fleet, tmp_path):
    bad = tmp_path / "bad"
    (bad / "sites").mkdir(parents=True)
    (bad / "inventory.yaml").write_text(yaml.safe_dump(fleet.base | {"colour": "blue"}))
    site = json.loads(json.dumps(fleet.sites["shop"]))
    site["environments"]["production"]["database"]["engine"] = "mysqll"
    (bad / "sites" / "shop.yaml").write_text(yaml.safe_dump(site))
    (bad / "sites" / "blog.yaml").write_text("name: blog\nenvironments: {production: [unclosed\n")
    proc = subprocess.run(
        [*ORCH, "-i", str(bad / "inventory.yaml"), "check"], capture_output=True, text=True, env=fleet.env
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "sites/shop.yaml: environments.production.database.engine: 'mysqll' is not one of" in proc.stderr
    assert "inventory.yaml: colour" in proc.stderr
    assert "sites/blog.yaml" in proc.stderr and "line" in proc.stderr


def test_a_missing_secret_is_a_clear_error_naming_site_and_key(fleet):
    env = {k: v for k, v in fleet.env.items() if k != "T_SHOP_PW"}
    proc = subprocess.run(
        [*ORCH, "-i", str(fleet.inventory), "backup", "shop", "--task", "1"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2, proc.stderr
    assert "sites/shop.yaml: environments.production.database.password" in proc.stderr
    assert "T_SHOP_PW" in proc.stderr and "Traceback" not in proc.stderr


def _with_host(fleet, tmp_path, **overrides):
    inv_dir = tmp_path / "inv"
    inventory = json.loads(json.dumps(fleet.base))
    inventory["hosts"]["web1"] = host_entry(fleet.hosts["web1"]) | overrides
    inventory["hosts"]["web1"] = {k: v for k, v in inventory["hosts"]["web1"].items() if v is not None}
    from fleet import Fleet

    other = Fleet(inv_dir, fleet.env, fleet.hosts)
    other.write_inventory(inventory, {"shop": fleet.sites["shop"]})
    return other


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_nothing_runs(fleet, tmp_path):
    marker = fleet.hosts["web1"].home / "ran-something"
    other = _with_host(fleet, tmp_path, host_key=None, known_hosts=str(tmp_path / "known_hosts"))
    proc = other.orch("backup", "shop", "--task", "77", expect=2)
    assert "unknown ssh-ed25519 key SHA256:" in proc.stderr
    assert not marker.exists()
    # trusting it with the right fingerprint makes the host usable
    fp = subprocess.run(
        ["ssh-keygen", "-lf", "/dev/stdin"], input=fleet.hosts["web1"].host_key, text=True, capture_output=True
    ).stdout.split()[1]
    other.orch("hosts", "trust", "web1", "--fingerprint", "SHA256:wrong", expect=4)
    other.orch("hosts", "trust", "web1", "--fingerprint", fp)
    rows = other.orch_json("check", "shop")
    assert all(r["ok"] for r in rows), rows


def test_a_changed_host_key_is_refused(fleet, tmp_path):
    other_key = fleet.hosts["stage1"].host_key  # a valid key, but not web1's
    other = _with_host(fleet, tmp_path, host_key=other_key)
    proc = other.orch("check", "shop", expect=2)
    assert "REFUSED" in proc.stdout + proc.stderr and "SHA256:" in proc.stdout + proc.stderr


def test_log_task_json_lists_operations_with_steps_and_artifacts(fleet):
    fleet.orch("backup", "blog", "--task", "5501")
    ops = fleet.orch_json("log", "--task", "5501")
    assert [op["action"] for op in ops] == ["backup"]
    op = ops[0]
    assert op["status"] == "ok" and op["task"] == "5501" and op["duration"] > 0
    assert "@" in op["actor"]
    assert [s["status"] for s in op["steps"]] == ["ok"] * len(op["steps"]) and len(op["steps"]) >= 3
    backup = next(a for a in op["artifacts"] if a["kind"] == "backup")
    assert backup["details"]["snapshots"]["files"] and backup["details"]["snapshots"]["db"]
    text = fleet.orch("log", "--task", "5501").stdout
    assert "task 5501: 1 operation(s), total time" in text


def test_the_oplog_works_on_postgresql(fleet, postgres, tmp_path):
    postgres.sql("CREATE DATABASE orch_oplog_e2e")
    inventory = json.loads(json.dumps(fleet.base)) | {"oplog": postgres.url("orch_oplog_e2e").replace("+psycopg", "")}
    from fleet import Fleet

    other = Fleet(tmp_path / "pg", fleet.env, fleet.hosts)
    other.write_inventory(inventory, {"blog": fleet.sites["blog"]})
    other.orch("backup", "blog", "--task", "5601")
    ops = other.orch_json("log", "--task", "5601")
    assert ops[0]["status"] == "ok" and ops[0]["artifacts"]
    assert postgres.sql("SELECT count(*) FROM operations WHERE task = '5601'", "orch_oplog_e2e").strip() == "1"


def _blocked_backup(fleet, tmp_path, task: str):
    """Start `orch backup shop` that holds the site lock until the test releases it.

    The database password comes from `{command: cat FIFO}`: secrets resolve lazily, after the lock is taken,
    so the backup waits on the FIFO with the lock held. Return (process, release) where release() lets it go.
    """
    fifo = tmp_path / "password.fifo"
    os.mkfifo(fifo)
    site = json.loads(json.dumps(fleet.sites["shop"]))
    site["environments"]["production"]["database"]["password"] = {"command": f"cat {fifo}"}
    from fleet import Fleet

    slow = Fleet(tmp_path / "slow", fleet.env, fleet.hosts)  # same oplog (and so the same locks)
    slow.write_inventory(fleet.base, {"shop": site})
    proc = subprocess.Popen(
        [*ORCH, "-i", str(slow.inventory), "backup", "shop", "--task", task],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fleet.env,
    )

    def release(within: float = 120) -> None:
        """Give the password to the reader of the FIFO, once there is one (within `within` seconds); an orch
        killed before it started the secret command leaves none, and opening the FIFO would then wait forever."""
        deadline = time.monotonic() + within
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads it
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
                continue
            with os.fdopen(fd, "w") as pipe:
                pipe.write(fleet.env["T_SHOP_PW"] + "\n")
            return

    return proc, release


def _wait_for_lock(fleet, site: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        locks = [lk for lk in fleet.orch_json("locks") if lk["site"] == site]
        if locks:
            return locks[0]
        time.sleep(0.05)
    raise AssertionError("the first command never took the lock")


def test_a_second_mutating_command_on_a_locked_site_exits_3_naming_holder_and_task(fleet, tmp_path):
    first, release = _blocked_backup(fleet, tmp_path, "6601")
    try:
        _wait_for_lock(fleet, "shop")
        proc = fleet.orch("backup", "shop", "--task", "6602", expect=3)
        assert "task 6601" in proc.stderr and "locked by" in proc.stderr
    finally:
        release()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    assert fleet.orch_json("log", "--task", "6601")[0]["status"] == "ok"


def test_kill_9_leaves_a_trail_that_the_next_command_marks_interrupted(fleet, tmp_path):
    victim, release = _blocked_backup(fleet, tmp_path, "6701")
    _wait_for_lock(fleet, "shop")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    release(within=3)  # a secret command (`cat FIFO`) outlives its killed orch: let it end, or it waits forever
    running = [
        op
        for op in json.loads(
            subprocess.run(
                [
                    "sqlite3",
                    "-json",
                    str(fleet.root / "state" / "oplog.db"),
                    "SELECT status FROM operations WHERE task = '6701'",
                ],
                capture_output=True,
                text=True,
            ).stdout
        )
    ]
    assert running == [{"status": "running"}]  # the crash left a visible trail
    fleet.orch("backup", "shop", "--task", "6702")  # reaps the dead one and takes the lock
    ops = fleet.orch_json("log", "--task", "6701")
    assert ops[0]["status"] == "interrupted"
    assert any(s["status"] == "interrupted" for s in ops[0]["steps"])
    assert fleet.orch_json("log", "--task", "6702")[0]["status"] == "ok"


def test_secrets_never_show_in_ps_oplog_or_verbose_logs(fleet):
    proc = subprocess.Popen(
        [*ORCH, "-vv", "-i", str(fleet.inventory), "backup", "shop", "blog", "--task", "6801"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fleet.env,
    )
    seen = []
    while proc.poll() is None:  # every process on this machine (all the testbed hosts), whole lines: -ww
        seen.append(subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout)
        time.sleep(0.02)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert len(seen) > 5 and "restic" in "".join(seen)
    oplog = (fleet.root / "state" / "oplog.db").read_bytes()
    logs = fleet.orch("-vv", "log", "--steps").stdout
    for secret in fleet.secrets:
        assert secret not in "".join(seen), "secret visible in ps"
        assert secret not in out + err, "secret in -vv output"
        assert secret.encode() not in oplog, "secret in the oplog"
        assert secret not in logs
    assert "***" in err  # the verbose log did show the commands, masked


def test_defect_5_one_broken_site_file_costs_that_site_alone(fleet, tmp_path):
    from fleet import Fleet

    # Its own oplog: the health it reads is only this test's (an earlier test may have left a failed drill on shop
    # in the shared fleet's oplog).
    other = Fleet(tmp_path / "inv", fleet.env, fleet.hosts)
    sites = {name: site | {"backup": {"schedule": "0 3 * * *"}} for name, site in fleet.sites.items()}
    other.write_inventory(fleet.base | {"oplog": f"sqlite:///{tmp_path}/oplog.db"}, sites)
    (other.root / "sites" / "bad.yaml").write_text("name: bad\nenvironments: {production: {host: nowhere, path: /x}}\n")

    proc = other.orch("backup", "--all", "--task", "5505", expect=1)
    assert "sites/bad.yaml: environments.production.host: unknown host 'nowhere'" in proc.stderr
    assert "Traceback" not in proc.stderr
    ops = other.orch_json("log", "--task", "5505")
    assert sorted((op["site"], op["status"]) for op in ops) == [("blog", "ok"), ("shop", "ok")]
    assert "task 5505: 2 operation(s)" in other.orch("log", "--task", "5505").stdout
    assert "| shop/production | backup |" in other.orch("report", "--task", "5505").stdout

    health = other.orch("--json", "health", expect=1)
    rows = {row["site"]: row for row in json.loads(health.stdout)}
    assert rows["shop"]["healthy"] and rows["blog"]["healthy"]
    assert rows["bad"]["status"] == "broken" and "unknown host 'nowhere'" in rows["bad"]["problems"][0]

    plan = other.orch("--json", "scheduler", "plan", expect=1)
    assert {job["site"] for job in json.loads(plan.stdout)["jobs"]} == {"shop", "blog"}
    assert "sites/bad.yaml" in plan.stderr

    named = other.orch("backup", "bad", "--task", "5506", expect=2)
    assert named.stderr.strip() == (
        "orch: sites/bad.yaml: environments.production.host: unknown host 'nowhere' (known: stage1, web1)"
    )
    (refused,) = other.orch_json("log", "--task", "5506")
    assert (refused["site"], refused["status"]) == ("bad", "refused") and "unknown host" in refused["error"]
    other.orch("backup", "blog", "--task", "5506")  # naming a valid site works as ever


def test_defect_15_unlock_refuses_a_live_lock_unless_forced_and_records_the_force(fleet, tmp_path):
    first, release = _blocked_backup(fleet, tmp_path, "1501")
    try:
        lock = _wait_for_lock(fleet, "shop")
        proc = fleet.orch("unlock", "shop", "--task", "1502", expect=4)
        assert f"process {lock['pid']} still runs on this machine" in proc.stderr and "--force" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert [lk["pid"] for lk in fleet.orch_json("locks")] == [lock["pid"]], "the live lock stayed"
        fleet.orch("backup", "shop", "--task", "1502", expect=3)  # so no second backup ran beside the first
        forced = fleet.orch("unlock", "shop", "--task", "1502", "--force")
        assert "FORCED while its holder looked alive" in forced.stderr
        assert fleet.orch_json("locks") == []
    finally:
        release()
        first.wait(timeout=120)
    ops = fleet.orch_json("log", "--task", "1502")
    assert [(op["action"], op["status"]) for op in ops] == [
        ("unlock", "refused"),
        ("backup", "refused"),
        ("unlock", "ok"),
    ]
    assert "still runs" in ops[0]["error"]
    assert ops[2]["params"] == {"force": True}
    (artifact,) = ops[2]["artifacts"]
    assert artifact["details"]["forced"] is True and artifact["details"]["task"] == "1501"
    assert "(forced)" in fleet.orch("log", "--task", "1502").stdout


HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{font:14px} td|th{}</style>"
    "</head><body><h1>502 Bad Gateway</h1><script>alert('x')</script><p>"
    + "upstream said no. " * 60
    + "</p><hr><center>nginx/1.22.1</center></body></html>"
)


def test_defect_10_an_html_error_page_stays_one_short_escaped_line_in_every_report_format(fleet, tmp_path):
    web1 = fleet.hosts["web1"]
    fake = f"{web1.home}/html-restic-{tmp_path.name}"  # restic behind a proxy that answers with an error page
    web1.run(
        f"printf '%s\\n' '#!/bin/sh' 'if [ \"$1\" = version ]; then exec restic version; fi' "
        f"'cat >&2 <<\"PAGE\"' '{HTML_PAGE}' 'PAGE' 'exit 1' > {fake} && chmod +x {fake}"
    )
    from fleet import Fleet

    other = Fleet(tmp_path / "inv", fleet.env, fleet.hosts)
    base = json.loads(json.dumps(fleet.base))
    base["hosts"]["web1"]["restic"] = fake
    other.write_inventory(base, {"shop": fleet.sites["shop"]})
    other.orch("backup", "shop", "--task", "1010", expect=1)
    (op,) = other.orch_json("log", "--task", "1010")
    assert "502 Bad Gateway" in op["error"], op["error"]  # the page itself is kept in the oplog

    md = other.orch("report", "--task", "1010").stdout
    (row,) = [line for line in md.splitlines() if line.startswith("| ") and "| backup |" in line]
    assert "<" not in row and "502 Bad Gateway" in row and len(row) < 500, row
    assert row.count(" | ") == 6, "the error's pipes would add table cells"
    page = other.orch("report", "--task", "1010", "--format", "html").stdout
    assert "<script>alert" not in page and "&lt;script&gt;" not in page and "502 Bad Gateway" in page
    assert len(page) < len(HTML_PAGE) + 3000
    (data,) = json.loads(other.orch("report", "--task", "1010", "--format", "json").stdout)["operations"]
    assert "\n" not in data["error"] and len(data["error"]) <= 300 and "502 Bad Gateway" in data["error"]
    web1.run(f"rm -f {fake}")


def test_defect_9_a_task_total_counts_a_nested_backup_once(fleet):
    fleet.orch("backup", "blog", "--task", "9009")
    fleet.orch("restore", "blog", "--backup", "latest", "--to", "production", "--task", "9009", "--yes")
    ops = fleet.orch_json("log", "--task", "9009")
    first, restore, safety = sorted(ops, key=lambda op: op["id"])
    assert (first["action"], restore["action"], safety["action"]) == ("backup", "restore", "backup")
    assert restore["started_at"] <= safety["started_at"] and safety["finished_at"] <= restore["finished_at"], (
        "the safety backup runs inside the restore"
    )

    assert first["finished_at"] <= restore["started_at"]
    wall = first["duration"] + restore["duration"]  # the wall time spent: the third ran inside the restore
    total = f"task 9009: 3 operation(s), total time {human_duration(wall)}"
    assert total in fleet.orch("log", "--task", "9009").stdout
    summary = json.loads(fleet.orch("report", "--task", "9009", "--format", "json").stdout)["summary"]
    assert abs(summary["total_seconds"] - wall) < 0.01


def test_check_checks_each_hosts_web_block_as_the_ssh_user(wp_fleet, tmp_path):
    rows = {
        row["check"]: row
        for row in wp_fleet.orch_json("check", "wp")
        if row["host"] == "stage1" and row["check"].startswith("web")
    }
    assert {check: row["ok"] for check, row in rows.items()} == {
        "web sites_dir": True,
        "web nginx test": True,
        "web php socket": True,
        "web reload": True,
        "web php_reload": True,
    }, rows
    assert "may signal the nginx master" in rows["web reload"]["detail"]
    assert "not set" in rows["web php_reload"]["detail"]

    from fleet import Fleet

    inventory = yaml.safe_load(wp_fleet.inventory.read_text())
    web = inventory["hosts"]["stage1"]["web"]
    inventory["hosts"]["stage1"]["web"] = web | {
        "sites_dir": "/etc",
        "test": [*web["test"], "-c", str(tmp_path / "missing.conf")],
        "php_socket": str(tmp_path / "no.sock"),
        "reload": ["sudo", "-n", "/usr/sbin/nginx", "-s", "reload"],
        "php_reload": ["sudo", "systemctl", "reload", "php8.2-fpm"],
    }
    broken = Fleet(tmp_path / "inv", wp_fleet.env, wp_fleet.hosts)
    broken.write_inventory(inventory, {"wp": wp_fleet.site})
    proc = broken.orch("--json", "check", "wp", expect=1)
    rows = {row["check"]: row for row in json.loads(proc.stdout) if row["check"].startswith("web")}
    assert not any(row["ok"] for row in rows.values()), rows
    assert "/etc: not a folder this user may write in" in rows["web sites_dir"]["detail"]
    assert "missing.conf" in rows["web nginx test"]["detail"]
    assert "no such socket" in rows["web php socket"]["detail"]
    assert "sudo" in rows["web reload"]["detail"] and "sudo" in rows["web php_reload"]["detail"]
