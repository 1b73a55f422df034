"""web.wait_until: poll until a check holds, N times in a row when a reload lets old and new workers answer in
turn; htpasswd lines nginx can read."""

from __future__ import annotations

import base64
import hashlib

import pytest

from orchestrator.backends.envs import web


def _answers(*values):
    """A check returning the given values one per call (then the last one forever), counting the calls."""
    calls = []

    def check():
        calls.append(1)
        return values[min(len(calls), len(values)) - 1]

    return check, calls


@pytest.mark.parametrize(
    "values, streak, expected, calls",
    [
        ((True,), 1, True, 1),
        ((False, False, True), 1, True, 3),
        # after a reload: the new config answers, an old worker answers once more, then only the new config
        ((True, False, True, True, True), 3, True, 5),
        ((True, False, True, False, True, True, True), 3, True, 7),
    ],
)
def test_wait_until_returns_once_the_check_holds_streak_times_in_a_row(values, streak, expected, calls):
    check, made = _answers(*values)
    assert web.wait_until(check, timeout=5, interval=0, streak=streak) is expected
    assert len(made) == calls


def test_wait_until_gives_up_after_the_timeout_with_the_last_value():
    check, made = _answers(True, False)
    assert web.wait_until(check, timeout=0.05, interval=0.01, streak=3) is False
    assert len(made) >= 2


@pytest.mark.parametrize("password", ["s3cret", "with space", "ü:colon", "x" * 64])
def test_htpasswd_line_is_a_salted_sha1_of_the_password(password):
    user, rest = web.htpasswd_line("staging", password).rstrip("\n").split(":", 1)
    raw = base64.b64decode(rest.removeprefix("{SSHA}"))
    digest, salt = raw[:20], raw[20:]
    assert user == "staging" and hashlib.sha1(password.encode() + salt).digest() == digest  # noqa: S324
    assert web.htpasswd_line("staging", password) != web.htpasswd_line("staging", password)  # a new salt each time
