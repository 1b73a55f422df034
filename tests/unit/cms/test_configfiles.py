"""Tests of the staging config-file rewriters (orchestrator.backends.cms.configfiles).

PHP files are judged by real PHP: the rewritten file is included by the ``php`` CLI (with the few stubs the file
needs) and the values PHP reads are compared with what was written, with errors and warnings (a constant defined
twice...) turned into failures. ``.env`` files are read by a parser written here after vlucas/phpdotenv v5's
EntryParser (the reader Laravel 8+ uses).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.backends.cms.configfiles import (
    BEGIN,
    FORMATS,
    Target,
    env_value,
    php_string,
    read_drupal_prefix,
    read_joomla_prefix,
    read_table_prefix,
    read_wp_prefix,
    rewrite_bitrix_dbconn,
    rewrite_bitrix_settings,
    rewrite_config,
    rewrite_config_file,
    rewrite_drupal_settings,
    rewrite_joomla,
    rewrite_laravel_env,
    rewrite_wp_config,
)
from orchestrator.backends.cms.playbook import load_playbook
from orchestrator.backends.remote import Sensitive
from orchestrator.errors import UsageError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cms"
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="php CLI not installed")

HOSTILE = [
    "plain-Pass_123",
    "it's",
    'dq"uote',
    "back\\slash",
    "trailing\\",
    "\\'",
    "\\\\'\\",
    "$HOME ${PATH} {$x} $x",
    "${APP_NAME}",
    "#hash // line /* block */",
    "?> <?php echo 1; ?>",
    "юникод ✓ 🚀",
    "a'b\"c\\d$e#f%g`h",
    " leading and trailing spaces ",
    "",
]

STAGE = Target(
    url="https://t14883.shop.stage.example.net",
    path="/var/www/stage/shop",
    database="shop_stage",
    user="shop_stage",
    password="stage-pw",
    host="127.0.0.1",
    port=3307,
    source_url="https://shop.example.com",
)


def target(password="stage-pw", **changes) -> Target:
    values = {**STAGE.__dict__, "password": password, **changes}
    return Target(**values)


def fixture(path: str) -> str:
    return (FIXTURES / path).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ PHP helpers


def run_php(tmp_path: Path, files: dict[str, str], script: str) -> dict:
    """Write files under tmp_path, run `script` (PHP code, after `<?php`) there and return the JSON it prints.
    Any PHP notice, warning or error fails the test."""
    for name, text in files.items():
        file = tmp_path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    runner = tmp_path / "orch_test_runner.php"
    runner.write_text(
        "<?php\nset_error_handler(function ($no, $str, $file, $line) {\n"
        '  fwrite(STDERR, "PHP error $no: $str at $file:$line\\n"); exit(3);\n});\n' + script,
        encoding="utf-8",
    )
    result = subprocess.run(
        [PHP, "-d", "display_errors=stderr", "-d", "error_reporting=-1", str(runner)],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr.decode() + result.stdout.decode()
    out = result.stdout.decode()
    start = out.index("ORCH_JSON:")  # files may print (a closing ?> followed by a newline...)
    return json.loads(out[start + len("ORCH_JSON:") :])


def emit(expr: str) -> str:
    return f"echo 'ORCH_JSON:', json_encode({expr}, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);\n"


@needs_php
@pytest.mark.parametrize("value", HOSTILE + ["line\nbreak", "nul\0byte"])
def test_php_string_literals_read_back_as_the_exact_value(tmp_path, value):
    got = run_php(tmp_path, {}, f"$v = {php_string(value)};\n" + emit("[$v]"))
    assert got == [value]


# ------------------------------------------------------------------------------------------ WordPress

WP_READ = (
    "$c = ['DB_NAME', 'DB_USER', 'DB_PASSWORD', 'DB_HOST', 'WP_HOME', 'WP_SITEURL', 'WP_ENVIRONMENT_TYPE',"
    " 'DISABLE_WP_CRON', 'COOKIE_DOMAIN'];\n"
    "require __DIR__ . '/wp-config.php';\n"
    "$out = ['prefix' => $table_prefix];\n"
    "foreach ($c as $n) { $out[$n] = defined($n) ? constant($n) : null; }\n" + emit("$out")
)


def wp_files(text: str) -> dict[str, str]:
    return {"wp-config.php": text, "wp-settings.php": "<?php\n"}


@needs_php
@pytest.mark.parametrize("password", HOSTILE)
def test_wp_config_rewrite_is_read_back_by_php_with_a_hostile_password(tmp_path, password):
    settings = load_playbook("wordpress").config_file("wp-config.php").set
    result = rewrite_wp_config(fixture("wordpress/wp-config.php"), target(password), settings)
    got = run_php(tmp_path, wp_files(result.text), WP_READ)
    assert got == {
        "prefix": "wp_",
        "DB_NAME": "shop_stage",
        "DB_USER": "shop_stage",
        "DB_PASSWORD": password,
        "DB_HOST": "127.0.0.1:3307",
        "WP_HOME": STAGE.url,
        "WP_SITEURL": STAGE.url,
        "WP_ENVIRONMENT_TYPE": "staging",
        "DISABLE_WP_CRON": True,
        "COOKIE_DOMAIN": "t14883.shop.stage.example.net",
    }


def test_wp_config_report_names_settings_and_never_values():
    result = rewrite_wp_config(fixture("wordpress/wp-config.php"), target("s3cret-Value"), {"DISABLE_WP_CRON": True})
    assert result.report() == [
        "DB_NAME: replaced",
        "DB_USER: replaced",
        "DB_PASSWORD: replaced",
        "DB_HOST: replaced",
        "WP_HOME: added",
        "WP_SITEURL: added",
        "COOKIE_DOMAIN: replaced",
        "DISABLE_WP_CRON: added",
    ]
    assert "s3cret-Value" not in " ".join(result.report())


def test_wp_config_adds_defines_before_the_stop_editing_line_and_leaves_comments_alone():
    text = fixture("wordpress/wp-config.php")
    result = rewrite_wp_config(text, STAGE, {"WP_ENVIRONMENT_TYPE": "staging"})
    out = result.text
    assert "// define( 'WP_HOME', 'https://old.shop.example.com' );" in out
    added = out.index("define( 'WP_HOME', 'https://t14883.shop.stage.example.net' );")
    assert added < out.index("/* That's all, stop editing!") and added > out.index("$table_prefix")
    assert out.count("Added by orch") == 1
    assert "Pr0d" not in out  # production's password is gone whatever its quoting was


def test_wp_config_rewrite_is_idempotent():
    once = rewrite_wp_config(fixture("wordpress/wp-config.php"), STAGE, {"DISABLE_WP_CRON": True})
    twice = rewrite_wp_config(once.text, STAGE, {"DISABLE_WP_CRON": True})
    assert twice.text == once.text
    assert all(change.action == "replaced" for change in twice.changes)


def test_wp_config_without_the_stop_editing_line_adds_before_wp_settings():
    text = "<?php\ndefine('DB_NAME', 'x');\n$table_prefix = \"wp7_\";\nrequire_once(ABSPATH . 'wp-settings.php');\n"
    out = rewrite_wp_config(text, STAGE).text
    assert out.index("define( 'WP_HOME'") < out.index("require_once(ABSPATH")
    assert read_wp_prefix(out) == "wp7_"


def test_wp_config_with_nowhere_to_add_settings_is_refused():
    with pytest.raises(UsageError, match="stop editing"):
        rewrite_wp_config("<?php\ndefine('DB_NAME', 'x');\n", STAGE)


def test_wp_siteurl_below_production_keeps_its_sub_folder():
    text = (
        "<?php\ndefine('WP_HOME', 'https://shop.example.com');\n"
        'define("WP_SITEURL", "http://shop.example.com/wp");\n/* That\'s all, stop editing! */\n'
    )
    out = rewrite_wp_config(text, STAGE).text
    assert "define('WP_SITEURL', 'https://t14883.shop.stage.example.net/wp');" in out.replace('"', "'")
    assert "define('WP_HOME', 'https://t14883.shop.stage.example.net');" in out


def test_wp_config_socket_and_computed_values():
    text = (
        "<?php\ndefine( 'DB_HOST', getenv('DB_HOST') ?: 'localhost' );\n"
        "define('DB_PASSWORD', \"a\" . 'b');\n/* stop editing */\n"
    )
    out = rewrite_wp_config(text, target(socket="/run/mysqld/mysqld.sock")).text
    assert "define( 'DB_HOST', 'localhost:/run/mysqld/mysqld.sock' );" in out
    assert "define('DB_PASSWORD', 'stage-pw');" in out


@needs_php
def test_debian_wordpress_sample_config_is_rewritten(tmp_path):
    sample = Path("/usr/share/wordpress/wp-config-sample.php")
    if not sample.is_file():
        pytest.skip("Debian's wordpress package is not installed")
    result = rewrite_wp_config(sample.read_text(), target("x'y\\z"), {"WP_ENVIRONMENT_TYPE": "staging"})
    got = run_php(tmp_path, wp_files(result.text), WP_READ)
    assert got["DB_PASSWORD"] == "x'y\\z" and got["WP_HOME"] == STAGE.url and got["prefix"] == "wp_"


def test_a_secret_password_is_revealed_only_into_the_file():
    secret = Sensitive("Very$ecret'1")
    result = rewrite_wp_config(fixture("wordpress/wp-config.php"), target(secret))
    assert "define(\"DB_PASSWORD\", 'Very$ecret\\'1');" in result.text
    assert "Very$ecret" not in repr(target(secret))


# ------------------------------------------------------------------------------------------ Joomla

JOOMLA_READ = "require __DIR__ . '/configuration.php';\n$c = new JConfig();\n" + emit(
    "['host' => $c->host, 'db' => $c->db, 'user' => $c->user, 'password' => $c->password,"
    " 'dbprefix' => $c->dbprefix, 'mailonline' => $c->mailonline, 'tmp_path' => $c->tmp_path,"
    " 'log_path' => $c->log_path, 'live_site' => $c->live_site,"
    " 'cookie_domain' => $c->cookie_domain, 'smtppass' => $c->smtppass]"
)


@needs_php
@pytest.mark.parametrize("password", HOSTILE)
def test_joomla_configuration_is_read_back_by_php(tmp_path, password):
    item = load_playbook("joomla").config_file("configuration.php")
    result = rewrite_config_file(item, fixture("joomla/configuration.php"), target(password))
    got = run_php(tmp_path, {"configuration.php": result.text}, JOOMLA_READ)
    assert got == {
        "host": "127.0.0.1:3307",
        "db": "shop_stage",
        "user": "shop_stage",
        "password": password,
        "dbprefix": "jx7tq_",
        "mailonline": False,
        "tmp_path": "/var/www/stage/shop/tmp",
        "log_path": "/var/www/stage/shop/administrator/logs",
        "live_site": "",
        "cookie_domain": "",
        "smtppass": "Smtp#Secret1",
    }


@needs_php
def test_joomla_live_site_and_cookie_domain_follow_the_staging_url(tmp_path):
    text = (
        fixture("joomla/configuration.php")
        .replace("public $live_site = '';", "public $live_site = 'https://shop.example.com/joomla';")
        .replace("public $cookie_domain = '';", "public $cookie_domain = '.shop.example.com';")
    )
    result = rewrite_joomla(text, STAGE)
    got = run_php(tmp_path, {"configuration.php": result.text}, JOOMLA_READ)
    assert got["live_site"] == "https://t14883.shop.stage.example.net/joomla"
    assert got["cookie_domain"] == "t14883.shop.stage.example.net"
    assert "live_site: replaced" in result.report() and "cookie_domain: replaced" in result.report()


@needs_php
def test_joomla_missing_property_is_added_inside_the_class(tmp_path):
    text = fixture("joomla/configuration.php").replace("\tpublic $mailonline = true;\n", "")
    result = rewrite_joomla(text, STAGE, {"mailonline": False})
    assert "mailonline: added" in result.report()
    got = run_php(tmp_path, {"configuration.php": result.text}, JOOMLA_READ)
    assert got["mailonline"] is False


def test_joomla_prefix_and_refusals():
    assert read_joomla_prefix(fixture("joomla/configuration.php")) == "jx7tq_"
    assert read_table_prefix("joomla", '<?php class JConfig { var $dbprefix = "abc_"; }') == "abc_"
    with pytest.raises(UsageError, match="JConfig"):
        rewrite_joomla("<?php $host = 'x';", STAGE)


# ------------------------------------------------------------------------------------------ Bitrix


@needs_php
@pytest.mark.parametrize("password", HOSTILE)
def test_bitrix_settings_connection_is_read_back_by_php(tmp_path, password):
    result = rewrite_bitrix_settings(fixture("bitrix/bitrix/.settings.php"), target(password))
    got = run_php(
        tmp_path,
        {".settings.php": result.text},
        "$s = include __DIR__ . '/.settings.php';\n"
        + emit("[$s['connections']['value']['default'], $s['crypto']['value']['crypto_key']]"),
    )
    assert got == [
        {
            "className": "\\Bitrix\\Main\\DB\\MysqliConnection",
            "host": "127.0.0.1:3307",
            "database": "shop_stage",
            "login": "shop_stage",
            "password": password,
            "options": 2,
        },
        "0f7c5a1d2e3b4c5d6e7f8091a2b3c4d5",
    ]
    assert [str(c) for c in result.changes] == [
        f"connections.default.{k}: replaced" for k in ("host", "database", "login", "password")
    ]


@needs_php
def test_bitrix_settings_missing_entry_is_added_and_socket_becomes_localhost(tmp_path):
    text = fixture("bitrix/bitrix/.settings.php").replace("        'login' => 'bitrix0',\n", "")
    result = rewrite_bitrix_settings(text, target(socket="/run/mysqld/mysqld.sock"))
    got = run_php(
        tmp_path,
        {".settings.php": result.text},
        "$s = include __DIR__ . '/.settings.php';\n" + emit("$s['connections']['value']['default']"),
    )
    assert got["login"] == "shop_stage" and got["host"] == "localhost"
    assert "connections.default.login: added" in result.report()


def test_bitrix_settings_without_connections_is_refused():
    with pytest.raises(UsageError, match="connections"):
        rewrite_bitrix_settings("<?php return array('utf_mode' => array('value' => true));", STAGE)


DBCONN_READ = "require __DIR__ . '/dbconn.php';\n" + emit(
    "[$DBHost, $DBName, $DBLogin, $DBPassword, BX_CRONTAB_SUPPORT, NO_AGENT_CHECK,"
    " DisableEventsCheck, function_exists('custom_mail') ? custom_mail('a@b', 's', 'm') : null,"
    " BX_UTF]"
)


@needs_php
@pytest.mark.parametrize("password", HOSTILE)
def test_bitrix_dbconn_is_read_back_by_php_with_mail_and_agents_off(tmp_path, password):
    item = load_playbook("bitrix").config_file("bitrix/php_interface/dbconn.php")
    result = rewrite_config_file(item, fixture("bitrix/bitrix/php_interface/dbconn.php"), target(password))
    got = run_php(tmp_path, {"dbconn.php": result.text}, DBCONN_READ)
    assert got == ["127.0.0.1:3307", "shop_stage", "shop_stage", password, True, True, True, True, True]
    assert result.text.rstrip().endswith("?>")
    assert "BX_CRONTAB_SUPPORT: replaced" in result.report() and "NO_AGENT_CHECK: added" in result.report()


def test_bitrix_dbconn_rewrite_is_idempotent_and_modern_files_keep_no_db_variables():
    item = load_playbook("bitrix").config_file("bitrix/php_interface/dbconn.php")
    once = rewrite_config_file(item, fixture("bitrix/bitrix/php_interface/dbconn.php"), STAGE)
    twice = rewrite_config_file(item, once.text, STAGE)
    assert twice.text == once.text and once.text.count(BEGIN) == 1
    modern = rewrite_bitrix_dbconn('<?php\ndefine("BX_UTF", true);\n', STAGE, {"NO_AGENT_CHECK": True})
    assert "$DBHost: absent" in modern.report() and "define( 'NO_AGENT_CHECK', true );" in modern.text


# ------------------------------------------------------------------------------------------ Drupal

DRUPAL_READ = "$app_root = __DIR__; $site_path = 'sites/default';\nrequire __DIR__ . '/settings.php';\n" + emit(
    "['db' => $databases['default']['default'], 'hosts' => $settings['trusted_host_patterns'],"
    " 'mail' => $config['system.mail']['interface']['default'],"
    " 'cron' => $config['automated_cron.settings']['interval'],"
    # Drupal's TrustedHostsRequestFactory wraps each pattern as '/' . $pattern . '/i'
    " 'matches' => preg_match('/' . $settings['trusted_host_patterns'][0] . '/i',"
    " 't14883.shop.stage.example.net'),"
    " 'evil' => preg_match('/' . $settings['trusted_host_patterns'][0] . '/i',"
    " 't14883xshop.stage.example.net')]"
)


@needs_php
@pytest.mark.parametrize("password", HOSTILE)
def test_drupal_settings_override_block_is_read_back_by_php(tmp_path, password):
    item = load_playbook("drupal").config_file("sites/default/settings.php")
    result = rewrite_config_file(item, fixture("drupal/sites/default/settings.php"), target(password))
    got = run_php(tmp_path, {"settings.php": result.text}, DRUPAL_READ)
    assert got["db"] == {
        "database": "shop_stage",
        "username": "shop_stage",
        "password": password,
        "prefix": "",
        "host": "127.0.0.1",
        "port": "3307",
        "isolation_level": "READ COMMITTED",
        "driver": "mysql",
        "namespace": "Drupal\\mysql\\Driver\\Database\\mysql",
        "autoload": "core/modules/mysql/src/Driver/Database/mysql/",
    }
    assert got["hosts"] == ["^t14883\\.shop\\.stage\\.example\\.net$"]
    assert got["mail"] == "test_mail_collector" and got["cron"] == 0
    assert got["matches"] == 1 and got["evil"] == 0


@needs_php
def test_drupal_rewrite_is_idempotent_and_handles_a_closing_tag_and_a_socket(tmp_path):
    text = fixture("drupal/sites/default/settings.php") + "?>\n"
    once = rewrite_drupal_settings(text, target(socket="/run/mysqld/mysqld.sock"))
    twice = rewrite_drupal_settings(once.text, target(socket="/run/mysqld/mysqld.sock"))
    assert twice.text == once.text and once.text.count(BEGIN) == 1 and once.text.rstrip().endswith("?>")
    assert "orch block: replaced" in twice.report()
    got = run_php(
        tmp_path,
        {"settings.php": once.text},
        "$app_root = __DIR__; $site_path = 'x';\nrequire __DIR__ . '/settings.php';\n"
        + emit("$databases['default']['default']"),
    )
    assert got["unix_socket"] == "/run/mysqld/mysqld.sock" and got["host"] == "localhost"


def test_drupal_prefix_is_read_from_code_not_from_the_documentation_comment():
    assert read_drupal_prefix(fixture("drupal/sites/default/settings.php")) == ""
    assert read_drupal_prefix("<?php\n$databases['default']['default'] = ['prefix' => 'd7_'];") == "d7_"
    assert read_drupal_prefix("<?php\n// 'prefix' => 'x_',\n") is None


# ------------------------------------------------------------------------------------------ Laravel


def parse_dotenv(text: str) -> dict[str, str]:
    """Read a .env file the way vlucas/phpdotenv v5 does (Laravel 8+): names, `export`, single quotes (literal),
    double quotes (escapes \\" \\\\ \\$ \\n \\t \\r \\f \\v; anything else is an error; ${NAME} interpolated
    from names already read), bare values (end at whitespace, `#` starts a comment, ${NAME} interpolated),
    multi-line quoted values."""
    values: dict[str, str] = {}
    for name, raw in _dotenv_entries(text):
        values[name] = _dotenv_value(raw, values)
    return values


def _dotenv_entries(text: str):
    lines, i = text.split("\n"), 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not an entry: {line!r}"
        name = re.sub(r"^export\s+", "", name.strip())
        assert re.fullmatch(r"[A-Za-z0-9_.]+", name), name
        value = value.strip()
        if value and value[0] in "\"'":
            while not _dotenv_closed(value) and i < len(lines):
                value += "\n" + lines[i]
                i += 1
        yield name, value


def _dotenv_closed(value: str) -> bool:
    quote, i = value[0], 1
    while i < len(value):
        if quote == '"' and value[i] == "\\":
            i += 2
            continue
        if value[i] == quote:
            return True
        i += 1
    return False


def _dotenv_value(raw: str, seen: dict[str, str]) -> str:
    chars, marks, i = [], [], 0
    if raw.startswith("'"):
        end = raw.index("'", 1)
        assert not raw[end + 1 :].strip() or raw[end + 1 :].strip().startswith("#")
        return raw[1:end]
    if raw.startswith('"'):
        i = 1
        while True:
            ch = raw[i]
            if ch == '"':
                rest = raw[i + 1 :].strip()
                assert not rest or rest.startswith("#"), f"unexpected text after quote: {raw!r}"
                break
            if ch == "\\":
                nxt = raw[i + 1]
                simple = {'"': '"', "\\": "\\", "$": "$", "n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
                assert nxt in simple, f"phpdotenv rejects the escape \\{nxt} in {raw!r}"
                chars.append(simple[nxt])
                i += 2
                continue
            if ch == "$":
                marks.append(len(chars))
            chars.append(ch)
            i += 1
    else:
        for ch in raw:
            if ch == "#" or ch.isspace():
                break
            if ch == "$":
                marks.append(len(chars))
            chars.append(ch)
    value = "".join(chars)
    for mark in reversed(marks):
        m = re.match(r"\$\{([A-Za-z0-9_.]+)\}", value[mark:])
        if m and m.group(1) in seen:
            value = value[:mark] + seen[m.group(1)] + value[mark + m.end() :]
    return value


def test_the_test_dotenv_reader_follows_phpdotenv():
    env = parse_dotenv('A=x\nB="${A}y \\$z \\"q\\" \\\\"\nC=\'${A} \\n\'\nexport D=bare # comment\nE="two\nlines"\n')
    assert env == {"A": "x", "B": 'xy $z "q" \\', "C": "${A} \\n", "D": "bare", "E": "two\nlines"}
    with pytest.raises(AssertionError, match="rejects"):
        parse_dotenv('A="\\q"')


@pytest.mark.parametrize("password", HOSTILE)
def test_laravel_env_values_round_trip_through_phpdotenv_rules(password):
    item = load_playbook("laravel").config_file(".env")
    result = rewrite_config_file(item, fixture("laravel/.env"), target(password))
    env = parse_dotenv(result.text)
    assert env["DB_PASSWORD"] == password
    assert {
        k: env[k]
        for k in (
            "DB_HOST",
            "DB_PORT",
            "DB_DATABASE",
            "DB_USERNAME",
            "APP_URL",
            "APP_ENV",
            "MAIL_MAILER",
            "QUEUE_CONNECTION",
            "SESSION_DOMAIN",
        )
    } == {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "3307",
        "DB_DATABASE": "shop_stage",
        "DB_USERNAME": "shop_stage",
        "APP_URL": STAGE.url,
        "APP_ENV": "staging",
        "MAIL_MAILER": "log",
        "QUEUE_CONNECTION": "sync",
        "SESSION_DOMAIN": "t14883.shop.stage.example.net",
    }
    assert env["MAIL_FROM_NAME"] == "Acme Portal" and env["APP_KEY"].startswith("base64:2fl+")
    assert "# APP_MAINTENANCE_STORE=database" in result.text


def test_laravel_env_replaces_every_occurrence_appends_missing_keys_and_keeps_multiline_values():
    text = 'DB_HOST=a\nCERT="-----BEGIN\nDB_HOST=not-a-key\n-----END"\nDB_HOST=b\nSESSION_DOMAIN=null'
    result = rewrite_laravel_env(text, target(socket="/run/mysqld/mysqld.sock"))
    env = parse_dotenv(result.text)
    assert env["CERT"] == "-----BEGIN\nDB_HOST=not-a-key\n-----END"
    assert env["DB_SOCKET"] == "/run/mysqld/mysqld.sock" and env["SESSION_DOMAIN"] == "null"
    assert result.text.startswith("DB_HOST=a\n")  # with a socket DB_HOST is left alone
    assert "DB_SOCKET: added" in result.report()
    result = rewrite_laravel_env(text, STAGE)
    assert result.text.count("DB_HOST=127.0.0.1\n") == 2 and parse_dotenv(result.text)["DB_HOST"] == "127.0.0.1"


@pytest.mark.parametrize("value", ["line\nbreak", "cr\rhere", "nul\0"])
def test_laravel_env_refuses_values_it_cannot_write(value):
    with pytest.raises(UsageError, match="newline"):
        rewrite_laravel_env("", target(value))


def test_env_value_quotes_only_when_needed():
    assert env_value("plain-1.2_3:/x@y+z") == "plain-1.2_3:/x@y+z"
    assert env_value("a b") == '"a b"'
    assert env_value("${X}$y") == '"\\${X}$y"'
    assert env_value(True) == "true"


# ------------------------------------------------------------------------------------------ dispatch


def test_every_playbook_config_format_has_a_rewriter_and_unknown_formats_are_refused():
    assert set(FORMATS) == {"wp-config", "joomla", "bitrix-settings", "bitrix-dbconn", "drupal-settings", "laravel-env"}
    with pytest.raises(UsageError, match="unknown config format"):
        rewrite_config("ini", "", STAGE)
    assert read_table_prefix("laravel-env", "DB_PREFIX=x") is None
    assert read_table_prefix("wp-config", fixture("wordpress/wp-config.php")) == "wp_"


@pytest.mark.parametrize(
    "fmt,settings,append",
    [
        ("wp-config", None, "x"),
        ("joomla", None, "x"),
        ("bitrix-settings", {"A": 1}, None),
        ("drupal-settings", {"A": 1}, None),
        ("laravel-env", None, "x"),
    ],
)
def test_settings_or_blocks_a_format_cannot_hold_are_refused(fmt, settings, append):
    with pytest.raises(UsageError, match="not supported"):
        rewrite_config(fmt, "<?php class JConfig {}", STAGE, settings, append)


def test_target_for_an_inventory_environment():
    from types import SimpleNamespace

    db = SimpleNamespace(
        name="shop_stage", path=None, user="u", password=Sensitive("pw"), host="db", port=3306, socket=None
    )
    env = SimpleNamespace(name="staging", site="shop", url="https://stage.example.net", path="/srv/shop", database=db)
    source = SimpleNamespace(url="https://shop.example.com")
    made = Target.for_environment(env, source)
    assert (made.database, made.password_text, made.mysql_host(), made.source_url) == (
        "shop_stage",
        "pw",
        "db:3306",
        "https://shop.example.com",
    )
    with pytest.raises(UsageError, match="needs a url and a database"):
        Target.for_environment(SimpleNamespace(name="x", site="y", url="https://x", database=None))
