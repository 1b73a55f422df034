"""Tracker notes: which tracker a site uses, what a note says, and delivery to a real signature-checking
receiver (retries, idempotency) driven through the real CLI."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest
from testbed.receiver import start_receiver

from orchestrator.cli import main
from orchestrator.config import load_inventory
from orchestrator.errors import InventoryError
from orchestrator.oplog import Oplog, chain, outbox
from orchestrator.tracker import tracker_for
from orchestrator.tracker.delivery import deliver_pending
from orchestrator.tracker.webhook import sign, verify

SECRET = "hook-secret-7f3a9c"


def write(root: Path, tracker: str, site_tracker: str = "", billing: str = "") -> Path:
    (root / "sites").mkdir(exist_ok=True)
    (root / "sites" / "shop.yaml").write_text(
        textwrap.dedent(f"""\
        name: shop
        environments:
          production: {{host: here, path: {root}/www}}
        {site_tracker}
        """)
    )
    (root / "sites" / "blog.yaml").write_text(
        textwrap.dedent(f"""\
        name: blog
        environments:
          production: {{host: here, path: {root}/blog}}
        tracker: {{enabled: false}}
        """)
    )
    path = root / "inventory.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        oplog: sqlite:///oplog.db
        hosts:
          here: {{connector: local}}
        defaults: {{backup: {{enabled: false}}}}
        serve: {{public_url: "https://orch.agency.test/pm"}}
        {billing}
        """)
        + tracker
    )
    return path


WEBHOOK = f"tracker: {{type: webhook, url: URL, secret: {SECRET}, issue_pattern: '^(\\d{{5}})$'}}\n"


def test_a_site_merges_its_tracker_over_the_inventorys_and_may_turn_it_off(tmp_path):
    inventory = load_inventory(
        write(
            tmp_path,
            WEBHOOK.replace("URL", "http://hooks.test/a"),
            site_tracker="tracker: {url: 'http://hooks.test/shop'}",
        )
    )
    shop = tracker_for(inventory, "shop")
    assert (shop.type, shop.url, shop.issue_for("14883")) == ("webhook", "http://hooks.test/shop", "14883")
    assert shop.issue_for("7") is None and shop.issue_for("scheduler") is None
    assert tracker_for(inventory, "blog") is None
    assert tracker_for(inventory, None).url == "http://hooks.test/a"


def test_a_tracker_missing_what_its_type_needs_is_a_clear_error(tmp_path):
    with pytest.raises(InventoryError, match="sites/shop.yaml: tracker: missing required key 'secret'"):
        load_inventory(write(tmp_path, "", site_tracker="tracker: {type: webhook, url: 'http://h.test'}"))
    # a site that only overrides a key, with no tracker in the inventory to merge over, is found when used
    inventory = load_inventory(write(tmp_path, "", site_tracker="tracker: {url: 'http://h.test'}"))
    with pytest.raises(InventoryError, match="site 'shop': tracker: type must be set"):
        tracker_for(inventory, "shop")


def test_the_signature_is_an_hmac_of_the_raw_body():
    body = b'{"key":"k"}'
    assert verify(SECRET, body, sign(SECRET, body))
    assert not verify(SECRET, body + b" ", sign(SECRET, body))
    assert not verify("other", body, sign(SECRET, body))


@pytest.fixture
def receiver():
    running = start_receiver(SECRET)
    yield running
    running.stop()


def orch(inventory: Path, *args) -> int:
    """Run the CLI in this process; like a process exit, wait for the tracker delivery it started."""
    try:
        main(["-i", str(inventory), *args])
    except SystemExit as done:
        return done.code
    finally:
        for thread in threading.enumerate():
            if thread.name == "tracker-delivery":
                thread.join()
    return 0


def test_finished_operations_post_one_signed_note_each_with_results_cost_link_and_chain(tmp_path, receiver):
    inventory = write(
        tmp_path, WEBHOOK.replace("URL", receiver.url), billing="billing: {currency: EUR, hourly_rate: 90}"
    )
    assert orch(inventory, "unlock", "shop", "--task", "14883") == 0
    assert orch(inventory, "unlock", "blog", "--task", "14883") == 0  # tracker off for blog
    assert orch(inventory, "unlock", "shop", "--task", "7") == 0  # not an issue number by the pattern
    (note,) = receiver.notes.values()
    assert (note["task"], note["issue"], note["site"]) == ("14883", "14883", "shop")
    assert note["operation"]["action"] == "unlock" and note["operation"]["status"] == "ok"
    assert "**orch unlock** of shop: **ok**" in note["text"] and "EUR" in note["text"]
    assert note["task_page"] == "https://orch.agency.test/pm/tasks/14883"
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        link = chain.link_of(oplog.engine, "operation", note["operation"]["id"])
        assert note["chain_head"] == str(link) and str(link) in note["text"]
        assert [row["status"] for row in outbox.listing(oplog.engine)] == ["sent"]


def test_a_receiver_that_is_down_gets_the_note_once_it_is_back(tmp_path, receiver, capsys):
    inventory = write(tmp_path, WEBHOOK.replace("URL", receiver.url))
    receiver.fail_next = 1
    assert orch(inventory, "unlock", "shop", "--task", "14883") == 0  # the operation is not failed
    assert receiver.notes == {}
    assert orch(inventory, "tracker", "status") == 1
    assert "HTTP 503" in capsys.readouterr().out
    assert orch(inventory, "--json", "tracker", "retry") == 0
    (sent,) = json.loads(capsys.readouterr().out)
    assert sent["status"] == "sent" and list(receiver.notes) == [sent["key"]]
    assert orch(inventory, "tracker", "status") == 0
    assert orch(inventory, "tracker", "retry") == 0  # nothing pending: nothing sent
    assert [status for status, _ in receiver.deliveries] == [503, 200]


def test_a_delivery_repeated_after_a_lost_answer_is_one_note(tmp_path, receiver):
    inventory = write(tmp_path, WEBHOOK.replace("URL", receiver.url))
    assert orch(inventory, "unlock", "shop", "--task", "14883") == 0
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        # as if the answer had been lost: the row is pending again, the receiver has the note
        with oplog.engine.begin() as conn:
            conn.execute(outbox.outbox.update().values(status="pending"))
        deliver_pending(oplog, load_inventory(inventory), everything=True)
        assert [row["status"] for row in outbox.listing(oplog.engine)] == ["sent"]
    keys = [key for status, key in receiver.deliveries if status == 200]
    assert len(keys) == 2 and len(set(keys)) == 1 and len(receiver.notes) == 1


def test_a_wrong_secret_is_refused_by_the_receiver_and_the_note_stays_queued(tmp_path, receiver):
    receiver.secret = "not-the-one-orch-has"
    inventory = write(tmp_path, WEBHOOK.replace("URL", receiver.url))
    assert orch(inventory, "unlock", "shop", "--task", "14883") == 0
    assert receiver.notes == {} and [s for s, _ in receiver.deliveries] == [401]
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        (row,) = outbox.listing(oplog.engine)
    assert row["status"] == "pending" and "HTTP 401" in row["last_error"] and SECRET not in json.dumps(row)


def test_the_scheduler_sends_due_notes_on_its_hourly_round(tmp_path, receiver):
    from types import SimpleNamespace

    from orchestrator.scheduler.daemon import Daemon

    inventory = write(tmp_path, WEBHOOK.replace("URL", receiver.url))
    receiver.fail_next = 1
    assert orch(inventory, "unlock", "shop", "--task", "14883") == 0
    with Oplog(f"sqlite:///{tmp_path}/oplog.db") as oplog:
        with oplog.engine.begin() as conn:  # its retry is due now
            conn.execute(outbox.outbox.update().values(next_attempt_at=outbox.process.now()))
        daemon = Daemon.__new__(Daemon)
        daemon.runtime = SimpleNamespace(inventory=load_inventory(inventory), oplog=oplog)
        daemon._deliver_notes()
        assert [row["status"] for row in outbox.listing(oplog.engine)] == ["sent"]
    assert len(receiver.notes) == 1
