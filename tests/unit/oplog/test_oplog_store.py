"""The oplog store: migrations, operations, steps, artifacts, queries, masking — on SQLite and PostgreSQL."""

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.masking import register_secret
from orchestrator.oplog import CURRENT_VERSION, OperationNotFound, Oplog, SchemaTooNew, schema
from orchestrator.oplog.text import OUTPUT_LIMIT

OPERATION_KEYS = {
    "id",
    "task",
    "site",
    "env",
    "action",
    "actor",
    "host",
    "started_at",
    "finished_at",
    "duration",
    "status",
    "error",
    "catch_up",
    "params",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A URL to an empty oplog database: a SQLite file in a not-yet-existing folder, or a fresh PG database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/not/yet/there/oplog.db"
        return
    pg = request.getfixturevalue("postgres")
    name = f"oplog_{uuid.uuid4().hex[:12]}"
    pg.sql(f"CREATE DATABASE {name}")
    # Plain postgresql:// as an inventory would say it; the oplog must pick psycopg 3 itself.
    yield pg.url(name).replace("postgresql+psycopg://", "postgresql://", 1)
    pg.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def open_oplog(url):
    """Open Oplogs on `url`, closed at teardown."""
    opened = []

    def _open():
        opened.append(Oplog(url))
        return opened[-1]

    yield _open
    for oplog in opened:
        oplog.close()


@pytest.fixture
def oplog(open_oplog):
    return open_oplog()


@pytest.fixture
def secret():
    return register_secret(f"s3cr3t-{uuid.uuid4().hex}")


def version_of(oplog):
    with oplog.engine.begin() as conn:
        return conn.execute(sa.select(schema.schema_version.c.version)).scalars().all()


# -- migrations ------------------------------------------------------------------------------------------------


def test_a_fresh_database_gets_the_current_schema_version(oplog):
    assert version_of(oplog) == [CURRENT_VERSION]
    assert set(sa.inspect(oplog.engine).get_table_names()) >= {
        "schema_version",
        "operations",
        "steps",
        "artifacts",
        "locks",
    }


def test_reopening_a_current_database_changes_nothing(open_oplog):
    first = open_oplog()
    with first.start(task="1", site="a", env=None, action="backup"):
        pass
    second = open_oplog()
    assert version_of(second) == [CURRENT_VERSION]
    assert [op["site"] for op in second.operations()] == ["a"]


def test_a_database_newer_than_the_code_is_refused_with_a_clear_error(open_oplog):
    oplog = open_oplog()
    with oplog.engine.begin() as conn:
        conn.execute(schema.schema_version.update().values(version=CURRENT_VERSION + 1))
    with pytest.raises(SchemaTooNew, match=f"version {CURRENT_VERSION + 1}.*upgrade orch"):
        open_oplog()


def test_a_failing_migration_leaves_the_database_untouched(open_oplog, monkeypatch):
    open_oplog()

    def broken(conn):
        sa.Table("half_done", sa.MetaData(), sa.Column("x", sa.Integer)).create(conn)
        raise RuntimeError("migration bug")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    monkeypatch.setattr(schema, "CURRENT_VERSION", CURRENT_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        open_oplog()
    monkeypatch.undo()
    again = open_oplog()
    assert version_of(again) == [CURRENT_VERSION]
    assert "half_done" not in sa.inspect(again.engine).get_table_names()


def test_sqlite_creates_the_folder_and_uses_wal(tmp_path):
    oplog = Oplog(str(tmp_path / "deep" / "er" / "oplog.db"))  # a bare path means SQLite
    oplog.close()
    with sqlite3.connect(tmp_path / "deep" / "er" / "oplog.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgresql_urls_get_psycopg_3():
    from orchestrator.oplog.engine import normalize_url

    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u:p@h/db").drivername == "postgresql+psycopg"


def test_sqlite_paths_may_start_with_a_tilde(monkeypatch, tmp_path):
    from orchestrator.oplog.engine import normalize_url

    monkeypatch.setenv("HOME", str(tmp_path))
    assert normalize_url("sqlite:///~/state/oplog.db").database == f"{tmp_path}/state/oplog.db"
    assert normalize_url("~/oplog.db").database == f"{tmp_path}/oplog.db"


# -- operations and steps ----------------------------------------------------------------------------------------


def test_an_operation_records_who_where_when_and_how_long(oplog):
    before = datetime.now(UTC)
    with oplog.start(
        task=14883, site="shinglas", env="production", action="backup", params={"storage": "offsite"}, catch_up=True
    ) as op:
        pass
    [row] = oplog.operations()
    assert set(row) == OPERATION_KEYS
    assert row["id"] == op.id
    assert (row["task"], row["site"], row["env"], row["action"]) == ("14883", "shinglas", "production", "backup")
    assert row["status"] == "ok" and row["error"] is None and row["catch_up"] is True
    assert row["params"] == {"storage": "offsite"}
    assert "@" in row["actor"] and row["actor"].endswith("@" + row["host"])
    started, finished = datetime.fromisoformat(row["started_at"]), datetime.fromisoformat(row["finished_at"])
    assert started.utcoffset() == timedelta(0) and before <= started <= finished
    assert row["duration"] == pytest.approx((finished - started).total_seconds(), abs=0.002)


def test_catch_up_defaults_to_false(oplog):
    oplog.start(task="1", site=None, env=None, action="report").finish()
    assert oplog.operations()[0]["catch_up"] is False


def test_a_step_is_recorded_as_running_before_its_body_runs(oplog):
    with oplog.start(task="1", site="a", env="staging", action="restore") as op:
        with op.step("download"):
            [step] = oplog.operation(op.id)["steps"]
            assert (step["name"], step["status"], step["finished_at"]) == ("download", "running", None)
    [step] = oplog.operation(op.id)["steps"]
    assert step["status"] == "ok" and step["duration"] >= 0


def test_an_exception_fails_the_step_and_the_operation_and_propagates(oplog):
    with pytest.raises(RuntimeError, match="disk full"):
        with oplog.start(task="1", site="a", env=None, action="backup") as op:
            with op.step("dump") as step:
                step.output("dumping...\n")
                raise RuntimeError("disk full")
    detail = oplog.operation(op.id)
    assert (detail["status"], detail["error"]) == ("failed", "disk full")
    [step] = detail["steps"]
    assert step["status"] == "failed"
    assert step["output"] == "dumping...\nerror: disk full"


@pytest.mark.parametrize(
    ("exc", "status"), [(KeyboardInterrupt(), "interrupted"), (SystemExit(2), "interrupted"), (SystemExit(0), "ok")]
)
def test_ctrl_c_and_exits_record_interrupted_or_ok(oplog, exc, status):
    with pytest.raises(type(exc)):
        with oplog.start(task="1", site="a", env=None, action="backup") as op:
            with op.step("dump"):
                raise exc
    detail = oplog.operation(op.id)
    assert detail["status"] == status and detail["error"] is None
    assert detail["steps"][0]["status"] == status


def test_an_explicit_finish_wins_over_the_block_exit(oplog):
    with pytest.raises(RuntimeError):
        with oplog.start(task="1", site="a", env="production", action="promote") as op:
            op.finish("rolled_back", "health check failed")
            raise RuntimeError("after the rollback")
    detail = oplog.operation(op.id)
    assert (detail["status"], detail["error"]) == ("rolled_back", "health check failed")


def test_an_unknown_status_is_rejected(oplog):
    op = oplog.start(task="1", site="a", env=None, action="backup")
    with pytest.raises(ValueError, match="status"):
        op.finish("done")


def test_finishing_badly_interrupts_steps_left_running(oplog):
    op = oplog.start(task="1", site="a", env=None, action="backup")
    op._insert_step("orphan")  # a step whose `with` never closed (its code died a way no handler saw)
    op.finish("failed", "boom")
    assert oplog.operation(op.id)["steps"][0]["status"] == "interrupted"


def test_a_skipped_step_stays_skipped_with_its_reason(oplog):
    with oplog.start(task="1", site="a", env=None, action="backup") as op:
        with op.step("files") as step:
            step.skip("no files to back up")
        with op.step("db"):
            pass
    steps = oplog.operation(op.id)["steps"]
    assert [(s["seq"], s["name"], s["status"]) for s in steps] == [(1, "files", "skipped"), (2, "db", "ok")]
    assert steps[0]["output"] == "no files to back up"


def test_step_output_appends_and_keeps_only_the_tail(oplog):
    with oplog.start(task="1", site="a", env=None, action="backup") as op:
        with op.step("dump") as step:
            step.output("first line\n")
            for i in range(300):
                step.output(f"line {i:03} " + "x" * 40 + "\n")
    output = oplog.operation(op.id)["steps"][0]["output"]
    assert len(output) <= OUTPUT_LIMIT
    assert output.startswith("[... ") and output.endswith("line 299 " + "x" * 40 + "\n")
    assert "first line" not in output


def test_artifacts_are_recorded_in_order(oplog):
    with oplog.start(task="1", site="a", env=None, action="backup") as op:
        op.artifact("snapshot", "4f2a9c", size=10 * 2**40, details={"repo": "offsite", "paths": ["/var/www"]})
        op.artifact("dump", "a.sql.zst")
    artifacts = oplog.operation(op.id)["artifacts"]
    assert [(a["kind"], a["ident"], a["size"]) for a in artifacts] == [
        ("snapshot", "4f2a9c", 10 * 2**40),
        ("dump", "a.sql.zst", None),
    ]
    assert artifacts[0]["details"] == {"repo": "offsite", "paths": ["/var/www"]}
    assert artifacts[1]["details"] == {}
    assert datetime.fromisoformat(artifacts[0]["created_at"]).utcoffset() == timedelta(0)


# -- masking ---------------------------------------------------------------------------------------------------


def test_secrets_never_reach_the_database(oplog, secret):
    quoted = register_secret(f'p"a\\ss-{uuid.uuid4().hex}')  # JSON escapes this one: masking must not miss it
    with pytest.raises(RuntimeError):
        with oplog.start(
            task="1", site="a", env=None, action="backup", params={"dsn": f"mysql://u:{secret}@h/db", "other": quoted}
        ) as op:
            op.artifact("link", f"https://x/?sig={secret}", details={"auth": [secret, {quoted: 1}]})
            with op.step(f"login {secret}") as step:
                step.output(f"using password {secret[:10]}")
                step.output(f"{secret[10:]} now\n")  # split across two calls: still masked
                raise RuntimeError(f"access denied for {secret}")
    detail = oplog.operation(op.id)
    assert detail["params"] == {"dsn": "mysql://u:***@h/db", "other": "***"}
    assert detail["error"] == "access denied for ***"
    assert detail["steps"][0]["name"] == "login ***"
    assert detail["steps"][0]["output"] == "using password *** now\nerror: access denied for ***"
    assert detail["artifacts"][0]["ident"] == "https://x/?sig=***"
    assert detail["artifacts"][0]["details"] == {"auth": ["***", {"***": 1}]}
    with oplog.engine.begin() as conn:
        for table in (schema.operations, schema.steps, schema.artifacts):
            for row in conn.execute(sa.select(table)):
                text = repr(tuple(row))
                assert secret not in text and secret[:10] not in text and "a\\\\ss" not in text


# -- queries ---------------------------------------------------------------------------------------------------


def make_history(oplog):
    plan = [("100", "a", "backup"), ("100", "a", "staging"), ("200", "b", "backup"), ("100", "b", "promote")]
    ids = []
    for task, site, action in plan:
        with oplog.start(task=task, site=site, env="production", action=action) as op:
            with op.step("work"):
                pass
        ids.append(op.id)
    return ids


def test_operations_filter_by_task_site_and_action_newest_first(oplog):
    ids = make_history(oplog)
    assert [op["id"] for op in oplog.operations()] == ids[::-1]
    assert [op["id"] for op in oplog.operations(task="100")] == [ids[3], ids[1], ids[0]]
    assert [op["id"] for op in oplog.operations(task=100, site="a")] == [ids[1], ids[0]]
    assert [op["id"] for op in oplog.operations(action="backup", oldest_first=True)] == [ids[0], ids[2]]
    assert [op["id"] for op in oplog.operations(limit=2)] == [ids[3], ids[2]]


def test_operations_since_a_time(oplog):
    ids = make_history(oplog)
    third = datetime.fromisoformat(oplog.operation(ids[2])["started_at"])
    assert [op["id"] for op in oplog.operations(since=third, oldest_first=True)] == ids[2:]
    assert oplog.operations(since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_operations_with_details_carry_steps_and_artifacts(oplog):
    make_history(oplog)
    plain, detailed = oplog.operations(), oplog.operations(with_details=True)
    assert all("steps" not in op for op in plain)
    assert [set(op) for op in detailed] == [OPERATION_KEYS | {"steps", "artifacts"}] * 4
    assert set(detailed[0]["steps"][0]) == {"seq", "name", "started_at", "finished_at", "duration", "status", "output"}


def test_an_unknown_operation_id_is_a_clear_error(oplog):
    with pytest.raises(OperationNotFound, match="no operation 999"):
        oplog.operation(999)


def test_naive_times_are_refused(oplog):
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        oplog.operations(since=datetime(2026, 1, 1))  # noqa: DTZ001


def test_from_inventory_uses_its_oplog_url(url):
    class Inventory:
        oplog_url = url

    oplog = Oplog.from_inventory(Inventory())
    assert oplog.operations() == []
    oplog.close()
