"""Who may read the pages, and the headers every answer carries.

Bound to a loopback address the pages are open (only this machine reaches them). Bound anywhere else, every
request needs one of the inventory's `serve.accounts`: HTTP Basic with a password (stored as its Argon2 hash,
checked with argon2-cffi) or `Authorization: Bearer TOKEN` (stored as its SHA-256). A Basic login that passed
is remembered for a few minutes by a SHA-256 of the header, so a page view costs one Argon2 check, not one per
request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time

HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    (b"cache-control", b"no-store"),
]
REMEMBER_SECONDS = 300


def is_loopback(host: str) -> bool:
    """Given the address the server binds to, return whether only this machine can reach it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def hash_password(password: str) -> str:
    """Given a password, return its Argon2id hash for `serve.accounts.NAME.password_hash`."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def new_token() -> tuple[str, str]:
    """Return a new random Bearer token and its SHA-256 for `serve.accounts.NAME.token_sha256`."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """The accounts allowed in; `check(authorization header)` returns the account's name or None."""

    def __init__(self, accounts: dict):
        self._accounts = accounts
        self._tokens = {spec["token_sha256"]: name for name, spec in accounts.items() if spec.get("token_sha256")}
        self._remembered: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._accounts)

    def check(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            digest = hashlib.sha256(value.strip().encode()).hexdigest()
            return next((name for known, name in self._tokens.items() if hmac.compare_digest(known, digest)), None)
        if scheme.lower() == "basic":
            return self._basic(value.strip())
        return None

    def _basic(self, value: str) -> str | None:
        key = hashlib.sha256(value.encode()).hexdigest()
        with self._lock:
            name, until = self._remembered.get(key, (None, 0.0))
        if name and until > time.monotonic():
            return name
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        spec = self._accounts.get(user) or {}
        if not spec.get("password_hash") or not _argon2_ok(spec["password_hash"], password):
            return None
        with self._lock:
            self._remembered[key] = (user, time.monotonic() + REMEMBER_SECONDS)
        return user


def _argon2_ok(stored: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


class Guard:
    """ASGI middleware: the security headers on every answer, and (when `accounts` is given) 401 for requests
    without a valid login."""

    def __init__(self, app, accounts: Accounts | None):
        self.app, self.accounts = app, accounts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        if self.accounts is not None:
            header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            user = self.accounts.check(header)
            if user is None:
                return await _unauthorized(send_with_headers)
            scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send_with_headers)


async def _unauthorized(send) -> None:
    body = b"login required\n"
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"www-authenticate", b'Basic realm="orch", charset="UTF-8"'),
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
