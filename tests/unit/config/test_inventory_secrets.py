"""Secrets: resolved lazily from env / file / command, cached, masked, and never shown by repr()."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.config import Secret, load_inventory
from orchestrator.errors import SecretError
from orchestrator.masking import mask

WHERE = "sites/shop.yaml: environments.production.database.password"


def reveal_error(ref, tmp_path) -> str:
    with pytest.raises(SecretError) as caught:
        Secret(ref, WHERE, tmp_path).reveal()
    return str(caught.value)


def test_an_env_reference_resolves_to_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOP_DB_PW", "env-secret-1")

    assert Secret({"env": "SHOP_DB_PW"}, WHERE, tmp_path).reveal() == "env-secret-1"


def test_a_file_reference_resolves_relative_to_the_inventory_folder_without_the_final_newline(tmp_path):
    (tmp_path / "db.key").write_text("file-secret-1\n")

    assert Secret({"file": "db.key"}, WHERE, tmp_path).reveal() == "file-secret-1"


def test_a_command_reference_resolves_to_its_output_without_one_final_newline(tmp_path):
    secret = Secret({"command": "printf 'cmd-secret-1\\n\\n'"}, WHERE, tmp_path)

    assert secret.reveal() == "cmd-secret-1\n"


def test_a_plain_string_is_its_own_value(tmp_path):
    assert Secret("plain-secret-1", WHERE, tmp_path).reveal() == "plain-secret-1"


def test_a_secret_is_resolved_only_when_revealed_and_only_once(tmp_path):
    secret = Secret({"command": "echo run >> runs; echo cmd-secret-2"}, WHERE, tmp_path)
    assert not (tmp_path / "runs").exists()

    assert secret.reveal() == secret.reveal() == "cmd-secret-2"
    assert (tmp_path / "runs").read_text() == "run\n"


def test_revealed_and_plain_values_are_masked_from_then_on(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOP_DB_PW", "env-secret-3")
    Secret({"env": "SHOP_DB_PW"}, WHERE, tmp_path).reveal()
    Secret("plain-secret-3", WHERE, tmp_path)  # a plain value is masked even before anyone reveals it

    assert mask("mysql -penv-secret-3 / plain-secret-3") == "mysql -p*** / ***"


def test_a_missing_environment_variable_names_the_place_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("SHOP_DB_PW", raising=False)

    assert reveal_error({"env": "SHOP_DB_PW"}, tmp_path) == f"{WHERE}: environment variable SHOP_DB_PW is not set"


def test_a_missing_file_names_the_place_and_the_file(tmp_path):
    assert reveal_error({"file": "/nonexistent/db.key"}, tmp_path) == (
        f"{WHERE}: file /nonexistent/db.key: No such file or directory"
    )


def test_a_failing_command_names_the_place_the_command_its_status_and_its_error(tmp_path):
    assert reveal_error({"command": "echo locked >&2; exit 3"}, tmp_path) == (
        f"{WHERE}: command `echo locked >&2; exit 3` exited 3: locked"
    )


def test_an_empty_value_is_an_error_rather_than_an_empty_password(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOP_DB_PW", "")

    assert reveal_error({"env": "SHOP_DB_PW"}, tmp_path) == (
        f"{WHERE}: environment variable SHOP_DB_PW gave an empty value"
    )


def test_repr_and_str_show_where_the_secret_is_written_never_its_value(tmp_path):
    secret = Secret("plain-secret-4", WHERE, tmp_path)
    secret.reveal()

    assert repr(secret) == str(secret) == f"Secret({WHERE})"
    assert "plain-secret-4" not in f"{secret} {secret!r} {[secret]} { ({'password': secret}) }"


def test_loaded_secrets_know_their_file_and_key_path_even_when_inherited_from_defaults(tmp_path, monkeypatch):
    (tmp_path / "sites").mkdir()
    (tmp_path / "inventory.yaml").write_text(
        textwrap.dedent("""\
        storage: {offsite: {type: local, path: /backups, password: {command: "exit 1"}}}
        hosts: {web1: {address: 192.0.2.1}}
        defaults:
          backup: {storage: offsite}
          verify: {scratch_database: {engine: mysql, password: {env: VERIFY_PW}}}
        """)
    )
    (tmp_path / "sites" / "shop.yaml").write_text(
        textwrap.dedent("""\
        name: shop
        environments:
          production: {host: web1, path: /srv/shop, database: {engine: sqlite, path: db.sqlite, password: {env: X}}}
        """)
    )
    monkeypatch.delenv("VERIFY_PW", raising=False)
    inventory = load_inventory(tmp_path / "inventory.yaml")  # loading resolves nothing: `exit 1` is not run yet
    site = inventory.site("shop")

    assert site.env("production").database.password.where == WHERE
    with pytest.raises(
        SecretError,
        match=r"^inventory.yaml: defaults.verify.scratch_database.password: "
        r"environment variable VERIFY_PW is not set$",
    ):
        site.verify["scratch_database"]["password"].reveal()
    with pytest.raises(SecretError, match=r"^inventory.yaml: storage.offsite.password: command `exit 1` exited 1$"):
        inventory.storage["offsite"].password.reveal()
