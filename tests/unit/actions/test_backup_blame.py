"""A failed backup names the part that failed: the database, the storage (by name) or the host."""

from types import SimpleNamespace

import pytest
from backupkit import fake_target

from orchestrator.actions import backup
from orchestrator.backends.storage.restic import MissingRepository, Repository, RepositoryError
from orchestrator.errors import OperationFailed

S3_DENIED = (
    "Fatal: unable to open config file: Stat: The request signature we calculated does not match the "
    "signature you provided. Check your key and signing method.\nIs there a repository at the following "
    "location?\ns3:http://s3/b/orch/shop"
)
S3_MISSING = (
    "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at "
    "the following location?\ns3:http://s3/b/orch/shop"
)


def _target():
    return fake_target(
        "blame-test-db-secret",
        "blame-test-repo-secret",
        name="offsite",
        type="s3",
        endpoint="http://s3",
        bucket="b",
        prefix="orch",
    )


def problem(statuses, stderr, status=None):
    t = _target()
    conn = SimpleNamespace(name="web1")
    status = status if status is not None else next((s for s in statuses or [] if s), 0)
    return backup._dump_problem(conn, t.repository, t, status, statuses, stderr)


def test_a_clean_pipeline_is_no_problem():
    assert problem([0, 0, 0], "") is None


def test_restic_failing_blames_the_storage_by_name_even_if_the_dump_then_died_of_a_broken_pipe():
    err = problem([141, 0, 1], "mariadb-dump: Got errno 32 on write\n" + S3_DENIED)
    assert isinstance(err, RepositoryError) and not isinstance(err, MissingRepository)
    assert str(err).startswith("storage offsite (s3:http://s3/b/orch/shop): the S3 server refused our credentials")
    assert "signature" in str(err) and "dump" not in str(err)


def test_a_failing_dump_blames_the_database_with_its_own_message():
    err = problem([2, 0, 0], "mariadb-dump: Got error: 1045: Access denied for user 'shop'")
    assert isinstance(err, OperationFailed)
    assert str(err) == (
        "database shop (mysql at db:3306): dump failed: mariadb-dump: Got error: 1045: Access denied for user 'shop'"
    )


def test_a_dump_killed_without_a_word_says_so():
    err = problem([137, 0, 0], "")
    assert str(err) == "database shop (mysql at db:3306): dump failed: killed by signal 9, without a message"


def test_a_failing_tail_keeper_blames_the_host():
    err = problem([0, 1, 0], "tail: write error: No space left on device")
    assert str(err).startswith("host web1: could not keep the dump's tail") and "No space left" in str(err)


def test_a_pipeline_stopped_by_the_stall_rule_names_the_storage_with_the_reason():
    err = problem(None, "no output and no progress for 600 s: stopped", status=124)
    assert isinstance(err, RepositoryError) and "no output and no progress" in str(err)


def test_new_restic_running_the_dump_blames_the_database_unless_restic_speaks_of_its_storage():
    assert str(problem(None, "mysqldump: Got error: 2013: Lost connection", status=1)).startswith("database shop")
    assert str(problem(None, S3_DENIED, status=1)).startswith("storage offsite")


def repo():
    return Repository(_target().storage, "shop")


@pytest.mark.parametrize(
    "stderr, expected",
    [
        (
            "Fatal: unable to save snapshot: Put: connection refused\n",
            "restic backup failed: Fatal: unable to save snapshot: Put: connection refused",
        ),
        ("", "restic backup failed: exit 1"),
        ("Fatal: wrong password or no key found\n", "wrong repository password"),
    ],
)
def test_restic_errors_say_what_restic_was_doing_once(stderr, expected):
    err = repo().explain("backup", 1, stderr)
    assert str(err) == f"storage offsite (s3:http://s3/b/orch/shop): {expected}"
    assert "restic restic" not in str(err)


def test_a_missing_repository_is_its_own_error_but_a_refusal_is_not_an_absence():
    assert isinstance(repo().explain("snapshots", 1, S3_MISSING), MissingRepository)
    assert not isinstance(repo().explain("init", 1, S3_MISSING), MissingRepository)
    assert not isinstance(repo().explain("snapshots", 1, S3_DENIED), MissingRepository)
    local = "Fatal: unable to open config file: stat /b/shop/config: no such file or directory\nIs there a repository"
    assert isinstance(repo().explain("backup", 1, local), MissingRepository)
