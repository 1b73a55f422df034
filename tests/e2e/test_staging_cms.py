"""Staging copies of the Joomla, Bitrix, Drupal and Laravel fixture sites (tests/fixtures/cms/), end to end.

Each fixture site is deployed to web1 as its user, its database.sql imported into a MariaDB database whose name,
user and (hostile) password are exactly those its config files name; only the database host/port is pointed at
the testbed's server. Then the real CLI runs `orch backup`, `orch --json staging create` and, last,
`orch staging destroy`. What the staging copy holds is checked with real tools: config files are loaded by PHP
(Laravel's .env is parsed the phpdotenv way) and their credentials must open the staging database; serialized and
JSON values are decoded by PHP; bcrypt hashes are checked by password_verify(); the vhost is fetched through the
stage1 nginx, whose stand-in front page (the fixture's index.php) reads the staging config and queries the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fleet import Fleet, tree_checksums
from testbed.inventory import web_host_entry

pytestmark = pytest.mark.e2e

TASK = "14890"
ENV = f"t{TASK}"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cms"
PHP = ["php", "-d", "display_errors=stderr", "-d", "error_reporting=-1"]


@dataclass(frozen=True)
class Cms:
    name: str
    url: str  # production URL (the one in the fixture's database.sql)
    host_edits: tuple  # (file, old text, new text with {host}/{port}): production -> real DB
    emails_sql: str  # the production e-mail addresses of the user tables
    password_sql: str  # the password-reset column of the accounts
    serialized_sql: str | None  # a PHP-serialized value holding the URL that stays in the copy
    json_sql: str  # a JSON value holding the (escaped) URL that stays in the copy
    marker: str  # what the stand-in front page shows besides the database name

    @property
    def site(self) -> str:
        return f"cms-{self.name}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname

    @property
    def staging_db(self) -> str:
        return f"{self.site}_{ENV}".replace("-", "_")


CMSES = {
    c.name: c
    for c in (
        Cms(
            "joomla",
            "https://shinglas.example",
            (("configuration.php", "public $host = 'localhost';", "public $host = '{host}:{port}';"),),
            "SELECT email FROM jx7tq_users",
            "SELECT password FROM jx7tq_users",
            "SELECT value FROM jx7tq_fields_values WHERE field_id = 3",
            "SELECT params FROM jx7tq_modules WHERE id = 87",
            'content="Joomla!',
        ),
        Cms(
            "bitrix",
            "https://shop.bitrix.example",
            (
                ("bitrix/.settings.php", "'host' => 'localhost',", "'host' => '{host}:{port}',"),
                ("bitrix/php_interface/dbconn.php", '$DBHost = "localhost";', '$DBHost = "{host}:{port}";'),
            ),
            "SELECT EMAIL FROM b_user UNION SELECT VALUE FROM b_sale_order_props_value WHERE CODE = 'EMAIL'",
            "SELECT PASSWORD FROM b_user",
            "SELECT VALUE FROM b_option WHERE MODULE_ID = 'seo' AND NAME = 'sitemap_1_settings'",
            "SELECT VALUE FROM b_option WHERE MODULE_ID = 'pull' AND NAME = 'path_to_listener_config'",
            "/bitrix/",
        ),
        Cms(
            "drupal",
            "https://drupal.example.org",
            (
                (
                    "sites/default/settings.php",
                    "\n  'host' => 'localhost',\n  'port' => '3306',\n",
                    "\n  'host' => '{host}',\n  'port' => '{port}',\n",
                ),
            ),
            "SELECT mail FROM users_field_data UNION SELECT init FROM users_field_data",
            "SELECT pass FROM users_field_data WHERE uid > 0",
            "SELECT value FROM key_value WHERE collection = 'state' AND name = 'aggregator.last_feed'",
            "SELECT field_config_value FROM node__field_config WHERE entity_id = 1",
            "data-drupal-",
        ),
        Cms(
            "laravel",
            "https://app.laravel.example",
            ((".env", "DB_PORT=3306\n", "DB_PORT={port}\n"),),
            "SELECT email FROM users",
            "SELECT password FROM users",
            None,  # the serialized values (cache, jobs) are in tables the playbook empties
            "SELECT payload FROM settings WHERE name = 'links'",
            "Acme Portal",
        ),
    )
}


# ------------------------------------------------------------------------------------------------ PHP and SQL


def php(code: str, *args: str, stdin: str = "") -> str:
    """Run PHP code (args in $argv[1:]); fail on any error, warning or notice (they go to stderr)."""
    proc = subprocess.run([*PHP, "-r", code, *args], input=stdin, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and not proc.stderr.strip(), f"php failed: {proc.stderr}\n{proc.stdout}"
    return proc.stdout


LOADERS = {
    "joomla": "require $argv[1] . '/configuration.php'; echo json_encode(get_object_vars(new JConfig()));",
    "bitrix": """
        $settings = include $argv[1] . '/bitrix/.settings.php';
        require $argv[1] . '/bitrix/php_interface/dbconn.php';
        echo json_encode(['settings' => $settings, 'dbconn' => compact('DBHost', 'DBName', 'DBLogin', 'DBPassword'),
                          'constants' => get_defined_constants(true)['user'],
                          'custom_mail' => function_exists('custom_mail')
                              ? custom_mail('someone@example.com', 'subject', 'message') : null]);""",
    "drupal": """
        $app_root = $argv[1]; $site_path = 'sites/default'; $databases = $settings = $config = [];
        require "$app_root/$site_path/settings.php";
        echo json_encode(compact('databases', 'settings', 'config'));""",
}


def parse_env(text: str) -> dict[str, str]:
    """A Laravel .env file the way phpdotenv v5 reads these: bare values (a ` #` starts a comment), "double-quoted"
    values with \\\\ \\" \\$ escapes and ${NAME} interpolation, 'single-quoted' values taken literally."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z0-9_.]+)\s*=\s*(.*)$", line)
        if not m:
            continue
        raw = m.group(2)
        if raw.startswith('"'):
            body = re.match(r'^"((?:[^"\\]|\\.)*)"', raw)
            assert body, f".env: unterminated value in {line!r}"
            value = re.sub(
                r"\\([\\\"$])|\$\{([A-Za-z0-9_.]+)\}",
                lambda g: g.group(1) if g.group(1) else out.get(g.group(2), ""),
                body.group(1),
            )
        elif raw.startswith("'"):
            value = raw[1 : raw.index("'", 1)]
        else:
            value = re.sub(r"\s+#.*$", "", raw).strip()
        out[m.group(1)] = value
    return out


def load_config(cms: str, root: str) -> dict:
    """Given a CMS and a site folder, return its config as the CMS reads it (PHP; .env for Laravel)."""
    if cms == "laravel":
        return parse_env(Path(root, ".env").read_text(encoding="utf-8"))
    return json.loads(php(LOADERS[cms], root))


def credentials(cms: str, config: dict) -> dict:
    """Given a loaded config, return the database connection it names: host, port, database, user, password."""
    if cms == "joomla":
        host, _, port = config["host"].partition(":")
        return {
            "host": host,
            "port": port or "3306",
            "database": config["db"],
            "user": config["user"],
            "password": config["password"],
        }
    if cms == "bitrix":
        conn = config["settings"]["connections"]["value"]["default"]
        host, _, port = conn["host"].partition(":")
        return {
            "host": host,
            "port": port or "3306",
            "database": conn["database"],
            "user": conn["login"],
            "password": conn["password"],
        }
    if cms == "drupal":
        conn = config["databases"]["default"]["default"]
        return {
            "host": conn["host"],
            "port": conn.get("port") or "3306",
            "database": conn["database"],
            "user": conn["username"],
            "password": conn["password"],
        }
    return {
        "host": config["DB_HOST"],
        "port": config["DB_PORT"],
        "database": config["DB_DATABASE"],
        "user": config["DB_USERNAME"],
        "password": config["DB_PASSWORD"],
    }


def connect_as(creds: dict) -> list:
    """Log in to MariaDB with PHP's mysqli and these credentials; return [DATABASE(), CURRENT_USER()]."""
    code = """$c = json_decode(stream_get_contents(STDIN), true);
        $db = new mysqli($c['host'], $c['user'], $c['password'], $c['database'], (int) $c['port']);
        echo json_encode($db->query('SELECT DATABASE(), CURRENT_USER()')->fetch_row());"""
    return json.loads(php(code, stdin=json.dumps(creds)))


def drupal_trusts(patterns: list[str], host: str) -> bool:
    """Whether Drupal accepts a request for host: it matches each pattern as preg_match('{' . $pattern . '}i')."""
    return json.loads(
        php(
            """[, $patterns, $host] = $argv; $found = false;
        foreach (json_decode($patterns) as $p) { $found = $found || preg_match('{' . $p . '}i', $host); }
        echo json_encode($found);""",
            json.dumps(patterns),
            host,
        )
    )


def fetch_decoded(mariadb, database: str, sql: str, how: str) -> list:
    """Read the first column of sql's rows as root with mysqli and decode each with PHP's unserialize() or
    json_decode(); a value that does not decode fails the test."""
    code = """[, $socket, $database, $sql, $how] = $argv;
        $db = new mysqli('localhost', 'root', '', $database, 0, $socket);
        $out = [];
        foreach ($db->query($sql)->fetch_all() as [$value]) {
            $decoded = $how === 'serialized' ? unserialize($value, ['allowed_classes' => false])
                                             : json_decode($value, true, 512, JSON_THROW_ON_ERROR);
            if ($decoded === false) { fwrite(STDERR, "not unserializable: $value"); exit(1); }
            $out[] = $decoded;
        }
        echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);"""
    return json.loads(php(code, str(mariadb.socket), database, sql, how))


def replaced(value, old: str, new: str):
    """Given a decoded value, return it with every string's old URL replaced by new."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [replaced(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: replaced(v, old, new) for k, v in value.items()}
    return value


def column(mariadb, database: str, sql: str) -> list[str]:
    return mariadb.sql(sql, database).splitlines()


def dump(mariadb, database: str) -> str:
    return subprocess.run(
        [
            "mariadb-dump",
            "--no-defaults",
            "-S",
            str(mariadb.socket),
            "-u",
            "root",
            "--skip-dump-date",
            "--skip-comments",
            database,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def url_forms(host: str) -> re.Pattern:
    """Any URL of host as a dump spells it: //host, \\/\\/host (JSON), \\\\/\\\\/host (JSON, SQL-escaped)."""
    return re.compile(r"(?:\\*/){2}(?:www\.)?" + re.escape(host) + r"(?![A-Za-z0-9-])")


def write_as(host, path: str, text: str) -> None:
    """Write a file as the host's user."""
    data = base64.b64encode(text.encode()).decode()
    host.run(f"echo {data} | base64 -d > '{path}'")


# ------------------------------------------------------------------------------------------------ the fleet


@dataclass
class Deployed:
    cms: Cms
    path: str  # production folder on web1
    prod_config: dict  # production credentials (as the fixture's config names them)
    emails: list[str]  # production e-mail addresses of the user tables
    before: tuple  # production dump and file checksums before staging
    result: dict | None = None  # `orch --json staging create` output
    error: str | None = None


def deploy(cms: Cms, web1, mariadb, path: str, dumps: tuple[str, ...] = ("database.sql",)) -> Deployed:
    """Put a fixture site on web1 (as its user) and its dumps (database.sql, then any more of the fixture's, in
    order) into the database its config names; point the config at the testbed's MariaDB (host and port only)
    and check it opens that database."""
    fixture = FIXTURES / cms.name
    creds = credentials(cms.name, load_config(cms.name, str(fixture)))
    mariadb.sql(f"DROP DATABASE IF EXISTS `{creds['database']}`")
    mariadb.create_database(creds["database"], creds["user"], creds["password"])
    for name in dumps:
        with (fixture / name).open("rb") as sql:
            subprocess.run(
                ["mariadb", "--no-defaults", "-S", str(mariadb.socket), "-u", "root", creds["database"]],
                stdin=sql,
                check=True,
                capture_output=True,
            )
    web1.copy_in(fixture, path)  # as root: web1's user may not read a private checkout
    web1.run(f"rm {path}/*.sql")  # dumps are no site files
    for rel in dict.fromkeys(rel for rel, _, _ in cms.host_edits):
        text = (fixture / rel).read_text(encoding="utf-8")
        for edit_rel, old, new in cms.host_edits:
            if edit_rel == rel:
                assert text.count(old) == 1, (rel, old)
                text = text.replace(old, new.format(host=mariadb.host, port=mariadb.port))
        write_as(web1, f"{path}/{rel}", text)
    prod = credentials(cms.name, load_config(cms.name, path))
    assert prod == creds | {"host": mariadb.host, "port": str(mariadb.port)}
    assert connect_as(prod)[0] == prod["database"], "the production config must open the production database"
    emails = [e for e in column(mariadb, prod["database"], cms.emails_sql) if e and e != "NULL"]
    before = (dump(mariadb, prod["database"]), tree_checksums(web1, path, exclude="-none-"))
    return Deployed(cms, path, prod, emails, before)


@pytest.fixture(scope="module")
def cms_fleet(fleet, stage1_web, mariadb, ssh_hosts, tmp_path_factory):
    """The four fixture sites on web1 (production) with staging templates on stage1, backed up once, and one
    staging copy of each (created in parallel)."""
    web1, stage1, nginx = ssh_hosts["web1"], ssh_hosts["stage1"], stage1_web.nginx
    run = secrets.token_hex(4)
    admin, admin_pw = f"orch_cms_{run}", "adm-" + secrets.token_hex(8)
    prod_root, stage_root = f"{web1.home}/cms-{run}", f"{stage1.home}/stage-cms-{run}"
    port = nginx.listen.rsplit(":", 1)[1]
    inventory = json.loads(json.dumps(fleet.base))
    inventory["oplog"] = inventory["oplog"].replace("oplog.db", f"oplog-cms-{run}.db")
    inventory["hosts"]["stage1"] = web_host_entry(stage1, stage1_web)
    orch = Fleet(tmp_path_factory.mktemp("cmsfleet"), dict(fleet.env), fleet.hosts)
    orch.mariadb, orch.web1, orch.stage1, orch.deployed = mariadb, web1, stage1, {}
    orch.listen = nginx.listen  # where the staging URLs are served
    try:
        mariadb.sql(f"CREATE USER '{admin}'@'%' IDENTIFIED BY '{admin_pw}'")
        mariadb.sql(f"GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION")
        orch.env["T_CMS_ADMIN_PW"] = admin_pw
        sites = {}
        for cms in CMSES.values():
            item = orch.deployed[cms.name] = deploy(cms, web1, mariadb, f"{prod_root}/{cms.name}")
            secret = f"T_{cms.name.upper()}_PW"
            orch.env[secret] = item.prod_config["password"]
            db = {"engine": "mysql", "host": mariadb.host, "port": mariadb.port}
            sites[cms.site] = {
                "name": cms.site,
                "playbook": cms.name,
                "task": "10020",
                "environments": {
                    "production": {
                        "host": "web1",
                        "path": item.path,
                        "url": cms.url,
                        "database": db
                        | {
                            "name": item.prod_config["database"],
                            "user": item.prod_config["user"],
                            "password": {"env": secret},
                        },
                    },
                    "staging": {
                        "host": "stage1",
                        "path": f"{stage_root}/{{site}}",
                        "url": f"http://{{env}}.{cms.name}.stage.test:{port}",
                        "database": db | {"name": "mysql", "user": admin, "password": {"env": "T_CMS_ADMIN_PW"}},
                    },
                },
            }
        orch.write_inventory(inventory, sites)
        orch.orch("backup", *sites, "--task", TASK)

        def create(item: Deployed) -> None:
            proc = orch.orch("--json", "staging", "create", item.cms.site, "--task", TASK, expect=None)
            if proc.returncode == 0:
                item.result = json.loads(proc.stdout)
            else:
                item.error = f"exit {proc.returncode}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"

        with ThreadPoolExecutor(len(orch.deployed)) as pool:
            list(pool.map(create, orch.deployed.values()))
        yield orch
    finally:
        for item in orch.deployed.values():
            if item.result and orch.orch_json("staging", "list", item.cms.site, expect=None):
                orch.orch("staging", "destroy", item.cms.site, "--env", ENV, "--task", TASK, expect=None)
            mariadb.sql(
                f"DROP DATABASE IF EXISTS `{item.prod_config['database']}`; "
                f"DROP DATABASE IF EXISTS `{item.cms.staging_db}`; "
                f"DROP USER IF EXISTS '{item.cms.staging_db}'@'%'"
            )
        web1.run(f"rm -rf {prod_root}")
        stage1.run(f"rm -rf {stage_root}")
        mariadb.sql(f"DROP USER IF EXISTS '{admin}'@'%'")


@pytest.fixture
def site(cms_fleet, request) -> Deployed:
    item = cms_fleet.deployed[request.param]
    assert item.error is None, f"orch staging create {item.cms.site} failed: {item.error}"
    return item


ALL = list(CMSES)
per_cms = pytest.mark.parametrize("site", ALL, indirect=True)


# ------------------------------------------------------------------------------------------------ the checks


@per_cms
def test_config_files_point_at_the_staging_database_and_url(cms_fleet, site):
    name, result = site.cms.name, site.result
    path, url = result["path"], result["url"]
    assert path.startswith(str(cms_fleet.stage1.home)) and result["host"] == "stage1"
    config = load_config(name, path)
    creds = credentials(name, config)
    assert creds["database"] == creds["user"] == site.cms.staging_db
    assert (creds["host"], creds["port"]) == (cms_fleet.mariadb.host, str(cms_fleet.mariadb.port))
    assert creds["password"] and creds["password"] != site.prod_config["password"]
    # the credentials the copy's config names really open the staging database (and only that is named)
    assert connect_as(creds) == [site.cms.staging_db, f"{site.cms.staging_db}@%"]
    staged_host = urlsplit(url).hostname
    production = load_config(name, site.path)
    texts = "\n".join(
        p.read_text(encoding="utf-8")
        for p in Path(path).rglob("*")
        if p.is_file() and p.name in (".env", "configuration.php", ".settings.php", "dbconn.php", "settings.php")
    )
    assert site.prod_config["password"] not in texts, "production's database password is left in the copy"
    if name == "joomla":
        assert config["tmp_path"] == f"{path}/tmp" and config["log_path"] == f"{path}/administrator/logs"
        changed = {"host", "db", "user", "password", "tmp_path", "log_path", "mailonline"}
        assert {k: v for k, v in config.items() if k not in changed} == {
            k: v for k, v in production.items() if k not in changed
        }
    elif name == "bitrix":
        assert config["dbconn"] == {
            "DBHost": f"{creds['host']}:{creds['port']}",
            "DBName": creds["database"],
            "DBLogin": creds["user"],
            "DBPassword": creds["password"],
        }
        assert config["settings"]["crypto"] == production["settings"]["crypto"]
    elif name == "drupal":
        db = config["databases"]["default"]["default"]
        assert db["prefix"] == "" and db["driver"] == "mysql" and db["namespace"].endswith("\\mysql")
        patterns = config["settings"]["trusted_host_patterns"]
        assert drupal_trusts(patterns, staged_host) and not drupal_trusts(patterns, site.cms.host)
        assert config["settings"]["hash_salt"] == production["settings"]["hash_salt"]
    else:
        assert config["APP_URL"] == url.rstrip("/") and config["SESSION_DOMAIN"] == staged_host
        assert config["APP_ENV"] == "staging" and config["APP_KEY"] == production["APP_KEY"]
        assert config["APP_NAME"] == "Acme Portal" and config["MAIL_FROM_NAME"] == "Acme Portal"


@per_cms
def test_no_production_email_survives_and_personal_data_is_sanitized(cms_fleet, site):
    db, mariadb = site.cms.staging_db, cms_fleet.mariadb
    assert site.emails, "the fixture's user tables hold e-mail addresses"
    text = dump(mariadb, db)
    assert [e for e in site.emails if e in text] == []
    rows = lambda sql: [line.split("\t") for line in column(mariadb, db, sql)]  # noqa: E731
    empty = lambda table: mariadb.sql(f"SELECT COUNT(*) FROM {table}", db).strip() == "0"  # noqa: E731
    name = site.cms.name
    if name == "joomla":
        assert rows("SELECT id, name, username, email FROM jx7tq_users ORDER BY id") == [
            ["42", "User 42", "olga", "user42@staging.invalid"],
            ["43", "User 43", "manager", "user43@staging.invalid"],
        ]
        assert rows("SELECT profile_value FROM jx7tq_user_profiles") == [['""'], ['""']]
        assert rows("SELECT ip_address FROM jx7tq_action_logs") == [["127.0.0.1"]]
        assert empty("jx7tq_session") and empty("jx7tq_user_keys")
    elif name == "bitrix":
        assert rows(
            "SELECT ID, LOGIN, EMAIL, NAME, LAST_NAME, SECOND_NAME, PERSONAL_PHONE, PERSONAL_MOBILE, "
            "WORK_PHONE, PERSONAL_STREET, PERSONAL_BIRTHDAY FROM b_user ORDER BY ID"
        ) == [
            [
                "1",
                "admin",
                "user1@staging.invalid",
                "User 1",
                "User 1",
                "",
                "+15550000001",
                "+15550000001",
                "NULL",
                "",
                "NULL",
            ],
            [
                "2",
                "anna",
                "user2@staging.invalid",
                "User 2",
                "User 2",
                "",
                "NULL",
                "+15550000002",
                "+15550000002",
                "",
                "NULL",
            ],
        ]
        assert rows("SELECT PHONE_NUMBER FROM b_user_phone_auth") == [["+15550000002"]]
        assert rows("SELECT CODE, VALUE FROM b_sale_order_props_value ORDER BY ID") == [
            ["FIO", "User 7"],
            ["EMAIL", "user7@staging.invalid"],
            ["PHONE", "+15550000007"],
            ["ADDRESS", "1 Test Street"],
        ]
        assert empty("b_event") and empty("b_user_stored_auth")
    elif name == "drupal":
        assert rows("SELECT uid, name, mail, init FROM users_field_data ORDER BY uid") == [
            ["0", "", "NULL", "NULL"],
            ["1", "User 1", "user1@staging.invalid", "user1@staging.invalid"],
            ["2", "User 2", "user2@staging.invalid", "user2@staging.invalid"],
        ]
        assert empty("sessions") and empty("watchdog") and empty("cache_render")
    else:
        assert rows("SELECT id, name, email FROM users ORDER BY id") == [
            ["1", "User 1", "user1@staging.invalid"],
            ["2", "User 2", "user2@staging.invalid"],
        ]
        for table in ("sessions", "password_reset_tokens", "jobs", "failed_jobs", "cache"):
            assert empty(table), table


# Drupal keeps serialized data in longblob columns (key_value.value, config.data, cache_*.data), which the MySQL
# engine dumps as 0x... literals (--hex-blob): the URL replacer rewrites inside those too.
@per_cms
def test_no_production_url_is_left_in_the_staging_database(cms_fleet, site):
    cms, staging_url = site.cms, site.result["url"].rstrip("/")
    text = dump(cms_fleet.mariadb, cms.staging_db)
    left = [text[max(m.start() - 120, 0) : m.end() + 40] for m in url_forms(cms.host).finditer(text)]
    assert left == [], "production URLs left in the staging database"
    assert staging_url.replace("/", "\\\\/") in text  # JSON-escaped, as the dump writes it
    assert staging_url in text or cms.name == "laravel"  # Laravel's plain URLs are all in emptied tables
    assert site.result["replacements"]["replacements"] > 0


@per_cms
def test_json_values_hold_the_staging_url(cms_fleet, site):
    cms, mariadb, staging_url = site.cms, cms_fleet.mariadb, site.result["url"].rstrip("/")
    staged = fetch_decoded(mariadb, cms.staging_db, cms.json_sql, "json")
    production = fetch_decoded(mariadb, site.prod_config["database"], cms.json_sql, "json")
    assert cms.url in json.dumps(production)
    expected = replaced(production, cms.url, staging_url)
    if cms.name == "bitrix":  # its playbook also replaces the bare host (urls.bare_host)
        expected = replaced(expected, urlsplit(cms.url).netloc, urlsplit(staging_url).netloc)
    assert staged and staged == expected


# Laravel's serialized values (cache, jobs, failed_jobs) are in tables the playbook empties.
@pytest.mark.parametrize("site", ["joomla", "bitrix", "drupal"], indirect=True)
def test_serialized_values_hold_the_staging_url_and_still_unserialize(cms_fleet, site):
    cms, mariadb, staging_url = site.cms, cms_fleet.mariadb, site.result["url"].rstrip("/")
    staged = fetch_decoded(mariadb, cms.staging_db, cms.serialized_sql, "serialized")
    production = fetch_decoded(mariadb, site.prod_config["database"], cms.serialized_sql, "serialized")
    assert cms.url in json.dumps(production)
    expected = replaced(production, cms.url, staging_url)
    if cms.name == "bitrix":  # its playbook also replaces the bare host (urls.bare_host)
        expected = replaced(expected, urlsplit(cms.url).netloc, urlsplit(staging_url).netloc)
    assert staged and staged == expected


@pytest.mark.parametrize("site", ["bitrix"], indirect=True)
def test_bitrix_bare_host_is_replaced(cms_fleet, site):
    db, mariadb = site.cms.staging_db, cms_fleet.mariadb
    staged = urlsplit(site.result["url"])
    values = column(mariadb, db, "SELECT SERVER_NAME FROM b_lang") + column(
        mariadb, db, "SELECT VALUE FROM b_option WHERE MODULE_ID = 'main' AND NAME = 'server_name'"
    )
    assert values and all(v in (staged.hostname, staged.netloc) for v in values), values


@per_cms
def test_the_password_reset_column_verifies_against_the_staging_password(cms_fleet, site):
    password, mariadb, db = site.result["staging_password"], cms_fleet.mariadb, site.cms.staging_db
    hashes = column(mariadb, db, site.cms.password_sql)
    assert password and hashes
    if site.cms.name == "bitrix":  # 8-character salt + md5(salt . password)
        assert all(len(h) == 40 and hashlib.md5((h[:8] + password).encode()).hexdigest() == h[8:] for h in hashes), (
            hashes
        )
        assert column(mariadb, db, "SELECT DISTINCT LOGIN_ATTEMPTS FROM b_user") == ["0"]
        return
    assert all(h.startswith("$2y$") for h in hashes), hashes
    verified = json.loads(
        php(
            """$in = json_decode(stream_get_contents(STDIN), true);
        echo json_encode(array_map(fn ($h) => password_verify($in['password'], $h), $in['hashes']));""",
            stdin=json.dumps({"password": password, "hashes": hashes}),
        )
    )
    assert verified == [True] * len(hashes)
    wrong = json.loads(php("echo json_encode(password_verify('not-it', $argv[1]));", hashes[0]))
    assert wrong is False
    if site.cms.name == "drupal":  # the anonymous account keeps no password
        assert column(mariadb, db, "SELECT pass FROM users_field_data WHERE uid = 0") == ["NULL"]
    if site.cms.name == "laravel":
        assert column(mariadb, db, "SELECT DISTINCT remember_token FROM users") == ["NULL"]


@per_cms
def test_mail_and_cron_are_off(cms_fleet, site):
    name, path, db = site.cms.name, site.result["path"], site.cms.staging_db
    config = load_config(name, path)
    if name == "joomla":
        assert config["mailonline"] is False and load_config(name, site.path)["mailonline"] is True
        assert cms_fleet.mariadb.sql("SELECT element, enabled FROM jx7tq_extensions ORDER BY extension_id", db).split(
            "\n"
        )[:3] == ["schedulerunner\t0", "tasknotification\t0", "cache\t1"]
    elif name == "bitrix":
        # loaded without a warning: no constant is defined twice, custom_mail() exists and sends nothing
        assert config["custom_mail"] is True
        constants = config["constants"]
        assert constants["BX_CRONTAB_SUPPORT"] is True and constants["NO_AGENT_CHECK"] is True
        assert constants["DisableEventsCheck"] is True
    elif name == "drupal":
        assert config["config"]["system.mail"]["interface"]["default"] == "test_mail_collector"
        assert config["config"]["mailsystem.settings"]["defaults"]["sender"] == "test_mail_collector"
        assert config["config"]["automated_cron.settings"]["interval"] == 0
    else:
        assert config["MAIL_MAILER"] == "log" and config["QUEUE_CONNECTION"] == "sync"


@per_cms
def test_the_vhost_answers_with_basic_auth_only(cms_fleet, site):
    from orchestrator.backends.envs.web import fetch

    result = site.result
    listen = cms_fleet.listen
    auth = (result["basic_auth"]["user"], result["basic_auth"]["password"])
    status, headers, body = fetch(result["url"], connect_to=listen, auth=auth)
    assert status == 200, body[:500]
    # the stand-in front page read the staging config through php-fpm and queried the staging database
    assert f"{site.cms.staging_db}:2 users" in body and site.cms.marker in body, body[:500]
    assert "noindex" in headers.get("X-Robots-Tag", "")
    assert fetch(result["url"], connect_to=listen)[0] == 401
    assert fetch(result["url"], connect_to=listen, auth=(auth[0], "wrong"))[0] == 401


@per_cms
def test_destroy_removes_the_copy_and_production_is_untouched(cms_fleet, site):
    result, mariadb, stage1 = site.result, cms_fleet.mariadb, cms_fleet.stage1
    cms_fleet.orch("staging", "destroy", site.cms.site, "--env", result["env"], "--task", TASK)
    parent = str(Path(result["path"]).parent)
    assert stage1.run(f"ls -A {parent}").stdout.split() == []  # folder and .orch-<env>.htpasswd gone
    assert not Path(result["vhost"]).exists()
    assert mariadb.sql(f"SHOW DATABASES LIKE '{site.cms.staging_db}'").strip() == ""
    assert mariadb.sql(f"SELECT COUNT(*) FROM mysql.user WHERE user = '{site.cms.staging_db}'").strip() == "0"
    assert cms_fleet.orch_json("staging", "list", site.cms.site) == []
    from orchestrator.backends.envs.web import fetch

    auth = (result["basic_auth"]["user"], result["basic_auth"]["password"])
    assert site.cms.marker not in fetch(result["url"], connect_to=cms_fleet.listen, auth=auth)[2]
    assert (
        dump(mariadb, site.prod_config["database"]),
        tree_checksums(cms_fleet.web1, site.path, exclude="-none-"),
    ) == site.before
