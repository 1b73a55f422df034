"""Tests of staging sanitization (orchestrator.backends.cms.sanitize).

The SQLite dialect is executed: each fixture site's dump (tests/fixtures/cms/<cms>/database.sql, mariadb-dump
format) is loaded into an in-memory SQLite database by a small converter written here, sanitized with the
playbook's rules, and then searched for the personal data it held. MySQL and PostgreSQL statements are checked
for their shape here; the staging end-to-end tests run them on real servers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from orchestrator.backends.cms.playbook import SanitizeRule, load_playbook
from orchestrator.backends.cms.sanitize import (
    SQLITE_PRELUDE,
    bcrypt_command,
    dialect,
    hash_password,
    password_reset_statements,
    phpass_hash,
    register_sqlite_functions,
    resolve_rules,
    rule_statement,
    sanitize_statements,
    substitute_prefix,
)
from orchestrator.backends.remote import LocalConnector, Sensitive
from orchestrator.errors import UsageError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cms"
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="php CLI not installed")
STAGING_HASH = "$2y$10$" + "s" * 53
PREFIX = {"wordpress": "wp_", "joomla": "jx7tq_", "bitrix": "b_", "drupal": "", "laravel": ""}

# Personal data each fixture holds in the columns and tables its playbook sanitizes or empties.
PERSONAL = {
    "wordpress": [
        "olga.petrova@shop.example.com",
        "i.ivanov@mail.example.ru",
        "sean.obrien@example.ie",
        "maria.k@example.org",
        "Olga Petrova",
        "Ivan Ivanov",
        "Seán O'Brien",
        "Maria K.",
        "Petrova",
        "+7 900 123-45-67",
        "ul. Lenina 1",
        "kv. 5",
        "Moskva",
        "101000",
        "198.51.100.23",
        "192.0.2.44",
        "203.0.113.77",
        "https://olga.example.net",
        "Call me before delivery",
    ],
    "joomla": [
        "olga@shinglas.example",
        "p.kuznetsov@mail.example.ru",
        "Olga Smirnova",
        "Pyotr Kuznetsov",
        "+7 495 123-45-67",
        "Moskva",
        "203.0.113.9",
    ],
    "bitrix": [
        "a.sokolov@shop.bitrix.example",
        "anna@mail.example.ru",
        "Андрей",
        "Соколов",
        "Викторович",
        "Анна",
        "Морозова",
        "+7 (495) 111-22-33",
        "+7 916 111-22-33",
        "+7 926 555-44-33",
        "+79265554433",
        "+7 495 000-11-22",
        "ul. Tverskaya 7",
        "1980-04-12",
        "ул. Садовая",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    ],
    "drupal": [
        "webmaster@drupal.example.org",
        "k.weber@example.de",
        "katrin.weber@mail.example.de",
        "203.0.113.50",
        "198.51.100.7",
    ],
    "laravel": [
        "taylor@app.laravel.example",
        "jane.doe@example.com",
        "Taylor Admin",
        "Jane Customer",
        "203.0.113.80",
        "rEm3mB3rT0k3n",
    ],
}


# ------------------------------------------------------------------------------------------ fixture loading


def mysql_dump_to_sqlite(text: str) -> str:
    """Given a mariadb-dump file, return SQL that SQLite runs: the same tables (indexes dropped, types kept
    loosely) and rows (string escapes converted)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("/*!", "--", "LOCK TABLES", "UNLOCK TABLES")):
            continue
        if line.startswith(") ENGINE="):
            line = ");"
        elif line.startswith("  ") and not line.startswith("  `"):
            stripped = line.strip()
            if stripped.startswith("UNIQUE KEY"):
                line = "  UNIQUE " + re.sub(r"\(\d+\)", "", stripped.split(" ", 3)[3])
            elif not stripped.startswith("PRIMARY KEY"):
                continue
        elif line.startswith("  `"):
            line = re.sub(r" unsigned| AUTO_INCREMENT| CHARACTER SET \w+| COLLATE \w+", "", line)
            line = line.replace("current_timestamp()", "CURRENT_TIMESTAMP")
        elif line.startswith("INSERT INTO"):
            line = re.sub(r"'((?:[^'\\]|\\.)*)'", lambda m: _sqlite_literal(m.group(1)), line)
        out.append(line)
    return re.sub(r",\n\);", "\n);", "\n".join(out))


def _sqlite_literal(body: str) -> str:
    escapes = {"0": "\0", "n": "\n", "r": "\r", "Z": "\x1a", "t": "\t", "b": "\b"}
    value = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), body)
    return "'" + value.replace("'", "''") + "'"


def load_fixture(cms: str) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(mysql_dump_to_sqlite((FIXTURES / cms / "database.sql").read_text(encoding="utf-8")))
    register_sqlite_functions(db)
    return db


def schema_of(db: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [row[1] for row in db.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def all_text(db: sqlite3.Connection) -> str:
    chunks = []
    for table, columns in schema_of(db).items():
        for row in db.execute(f'SELECT * FROM "{table}"'):
            chunks += [f"{table}.{col}={value}" for col, value in zip(columns, row, strict=True)]
    return "\n".join(chunks)


def sanitize(cms: str, site_rules=None) -> tuple[sqlite3.Connection, list[str]]:
    """Load the fixture and run what a staging copy runs: the sanitize plan, then the password reset."""
    db = load_fixture(cms)
    playbook = load_playbook(cms)
    plan = sanitize_statements(playbook, site_rules, "sqlite", PREFIX[cms], schema_of(db))
    reset = password_reset_statements(playbook, "sqlite", PREFIX[cms], STAGING_HASH, schema_of(db))
    for statement in [*plan.statements, *reset]:
        db.execute(statement)
    return db, list(plan.skipped)


@pytest.mark.parametrize("cms", list(PREFIX))
def test_fixture_dump_holds_its_personal_data_before_sanitizing(cms):
    text = all_text(load_fixture(cms))
    missing = [value for value in PERSONAL[cms] if value not in text]
    assert not missing


@needs_php
@pytest.mark.parametrize("cms", list(PREFIX))
def test_fixture_dumps_are_what_the_generator_writes(cms):
    spec = importlib.util.spec_from_file_location("cms_fixture_generate", FIXTURES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(cms) == (FIXTURES / cms / "database.sql").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ executed on SQLite


@pytest.mark.parametrize("cms", list(PREFIX))
def test_no_personal_data_of_the_fixture_survives_sanitizing(cms):
    db, _ = sanitize(cms)
    text = all_text(db)
    survivors = [value for value in PERSONAL[cms] if value in text]
    assert not survivors


def test_wordpress_fake_values_are_per_user_unique_and_logins_and_roles_stay():
    db, skipped = sanitize("wordpress")
    users = db.execute("SELECT ID, user_login, user_email, display_name, user_url FROM wp_users ORDER BY ID").fetchall()
    assert users == [
        (1, "admin", "user1@staging.invalid", "User 1", ""),
        (2, "ivanov", "user2@staging.invalid", "User 2", ""),
        (3, "o'brien", "user3@staging.invalid", "User 3", ""),
    ]
    meta = dict(((u, k), v) for u, k, v in db.execute("SELECT user_id, meta_key, meta_value FROM wp_usermeta"))
    assert meta[(2, "billing_email")] == "user2@staging.invalid"  # matches the account's own fake address
    assert meta[(2, "billing_phone")] == "+15550000002" and meta[(3, "billing_phone")] == ""
    assert meta[(1, "wp_capabilities")] == 'a:1:{s:13:"administrator";b:1;}'
    assert meta[(1, "session_tokens")] is None and meta[(2, "billing_city")] == "Testville"
    assert db.execute("SELECT billing_email, ip_address, customer_note FROM wp_wc_orders").fetchall() == [
        ("user11@staging.invalid", "127.0.0.1", "")
    ]
    assert db.execute("SELECT email FROM wp_wc_order_addresses ORDER BY id").fetchall() == [
        ("user11@staging.invalid",),
        (None,),
    ]
    assert db.execute("SELECT COUNT(*) FROM wp_woocommerce_sessions").fetchone() == (0,)
    assert db.execute("SELECT option_value FROM wp_options WHERE option_name = 'siteurl'").fetchone() == (
        "https://shop.example.com",
    )
    assert any(line.startswith("wp_wc_customer_lookup.email: no table") for line in skipped)


def test_joomla_rules_use_the_configured_prefix_and_switch_the_scheduler_off():
    db, skipped = sanitize("joomla")
    assert db.execute("SELECT id, username, email, name FROM jx7tq_users ORDER BY id").fetchall() == [
        (42, "olga", "user42@staging.invalid", "User 42"),
        (43, "manager", "user43@staging.invalid", "User 43"),
    ]
    assert {v for (v,) in db.execute("SELECT profile_value FROM jx7tq_user_profiles")} == {'""'}
    assert db.execute("SELECT element, enabled FROM jx7tq_extensions ORDER BY extension_id").fetchall() == [
        ("schedulerunner", 0),
        ("tasknotification", 0),
        ("cache", 1),
    ]
    for table in ("jx7tq_session", "jx7tq_user_keys"):
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)
    assert "jx7tq_privacy_requests.email: no table jx7tq_privacy_requests" in skipped


def test_bitrix_phones_stay_unique_and_empty_values_stay_empty():
    db, _ = sanitize("bitrix")
    rows = db.execute(
        "SELECT ID, EMAIL, NAME, LAST_NAME, SECOND_NAME, PERSONAL_PHONE, PERSONAL_MOBILE, WORK_PHONE,"
        " PERSONAL_BIRTHDAY FROM b_user ORDER BY ID"
    ).fetchall()
    assert rows == [
        (1, "user1@staging.invalid", "User 1", "User 1", "", "+15550000001", "+15550000001", None, None),
        (2, "user2@staging.invalid", "User 2", "User 2", "", None, "+15550000002", "+15550000002", None),
    ]
    assert db.execute("SELECT PHONE_NUMBER FROM b_user_phone_auth").fetchall() == [("+15550000002",)]
    props = dict(db.execute("SELECT CODE, VALUE FROM b_sale_order_props_value"))
    assert props == {
        "FIO": "User 7",
        "EMAIL": "user7@staging.invalid",
        "PHONE": "+15550000007",
        "ADDRESS": "1 Test Street",
    }
    assert db.execute("SELECT COUNT(*) FROM b_event").fetchone() == (0,)


def test_drupal_anonymous_user_keeps_its_empty_name_and_caches_are_emptied():
    db, skipped = sanitize("drupal")
    assert db.execute("SELECT uid, name, mail, init FROM users_field_data ORDER BY uid").fetchall() == [
        (0, "", None, None),
        (1, "User 1", "user1@staging.invalid", "user1@staging.invalid"),
        (2, "User 2", "user2@staging.invalid", "user2@staging.invalid"),
    ]
    for table in ("sessions", "watchdog", "cache_render"):
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)
    assert "truncate flood: no such table" in skipped


def test_laravel_tables_that_hold_personal_payloads_are_emptied():
    db, skipped = sanitize("laravel")
    assert db.execute("SELECT id, name, email FROM users").fetchall() == [
        (1, "User 1", "user1@staging.invalid"),
        (2, "User 2", "user2@staging.invalid"),
    ]
    for table in ("sessions", "password_reset_tokens", "jobs", "failed_jobs", "cache"):
        assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM settings").fetchone() == (1,)
    assert sorted(skipped) == [
        "truncate cache_locks: no such table",
        "truncate job_batches: no such table",
        "truncate password_resets: no such table",
    ]


def test_site_rules_replace_the_playbooks_rule_for_the_same_column_and_add_others():
    db, _ = sanitize("laravel", {"users.name": "fixed:Tester", "users.remember_token": "null", "users.email": "hash"})
    rows = db.execute("SELECT name, email, remember_token FROM users ORDER BY id").fetchall()
    assert rows[0] == ("Tester", hashlib.sha256(b"taylor@app.laravel.example").hexdigest(), None)


def test_hostile_fixed_values_are_stored_literally():
    value = "x'); DROP TABLE users; -- \\' \" ${y} \u2603"
    db, _ = sanitize("laravel", {"users.name": f"fixed:{value}"})
    assert {name for (name,) in db.execute("SELECT name FROM users")} == {value}


def test_sqlite_prelude_registers_the_same_hash_function_on_a_host():
    db = sqlite3.connect(":memory:")
    exec(SQLITE_PRELUDE, {"db": db})  # noqa: S102 -- the snippet a host-side runner embeds
    assert db.execute("SELECT orch_sha256('a'), orch_sha256(NULL), orch_sha256(5)").fetchone() == (
        hashlib.sha256(b"a").hexdigest(),
        None,
        hashlib.sha256(b"5").hexdigest(),
    )


def test_without_a_key_sqlite_uses_the_rowid():
    rule = SanitizeRule(column="people.mail", rule="email")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE people (mail TEXT)")
    db.executemany("INSERT INTO people VALUES (?)", [("a@x",), ("b@x",), ("",)])
    plan = sanitize_statements(load_playbook("generic"), {"people.mail": "email"}, "sqlite", "", schema_of(db))
    for statement in plan.statements:
        db.execute(statement)
    assert [m for (m,) in db.execute("SELECT mail FROM people")] == [
        "user1@staging.invalid",
        "user2@staging.invalid",
        "",
    ]
    assert "rowid" in rule_statement(dialect("sqlite"), rule, "rowid")


# ------------------------------------------------------------------------------------------ refusals


def test_a_wrong_prefix_makes_required_rules_fail_loudly():
    db = load_fixture("wordpress")
    with pytest.raises(UsageError, match="wp7_users.user_email: no table wp7_users"):
        sanitize_statements(load_playbook("wordpress"), None, "sqlite", "wp7_", schema_of(db))


def test_a_site_rule_on_a_missing_column_fails_loudly():
    db = load_fixture("laravel")
    with pytest.raises(UsageError, match="no column users.phone"):
        sanitize_statements(load_playbook("laravel"), {"users.phone": "phone"}, "sqlite", "", schema_of(db))


@pytest.mark.parametrize(
    "rules,prefix,message",
    [
        ({"users.`email`": "email"}, "", "invalid column"),
        ({"us ers.email": "email"}, "", "invalid table"),
        ({"users.email": "scramble"}, "", "unknown rule"),
        ({}, "wp-", "invalid table prefix"),
        ({}, "wp_;", "invalid table prefix"),
    ],
)
def test_bad_identifiers_prefixes_and_rules_are_refused(rules, prefix, message):
    with pytest.raises(UsageError, match=message):
        sanitize_statements(load_playbook("laravel"), rules, "mysql", prefix)


def test_unknown_engine_is_refused():
    with pytest.raises(UsageError, match="unknown database engine 'oracle'"):
        sanitize_statements(load_playbook("laravel"), None, "oracle", "")


def test_without_a_table_list_optional_rules_and_truncations_are_left_out_and_said_so():
    plan = sanitize_statements(load_playbook("wordpress"), None, "mysql", "wp_")
    assert "wp_wc_orders.billing_email: optional rule, table list not given" in plan.skipped
    assert "truncate wp_woocommerce_sessions: table list not given" in plan.skipped
    assert not any("wc_orders" in statement for statement in plan.statements)


def test_prefix_placeholders():
    assert substitute_prefix("UPDATE #__extensions SET x = 1", "jx_") == "UPDATE jx_extensions SET x = 1"
    assert substitute_prefix("{prefix}users", "") == "users"
    rules = resolve_rules(load_playbook("joomla"), {"jx7tq_users.email": "hash"}, "jx7tq_")
    assert [r.rule for r in rules if r.column == "jx7tq_users.email"] == ["hash"]


# ------------------------------------------------------------------------------------------ dialect shapes


def test_mysql_statements_shape():
    plan = sanitize_statements(
        load_playbook("wordpress"),
        {"wp_users.user_pass": "fixed:$P$B\\x'y"},
        "mysql",
        "wp_",
        schema_of(load_fixture("wordpress")),
    )
    statements = set(plan.statements)
    assert (
        "UPDATE `wp_users` SET `user_email` = CONCAT('user', CAST(`ID` AS CHAR), '@staging.invalid') "
        "WHERE `user_email` IS NOT NULL AND `user_email` <> ''"
    ) in statements
    hexed = "$P$B\\x'y".encode().hex()
    assert f"UPDATE `wp_users` SET `user_pass` = CONVERT(X'{hexed}' USING utf8mb4)" in statements
    assert "TRUNCATE TABLE `wp_woocommerce_sessions`" in statements
    phone = rule_statement(dialect("mysql"), SanitizeRule("t.phone", "phone"), "id")
    assert phone == (
        "UPDATE `t` SET `phone` = CONCAT('+1555', LPAD(`id`, 7, '0')) WHERE `phone` IS NOT NULL AND `phone` <> ''"
    )
    assert rule_statement(dialect("mysql"), SanitizeRule("t.c", "hash"), None) == (
        "UPDATE `t` SET `c` = SHA2(`c`, 256) WHERE `c` IS NOT NULL AND `c` <> ''"
    )
    assert rule_statement(dialect("mysql"), SanitizeRule("t.c", "email"), None) == (
        "UPDATE `t` SET `c` = CONCAT('user', LEFT(SHA2(`c`, 256), 12), '@staging.invalid') "
        "WHERE `c` IS NOT NULL AND `c` <> ''"
    )
    assert dialect("mysql").literal("it's") == "'it''s'"


def test_postgresql_statements_shape():
    plan = sanitize_statements(
        load_playbook("laravel"),
        {"users.name": "fixed:a\\b'c"},
        "postgresql",
        "",
        {"users": ["id", "name", "email"], "sessions": []},
    )
    assert plan.statements == (
        'UPDATE "users" SET "email" = \'user\' || CAST("id" AS TEXT) || \'@staging.invalid\' '
        'WHERE "email" IS NOT NULL AND CAST("email" AS TEXT) <> \'\'',
        "UPDATE \"users\" SET \"name\" = E'a\\\\b''c'",
        'TRUNCATE TABLE "sessions"',
    )
    assert rule_statement(dialect("postgresql"), SanitizeRule("t.c", "hash", where="k = 'x'"), None) == (
        'UPDATE "t" SET "c" = encode(sha256(convert_to(CAST("c" AS TEXT), \'UTF8\')), \'hex\') '
        "WHERE (k = 'x') AND \"c\" IS NOT NULL AND CAST(\"c\" AS TEXT) <> ''"
    )
    assert rule_statement(dialect("postgresql"), SanitizeRule("t.p", "phone"), "id") == (
        'UPDATE "t" SET "p" = \'+1555\' || lpad(CAST("id" AS TEXT), 7, \'0\') '
        'WHERE "p" IS NOT NULL AND CAST("p" AS TEXT) <> \'\''
    )
    with pytest.raises(UsageError, match="NUL"):
        dialect("postgresql").literal("a\0b")


# ------------------------------------------------------------------------------------------ passwords


@pytest.mark.parametrize("cms", list(PREFIX))
def test_password_reset_sets_every_account_on_the_fixture(cms):
    db = load_fixture(cms)
    playbook = load_playbook(cms)
    scheme = playbook.password_reset.scheme
    password_hash = "$2y$10$" + "a" * 53 if scheme == "bcrypt" else hash_password(scheme, "staging-pw")
    statements = password_reset_statements(playbook, "sqlite", PREFIX[cms], password_hash, schema_of(db))
    for statement in statements:
        db.execute(statement)
    reset = playbook.password_reset
    table = substitute_prefix(reset.table, PREFIX[cms])
    values = db.execute(f'SELECT "{reset.column}" FROM "{table}"').fetchall()
    expected = {password_hash}
    if cms == "drupal":  # uid 0 (anonymous) has no password
        expected.add(None)
    assert {v for (v,) in values} == expected


def test_password_reset_shapes_and_missing_columns():
    wordpress = load_playbook("wordpress")
    assert password_reset_statements(wordpress, "mysql", "wp_", "$P$Babc") == [
        "UPDATE `wp_users` SET `user_pass` = '$P$Babc', `user_activation_key` = ''"
    ]
    assert password_reset_statements(wordpress, "mysql", "wp_", "$P$Babc", {"wp_users": ["ID", "user_pass"]}) == [
        "UPDATE `wp_users` SET `user_pass` = '$P$Babc'"
    ]
    assert password_reset_statements(load_playbook("laravel"), "postgresql", "", "$2y$x") == [
        'UPDATE "users" SET "password" = \'$2y$x\', "remember_token" = NULL'
    ]
    assert password_reset_statements(load_playbook("drupal"), "mysql", "", "h") == [
        "UPDATE `users_field_data` SET `pass` = 'h' WHERE (uid > 0)"
    ]
    assert password_reset_statements(load_playbook("generic"), "mysql", "", "h") == []
    with pytest.raises(UsageError, match="no table wp_users"):
        password_reset_statements(wordpress, "mysql", "wp_", "h", ["wp_posts"])


def php_check(code: str) -> str:
    return subprocess.run([PHP, "-r", code], capture_output=True, text=True, timeout=30, check=True).stdout


@needs_php
def test_phpass_hashes_are_accepted_by_wordpress_phpass():
    phpass = Path("/usr/share/wordpress/wp-includes/class-phpass.php")
    if not phpass.is_file():
        pytest.skip("Debian's wordpress package is not installed")
    for password in ["staging-pw", "it's \\ $x ünï", ""]:
        hashed = hash_password("phpass", password)
        assert re.fullmatch(r"\$P\$B[./0-9A-Za-z]{30}", hashed)
        code = (
            f"require '{phpass}'; $h = new PasswordHash(8, true);"
            f" echo $h->CheckPassword(base64_decode('{_b64(password)}'), '{hashed}') ? 'ok' : 'no';"
            f" echo $h->CheckPassword('wrong', '{hashed}') ? 'ok' : 'no';"
        )
        assert php_check(code) == "okno"


def test_phpass_with_a_fixed_salt_is_deterministic_and_checks_its_salt():
    assert phpass_hash("pw", "abcdefgh") == phpass_hash("pw", "abcdefgh") != phpass_hash("pw", "abcdefgi")
    with pytest.raises(UsageError, match="salt"):
        phpass_hash("pw", "short")


@needs_php
def test_bitrix_hash_matches_bitrix_legacy_check():
    hashed = hash_password("bitrix", "staging'pw")
    assert len(hashed) == 40
    code = (
        f"$h = '{hashed}'; $salt = substr($h, 0, strlen($h) - 32);"
        f" echo md5($salt . base64_decode('{_b64(chr(39).join(['staging', 'pw']))}')) === substr($h, -32)"
        " ? 'ok' : 'no';"
    )
    assert php_check(code) == "ok"
    assert hash_password("bitrix", "pw", salt="ABCDEFGH") == "ABCDEFGH" + hashlib.md5(b"ABCDEFGHpw").hexdigest()
    assert hash_password("md5", "pw") == hashlib.md5(b"pw").hexdigest()


@needs_php
def test_bcrypt_is_computed_by_php_with_the_password_in_the_environment_only():
    password = "it's $ecret \\ ü"
    command = bcrypt_command(password)
    assert password not in command.script() and password not in " ".join(command.argv())
    assert password not in command.masked()
    hashed = LocalConnector().run(command).text.strip()
    assert hashed.startswith("$2y$10$") and len(hashed) == 60
    code = f"echo password_verify(base64_decode('{_b64(password)}'), '{hashed}') ? 'ok' : 'no';"
    assert php_check(code) == "ok"
    assert bcrypt_command(Sensitive("x")).environment[0][0] == "ORCH_STAGING_PASSWORD"


def test_unknown_or_php_only_schemes_are_refused_here():
    with pytest.raises(UsageError, match="bcrypt_command"):
        hash_password("bcrypt", "x")
    with pytest.raises(UsageError, match="unknown password scheme"):
        hash_password("sha1", "x")


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
