"""The tamper-evident chain over operations, steps and artifacts: built as rows become final, verified link by
link, on SQLite and PostgreSQL, with concurrent writers."""

import socket
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.billing import Rates
from orchestrator.cli import main
from orchestrator.oplog import Oplog, chain, schema

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/oplog.db"
        return
    pg = request.getfixturevalue("postgres")
    name = f"chain_{uuid.uuid4().hex[:12]}"
    pg.sql(f"CREATE DATABASE {name}")
    yield pg.url(name)
    pg.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def oplog(url):
    with Oplog(url) as opened:
        yield opened


def record(oplog, task="14883", steps=("dump", "upload"), status="ok"):
    """Record one finished operation with its steps and one artifact; return its id."""
    with oplog.start(task=task, site="shop", env="production", action="backup") as op:
        for name in steps:
            with op.step(name) as step:
                step.output(f"{name} done")
        op.artifact("backup", f"b-{uuid.uuid4().hex[:6]}", size=123, details={"files": 2})
        if status != "ok":
            op.finish(status, error="boom")
    return op.id


def ids(oplog, table):
    with oplog.engine.connect() as conn:
        return conn.execute(sa.select(table.c.id).order_by(table.c.id)).scalars().all()


def sql(oplog, statement, **params):
    with oplog.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_a_clean_oplog_verifies_and_every_final_row_is_one_link(oplog):
    record(oplog)
    record(oplog, status="rolled_back")
    head, broken = chain.verify(oplog.engine)
    assert broken is None
    assert head.seq == 2 * (1 + 2 + 1)  # operation, two steps, one artifact, twice
    assert head == chain.current_head(oplog.engine)


def test_a_row_joins_the_chain_only_when_final(oplog):
    op = oplog.start(task="1", site="shop", env=None, action="backup")
    step_ctx = op.step("dump")
    step = step_ctx.__enter__()
    assert chain.current_head(oplog.engine).seq == 0
    step.output("progress")  # running rows may still change
    step_ctx.__exit__(None, None, None)
    assert chain.current_head(oplog.engine).seq == 1
    step.output("late output is not written into a linked row")
    op.finish("ok")
    op.finish("failed", error="a second finish changes nothing")
    head, broken = chain.verify(oplog.engine)
    assert (head.seq, broken) == (2, None)
    assert oplog.operation(op.id)["status"] == "ok"


def test_a_changed_step_is_named(oplog):
    record(oplog)
    step_id = ids(oplog, schema.steps)[1]
    sql(oplog, "UPDATE steps SET output = 'nothing to see' WHERE id = :id", id=step_id)
    _, broken = chain.verify(oplog.engine)
    assert (broken.kind, broken.row_id, broken.problem) == ("step", step_id, "was changed")
    assert str(broken).startswith(f"step {step_id} (link ")


def test_a_changed_operation_result_is_named(oplog):
    first = record(oplog)
    record(oplog, status="failed")
    last = ids(oplog, schema.operations)[-1]
    sql(oplog, "UPDATE operations SET status = 'ok', error = NULL WHERE id = :id", id=last)
    _, broken = chain.verify(oplog.engine)
    assert (broken.kind, broken.row_id) == ("operation", last) != ("operation", first)


def test_a_deleted_artifact_is_named(oplog):
    record(oplog)
    record(oplog)
    artifact_id = ids(oplog, schema.artifacts)[0]
    sql(oplog, "DELETE FROM artifacts WHERE id = :id", id=artifact_id)
    _, broken = chain.verify(oplog.engine)
    assert (broken.kind, broken.row_id, broken.problem) == ("artifact", artifact_id, "was deleted")


def test_a_row_deleted_with_its_link_leaves_a_gap(oplog):
    record(oplog)
    record(oplog)
    sql(oplog, "DELETE FROM steps WHERE id = (SELECT row_id FROM chain WHERE seq = 5)")
    sql(oplog, "DELETE FROM chain WHERE seq = 5")
    head, broken = chain.verify(oplog.engine)
    assert broken.seq == 5 and "missing" in broken.problem
    assert head.seq == 4


def test_the_last_link_deleted_is_noticed_by_the_head(oplog):
    record(oplog)
    last = ids(oplog, schema.operations)[-1]
    # hide the operation's result: back to `running` (not checked) and its link gone
    sql(oplog, "DELETE FROM chain WHERE seq = 4")
    sql(oplog, "UPDATE operations SET status = 'running' WHERE id = :id", id=last)
    _, broken = chain.verify(oplog.engine)
    assert broken is not None and "deleted at the end" in broken.problem


def test_reordered_links_are_named(oplog):
    record(oplog)
    a, b = ids(oplog, schema.steps)[:2]
    # swap the two steps' places in the chain (seq is the primary key: go through a free number)
    sql(oplog, "UPDATE chain SET seq = 1000 WHERE kind = 'step' AND row_id = :a", a=a)
    sql(oplog, "UPDATE chain SET seq = 1 WHERE kind = 'step' AND row_id = :b", b=b)
    sql(oplog, "UPDATE chain SET seq = 2 WHERE kind = 'step' AND row_id = :a", a=a)
    _, broken = chain.verify(oplog.engine)
    assert (broken.seq, broken.kind, broken.row_id) == (1, "step", b)
    assert "out of order" in broken.problem


def test_reordered_steps_of_an_operation_are_named(oplog):
    record(oplog)
    a, b = ids(oplog, schema.steps)[:2]
    sql(oplog, "UPDATE steps SET seq = 100 WHERE id = :a", a=a)
    sql(oplog, "UPDATE steps SET seq = 1 WHERE id = :b", b=b)
    sql(oplog, "UPDATE steps SET seq = 2 WHERE id = :a", a=a)
    _, broken = chain.verify(oplog.engine)
    assert (broken.kind, broken.row_id, broken.problem) == ("step", a, "was changed")


def test_a_final_row_written_outside_orch_is_named(oplog):
    op_id = record(oplog)
    sql(
        oplog,
        "INSERT INTO artifacts (operation_id, kind, ident, created_at) "
        "VALUES (:op, 'backup', 'forged', '2026-01-01 00:00:00')",
        op=op_id,
    )
    _, broken = chain.verify(oplog.engine)
    assert broken.kind == "artifact" and "not in the chain" in broken.problem


def test_reaped_operations_join_the_chain(oplog):
    with oplog.engine.begin() as conn:
        conn.execute(
            schema.operations.insert().values(
                task="1",
                site="shop",
                env=None,
                action="backup",
                actor="x@y",
                host=socket.gethostname(),
                pid=2**22 + 7,
                params={},
                started_at=datetime.now(UTC),
                status="running",
            )
        )
    assert oplog.reap() == 1
    assert chain.verify(oplog.engine) == (chain.Head(1, chain.current_head(oplog.engine).hash), None)


def test_an_oplog_written_before_the_chain_is_chained_when_migrated(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a version-2 database, as the previous orch left it
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(version=2))
        for migration in schema.MIGRATIONS[:2]:
            migration(conn)
        now = datetime.now(UTC)
        for n in range(3):
            op = conn.execute(
                schema.operations.insert().values(
                    task="7",
                    site="shop",
                    env=None,
                    action="backup",
                    actor="a@b",
                    host="h",
                    pid=1,
                    params={},
                    started_at=now,
                    finished_at=now,
                    duration=1.0,
                    status="ok",
                )
            ).inserted_primary_key[0]
            conn.execute(
                schema.steps.insert().values(
                    operation_id=op, seq=1, name="dump", started_at=now, finished_at=now, status="ok", output=f"{n}"
                )
            )
    engine.dispose()
    with Oplog(url) as oplog:
        head, broken = chain.verify(oplog.engine)
    assert (head.seq, broken) == (6, None)


WRITER = """
    import sys
    from orchestrator.oplog import Oplog
    url, n, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Oplog(url) as oplog:
        for i in range(count):
            with oplog.start(task=f"w{n}", site=f"site{n}", env=None, action="backup") as op:
                for name in ("a", "b", "c"):
                    with op.step(name) as step:
                        step.output(f"{n}/{i}/{name}")
                op.artifact("backup", f"{n}-{i}")
"""


def test_concurrent_writers_keep_one_valid_chain(url):
    with Oplog(url):
        pass  # migrate once, so the writers race on the chain and not on the first open
    writers, count = 3, 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), url, str(n), str(count)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * writers, errors
    with Oplog(url) as oplog:
        head, broken = chain.verify(oplog.engine)
        with oplog.engine.connect() as conn:
            kinds = conn.execute(sa.select(schema.chain.c.kind)).scalars().all()
    assert broken is None
    assert head.seq == writers * count * 5 == len(kinds)


def test_orch_log_verify_prints_the_head_or_names_the_row(tmp_path, capsys, monkeypatch):
    (tmp_path / "sites").mkdir()
    (tmp_path / "inventory.yaml").write_text("oplog: sqlite:///oplog.db\n")
    monkeypatch.chdir(tmp_path)
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        record(oplog)
        head = chain.current_head(oplog.engine)
    with pytest.raises(SystemExit) as done:
        main(["log", "verify"])
    assert done.value.code == 0
    assert f"head {head.seq}:{head.hash}" in capsys.readouterr().out
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        sql(oplog, "UPDATE artifacts SET ident = 'other'")
        artifact_id = ids(oplog, schema.artifacts)[0]
    with pytest.raises(SystemExit) as done:
        main(["log", "verify"])
    assert done.value.code == 1
    assert f"artifact {artifact_id} (link 3) was changed" in capsys.readouterr().err


def test_the_task_report_carries_the_chain_head_and_the_cost(tmp_path, capsys, monkeypatch):
    (tmp_path / "sites").mkdir()
    (tmp_path / "inventory.yaml").write_text("oplog: sqlite:///oplog.db\nbilling: {currency: EUR, hourly_rate: 3600}\n")
    monkeypatch.chdir(tmp_path)
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        record(oplog)
        head = chain.current_head(oplog.engine)
        duration = oplog.operations(task="14883")[0]["duration"]
    for fmt in ("md", "html"):
        with pytest.raises(SystemExit) as done:
            main(["report", "--task", "14883", "--format", fmt])
        assert done.value.code == 0
        out = capsys.readouterr().out
        # priced as billing prices it (seconds / 3600 * rate, rounded): formatting the raw duration rounds a
        # duration like 0.005 s the other way
        cost = Rates(currency="EUR", hourly_rate=3600).time_cost(duration)
        assert f"Oplog chain head: {head}" in out and f"Cost: {cost:,.2f} EUR" in out


def test_a_head_quoted_elsewhere_must_still_be_in_the_oplog(oplog):
    record(oplog)
    head = chain.current_head(oplog.engine)
    assert chain.mismatch(oplog.engine, str(head)) is None
    assert chain.mismatch(oplog.engine, head.short) is None
    # someone rewrites the chain from link 1 on, consistently: verify alone cannot tell, the quoted head can
    with oplog.engine.begin() as conn:
        conn.execute(sa.text("UPDATE steps SET output = 'edited' WHERE id = (SELECT min(id) FROM steps)"))
        conn.execute(schema.chain.delete())
        conn.execute(schema.chain_head.update().values(seq=0, link_hash=chain.GENESIS))
        chain.backfill(conn)
    assert chain.verify(oplog.engine)[1] is None
    assert "rows were rewritten since" in chain.mismatch(oplog.engine, str(head))
    assert "not a chain head" in chain.mismatch(oplog.engine, "nonsense")
