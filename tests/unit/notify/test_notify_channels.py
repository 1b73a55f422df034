"""Notification channels against real local servers: an HTTP receiver (webhook, Telegram Bot API stand-in)
and an SMTP server (aiosmtpd). No mocks: what is asserted is what arrived."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from orchestrator.config.secrets import Secret
from orchestrator.notify import Notifier, events


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with `status` and `answer`."""

    def __init__(self):
        self.posts: list[dict] = []
        self.status, self.answer = 200, b'{"ok": true}'
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(
                    {"path": self.path, "body": json.loads(body or b"null"), "type": self.headers.get("Content-Type")}
                )
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(receiver.answer if receiver.status < 400 else self.path.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    with socket.socket() as probe:  # aiosmtpd's start-up check connects to the port given: it cannot be 0
        probe.bind(("127.0.0.1", 0))
        mailbox.port = probe.getsockname()[1]
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    yield mailbox
    controller.stop()


RUN = {
    "site": "shop",
    "env": "production",
    "kind": "backup",
    "host": "web1",
    "task": "10001",
    "operation_id": 42,
    "status": "failed",
    "error": "shop/production: database dump failed (exit 2): Access denied",
    "catch_up": True,
}


def test_a_webhook_receives_the_event_as_json(receiver):
    results = Notifier([{"type": "webhook", "url": receiver.url + "/hook"}]).send(events.failure(RUN))
    assert results == [{"channel": f"webhook {receiver.url}/hook", "ok": True, "error": None}]
    (post,) = receiver.posts
    body = post["body"]
    assert post["path"] == "/hook" and post["type"] == "application/json"
    assert body["event"] == "failure" and body["site"] == "shop" and body["operation_id"] == 42
    assert "Access denied" in body["text"] and "catch-up" in body["text"] and "orch log --task 10001" in body["text"]


def test_channels_get_only_the_events_they_subscribed_to(receiver):
    notifier = Notifier(
        [
            {"type": "webhook", "url": receiver.url + "/default"},
            {"type": "webhook", "url": receiver.url + "/health", "on": ["health"]},
        ]
    )
    notifier.send(events.recovery(RUN | {"status": "ok"}))
    notifier.send(
        events.health({"site": "shop", "env": "production", "healthy": False, "problems": ["no good backup recorded"]})
    )
    assert [(p["path"], p["body"]["event"]) for p in receiver.posts] == [
        ("/default", "recovery"),
        ("/health", "health"),
    ]


def test_a_failing_webhook_is_reported_not_raised(receiver, caplog):
    receiver.status = 500
    notifier = Notifier(
        [{"type": "webhook", "url": receiver.url + "/x"}, {"type": "webhook", "url": "http://127.0.0.1:9/closed"}],
        retry_delay=0,
    )
    first, second = notifier.send(events.failure(RUN))
    assert not first["ok"] and first["error"].startswith("HTTP 500") and len(receiver.posts) == 2  # retried once
    assert not second["ok"] and "refused" in second["error"].lower()
    assert "not delivered" in caplog.text


def test_telegram_posts_to_the_bot_api_and_masks_the_token(receiver):
    token = "123456:secret-bot-token"
    channel = {"type": "telegram", "bot_token": Secret(token, "test"), "chat_id": -100123, "api_url": receiver.url}
    (result,) = Notifier([channel], retry_delay=0).send(events.failure(RUN))
    assert result["ok"], result
    (post,) = receiver.posts
    assert post["path"] == f"/bot{token}/sendMessage"
    assert post["body"]["chat_id"] == -100123 and "FAILED" in post["body"]["text"]

    receiver.answer = b'{"ok": false, "description": "Bad Request: chat not found"}'
    (result,) = Notifier([channel], retry_delay=0).send(events.failure(RUN))
    assert not result["ok"] and "chat not found" in result["error"]
    receiver.status = 404  # the receiver echoes the path, token included, in its error body
    (result,) = Notifier([channel], attempts=1).send(events.failure(RUN))
    assert "HTTP 404" in result["error"] and token not in result["error"] and "***" in result["error"]


def test_email_arrives_with_subject_and_body(smtp):
    channel = {
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "from": "orch@agency.example",
        "to": ["ops@agency.example", "pm@agency.example"],
        "on": ["failure"],
    }
    (result,) = Notifier([channel], retry_delay=0).send(events.failure(RUN))
    assert result["ok"], result
    ((rcpts, message),) = smtp.messages
    assert rcpts == ["ops@agency.example", "pm@agency.example"]
    assert message["Subject"] == "orch: backup shop/production FAILED" and message["X-Orch-Event"] == "failure"
    assert "Access denied" in message.get_payload(decode=True).decode()


def test_email_never_sends_a_password_without_tls(smtp):
    channel = {
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "from": "orch@agency.example",
        "to": ["ops@agency.example"],
        "user": "orch",
        "password": Secret("smtp-secret-pw", "test"),
    }
    (result,) = Notifier([channel], attempts=1).send(events.failure(RUN))
    assert not result["ok"] and "STARTTLS" in result["error"] and smtp.messages == []


def test_the_digest_and_test_events_read_well():
    summary = {
        "hours": 24,
        "since": "x",
        "actions": {"backup": {"ok": 40, "failed": 1}},
        "failures": [{"action": "backup", "site": "shop", "env": "production", "started_at": "t", "error": "boom"}],
        "unhealthy": [{"site": "shop", "env": "production", "problems": ["no good backup recorded"]}],
    }
    digest = events.digest(summary)
    assert digest["title"] == "orch digest: 1 failed, 1 unhealthy"
    assert "backup 40 ok / 1 failed" in digest["text"] and "UNHEALTHY: shop/production" in digest["text"]
    assert events.test()["event"] == "test"
