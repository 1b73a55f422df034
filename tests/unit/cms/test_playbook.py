"""Tests of the CMS playbooks (playbooks/*.yaml) and their loader (orchestrator.backends.cms.playbook).

Every playbook must load and validate; its nginx server block must pass ``nginx -t``; its PHP snippets (the
WordPress mu-plugin, config blocks, the migration one-liner) must parse with ``php -l``; overrides merge the
documented way and broken data is reported with its key path.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from orchestrator.backends.cms.playbook import (
    PLAYBOOK_DIRS,
    Playbook,
    deep_merge,
    glob_matches,
    load_playbook,
    playbook_for_site,
    playbook_names,
    read_playbook_data,
)
from orchestrator.backends.remote import Command
from orchestrator.errors import UsageError

NAMES = ["bitrix", "drupal", "generic", "joomla", "laravel", "wordpress"]
PHP, NGINX = shutil.which("php"), shutil.which("nginx") or (Path("/usr/sbin/nginx").is_file() and "/usr/sbin/nginx")
VHOST = {
    "server_name": "t14883.shop.stage.example.net",
    "listen": "127.0.0.1:8080",
    "root": "/var/www/stage/shop",
    "php_socket": "/run/php/php8.2-fpm.sock",
    "auth_file": "/etc/nginx/orch-staging.htpasswd",
}


def test_the_six_playbooks_are_found_in_the_repository():
    assert playbook_names() == NAMES
    # orchestrator/playbooks is the top-level playbooks/ (a symlink in the checkout, package data in a wheel)
    assert PLAYBOOK_DIRS[0].resolve() == Path(__file__).resolve().parents[3] / "playbooks"


@pytest.mark.parametrize("name", NAMES)
def test_each_playbook_loads_with_every_required_part(name):
    playbook = load_playbook(name)
    assert isinstance(playbook, Playbook) and playbook.name == name and playbook.title
    assert playbook.code and playbook.vhost and playbook.mail_off.how and playbook.cron_off.how
    for rule in playbook.sanitize:
        assert rule.table and rule.field and rule.rule
    if name != "generic":
        assert playbook.config and playbook.sanitize and playbook.password_reset
        assert playbook.content and playbook.cache
    if playbook.table_prefix.file:
        assert playbook.config_file(playbook.table_prefix.file)


@pytest.mark.parametrize("name", NAMES)
def test_each_vhost_renders_with_staging_guards(name):
    text = load_playbook(name).render_vhost(**VHOST)
    assert 'add_header X-Robots-Tag "noindex, nofollow" always;' in text
    assert "auth_basic_user_file /etc/nginx/orch-staging.htpasswd;" in text
    assert "$realpath_root" in text and "fastcgi_pass unix:/run/php/php8.2-fpm.sock;" in text
    assert "{" + "server_name}" not in text and "server_name t14883.shop.stage.example.net;" in text


@pytest.mark.skipif(not NGINX, reason="nginx not installed")
@pytest.mark.parametrize("name", NAMES)
def test_each_vhost_passes_nginx_config_test(tmp_path, name):
    shutil.copy("/etc/nginx/fastcgi_params", tmp_path / "fastcgi_params")
    (tmp_path / "htpasswd").write_text("staging:$apr1$x$y\n")
    server = load_playbook(name).render_vhost(
        **{**VHOST, "auth_file": str(tmp_path / "htpasswd"), "root": str(tmp_path / "site")}
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi;\n  proxy_temp_path {tmp_path}/proxy;\n"
        f"  uwsgi_temp_path {tmp_path}/uwsgi;\n  scgi_temp_path {tmp_path}/scgi;\n{server}\n}}\n"
    )
    result = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("bad", ["a b", "x;", "x}", "$host", "a\nb", "'q'"])
def test_vhost_values_that_nginx_would_read_as_syntax_are_refused(bad):
    with pytest.raises(UsageError, match="only letters"):
        load_playbook("wordpress").render_vhost(**{**VHOST, "root": bad})


def test_vhost_placeholders_must_all_be_given():
    with pytest.raises(UsageError, match="auth_file"):
        load_playbook("joomla").render_vhost(**{k: v for k, v in VHOST.items() if k != "auth_file"})


# ------------------------------------------------------------------------------------------ PHP snippets


def php_lint(tmp_path: Path, code: str) -> None:
    file = tmp_path / "snippet.php"
    file.write_text(code if code.lstrip().startswith("<?php") else "<?php\n" + code)
    result = subprocess.run([PHP, "-l", str(file)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PHP is None, reason="php CLI not installed")
@pytest.mark.parametrize("name", NAMES)
def test_every_php_snippet_of_a_playbook_parses(tmp_path, name):
    playbook = load_playbook(name)
    for item in playbook.config:
        if item.append:
            php_lint(tmp_path, item.append)
    for content in [*playbook.mail_off.files.values(), *playbook.cron_off.files.values()]:
        php_lint(tmp_path, content)
    for step in playbook.migrate:
        if step.run[:2] == ("php", "-r"):
            php_lint(tmp_path, step.run[2])


@pytest.mark.skipif(PHP is None, reason="php CLI not installed")
def test_the_wordpress_mu_plugin_replaces_wp_mail_and_registers_its_filters(tmp_path):
    plugin = load_playbook("wordpress").mail_off.files["wp-content/mu-plugins/orch-staging.php"]
    (tmp_path / "orch-staging.php").write_text(plugin)
    script = (
        "<?php\n$filters = [];\nfunction add_filter($hook, $cb, $prio = 10) { global $filters;"
        " $filters[$hook] = is_string($cb) ? $cb : 'closure:' . var_export($cb(null), true); }\n"
        "function __return_zero() { return 0; }\nfunction __return_false() { return false; }\n"
        "ini_set('error_log', '/dev/null');\nrequire __DIR__ . '/orch-staging.php';\n"
        "var_dump(wp_mail('a@example.com', 'Hi', 'Body'));\nksort($filters);\n"
        "echo json_encode($filters);\n"
    )
    (tmp_path / "run.php").write_text(script)
    out = subprocess.run([PHP, str(tmp_path / "run.php")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.startswith("bool(true)")
    assert out.stdout.endswith(
        '{"action_scheduler_allow_async_request_runner":"__return_false",'
        '"pre_option_blog_public":"__return_zero","pre_wp_mail":"closure:true",'
        '"woocommerce_webhook_should_deliver":"__return_false"}'
    )


# ------------------------------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    "name,path,expected",
    [
        ("wordpress", "wp-content/uploads/2024/05/a.jpg", "content"),
        ("wordpress", "wp-content/cache/page/index.html", "cache"),
        ("wordpress", "wp-content/uploads/cache/x.css", "cache"),
        ("wordpress", "wp-content/plugins/woocommerce/woocommerce.php", "code"),
        ("wordpress", "wp-content/advanced-cache.php", "code"),
        ("wordpress", "wp-config.php", "config"),
        ("wordpress", "index.php", "code"),
        ("wordpress", "wp-content/mu-plugins/orch-staging.php", "staging"),
        ("wordpress", "backup-2024.zip", "other"),
        ("joomla", "images/banners/roof.jpg", "content"),
        ("joomla", "administrator/cache/x.php", "cache"),
        ("joomla", "administrator/components/com_content/src/x.php", "code"),
        ("joomla", "configuration.php", "config"),
        ("bitrix", "upload/iblock/1a2/pic.jpg", "content"),
        ("bitrix", "upload/resize_cache/iblock/pic.jpg", "cache"),
        ("bitrix", "bitrix/managed_cache/MYSQL/x.php", "cache"),
        ("bitrix", "bitrix/php_interface/dbconn.php", "config"),
        ("bitrix", "bitrix/php_interface/init.php", "code"),
        ("bitrix", "catalog/index.php", "code"),
        ("bitrix", "catalog/.section.php", "code"),
        ("drupal", "sites/default/files/pictures/me.jpg", "content"),
        ("drupal", "sites/default/files/css/css_abc.css", "cache"),
        ("drupal", "sites/default/files/styles/thumb/public/me.jpg", "cache"),
        ("drupal", "sites/default/settings.php", "config"),
        ("drupal", "core/lib/Drupal.php", "code"),
        ("laravel", "storage/app/public/avatars/1.png", "content"),
        ("laravel", "storage/framework/views/abc.php", "cache"),
        ("laravel", "bootstrap/cache/config.php", "cache"),
        ("laravel", "bootstrap/app.php", "code"),
        ("laravel", ".env", "config"),
        ("laravel", "app/Models/User.php", "code"),
        ("generic", "anything/at/all.php", "code"),
    ],
)
def test_paths_are_classified_cache_content_config_code_or_other(name, path, expected):
    assert load_playbook(name).classify(path) == expected


def test_globs_cover_descendants_and_stay_within_segments():
    assert glob_matches("wp-admin/", "wp-admin/css/x.css") and glob_matches("wp-admin", "wp-admin")
    assert glob_matches("*.php", "index.php") and not glob_matches("*.php", "dir/index.php")
    assert glob_matches("**/*.php", "a/b/c.php") and glob_matches("**/*.php", "c.php")
    assert glob_matches("sites/*/files/", "sites/default/files/x") and not glob_matches("sites/*/files/", "sites/x")
    assert not glob_matches("wp-admin/", "wp-admin-old/x") and glob_matches("/cache/", "./cache/x")


def test_copy_excludes_are_anchored_rsync_patterns():
    assert load_playbook("wordpress").copy_excludes()[0] == "/wp-content/cache/"
    assert "/bitrix/managed_cache/" in load_playbook("bitrix").copy_excludes()


def test_health_markers():
    wordpress = load_playbook("wordpress")
    assert wordpress.healthy('<link href="https://x/wp-content/themes/a.css">')
    assert not wordpress.healthy("<h1>Error establishing a database connection</h1>")
    assert load_playbook("laravel").healthy("")  # no markers: status only


# ------------------------------------------------------------------------------------------ migrations


def test_migration_takes_the_first_step_whose_probe_passes():
    wordpress = load_playbook("wordpress")
    probes: list[str] = []

    def applies(probe: Command) -> bool:
        probes.append(probe.masked())
        return "wp" in probe.masked() and has_wp

    has_wp = True
    command = wordpress.choose_migration("/var/www/stage/shop", "https://stage.example.net", applies)
    assert command.masked() == (
        "cd /var/www/stage/shop && wp core update-db --path=/var/www/stage/shop --url=https://stage.example.net"
    )
    assert probes == ["command -v wp > /dev/null"]
    has_wp = False
    command = wordpress.choose_migration("/var/www/stage/shop", "https://stage.example.net", applies)
    assert command.parts[3:5] == ("php", "-r") and command.parts[-1] == "https://stage.example.net"


def test_migration_probes_files_in_the_environment_and_may_find_nothing():
    laravel, drupal = load_playbook("laravel"), load_playbook("drupal")
    assert laravel.migrate[0].probe("/srv/app").masked() == "test -e /srv/app/artisan"
    assert laravel.choose_migration("/srv/app", "https://x", lambda probe: True).masked() == (
        "cd /srv/app && php artisan migrate --force"
    )
    assert laravel.choose_migration("/srv/app", "https://x", lambda probe: False) is None
    assert drupal.choose_migration("/srv/d", "https://x", lambda p: "command -v" in p.masked()).masked() == (
        "cd /srv/d && drush --root=/srv/d updatedb --yes"
    )
    assert load_playbook("joomla").choose_migration("/srv/j", "https://x", lambda p: True) is None


# ------------------------------------------------------------------------------------------ overrides


def test_overrides_merge_mappings_replace_lists_and_null_removes():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3], "e": 2}, "d": None})
    assert merged == {"a": {"b": 1, "c": [3], "e": 2}}


def test_site_overrides_adjust_a_playbook():
    overrides = {
        "content": ["web/sites/default/files/"],
        "sanitize": {"users_field_data.name": None, "profile__field_phone.field_phone_value": "phone"},
        "keys": {"profile__field_phone": "entity_id"},
        "migrate": [],
    }
    playbook = load_playbook("drupal", overrides)
    assert playbook.content == ("web/sites/default/files/",)
    columns = {rule.column for rule in playbook.sanitize}
    assert "profile__field_phone.field_phone_value" in columns and "{prefix}users_field_data.mail" in columns
    assert playbook.migrate == () and playbook.keys["profile__field_phone"] == "entity_id"
    assert load_playbook("drupal").content == ("sites/*/files/",)  # the cached file data is not touched


def test_null_override_on_a_playbook_key_removes_the_rule():
    playbook = load_playbook("wordpress", {"sanitize": {"{prefix}users.display_name": None}})
    assert "{prefix}users.display_name" not in {rule.column for rule in playbook.sanitize}


def test_playbook_for_site_reads_playbook_overrides_from_the_site():
    site = SimpleNamespace(playbook="laravel", raw={"playbook_overrides": {"health_marker": ["Acme Portal"]}})
    assert playbook_for_site(site).health_marker == ("Acme Portal",)
    plain = SimpleNamespace(playbook="laravel", raw={})
    assert playbook_for_site(plain).health_marker == ()


def test_bad_overrides_are_reported_with_their_key_paths_all_at_once():
    with pytest.raises(UsageError) as error:
        load_playbook(
            "wordpress",
            {
                "migrate": "wp core update-db",
                "sanitize": {
                    "{prefix}users.user_email": "scramble",
                    "nodot": "email",
                    "{prefix}users.x": {"rule": "email", "where": "1; DROP TABLE x"},
                },
                "config": [{"path": "wp-config.php", "format": "yaml"}],
                "password_reset": {"scheme": "sha1", "table": "t", "column": "c"},
                "colour": "blue",
            },
        )
    lines = str(error.value).splitlines()
    assert all(line.startswith("playbook wordpress (with site overrides): ") for line in lines)
    text = "\n".join(lines)
    for expected in [
        "migrate: must be a list",
        "sanitize.{prefix}users.user_email.rule: unknown rule 'scramble'",
        "sanitize.nodot: keys are table.column",
        "where: must be one SQL condition",
        "config[0].format: unknown format 'yaml'",
        "password_reset.scheme: unknown scheme 'sha1'",
        "colour: unknown key",
    ]:
        assert expected in text


def test_a_missing_required_key_or_a_dangling_prefix_file_is_reported():
    with pytest.raises(UsageError, match="vhost: required"):
        load_playbook("generic", {"vhost": None})
    with pytest.raises(UsageError, match="table_prefix.file: 'wp-config.php' is not one of the config files"):
        load_playbook("wordpress", {"config": []})


def test_unknown_and_invalid_playbook_names():
    with pytest.raises(UsageError, match=r"unknown playbook 'typo3' \(known: bitrix, drupal"):
        load_playbook("typo3")
    with pytest.raises(UsageError, match="invalid playbook name"):
        load_playbook("../etc/passwd")


def test_playbooks_load_from_another_folder(tmp_path):
    data = read_playbook_data("generic")
    data["name"], data["title"] = "static", "Static HTML"
    (tmp_path / "static.yaml").write_text(yaml.safe_dump(data))
    assert load_playbook("static", directory=tmp_path).title == "Static HTML"
    assert playbook_names(tmp_path) == ["static"]


def test_duplicate_keys_and_yaml_11_booleans_are_not_silently_accepted(tmp_path):
    (tmp_path / "dup.yaml").write_text("name: dup\nname: again\n")
    with pytest.raises(UsageError, match="duplicate key"):
        load_playbook("dup", directory=tmp_path)
    data = read_playbook_data("generic")
    text = yaml.safe_dump(data).replace("title: Generic PHP site", "title: no")
    (tmp_path / "generic.yaml").write_text(text)
    assert load_playbook("generic", directory=tmp_path).title == "no"
