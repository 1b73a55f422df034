"""Proof that the web testbed is real: WordPress answers through nginx + php-fpm running as the host user, its
content carries the URLs a promotion must rewrite, and the host user can add a vhost and reload nginx over SSH."""

from __future__ import annotations

import base64
import json
import pwd
import secrets
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from testbed import TestbedError
from testbed.webserver import start_web_stack


def ssh(host) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key_type, key_data = host.host_key.split()
    client.get_host_keys().add(
        f"[{host.address}]:{host.port}", key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    )
    client.connect(
        host.address,
        host.port,
        username=host.user,
        key_filename=str(host.identity_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def ssh_run(client: paramiko.SSHClient, cmd: str) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(cmd)
    out = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), out


def poll(fn, timeout: float = 5):
    """fn() until it returns something truthy; its last result otherwise."""
    deadline = time.monotonic() + timeout
    while not (result := fn()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_front_page_and_posts_link_to_the_site_url(wordpress):
    status, headers, body = wordpress.get("/")
    assert status == 200, body[:500]
    assert wordpress.title in body
    assert f'href="{wordpress.url}/new-roof-kreuzberg/"' in body

    status, _, body = wordpress.get("/new-roof-kreuzberg/")  # pretty permalink: nginx try_files -> index.php
    assert status == 200
    assert f'src="{wordpress.url}/wp-content/uploads/2026/11/roof.png"' in body
    assert f'href="{wordpress.url}/services/"' in body
    status, _, body = wordpress.get("/krovlya/")
    assert status == 200 and "Кровля" in body

    status, headers, body = wordpress.get("/" + wordpress.upload)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert (wordpress.path / wordpress.upload).read_bytes().startswith(b"\x89PNG")


def test_login_page_and_admin_password(wordpress):
    status, _, body = wordpress.get("/wp-login.php")
    assert status == 200 and 'name="log"' in body
    jar = wordpress.login()  # POST wp-login.php -> 302 to wp-admin
    status, _, body = wordpress.get("/wp-admin/", cookies=jar)
    assert status == 200 and "Dashboard" in body
    with pytest.raises(TestbedError, match="login as admin failed"):
        wordpress.login(password="wrong")
    # the other users' passwords work too (checked without HTTP)
    checks = wordpress.run_php(
        "$out = [];"
        f"foreach (json_decode({json.dumps(json.dumps(wordpress.user_passwords))}, true) as $login => $pw) {{"
        "  $u = get_user_by('login', $login);"
        "  $out[$login] = [$u->user_email, wp_check_password($pw, $u->user_pass, $u->ID)];"
        "}"
        "echo json_encode($out);"
    )
    assert json.loads(checks) == {login: [wordpress.users[login], True] for login in wordpress.user_passwords}
    assert wordpress.users["jane"] == "jane.customer@gmail.example"


def test_urls_in_serialized_and_json_values(wordpress, mariadb):
    url = wordpress.url

    def raw(sql: str) -> str:
        return mariadb.sql(sql, wordpress.db_name).rstrip("\n")

    widget = raw("SELECT option_value FROM wp_options WHERE option_name = 'orch_test_widget'")
    html = f'<a href="{url}/x">Кровля</a>'
    assert widget.startswith("a:2:{") and f's:{len(html.encode())}:"{html}"' in widget  # byte length
    decoded = wordpress.run_php(
        "global $wpdb;"
        "$raw = $wpdb->get_var(\"SELECT option_value FROM wp_options WHERE option_name = 'orch_test_widget'\");"
        "echo json_encode(unserialize($raw), JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);"
    )
    assert json.loads(decoded) == {"url": url, "html": html}

    escaped = url.replace("/", "\\/")  # JSON's http:\/\/...
    # mariadb -B prints a backslash as \\
    assert f'"url":"{escaped}"'.replace("\\", "\\\\") in raw(
        "SELECT option_value FROM wp_options WHERE option_name = 'orch_test_json'"
    )
    meta = raw(
        f"SELECT meta_value FROM wp_postmeta WHERE meta_key = '_orch_json' AND post_id = {wordpress.post_ids['roof']}"
    )
    assert json.loads(meta.replace("\\\\", "\\")) == {"link": f"{url}/services/", "home": url}
    assert raw("SELECT option_value FROM wp_options WHERE option_name IN ('siteurl', 'home')").split() == [url, url]
    assert set(raw("SELECT user_email FROM wp_users").split()) == set(wordpress.users.values())


def test_everything_belongs_to_and_runs_as_the_host_user(wordpress, web1_web):
    user = wordpress.host.user
    assert (
        subprocess.run(
            ["find", str(wordpress.path), "!", "-user", user], capture_output=True, text=True, check=True
        ).stdout
        == ""
    )
    uid = str(pwd.getpwnam(user).pw_uid)
    for master in (web1_web.nginx.pid, web1_web.php.pid):
        workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        assert workers
        for pid in [master, *workers]:
            real, effective, saved, _ = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
            assert real == effective == saved == uid
    assert oct(web1_web.php.socket.stat().st_mode & 0o777) == "0o666"
    assert web1_web.nginx.sites_dir.stat().st_uid == wordpress.path.stat().st_uid
    config = (wordpress.path / "wp-config.php").read_text()
    assert "'DB_HOST', '127.0.0.1:" in config and "$table_prefix = 'wp_';" in config


def test_host_user_adds_a_vhost_and_reloads_nginx_over_ssh(ssh_hosts, web1_web, wordpress):
    host, nginx = ssh_hosts["web1"], web1_web.nginx
    name = f"other-{secrets.token_hex(3)}"
    site = host.home / name
    vhost = nginx.sites_dir / f"{name}.conf"
    with ssh(host) as client:
        rc, out = ssh_run(
            client,
            f"mkdir -p {site} && echo 'hello from {name}' > {site}/index.html && "
            f"cat > {vhost} <<'EOF'\n"
            f"server {{\n    listen {nginx.listen};\n    server_name {name}.example;\n"
            f"    root {site};\n}}\nEOF\n"
            f"{nginx.test_command} && {nginx.reload_command}",
        )
        assert rc == 0, out
        try:
            assert poll(lambda: wordpress.get("/", host=f"{name}.example")[2] == f"hello from {name}\n")
            assert wordpress.get("/")[0] == 200  # the WordPress vhost is still the default server

            # a broken vhost: nginx -t says so (non-zero) and the running nginx keeps its config
            rc, out = ssh_run(
                client, f"echo 'server {{ listen {nginx.listen}; bogus_directive; }}' > {vhost} && {nginx.test_command}"
            )
            assert rc != 0 and "bogus_directive" in out
        finally:
            ssh_run(client, f"rm -rf {vhost} {site}")
    nginx.reload()
    # now the WordPress vhost (default server) answers that name too
    status, headers, _ = wordpress.get("/", host=f"{name}.example")
    assert (status, headers["X-Redirect-By"]) == (301, "WordPress")


def test_stage1_web_runs_as_stage1_user(ssh_hosts, stage1_web):
    host, nginx = ssh_hosts["stage1"], stage1_web.nginx
    assert (nginx.user, nginx.address) == ("orch-stage1", "127.0.0.3")
    assert stage1_web.url == f"http://127.0.0.3:{nginx.port}"
    assert stage1_web.workdir.parent == host.home
    with ssh(host) as client:
        rc, out = ssh_run(
            client,
            f"touch {nginx.sites_dir}/probe.conf && {nginx.test_command} && "
            f"{nginx.reload_command} && rm {nginx.sites_dir}/probe.conf && "
            f"kill -0 $(cat {stage1_web.php.pid_file})",
        )
        assert rc == 0, out
    with pytest.raises(subprocess.CalledProcessError):  # web1's user cannot see stage1's web dir
        ssh_hosts["web1"].run(f"ls {nginx.sites_dir}")


def test_reload_and_stop_leave_no_processes(ssh_hosts, tmp_path):
    stack = start_web_stack("orch-web1", "127.0.0.2", parent=ssh_hosts["web1"].home)
    stack.php.reload()  # SIGUSR2: the master re-executes itself, new workers
    stack.nginx.reload()
    pids = [stack.nginx.pid, stack.php.pid]
    pids += [int(p) for pid in pids for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert len(pids) >= 4
    stack.stop(keep_logs_in=tmp_path / "logs")
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    assert not stack.workdir.exists()
    assert (tmp_path / "logs" / "nginx-error.log").exists()
