"""Delivery of one event to one channel: webhook (JSON POST), e-mail (SMTP) or Telegram (Bot API).

Each `deliver_*` raises DeliveryError saying why; the Notifier turns that into a log line. Nothing here
retries forever or waits long: a notification must never hold a backup thread for minutes.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage

from orchestrator import __version__
from orchestrator.masking import mask

TIMEOUT = 10
TELEGRAM_API = "https://api.telegram.org"
TELEGRAM_LIMIT = 4000  # the Bot API refuses messages over 4096 characters


class DeliveryError(Exception):
    """A channel did not accept the event; the message is masked and says why."""


def describe(channel: dict) -> str:
    """Given a channel's inventory entry, return a short secret-free name for logs: `webhook https://...`."""
    kind = channel["type"]
    if kind == "webhook":
        return mask(f"webhook {channel['url']}")
    if kind == "email":
        return mask(f"email to {', '.join(channel['to'])} via {channel['smtp_host']}")
    return mask(f"telegram chat {channel['chat_id']}")


def _post_json(url: str, payload: dict, timeout: float) -> bytes:
    """POST payload as JSON; return the body; raise DeliveryError on a network error or a non-2xx status."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the inventory schema (http/https)
        url,
        data=json.dumps(payload, ensure_ascii=False, default=str).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"orch/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode("utf-8", "replace")
        raise DeliveryError(mask(f"HTTP {exc.code} {exc.reason}: {body}".strip())) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(mask(f"{getattr(exc, 'reason', None) or exc}")) from None


def deliver_webhook(channel: dict, event: dict, timeout: float = TIMEOUT) -> None:
    _post_json(channel["url"], event, timeout)


def deliver_telegram(channel: dict, event: dict, timeout: float = TIMEOUT) -> None:
    token = channel["bot_token"].reveal()
    base = (channel.get("api_url") or TELEGRAM_API).rstrip("/")
    body = _post_json(
        f"{base}/bot{token}/sendMessage",
        {"chat_id": channel["chat_id"], "text": event["text"][:TELEGRAM_LIMIT], "disable_web_page_preview": True},
        timeout,
    )
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        raise DeliveryError("the Bot API answered something that is not JSON") from None
    if not answer.get("ok"):
        raise DeliveryError(mask(f"the Bot API refused the message: {answer.get('description', answer)}"))


def email_message(channel: dict, event: dict) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = event["title"]
    message["From"] = channel["from"]
    message["To"] = ", ".join(channel["to"])
    message["X-Orch-Event"] = event["event"]
    message.set_content(event["text"] + "\n\n" + json.dumps(event, indent=2, ensure_ascii=False, default=str))
    return message


def deliver_email(channel: dict, event: dict, timeout: float = TIMEOUT) -> None:
    """Send over SMTP: port 465 is TLS from the start; otherwise STARTTLS when offered, and required before
    a password is sent."""
    port = channel.get("smtp_port") or 587
    password = channel["password"].reveal() if channel.get("password") else None
    try:
        smtp: smtplib.SMTP
        if port == 465:
            smtp = smtplib.SMTP_SSL(channel["smtp_host"], port, timeout=timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(channel["smtp_host"], port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if port != 465 and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            elif port != 465 and password:
                raise DeliveryError("the SMTP server offers no STARTTLS: refusing to send the password in clear")
            if channel.get("user") and password:
                smtp.login(channel["user"], password)
            smtp.send_message(email_message(channel, event))
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(mask(f"SMTP {channel['smtp_host']}:{port}: {exc}")) from None


DELIVER = {"webhook": deliver_webhook, "email": deliver_email, "telegram": deliver_telegram}
