"""Tests of the streaming URL replacer (orchestrator.backends.cms.replace).

Serialized values come from real PHP (``php`` CLI), are embedded in dump text with this file's own tiny
escapers (independent of the module's), and after replacement are read back and unserialized by PHP again: a
value is right when PHP re-serializes it to exactly PHP's serialization of the expected structure. BLOB values
are written as mysqldump --hex-blob writes them (``0x`` + uppercase hex). The last tests go through real
``mariadb-dump`` (with and without --hex-blob) and ``pg_dump`` output and load the result back into the server.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.backends.cms.replace import ReplaceStats, replace_bytes, replace_stream, url_pairs
from orchestrator.errors import UsageError

OLD = "https://shop.example.com"
NEW = "https://t14883.shop.stage.example.net"
NEW_RELATIVE = "//t14883.shop.stage.example.net"
PAIRS = url_pairs(OLD, NEW)
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="php CLI not installed")


# ------------------------------------------------------------------------------------------ PHP helpers


class Obj(dict):
    """A PHP stdClass object in a test structure."""


def php_literal(value) -> bytes:
    """Given a Python structure (Obj for stdClass; bytes for raw strings), return PHP source building it."""
    if isinstance(value, Obj):
        return b"(object)" + php_literal(dict(value))
    if isinstance(value, dict):
        return b"[" + b",".join(php_literal(k) + b"=>" + php_literal(v) for k, v in value.items()) + b"]"
    if isinstance(value, list):
        return php_literal(dict(enumerate(value)))
    if value is None or isinstance(value, bool):
        return {None: b"null", True: b"true", False: b"false"}[value]
    if isinstance(value, int | float):
        return repr(value).encode()
    raw = value.encode() if isinstance(value, str) else value
    return b'"' + b"".join(_php_char(byte) for byte in raw) + b'"'


def _php_char(byte: int) -> bytes:
    if byte < 0x20 or byte == 0x7F:
        return b"\\x%02x" % byte
    return b"\\" + bytes((byte,)) if byte in b'\\"$' else bytes((byte,))


def php(code: bytes) -> bytes:
    """Run PHP code (fed on stdin, so any byte may appear in it); return its stdout."""
    proc = subprocess.run([PHP, "-d", "display_errors=stderr"], input=b"<?php " + code, capture_output=True)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode(errors="replace")
    return proc.stdout


@functools.cache
def _php_serialize_cached(literal: bytes) -> bytes:
    return php(b"echo serialize(" + literal + b");")


def php_serialize(value) -> bytes:
    return _php_serialize_cached(php_literal(value))


def php_json(value) -> str:
    """PHP's json_encode(): escapes "/" as "\\/", which is what the replacer must also find."""
    return php(b"echo json_encode(" + php_literal(value) + b");").decode()


def php_reserialize(values: list[bytes]) -> list[bytes | None]:
    """Unserialize each value with PHP and serialize it again; None where unserialize() fails."""
    encoded = b",".join(b"'" + base64.b64encode(v) + b"'" for v in values)
    out = php(
        b"foreach ([" + encoded + b"] as $b) { $v = @unserialize(base64_decode($b));"
        b' echo $v === false ? "-" : base64_encode(serialize($v)), "\\n"; }'
    )
    return [None if line == b"-" else base64.b64decode(line) for line in out.splitlines()]


# ----------------------------------------------------------------------------------------- dump helpers

MYSQL_ESCAPES = {0x00: b"\\0", 0x0A: b"\\n", 0x0D: b"\\r", 0x1A: b"\\Z", 0x22: b'\\"', 0x27: b"\\'", 0x5C: b"\\\\"}
MYSQL_UNESCAPES = {esc[1:]: bytes((raw,)) for raw, esc in MYSQL_ESCAPES.items()}
COPY_ESCAPES = {0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t"}


def _escape(raw: bytes, table: dict[int, bytes]) -> bytes:
    return b"".join(table.get(byte, bytes((byte,))) for byte in raw)


def _unescape(text: bytes, table: dict[bytes, bytes]) -> bytes:
    return re.sub(rb"\\(.)", lambda m: table.get(m[1], m[1]), text, flags=re.S)


def as_bytes(value) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Blob(bytes):
    """A BLOB value in a test row: mysqldump --hex-blob writes it as 0x + uppercase hex, or '' when empty."""


def sql_value(value) -> bytes:
    """An int as a number, None as NULL, a Blob as --hex-blob writes it, str/bytes as a '...' literal."""
    if isinstance(value, int):
        return b"%d" % value
    if value is None:
        return b"NULL"
    if isinstance(value, Blob):
        return b"0x" + value.hex().upper().encode() if value else b"''"
    return b"'" + _escape(as_bytes(value), MYSQL_ESCAPES) + b"'"


def insert_line(table: str, rows: list[tuple]) -> bytes:
    """One mysqldump extended INSERT line."""
    values = b",".join(b"(" + b",".join(sql_value(v) for v in row) + b")" for row in rows)
    return b"INSERT INTO `" + table.encode() + b"` VALUES " + values + b";\n"


def copy_line(fields: list) -> bytes:
    """One row of PostgreSQL COPY text."""
    return b"\t".join(_escape(as_bytes(f), COPY_ESCAPES) for f in fields) + b"\n"


def mysql_literals(text: bytes) -> list[bytes]:
    """The unescaped values of all '...' literals in mysqldump text."""
    return [_unescape(m, MYSQL_UNESCAPES) for m in re.findall(rb"'((?:[^'\\]|\\.)*)'", text, flags=re.S)]


def hex_values(text: bytes) -> list[bytes]:
    """The decoded bytes of all hex literal values (``0x...`` between ``(``/``,`` and ``,``/``)``) in text."""
    return [bytes.fromhex(h.decode()) for h in re.findall(rb"[(,]0x([0-9A-F]+)(?=[,)])", text)]


def replace_values(values: list, pairs=PAIRS) -> tuple[list[bytes], ReplaceStats]:
    """Embed values as wp_options rows of one INSERT line, replace, and return the values read back."""
    rows = [(i + 1, f"option_{i}", v, "yes") for i, v in enumerate(values)]
    out, stats = replace_bytes(insert_line("wp_options", rows), pairs)
    literals = mysql_literals(out)
    assert len(literals) == 3 * len(values)
    return literals[1::3], stats


def replace_blobs(values: list, pairs=PAIRS) -> tuple[list[bytes], ReplaceStats]:
    """Embed non-empty values as BLOBs of Drupal key_value rows of one INSERT line, replace, and return the
    values read back."""
    rows = [("state", f"key_{i}", Blob(as_bytes(v))) for i, v in enumerate(values)]
    out, stats = replace_bytes(insert_line("key_value", rows), pairs)
    blobs = hex_values(out)
    assert len(blobs) == len(values) and len(mysql_literals(out)) == 2 * len(values)
    return blobs, stats


def check_serialized(before, after, pairs=PAIRS, replace=replace_values) -> ReplaceStats:
    """Serialize ``before`` with PHP, replace inside a dump line (as a string value, or a hex BLOB with
    ``replace=replace_blobs``), and require exactly PHP's serialization of ``after``, which PHP must
    unserialize again."""
    expected = php_serialize(after)
    [got], stats = replace([php_serialize(before)], pairs)
    assert got == expected
    assert php_reserialize([got]) == [expected]
    return stats


# -------------------------------------------------------------------------------------- test structures


def widget(u: str) -> dict:
    html = (
        f'<p class="intro">It\'s <a href="{u}/kontakty/">here</a>\r\n'
        f"<img src='{u}/wp-content/uploads/2024/01/map.png'>\tC:\\path\\ \x1a \0</p>"
    )
    return {2: {"title": "Контакты", "text": html, "filter": True, "visual": False}, "_multiwidget": 1}


def nested(u: str) -> dict:
    return {
        "home": u,
        "list": [1, 2.5, True, None, f"{u}/a", {"deep": Obj(url=f"{u}/wp-content/x.png", n=3)}],
        "obj": Obj(a=Obj(b=f"see {u}/c and {u}/d")),
    }


def multibyte(u: str) -> dict:
    return {"t": f"Кровля — {u}/каталог", "ключ": f"{u}/корзина?x=ё", "emoji": f"🏠 {u}"}


def json_in_serialized(u: str) -> dict:
    return {
        "_elementor_data": php_json([{"id": "a1", "settings": {"link": {"url": f"{u}/wp-content/a.jpg"}}}]),
        "plain": u,
    }


def serialized_in_serialized(u: str) -> dict:
    inner = php_serialize({"url": u, "deeper": php_serialize([f"{u}/x", "Ж"])})
    return {"widget": inner, "n": 1, "after": f"{u}/z"}


# ----------------------------------------------------------------------------------------------- url_pairs


def test_url_pairs_expands_schemes_www_relative_and_json():
    pairs = dict(url_pairs(OLD, NEW))
    host_variants = ["shop.example.com", "www.shop.example.com"]
    for host in host_variants:
        for scheme in ("https", "http"):
            assert pairs[f"{scheme}://{host}"] == NEW
            assert pairs[f"{scheme}:\\/\\/{host}"] == NEW.replace("/", "\\/")
        assert pairs[f"//{host}"] == NEW_RELATIVE
        assert pairs[f"\\/\\/{host}"] == NEW_RELATIVE.replace("/", "\\/")
    assert len(pairs) == 12
    lengths = [len(old) for old, _ in url_pairs(OLD, NEW)]
    assert lengths == sorted(lengths, reverse=True)


def test_url_pairs_keeps_path_drops_trailing_slash_and_new_scheme_wins():
    pairs = dict(url_pairs("http://www.shop.example.com/blog/", "https://stage.example.net/blog/"))
    assert pairs["http://www.shop.example.com/blog"] == "https://stage.example.net/blog"
    assert pairs["https://shop.example.com/blog"] == "https://stage.example.net/blog"
    assert pairs["//shop.example.com/blog"] == "//stage.example.net/blog"


def test_url_pairs_options_and_hosts_without_www():
    assert url_pairs(OLD, NEW, schemes=False, www=False) == [
        ("https:\\/\\/shop.example.com", NEW.replace("/", "\\/")),
        (OLD, NEW),
    ]
    olds = [old for old, _ in url_pairs("http://127.0.0.1:18080", "http://127.0.0.1:18081")]
    assert not any("www" in old for old in olds) and "http://127.0.0.1:18080" in olds
    assert not any("www" in old for old, _ in url_pairs("http://localhost:8080", NEW))


@pytest.mark.parametrize("bad", ["shop.example.com", "ftp://shop.example.com", "https://x.example/?a=1", ""])
def test_url_pairs_rejects_non_base_urls(bad):
    with pytest.raises(UsageError):
        url_pairs(bad, NEW)


def test_bad_arguments_raise_usage_error():
    with pytest.raises(UsageError):
        replace_bytes(b"x", PAIRS, dialect="oracle")
    with pytest.raises(UsageError):
        replace_bytes(b"x", [("", "y")])
    with pytest.raises(UsageError):
        replace_bytes(b"x", [("same", "same")])


# --------------------------------------------------------------------------------------- serialized repair


@needs_php
@pytest.mark.parametrize("build", [widget, nested, multibyte, json_in_serialized, serialized_in_serialized])
def test_serialized_values_are_replaced_with_correct_lengths(build):
    stats = check_serialized(build(OLD), build(NEW))
    assert stats.serialized_fixed >= 1 and stats.serialized_skipped == 0


@needs_php
def test_strings_next_to_a_url_are_not_taken_for_its_container():
    # the key's length, were all its bytes escaped, would reach the URL: it is walked and found to end before
    def build(u: str) -> dict:
        return {"a_key_long_enough_to_reach": u, "x": [f"{u}/1", "short", f"{u}/2"]}

    stats = check_serialized(build(OLD), build(NEW))
    assert stats.serialized_skipped == 0 and stats.serialized_fixed == 3


@needs_php
def test_nested_length_prefix_growing_a_digit_fixes_every_container():
    # "//a.io" (6 bytes) becomes 23 bytes: s:6: -> s:23: changes the containers' lengths by one more byte
    pairs = url_pairs("http://a.io", "https://staging-a.example.net")

    def build(rel: str, full: str):
        level2 = php_serialize([rel, {"k": rel}])
        level1 = php_serialize({"inner": level2, "url": f"{full}/p"})
        return {"outer": level1, "tail": rel}

    check_serialized(
        build("//a.io", "http://a.io"), build("//staging-a.example.net", "https://staging-a.example.net"), pairs
    )


@needs_php
def test_scheme_www_relative_and_json_variants_all_map_to_new_url():
    def build(http: str, www: str, www_http: str, relative: str, relative_www: str) -> dict:
        return {
            "a": f"{http}/a",
            "b": f"{www}/b",
            "c": www_http,
            "d": f"{relative}/c.js",
            "e": f'<script src="{relative_www}/x.js"></script>',
            "f": php_json({"u": f"{www_http}/y"}),
        }

    check_serialized(
        build(
            "http://shop.example.com",
            "https://www.shop.example.com",
            "http://www.shop.example.com",
            "//shop.example.com",
            "//www.shop.example.com",
        ),
        build(NEW, NEW, NEW, NEW_RELATIVE, NEW_RELATIVE),
    )


@needs_php
def test_invalid_utf8_bytes_pass_through():
    def build(u: str) -> dict:
        return {"bin": b"\xff\xfe " + u.encode() + b" \xc3(", "ok": "Ж"}

    check_serialized(build(OLD), build(NEW))
    got, _ = replace_values([b"\x80\xff" + OLD.encode() + b"/x\xc3"])
    assert got == [b"\x80\xff" + NEW.encode() + b"/x\xc3"]


@needs_php
def test_broken_serialized_string_is_left_alone_but_url_replaced():
    before = b'a:1:{i:0;s:99:"' + OLD.encode() + b'";}'
    [got], stats = replace_values([before])
    assert got == b'a:1:{i:0;s:99:"' + NEW.encode() + b'";}'
    assert stats.serialized_skipped == 1 and stats.serialized_fixed == 0 and stats.replacements == 1


# ------------------------------------------------------------------------------------------ plain values


def test_json_value_outside_serialization():
    value = (
        '[{"settings":{"url":"https:\\/\\/shop.example.com\\/wp-content\\/a.jpg","n":"http:\\/\\/shop.example.com"}}]'
    )
    got, stats = replace_values([value])
    new_json = NEW.replace("/", "\\/")
    assert got == [f'[{{"settings":{{"url":"{new_json}\\/wp-content\\/a.jpg","n":"{new_json}"}}}}]'.encode()]
    assert stats.replacements == 2 and stats.serialized_fixed == 0


def test_urls_ending_at_a_boundary_are_replaced():
    tails = [".", ":8443/x", "?p=1", "#top", "/", "'", '"', "\n", ")", "\\", ", next", "</a>"]
    got, stats = replace_values([f"({OLD}{tail}" for tail in tails])
    assert got == [f"({NEW}{tail}".encode() for tail in tails]
    assert stats.replacements == len(tails)


def test_longer_hosts_emails_and_bare_hosts_are_not_replaced():
    values = [
        "https://shop.example.com.evil.net/x",
        "https://shop.example.community",
        "info@shop.example.com",
        "https://cdn.shop.example.com/a",
        "shop.example.com",
        "https://shop.example.com-old.net",
        "https://shop.example.com_x",
        "https://shop.example.com.",
        "HTTPS://SHOP.EXAMPLE.COM",
    ]
    line = insert_line("wp_options", [(1, v) for v in values[:-2]] + [(2, values[-1])])
    out, stats = replace_bytes(line, PAIRS)
    assert out == line
    assert stats.replacements == 0 and stats.lines_changed == 0


def test_path_in_old_url_must_end_at_a_segment_boundary():
    pairs = url_pairs(f"{OLD}/blog", "https://stage.example.net/blog")
    got, _ = replace_values([f"{OLD}/blogger", f"{OLD}/blog/x", f"{OLD}/blog"], pairs)
    assert got == [f"{OLD}/blogger".encode(), b"https://stage.example.net/blog/x", b"https://stage.example.net/blog"]


def test_explicit_bare_host_pair_needs_a_left_boundary_too():
    pairs = [("shop.example.com", "stage.example.net")]
    value = "info@shop.example.com, shop.example.com, cdn.shop.example.com, myshop.example.com, x\nshop.example.com"
    got, _ = replace_values([value], pairs)
    assert got == [
        b"info@stage.example.net, stage.example.net, cdn.shop.example.com, myshop.example.com, x\nstage.example.net"
    ]


def test_several_sites_in_one_run():
    pairs = url_pairs(OLD, NEW) + url_pairs("https://blog.example.org", "https://blog.stage.example.net")
    value = f"{OLD}/a https://blog.example.org/b http://www.blog.example.org"
    got, _ = replace_values([value])
    assert got == [f"{NEW}/a https://blog.example.org/b http://www.blog.example.org".encode()]
    got, stats = replace_values([value], pairs)
    assert got == [f"{NEW}/a https://blog.stage.example.net/b https://blog.stage.example.net".encode()]
    assert stats.replacements == 3


# ---------------------------------------------------------------------------- BLOBs as hex (--hex-blob)


def drupal_state(u: str) -> dict:
    """Drupal's key_value 'aggregator.last_feed' (a longblob column)."""
    return {"last_feed": f"{u}/rss.xml", "checked": 1736900000}


def url_hex(url: str = OLD) -> str:
    return url.encode().hex().upper()


@needs_php
@pytest.mark.parametrize(
    "build", [drupal_state, widget, nested, multibyte, json_in_serialized, serialized_in_serialized]
)
def test_serialized_values_in_hex_blobs_are_replaced_with_correct_lengths(build):
    stats = check_serialized(build(OLD), build(NEW), replace=replace_blobs)
    assert stats.serialized_fixed >= 1 and stats.serialized_skipped == 0


@needs_php
def test_binary_bytes_in_a_blob_pass_through_around_the_url():
    def build(u: str) -> dict:
        return {"bin": b"\x00\xff\xfe'\"\\\n\r\x1a " + u.encode() + b" \xc3(", "ok": "Ж"}

    check_serialized(build(OLD), build(NEW), replace=replace_blobs)
    binary = bytes(range(256))
    got, stats = replace_blobs([binary + OLD.encode() + b"/x\x00" + binary])
    assert got == [binary + NEW.encode() + b"/x\x00" + binary]
    assert (stats.replacements, stats.serialized_fixed) == (1, 0)


def test_url_hex_at_an_odd_offset_of_a_blob_is_no_match():
    # "0" + the URL's hex + "0": its digits straddle bytes, so the blob's bytes do not hold the URL
    shifted = bytes.fromhex("0" + url_hex() + "0")
    line = insert_line("key_value", [("state", "odd", Blob(shifted))])
    assert url_hex().encode() in line and OLD.encode() not in shifted
    out, stats = replace_bytes(line, PAIRS)
    assert out == line and (stats.replacements, stats.lines_changed) == (0, 0)
    # an odd occurrence before an even one: only the bytes of the real URL change
    got, stats = replace_blobs([shifted + b" " + OLD.encode()])
    assert got == [shifted + b" " + NEW.encode()] and stats.replacements == 1


@needs_php
def test_several_blobs_and_strings_in_one_line():
    def line(u: str) -> bytes:
        return insert_line(
            "cache_data",
            [
                ("a", Blob(php_serialize(nested(u))), f"{u}/plain", 1),
                ("b", Blob(b"no url here"), "", 2),
                ("c", Blob(b""), u, None),
                ("d", Blob(f"{u}/1 and {u}/2".encode()), "x", 4),
                ("e", Blob(php_serialize(serialized_in_serialized(u))), None, 5),
            ],
        )

    out, stats = replace_bytes(line(OLD), PAIRS)
    assert out == line(NEW)
    # URLs: nested 5 + plain 1 + "c" 1 + "d" 2 + serialized-in-serialized 3; lengths: nested 4 + 5
    assert (stats.lines_changed, stats.replacements, stats.serialized_fixed) == (1, 12, 9)
    assert php_reserialize([hex_values(out)[0]]) == [php_serialize(nested(NEW))]


def test_hex_blobs_of_an_insert_with_a_row_per_line():
    # mariadb-dump 10.11 writes "INSERT INTO `t` VALUES" and then each row on a line of its own
    def dump(u: str) -> bytes:
        rows = insert_line("key_value", [("state", f"k{i}", Blob(f"{u}/{i}".encode())) for i in range(3)])
        return rows.replace(b" VALUES (", b" VALUES\n(").replace(b"),(", b"),\n(")

    out, stats = replace_bytes(dump(OLD), PAIRS)
    assert out == dump(NEW) and (stats.lines, stats.lines_changed, stats.replacements) == (4, 3, 3)


def test_hex_looking_text_in_strings_is_left_alone():
    def line(u: str) -> bytes:
        return insert_line(
            "cache_data",
            [
                ("it's ,0x" + url_hex() + ", (0x" + url_hex() + ")", Blob(u.encode()), "0x" + url_hex()),
                ("\\", Blob(b"x" + u.encode()), "'0x" + url_hex() + "'"),
            ],
        )

    out, stats = replace_bytes(line(OLD), PAIRS)
    assert out == line(NEW) and stats.replacements == 2


def test_lines_without_a_needle_are_byte_identical_with_hex_blobs():
    dump = (
        DUMP_HEAD
        + insert_line(
            "cache_data",
            [
                ("a", Blob(b"\x00\xff binary"), "text ,0x" + url_hex() + ","),
                ("b", Blob(b"info@shop.example.com, https://shop.example.community"), ""),
                ("c", Blob(bytes.fromhex("0" + url_hex() + "0")), Blob(b"")),
            ],
        )
        + b"-- 0x"
        + url_hex().encode()
        + b"\n"
    )
    out, stats = replace_bytes(dump, PAIRS)
    assert out == dump
    assert stats == ReplaceStats(
        lines=8, lines_changed=0, replacements=0, serialized_fixed=0, bytes_in=len(dump), bytes_out=len(dump)
    )


# ---------------------------------------------------------------------------------------------- streaming


DUMP_HEAD = (
    b"-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n"
    b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
    b"CREATE TABLE `wp_options` (\n  `option_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n"
    b"  `option_value` longtext NOT NULL\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
)


def test_lines_without_a_match_are_byte_identical():
    dump = (
        DUMP_HEAD
        + insert_line("wp_posts", [(1, b"\xff\xfe invalid \xc3( utf-8"), (2, "info@shop.example.com")])
        + b"-- no newline at the end: shop.example.com"
    )
    out, stats = replace_bytes(dump, PAIRS)
    assert out == dump
    assert stats == ReplaceStats(
        lines=8, lines_changed=0, replacements=0, serialized_fixed=0, bytes_in=len(dump), bytes_out=len(dump)
    )


@needs_php
def test_stats_and_untouched_neighbour_lines():
    users = insert_line("wp_users", [(1, "admin")])
    dump = DUMP_HEAD + insert_line("wp_options", [(1, php_serialize([OLD])), (2, OLD)]) + users
    out, stats = replace_bytes(dump, PAIRS)
    assert out == DUMP_HEAD + insert_line("wp_options", [(1, php_serialize([NEW])), (2, NEW)]) + users
    assert (stats.lines, stats.lines_changed, stats.replacements, stats.serialized_fixed) == (8, 1, 2, 1)
    assert (stats.bytes_in, stats.bytes_out) == (len(dump), len(out))


def mysql_dump(url: str) -> bytes:
    return DUMP_HEAD + b"".join(
        insert_line("wp_options", [(i, php_serialize(widget(url))), (i + 1, f"x{url}/{i}"), (i + 2, "plain")])
        for i in range(0, 30, 3)
    )


def mysql_hex_dump(url: str) -> bytes:
    """Drupal-like rows whose values are BLOBs (mysqldump --hex-blob)."""
    return DUMP_HEAD + b"".join(
        insert_line(
            "key_value",
            [
                ("state", f"w{i}", Blob(php_serialize(widget(url)))),
                ("state", f"u{i}", Blob(f"x{url}/{i}".encode())),
                ("state", "e", Blob(b"")),
            ],
        )
        for i in range(10)
    )


def pg_dump(url: str) -> bytes:
    """COPY rows, then INSERTs whose strings hold raw newlines (as pg_dump --inserts writes them)."""
    serialized, json_text = php_serialize(widget(url)), php_json({"u": f"{url}/x", "q": "it's"}).encode()
    inserts = b"".join(
        b"INSERT INTO public.t VALUES (%d, '%s', '%s');\n"
        % (i, serialized.replace(b"'", b"''"), json_text.replace(b"'", b"''"))
        for i in range(10)
    )
    return (
        b"SET standard_conforming_strings = on;\n"
        b"COPY public.wp_options (option_id, option_name, option_value) FROM stdin;\n"
        + b"".join(
            copy_line([str(i), "widget_text", serialized]) + copy_line([str(i), "json", json_text]) for i in range(10)
        )
        + b"\\.\n"
        + inserts
    )


@needs_php
@pytest.mark.parametrize("chunk_size", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize(
    ("dialect", "make_dump", "replaced", "fixed"),
    [("mysql", mysql_dump, 30, 10), ("mysql", mysql_hex_dump, 30, 10), ("postgres", pg_dump, 60, 20)],
)
def test_chunk_size_does_not_change_the_output(chunk_size, dialect, make_dump, replaced, fixed):
    out = io.BytesIO()
    stats = replace_stream(io.BytesIO(make_dump(OLD)), out, PAIRS, dialect=dialect, chunk_size=chunk_size)
    assert out.getvalue() == make_dump(NEW)
    assert (stats.replacements, stats.serialized_fixed, stats.serialized_skipped) == (replaced, fixed, 0)


def test_unfinished_insert_at_the_end_is_still_written():
    dump = b"INSERT INTO t VALUES ('" + OLD.encode() + b"\nline two"
    out, stats = replace_bytes(dump, PAIRS, dialect="postgres")
    assert out == b"INSERT INTO t VALUES ('" + NEW.encode() + b"\nline two"
    assert (stats.lines, stats.lines_changed, stats.replacements) == (2, 1, 1)


_BIG_LINE_SCRIPT = """
import resource, sys
from orchestrator.backends.cms.replace import replace_stream, url_pairs
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    stats = replace_stream(src, dst, url_pairs(sys.argv[3], sys.argv[4]))
print(stats.lines, stats.replacements, stats.serialized_fixed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _big_line(url: str, rows: int) -> bytes:
    """A ~500-byte-per-row extended INSERT: serialized (with URL), HTML (URL), and plain rows."""
    serialized = php_serialize(widget(url))
    html = f'<p>Кровля — <a href="{url}/page/">link</a> and text {"lorem ipsum " * 20}</p>'
    kinds = [sql_value(v) for v in (serialized, html, "no url here " * 30)]  # escaped once: fast
    return b"INSERT INTO `wp_posts` VALUES " + b",".join(b"(%d,%s)" % (i, kinds[i % 3]) for i in range(rows)) + b";\n"


@needs_php
def test_fifty_megabyte_line_streams_in_bounded_memory(tmp_path: Path):
    src, dst = tmp_path / "in.sql", tmp_path / "out.sql"
    rows = 52 * 1024 * 1024 // (len(_big_line(OLD, 300)) // 300)
    src.write_bytes(_big_line(OLD, rows))
    size = src.stat().st_size
    assert size > 50 * 1024 * 1024
    expected_digest = hashlib.sha256(_big_line(NEW, rows)).hexdigest()

    def run(path: Path) -> list[int]:
        proc = subprocess.run(
            [sys.executable, "-c", _BIG_LINE_SCRIPT, str(path), str(dst), OLD, NEW],
            capture_output=True,
            text=True,
            check=True,
        )
        return [int(x) for x in proc.stdout.split()]

    tiny = tmp_path / "tiny.sql"
    tiny.write_bytes(b"SELECT 1;\n")
    baseline_kib = run(tiny)[3]
    lines, replacements, fixed, maxrss_kib = run(src)
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == expected_digest
    serialized_rows, html_rows = (rows + 2) // 3, (rows + 1) // 3  # two URLs in each widget, one per HTML row
    assert (lines, replacements, fixed) == (1, 2 * serialized_rows + html_rows, serialized_rows)
    assert (maxrss_kib - baseline_kib) * 1024 < 4 * size, f"peak RSS grew by {maxrss_kib - baseline_kib} KiB"


# -------------------------------------------------------------------------------------------- PostgreSQL


@needs_php
def test_postgres_copy_and_insert_syntax():
    out, stats = replace_bytes(pg_dump(OLD), PAIRS, dialect="postgres")
    assert out == pg_dump(NEW)
    assert stats.lines_changed == 30 and stats.serialized_fixed == 20 and stats.serialized_skipped == 0


# ------------------------------------------------------------------------------- real dumps from servers


def corpus(url: str, relative: str) -> list[bytes]:
    """Realistic option values (valid UTF-8, no NUL: PostgreSQL text takes neither)."""

    def clean(value: dict) -> dict:
        value[2]["text"] = value[2]["text"].replace("\0", "")
        return value

    return [
        php_serialize(clean(widget(url))),
        php_serialize(nested(url)),
        php_serialize(multibyte(url)),
        php_serialize(json_in_serialized(url)),
        php_serialize(serialized_in_serialized(url)),
        php_json([{"url": f"{url}/wp-content/a.jpg"}]).encode(),
        f'<p>It\'s <a href="{url}/x">x</a> <script src="{relative}/s.js"></script>\r\n\\</p>'.encode(),
        url.encode(),
    ]


@needs_php
def test_real_mariadb_dump_round_trip(mariadb):
    before, after = corpus(OLD, "//shop.example.com"), corpus(NEW, NEW_RELATIVE)
    blob_before, blob_after = b"\x00\xff'\"\\" + OLD.encode() + b"\x1a\n", b"\x00\xff'\"\\" + NEW.encode() + b"\x1a\n"
    mariadb.sql(
        "DROP DATABASE IF EXISTS replace_src; DROP DATABASE IF EXISTS replace_dst;"
        "CREATE DATABASE replace_src; CREATE DATABASE replace_dst"
    )
    rows = ",".join(f"({i}, UNHEX('{v.hex()}'), UNHEX('{blob_before.hex()}'))" for i, v in enumerate(before))
    mariadb.sql(
        "CREATE TABLE wp_options (option_id INT PRIMARY KEY, option_value LONGTEXT, raw LONGBLOB)"
        " DEFAULT CHARSET=utf8mb4;"
        f"INSERT INTO wp_options VALUES {rows}",
        "replace_src",
    )
    client = ["--no-defaults", "-S", str(mariadb.socket), "-u", "root"]
    dump = subprocess.run(["mariadb-dump", *client, "replace_src"], capture_output=True, check=True).stdout
    assert dump.count(b"INSERT INTO") == 1  # one extended INSERT (mariadb-dump 10.11 puts each row on a line)

    out, stats = replace_bytes(dump, PAIRS)
    subprocess.run(["mariadb", *client, "replace_dst"], input=out, check=True)
    hexes = mariadb.sql("SELECT HEX(option_value), HEX(raw) FROM wp_options ORDER BY option_id", "replace_dst")
    got = [[bytes.fromhex(h) for h in line.split("\t")] for line in hexes.splitlines()]
    assert [g[0] for g in got] == after and all(g[1] == blob_after for g in got)
    assert php_reserialize(after[:5]) == after[:5]
    assert stats.replacements == 27 and stats.serialized_fixed == 15 and stats.serialized_skipped == 0


@needs_php
def test_real_mariadb_hex_blob_dump_round_trip(mariadb):
    """orch's own dump flags (--hex-blob among them) write the LONGBLOB column as 0x... literals; replaced
    inside and loaded back, every value is byte-exact."""
    from orchestrator.backends.engines.mysql import DUMP_FLAGS

    binary = b"\x00\xff'\"\\\x1a\n"

    def values(url: str, relative: str) -> list[bytes | None]:
        return [
            *corpus(url, relative),
            binary + url.encode() + binary,
            php_serialize({"b": binary + url.encode()}),
            b"",
            None,
        ]

    before, after = values(OLD, "//shop.example.com"), values(NEW, NEW_RELATIVE)
    mariadb.sql(
        "DROP DATABASE IF EXISTS replace_src; DROP DATABASE IF EXISTS replace_dst;"
        "CREATE DATABASE replace_src; CREATE DATABASE replace_dst"
    )
    rows = ",".join(
        f"({i}, {'NULL' if v is None else f'UNHEX({v.hex()!r})'}, 'see {OLD}')" for i, v in enumerate(before)
    )
    mariadb.sql(
        "CREATE TABLE cache_data (cid INT PRIMARY KEY, data LONGBLOB, label TEXT) DEFAULT CHARSET=utf8mb4;"
        f"INSERT INTO cache_data VALUES {rows}",
        "replace_src",
    )
    client = ["--no-defaults", "-S", str(mariadb.socket), "-u", "root"]
    dump = subprocess.run(["mariadb-dump", *client, *DUMP_FLAGS, "replace_src"], capture_output=True, check=True).stdout
    assert f",0x{url_hex()}".encode() in dump  # the blobs are hex (a row per line with mariadb-dump 10.11)

    out, stats = replace_bytes(dump, PAIRS)
    subprocess.run(["mariadb", *client, "replace_dst"], input=out, check=True)
    hexes = mariadb.sql("SELECT IFNULL(HEX(data), 'NULL'), label FROM cache_data ORDER BY cid", "replace_dst")
    got = [line.split("\t") for line in hexes.splitlines()]
    assert [None if h == "NULL" else bytes.fromhex(h) for h, _ in got] == after
    assert {label for _, label in got} == {f"see {NEW}"}
    serialized = [*after[:5], after[9]]
    assert php_reserialize(serialized) == serialized
    # the corpus holds 19 URLs in 15 serialized strings (as in the round trip above), the binary values 2 URLs
    # in 1 string, each row's label 1 URL
    assert stats.replacements == 19 + 2 + len(before) and stats.serialized_fixed == 15 + 1
    assert stats.serialized_skipped == 0


@needs_php
@pytest.mark.parametrize("inserts", [False, True], ids=["copy", "inserts"])
def test_real_pg_dump_round_trip(postgres, inserts):
    from testbed.postgres import PG_BIN

    before, after = corpus(OLD, "//shop.example.com"), corpus(NEW, NEW_RELATIVE)
    for db in ("replace_src", "replace_dst"):
        postgres.sql(f"DROP DATABASE IF EXISTS {db}")
        postgres.sql(f"CREATE DATABASE {db}")
    rows = ",".join(f"({i}, convert_from(decode('{v.hex()}', 'hex'), 'UTF8'))" for i, v in enumerate(before))
    postgres.sql(
        f"CREATE TABLE wp_options (option_id int PRIMARY KEY, option_value text);INSERT INTO wp_options VALUES {rows}",
        "replace_src",
    )
    conn = ["-h", str(postgres.socket_dir), "-p", str(postgres.port), "-U", "postgres"]
    dump = subprocess.run(
        [str(PG_BIN / "pg_dump"), *conn, *(["--inserts"] if inserts else []), "replace_src"],
        capture_output=True,
        check=True,
    ).stdout

    out, stats = replace_bytes(dump, PAIRS, dialect="postgres")
    subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *conn, "-d", "replace_dst"],
        input=out,
        check=True,
        capture_output=True,
    )
    hexes = postgres.sql(
        "SELECT encode(convert_to(option_value, 'UTF8'), 'hex') FROM wp_options ORDER BY option_id", "replace_dst"
    )
    assert [bytes.fromhex(h) for h in hexes.split()] == after
    assert stats.replacements > 0 and stats.serialized_skipped == 0


# ------------------------------------------------------------------------------------------ parallel workers


def replace_files(
    tmp_path: Path, dump: bytes, *, workers: int, chunk_size: int = 1 << 20, dialect: str = "mysql"
) -> tuple[bytes, ReplaceStats]:
    """Replace a dump from one file into another (the workers need file descriptors)."""
    src, dst = tmp_path / "in.sql", tmp_path / "out.sql"
    src.write_bytes(dump)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        stats = replace_stream(fin, fout, PAIRS, dialect=dialect, chunk_size=chunk_size, workers=workers)
    return dst.read_bytes(), stats


def edge_dump() -> bytes:
    """Lines of every length from 1 to 61 bytes between rows holding URLs in plain, JSON, serialized,
    serialized-in-serialized and hex form; the last line without its newline. Replaced in chunks of 1 to 64
    bytes, a line ends at every offset of a chunk."""
    url = OLD.encode()
    inner = b's:%d:\\"%s\\";' % (len(url), url)
    rows = [
        b"INSERT INTO `t` VALUES (1,'" + url + b"/a'),(2,'https:\\\\/\\\\/shop.example.com\\\\/b');",
        b"INSERT INTO `t` VALUES (3,'a:1:{i:0;" + inner + b"}');",
        b"INSERT INTO `t` VALUES (4,'s:%d:\\\"a:1:{i:0;%s}\\\";');" % (len(inner) - 2 + 10, inner),
        b"(5,0x" + binascii.hexlify(b'a:1:{i:0;s:%d:"%s";}' % (len(url), url)).upper() + b")",
    ]
    lines = [b"-- " + b"x" * (length - 3) if length > 3 else b"-" * length for length in range(1, 62)]
    mixed = [line for i, pad in enumerate(lines) for line in (pad, rows[i % len(rows)])]
    return b"\n".join(mixed) + b"\n" + rows[1]


def test_edge_dump_holds_what_it_says():
    out, stats = replace_bytes(edge_dump(), PAIRS)
    # 16 rows with 2 URLs, 3 x 15 with 1 and the last line; 1 length fixed per row but 2 in the 15 nested ones
    assert (stats.replacements, stats.serialized_fixed, stats.serialized_skipped) == (78, 61, 0)
    assert OLD.encode() not in out and b"\\/\\/shop.example.com" not in out


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_workers_write_the_serial_output_at_every_chunk_edge(tmp_path, workers):
    dump = edge_dump()
    expected, expected_stats = replace_bytes(dump, PAIRS)
    for chunk_size in range(1, 65):
        out, stats = replace_files(tmp_path, dump, workers=workers, chunk_size=chunk_size)
        assert out == expected, chunk_size
        assert stats == expected_stats, chunk_size


@needs_php
@pytest.mark.parametrize("chunk_size", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("make_dump", [mysql_dump, mysql_hex_dump])
def test_parallel_workers_write_the_serial_output_of_the_corpus(tmp_path, make_dump, chunk_size):
    expected, expected_stats = replace_bytes(make_dump(OLD), PAIRS)
    out, stats = replace_files(tmp_path, make_dump(OLD), workers=2, chunk_size=chunk_size)
    assert out == expected == make_dump(NEW)
    assert stats == expected_stats


_FEEDER = """
import random, sys
data, rng, pos = sys.stdin.buffer.read(), random.Random(7), 0
while pos < len(data):  # writes of 1 byte to 64 KB, so reads end anywhere
    size = rng.choice([1, 2, 13, 100, 4096, 65536])
    sys.stdout.buffer.write(data[pos:pos + size])
    sys.stdout.buffer.flush()
    pos += size
"""


def test_parallel_workers_read_a_pipe_that_delivers_bytes_at_random(tmp_path):
    dump = edge_dump() * 50
    expected, _ = replace_bytes(dump, PAIRS)
    (tmp_path / "in.sql").write_bytes(dump)
    with open(tmp_path / "in.sql", "rb") as fin, open(tmp_path / "out.sql", "wb") as fout:
        feeder = subprocess.Popen([sys.executable, "-c", _FEEDER], stdin=fin, stdout=subprocess.PIPE)
        stats = replace_stream(feeder.stdout, fout, PAIRS, chunk_size=256, workers=2)
    assert feeder.wait() == 0
    assert (tmp_path / "out.sql").read_bytes() == expected
    assert stats.bytes_in == len(dump) and stats.bytes_out == len(expected)


def test_a_failing_worker_stops_the_others_and_raises(tmp_path):
    src = tmp_path / "in.sql"
    src.write_bytes(edge_dump() * 200)
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # nobody reads the output: the first write fails with EPIPE
    with open(src, "rb") as fin, open(write_fd, "wb") as fout, pytest.raises(OSError, match="replace worker"):
        replace_stream(fin, fout, PAIRS, chunk_size=64, workers=2)


def test_a_postgres_dump_takes_one_process_with_workers_asked(tmp_path):
    dump = b"COPY t (a) FROM stdin;\n" + OLD.encode() + b"\n\\.\nINSERT INTO t VALUES ('" + OLD.encode() + b"\n');\n"
    out, _ = replace_files(tmp_path, dump, workers=2, dialect="postgres")
    assert out == replace_bytes(dump, PAIRS, dialect="postgres")[0]


@pytest.mark.parametrize(
    "pairs",
    [
        PAIRS,
        url_pairs("http://www.shop.example.com/blog/", "https://stage.example.net/blog"),
        [
            ("shop.example.com", "stage.example.net"),
            ("https://shop.example.com/a", "https://x.example.net/a"),
            ("//shop.example.com", "//x.example.net"),
        ],
        [("x.com/x.com", "y"), ("//x.com", "//z.net")],  # a needle holding its anchor twice: the window search
    ],
    ids=["url_pairs", "path", "bare-host", "anchor-twice"],
)
def test_the_anchor_first_search_finds_what_the_window_search_finds(pairs):
    from orchestrator.backends.cms.replace import _DIALECTS, RAW, _Matcher, _raw_pairs

    rng = random.Random(5)
    found = 0
    for syntax in {s.name: s for syntaxes in [*_DIALECTS.values(), [RAW]] for s in syntaxes}.values():
        matcher = _Matcher(_raw_pairs(pairs), syntax)
        needles = [old for group in matcher._groups for old in group.needles]
        cuts = [n[:i] for n in needles for i in range(1, len(n))] + [n[i:] for n in needles for i in range(len(n))]
        fragments = needles * 20 + cuts + [b"www.", b"-", b"_", b".", b"a", b"0", b"\\", b"'", b"\\n", b" "] * 5
        for _ in range(3000):
            line = b"".join(rng.choice(fragments) for _ in range(rng.randint(1, 10)))
            for group in matcher._groups:
                matches = matcher._find_group(line, group)
                assert matches == _Matcher._find_window(line, group), (syntax.name, line)
                found += len(matches)
    assert found > 1000  # the lines do hold matches
