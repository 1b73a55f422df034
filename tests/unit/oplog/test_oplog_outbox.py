"""The outbox of tracker notes: queued once per key, claimed by one process at a time, retried with backoff."""

from datetime import UTC, datetime

from orchestrator.oplog import Oplog, outbox


def queue(oplog, key="k1"):
    return outbox.add(
        oplog.engine,
        key=key,
        operation_id=None,
        task="14883",
        site="shop",
        tracker="redmine:http://r",
        issue="14883",
        payload={"text": "done"},
    )


def test_a_note_is_queued_once_per_key(tmp_path):
    with Oplog(f"sqlite:///{tmp_path}/o.db") as oplog:
        assert queue(oplog) is True
        assert queue(oplog) is False
        assert [row["key"] for row in outbox.listing(oplog.engine, status="pending")] == ["k1"]


def test_a_claimed_note_is_not_claimed_again_until_released(tmp_path):
    with Oplog(f"sqlite:///{tmp_path}/o.db") as oplog:
        queue(oplog)
        (row,) = outbox.claim_due(oplog.engine)
        assert outbox.claim_due(oplog.engine) == []
        outbox.failed(oplog.engine, row["id"], "connection refused", row["attempts"])
        assert outbox.claim_due(oplog.engine) == []  # not due: backoff
        (again,) = outbox.claim_due(oplog.engine, everything=True)  # `orch tracker retry`
        assert again["attempts"] == 1 and again["last_error"] == "connection refused"
        assert datetime.fromisoformat(again["next_attempt_at"]) > datetime.now(UTC)
        outbox.sent(oplog.engine, again["id"], {"journal": 7})
        (done,) = outbox.listing(oplog.engine)
        assert (done["status"], done["remote"], done["attempts"]) == ("sent", {"journal": 7}, 2)
        assert outbox.claim_due(oplog.engine, everything=True) == []


def test_an_operation_run_inside_another_of_the_same_process_and_site_is_found(tmp_path):
    with Oplog(f"sqlite:///{tmp_path}/o.db") as oplog:
        promote = oplog.start(task="1", site="shop", env="production", action="promote")
        backup = oplog.start(task="1", site="shop", env="production", action="backup")
        other = oplog.start(task="1", site="blog", env="production", action="backup")
        backup.finish("ok")
        other.finish("ok")
        assert outbox.enclosing(oplog.engine, backup.id) == promote.id
        assert outbox.enclosing(oplog.engine, other.id) is None
        promote.finish("ok")
        assert outbox.enclosing(oplog.engine, promote.id) is None
