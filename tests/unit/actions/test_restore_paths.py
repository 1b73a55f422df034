"""restore.safe_subpath: a user's --path becomes a normalised relative path inside the site, or a usage error."""

from __future__ import annotations

import pytest

from orchestrator.actions.restore import safe_subpath
from orchestrator.errors import UsageError


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, None),
        ("wp-content/uploads", "wp-content/uploads"),
        ("wp-content/uploads/", "wp-content/uploads"),
        ("./wp-content//uploads", "wp-content/uploads"),
        ("wp-content/../wp-admin", "wp-admin"),
        ("  wp-content  ", "wp-content"),
        ("Файл с пробелом.txt", "Файл с пробелом.txt"),
        ("$(touch x)", "$(touch x)"),  # a name like any other: quoted where it is used
        ("a; rm -rf b", "a; rm -rf b"),
        ("--delete", "--delete"),  # passed after `--` / inside a longer path, never as an option
        ("..foo", "..foo"),  # a name starting with dots is not a parent
        ("foo..", "foo.."),
    ],
)
def test_a_path_inside_the_site_is_normalised(given, expected):
    assert safe_subpath(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "/etc/passwd",
        "/",
        "  /etc",
        "//etc",
        "..",
        "../etc",
        "../../etc",
        "wp-content/../../etc",
        "a/../..",
        ".",
        "",
        "   ",
        "./",
        "a\0b",
        "a\nb",
        "wp-content/\n/../../etc",
    ],
)
def test_a_path_escaping_or_naming_the_whole_site_is_a_usage_error(given):
    with pytest.raises(UsageError, match="must be a relative path inside the site"):
        safe_subpath(given)
