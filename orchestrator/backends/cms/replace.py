"""Streaming URL replacement in SQL dumps, repairing PHP-serialized string lengths on the way.

A production dump becomes a staging dump by replacing the production URL with the staging one. Plain text
replacement breaks PHP-serialized values (``s:24:"https://shop.example.com";``): their length prefix counts
bytes, so every enclosing ``s:N:`` must be recomputed. WP-CLI's ``search-replace`` does that by unserializing
rows, which needs a live database, skips objects of unknown classes and misses JSON-escaped URLs
(``https:\\/\\/shop.example.com``). This module works on the dump text itself, line by line, in bytes.

How it works
    * Pairs are given in the *value* domain (what the database stores). For each kind of dump text
      (a :class:`_Syntax`) they are SQL-escaped the way the dump writes values, so a JSON-escaped needle
      ``https:\\/\\/x`` is searched as ``https:\\\\/\\\\/x`` in a mysqldump.
    * Fast path: a block (or line) that holds none of the needles' anchors (their host part, found with
      ``bytes.find``) is written through unchanged. A line that holds one is searched with one regex per
      anchor that starts with the anchor's literal bytes (the regex engine scans for a leading literal ten
      times faster than for an alternation) and checks the part of each needle before it by look-behind.
    * A line that holds a needle is rewritten. For each SQL value holding a match, every serialized string
      opening ``s:<N>:\\"`` (mysqldump) or ``s:<N>:"`` (PostgreSQL) before the match, with N large enough to
      hold a needle, is walked over its escaped bytes until N *unescaped* bytes are consumed; only if the
      expected closing ``\\";`` / ``";`` follows is it taken as a serialized string. Its new length is N plus
      the length changes of the matches and of nested length prefixes inside it, so serialized-in-serialized
      (widgets) comes out right too. A token that does not check out is left alone and counted in
      ``serialized_skipped``.
    * PostgreSQL: lines between ``COPY ... FROM stdin;`` and ``\\.`` are COPY text; an ``INSERT`` whose
      string spans lines (pg_dump --inserts writes newlines raw) is joined before it is rewritten.
    * mysqldump ``--hex-blob`` writes BLOB/BINARY values as hex literals (``0x613A323A...``; Drupal keeps its
      serialized config, state and caches in longblob columns). The needles' anchors are also searched in
      their uppercase hex form; a hex literal value of an INSERT's rows that holds one is decoded, its bytes
      are rewritten like a value of a dump without escapes (the same pairs and serialized-length repair, see
      ``RAW``) and it is written back as uppercase hex. A literal is a value: ``0x`` and an even number of
      digits right after ``(`` or ``,`` and right before ``,`` or ``)``, outside any ``'...'`` string, on an
      ``INSERT``/``REPLACE`` line or a line starting with ``(`` (mariadb-dump 10.11 puts each row on a line).
    * Workers: the lines of a MySQL dump are independent (mysqldump writes no raw newline inside a value),
      so ``replace_stream(..., workers=N)`` forks N processes that take turns reading a block of whole lines
      from the input and writing its result to the output, in input order, and rewrite in between. The host
      script uses one per CPU. A PostgreSQL dump takes one process (COPY state runs from line to line).

Decisions
    * Right boundary: a match must not continue the host or the last path segment: it is rejected when the
      next byte is ``[A-Za-z0-9_-]``, or ``.`` followed by one of those (``https://shop.example.com.evil.net``,
      ``https://shop.example.community``). ``/ : ? # " ' \\``, a sentence-ending ``.``, ``<`` etc. end a URL,
      so ``https://shop.example.com:8443/x`` keeps its port.
    * :func:`url_pairs` yields only needles with a scheme (``https://``, ``http://``) or the protocol-relative
      ``//host``, so e-mail addresses (``info@shop.example.com``), sub-domains (``cdn.shop.example.com``) and
      bare mentions of the host are untouched. Replacing a bare host is an explicit pair such as
      ``("shop.example.com", "stage.example.net")``; such a needle must also not be preceded by
      ``[A-Za-z0-9_.-]`` (so ``cdn.`` keeps it from matching), but it does rewrite the domain of e-mail
      addresses: that is what a bare-host pair asks for.
    * Matching is case-sensitive and exact, like WP-CLI. URL-encoded forms (``https%3A%2F%2F``) are not
      generated; pass them as extra pairs if a site needs them.
    * Hex literals are searched in uppercase only, which is what mysqldump and mariadb-dump write; one typed
      in lowercase is left alone. A line without a needle in either form costs one more ``bytes.find`` per
      anchor (measured +4 % instructions on the fast path, +1 % on a URL-dense dump).
    * Dumps: mysqldump/mariadb-dump (backslash escapes, ``'...'`` literals) and PostgreSQL plain dumps
      (``COPY ... FROM stdin`` blocks with backslash escapes; ``INSERT`` statements with standard strings,
      where ``''`` is the only escape). Every escape sequence is assumed to be two bytes, which is what both
      dump tools write (pg_dump never writes ``\\NNN`` or ``\\xHH`` in COPY text).
"""

from __future__ import annotations

import binascii
import contextlib
import io
import ipaddress
import json
import mmap
import os
import re
import select
import signal
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from operator import itemgetter
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

# hostscript.py ships this file to hosts as a standalone script: standard library only, and it swaps this
# exact import line for a local class.
from orchestrator.errors import UsageError

# Bytes that continue a host name or a path segment (see "Right boundary" above).
_HOST_BYTES = frozenset(bytes((b,)) for b in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# In PHP's serialize() output a value starts after "{" (first in an array), ";" (after a scalar), "}" (after
# an array/object) or at the start of the data (the SQL value, or a string's content after its quote).
_BEFORE_TOKEN = frozenset(b'{;}"')
# Runs of host-ish bytes; the longest one of a needle is its anchor (see _Matcher).
_SEGMENT = re.compile(rb"[A-Za-z0-9._:@%~-]+")
_MIN_ANCHOR = 4
# Bytes of dump text, most frequent first (a guess for SQL with HTML, JSON and serialized PHP); others rarer.
_COMMON = b' e"taoi\\ns,rh:ld;c0123456789u/m.fpgwyb<>=-_vkjqzx'
# A match must not continue the host or the last path segment (see "Right boundary" above).
_RIGHT = b"(?![A-Za-z0-9_-]|\\.[A-Za-z0-9_-])"

Pair = tuple[str | bytes, str | bytes]
Edit = tuple[int, int, bytes, int]  # replace line[start:end] with bytes; the int: see Match
Match = tuple[int, int, bytes, int]  # an Edit of a needle: its int is the change of the unescaped length
Piece = bytes | memoryview  # of output: unchanged stretches are views of the input


@dataclass
class ReplaceStats:
    """What a replacement run did. ``lines`` counts input lines; ``lines_changed`` counts rewritten lines (a
    PostgreSQL INSERT spanning lines counts once); ``serialized_fixed`` counts rewritten ``s:N:`` prefixes;
    ``serialized_skipped`` counts ``s:N:"`` tokens around a replaced URL that did not check out as serialized
    strings (already broken, or text that only looks like one): they are left as they were. Matches and
    prefixes inside hex literals (mysqldump --hex-blob) count the same as those in strings."""

    lines: int = 0
    lines_changed: int = 0
    replacements: int = 0
    serialized_fixed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    serialized_skipped: int = 0


# --------------------------------------------------------------------------------------------------- pairs


def url_pairs(old_url: str, new_url: str, *, schemes: bool = True, www: bool = True) -> list[tuple[str, str]]:
    """Given the production and staging base URLs, return the (old, new) pairs to replace, longest first.

    Variants of the old URL: ``https://`` and ``http://`` (``schemes``; both map onto the new URL with its own
    scheme) plus the protocol-relative ``//host`` (mapped onto ``//new-host``); with and without ``www.``
    (``www``; not for IP addresses or single-label hosts); and each of those JSON-escaped (``\\/``). A
    trailing slash is ignored. Raises UsageError for anything but absolute http(s) URLs without query.
    """
    old, new = _parse_base_url(old_url), _parse_base_url(new_url)
    new_full = f"{new.scheme}://{new.netloc}{new.path}"
    hosts = _host_variants(old.netloc, old.hostname or "") if www else [old.netloc]
    old_schemes = ["https", "http"] if schemes else [old.scheme]
    pairs = [(f"{scheme}://{host}{old.path}", new_full) for host in hosts for scheme in old_schemes]
    if schemes:
        pairs += [(f"//{host}{old.path}", f"//{new.netloc}{new.path}") for host in hosts]
    pairs += [(o.replace("/", "\\/"), n.replace("/", "\\/")) for o, n in pairs]
    unique = {o: n for o, n in pairs if o != n}
    return sorted(unique.items(), key=lambda pair: -len(pair[0]))


def _parse_base_url(url: str):
    """Given a base URL, return its urlsplit() with the trailing slash dropped, or raise UsageError."""
    parts = urlsplit(url.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"not an absolute http(s) base URL: {url!r}")
    return parts


def _host_variants(netloc: str, hostname: str) -> list[str]:
    """Given a netloc and its host name, return it with and without ``www.`` (just itself for an IP or a
    single-label host such as ``localhost``)."""
    try:
        ipaddress.ip_address(hostname)
        return [netloc]
    except ValueError:
        pass
    if "." not in hostname:
        return [netloc]
    bare = netloc.removeprefix("www.")
    return [f"www.{bare}", bare]


# -------------------------------------------------------------------------------------------- dump syntax


@dataclass(frozen=True)
class _Syntax:
    """How one kind of dump text writes string values."""

    name: str
    escapes: dict[int, bytes]  # raw byte -> its escaped spelling
    esc: bytes  # first byte of every escape sequence; each sequence is exactly two bytes. Empty: no escapes
    quote: bytes  # how a double quote is written: it opens and closes a serialized string's content
    bounds: Callable[[bytes, int], tuple[int, int]]  # (content start, content end) of the value at a position
    hex_blobs: bool = False  # INSERT values may be hex literals (mysqldump --hex-blob) to look into

    def escape(self, raw: bytes) -> bytes:
        """Given raw value bytes, return them as this syntax writes them inside a string value."""
        return b"".join(self.escapes.get(byte, bytes((byte,))) for byte in raw)

    @property
    def close(self) -> bytes:
        """What follows a serialized string's content."""
        return self.quote + b";"


def _run_before(line: bytes, pos: int, byte: int) -> int:
    """Given a position, return how many ``byte`` bytes immediately precede it."""
    count = 0
    while pos - count > 0 and line[pos - count - 1] == byte:
        count += 1
    return count


def _run_from(line: bytes, pos: int, byte: int) -> int:
    """Given a position, return how many ``byte`` bytes start there."""
    count = 0
    while pos + count < len(line) and line[pos + count] == byte:
        count += 1
    return count


def _mysql_bounds(line: bytes, pos: int) -> tuple[int, int]:
    """Given a mysqldump line and a position inside a ``'...'`` literal, return (first content byte, closing
    quote). A quote is real when an even number of backslashes precedes it."""
    start = line.rfind(b"'", 0, pos)
    while start > 0 and line[start - 1] == 0x5C and _run_before(line, start, 0x5C) % 2:
        start = line.rfind(b"'", 0, start)
    return start + 1, _mysql_close(line, pos)


def _mysql_close(line: bytes, pos: int) -> int:
    """Given a mysqldump line and a position inside a ``'...'`` literal, return the index of its closing
    quote, or len(line) if it has none."""
    end = line.find(b"'", pos)
    while end > 0 and line[end - 1] == 0x5C and _run_before(line, end, 0x5C) % 2:
        end = line.find(b"'", end + 1)
    return len(line) if end < 0 else end


def _pg_sql_bounds(line: bytes, pos: int) -> tuple[int, int]:
    """Given a PostgreSQL SQL line and a position inside a ``'...'`` standard string, return (first content
    byte, closing quote). Inside the string quotes come in pairs, so the delimiter is the odd one of a run."""
    start = line.rfind(b"'", 0, pos)
    while start >= 0:
        run = _run_before(line, start, 0x27) + 1
        if run % 2:
            start -= run - 1
            break
        start = line.rfind(b"'", 0, start - run + 1)
    end = line.find(b"'", pos)
    while end >= 0:
        run = _run_from(line, end, 0x27)
        if run % 2:
            end += run - 1
            break
        end = line.find(b"'", end + run)
    return start + 1, len(line) if end < 0 else end


def _whole_bounds(line: bytes, pos: int) -> tuple[int, int]:
    """Given the bytes of one value (a decoded hex literal) and a position, return their (start, end)."""
    return 0, len(line)


def _copy_bounds(line: bytes, pos: int) -> tuple[int, int]:
    """Given a COPY text line and a position, return the field's (start, end): fields are tab separated and
    a tab inside a value is always written ``\\t``."""
    end = line.find(b"\t", pos)
    return line.rfind(b"\t", 0, pos) + 1, len(line) if end < 0 else end


MYSQL = _Syntax(
    "mysql",
    {0x00: b"\\0", 0x0A: b"\\n", 0x0D: b"\\r", 0x5C: b"\\\\", 0x27: b"\\'", 0x22: b'\\"', 0x1A: b"\\Z"},
    b"\\",
    b'\\"',
    _mysql_bounds,
    hex_blobs=True,
)
# The bytes of one value as stored, without escapes: a decoded hex literal.
RAW = _Syntax("raw", {}, b"", b'"', _whole_bounds)
PG_COPY = _Syntax(
    "pg-copy",
    {0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x08: b"\\b", 0x0C: b"\\f", 0x0B: b"\\v"},
    b"\\",
    b'"',
    _copy_bounds,
)
PG_SQL = _Syntax("pg-sql", {0x27: b"''"}, b"'", b'"', _pg_sql_bounds)

# dialect -> the syntaxes it can switch between; the first is where a dump starts
_DIALECTS: dict[str, tuple[_Syntax, ...]] = {
    "mysql": (MYSQL,),
    "mariadb": (MYSQL,),
    "postgres": (PG_SQL, PG_COPY),
    "postgresql": (PG_SQL, PG_COPY),
    "pg": (PG_SQL, PG_COPY),
}


# ----------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class _Needle:
    old: bytes  # escaped for the syntax
    new: bytes  # escaped for the syntax
    delta: int  # change of the unescaped length
    bare: bool  # no scheme: must also have a left boundary


@dataclass(frozen=True)
class _Group:
    """Needles sharing one anchor, and how to look for them."""

    anchor: bytes
    pattern: re.Pattern[bytes]  # all needles, longest first, with their boundary rules
    back: int  # how far before a hit a needle can start
    ahead: int  # how far after a hit a needle plus its boundary context can reach
    needles: dict[bytes, _Needle]  # by escaped old value
    forward: _Forward | None  # the faster way to find them, where it finds the same


@dataclass(frozen=True)
class _Forward:
    """Needles sharing one anchor as one pattern that starts with (a tail of) the anchor, so that the regex
    engine scans for a literal, and checks what precedes it by look-behind: an alternation of literals is
    scanned for byte by byte at a tenth of that speed. Alternative i (the match's lastindex) is the needle
    that writes news[i], changes the length by deltas[i] and starts starts[i] bytes before the match."""

    pattern: re.Pattern[bytes]
    news: tuple[bytes, ...]
    deltas: tuple[int, ...]
    starts: tuple[int, ...]


class _Matcher:
    """Finds the needles of a list of pairs in lines of one syntax.

    Python's regex engine scans an alternation of literals at ~100 MB/s; ``bytes.find`` runs at GB/s. So each
    needle gets an anchor (its longest host-ish run, shared where one contains another: ``shop.example.com``
    for all url_pairs() variants): blocks are searched for anchors, and a line is searched with a regex that
    starts with the anchor (_Forward, ~1 GB/s) or, where that could find other matches, with the needles'
    regex on a small window around each anchor hit. ``anchors`` also holds the hex forms of the anchors where
    the syntax has hex literals (``blobs``), so a line holding either is looked at.
    """

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]], syntax: _Syntax):
        self.syntax = syntax
        olds = [syntax.escape(old) for old, _ in pairs]
        candidates = {_longest_segment(old) for old in olds}
        by_anchor: dict[bytes, list[_Needle]] = {}
        for old, (raw_old, raw_new) in zip(olds, pairs, strict=True):
            anchor = min((c for c in candidates if c in old), key=len)
            bare = raw_old[:1] in _HOST_BYTES and b"://" not in raw_old and b":\\/\\/" not in raw_old
            by_anchor.setdefault(anchor, []).append(
                _Needle(old, syntax.escape(raw_new), len(raw_new) - len(raw_old), bare)
            )
        self._groups = [self._group(anchor, needles) for anchor, needles in by_anchor.items()]
        self.blobs = _HexBlobs(pairs) if syntax.hex_blobs else None
        self.anchors: tuple[bytes, ...] = tuple(by_anchor) + (self.blobs.anchors if self.blobs else ())
        # Opening of a serialized string that is long enough to hold a needle: skipping the short ones
        # (array keys such as s:4:"text") skips most tokens. Group 1 is the claimed length.
        digits = len(str(min(len(old) for old, _ in pairs)))
        self.token = re.compile(b"s:([1-9]\\d{%d,}):" % (digits - 1) + re.escape(syntax.quote))

    def _group(self, anchor: bytes, needles: list[_Needle]) -> _Group:
        # Longest first: at one start position the regex takes the first alternative that matches.
        needles = sorted(needles, key=lambda n: -len(n.old))
        # A bare host must not continue a longer name on its left, unless what precedes it is an escape
        # such as "\n" (a two-byte look-behind: escape byte plus any byte).
        left = b"(?<![A-Za-z0-9_.-])"
        if self.syntax.esc:
            left = b"(?:" + left + b"|(?<=" + re.escape(self.syntax.esc) + b"[\\s\\S]))"
        alternatives = b"|".join((left if n.bare else b"") + re.escape(n.old) for n in needles)
        offsets = [n.old.find(anchor) for n in needles]
        return _Group(
            anchor,
            re.compile(b"(?:" + alternatives + b")" + _RIGHT),
            back=max(offsets),
            ahead=max(len(n.old) - at for n, at in zip(needles, offsets, strict=True)) + 2,
            needles={n.old: n for n in needles},
            forward=self._forward(anchor, needles),
        )

    def _forward(self, anchor: bytes, needles: list[_Needle]) -> _Forward | None:
        """Given needles sharing an anchor, return their _Forward pattern, or None if a needle holds its
        anchor twice (then a later anchor hit could start an earlier match: only the window search finds
        the leftmost one)."""
        heads = [n.old[: n.old.find(anchor) + len(anchor)] for n in needles]
        if any(n.old.find(anchor, len(head) - len(anchor) + 1) >= 0 for n, head in zip(needles, heads, strict=True)):
            return None
        # Leftmost first, as the window search finds them: at one anchor hit the longest head starts first;
        # for one head, the longest needle.
        order = sorted(zip(heads, needles, strict=True), key=lambda hn: (-len(hn[0]), -len(hn[1].old)))
        skip = _rarest(anchor)  # scan for the anchor from its rarest byte on
        pattern = (
            re.escape(anchor[skip:])
            + b"(?:"
            + b"|".join(self._behind(head, n.bare) + re.escape(n.old[len(head) :]) + b"()" for head, n in order)
            + b")"
        )
        return _Forward(
            re.compile(pattern + _RIGHT),
            news=(b"", *(n.new for _, n in order)),
            deltas=(0, *(n.delta for _, n in order)),
            starts=(0, *(len(head) - len(anchor) + skip for head, _ in order)),
        )

    def _behind(self, head: bytes, bare: bool) -> bytes:
        """Given a needle's bytes up to the end of its anchor, return a look-behind that is true just after
        them, with the left boundary of a bare needle (the look-behinds of _group's ``left`` moved back by
        the length of head: fixed-width look-behinds can look that far)."""
        head = re.escape(head)
        if not bare:
            return b"(?<=" + head + b")"
        left = b"(?<![A-Za-z0-9_.-]" + head + b")"
        if self.syntax.esc:
            left = b"(?:" + left + b"|(?<=" + re.escape(self.syntax.esc) + b"[\\s\\S]" + head + b"))"
        return b"(?<=" + head + b")" + left

    def may_match(self, data: bytes) -> bool:
        """Given bytes, return False when no match can be in them (the fast path)."""
        return any(anchor in data for anchor in self.anchors)

    def find(self, line: bytes) -> list[Match]:
        """Given a line, return its non-overlapping matches, by position."""
        if len(self._groups) == 1:
            return self._find_group(line, self._groups[0])
        return _drop_overlaps([m for group in self._groups for m in self._find_group(line, group)])

    @staticmethod
    def _find_group(line: bytes, group: _Group) -> list[Match]:
        forward = group.forward
        if forward is None:
            return _Matcher._find_window(line, group)
        # the hot loop of changed lines: names bound locally, on purpose
        found: list[Match] = []
        append, news, deltas, starts = found.append, forward.news, forward.deltas, forward.starts
        floor = 0
        for match in forward.pattern.finditer(line):
            i: int = match.lastindex  # type: ignore[assignment]  # each alternative is a group: never None here
            start = match.start() - starts[i]
            if start < floor:  # it overlaps the previous match: the window search takes the leftmost
                return _Matcher._find_window(line, group)
            floor = match.end()
            append((start, floor, news[i], deltas[i]))
        return found

    @staticmethod
    def _find_window(line: bytes, group: _Group) -> list[Match]:
        """Find the needles by searching ``group.pattern`` in a window around each anchor hit."""
        find, search, needles, anchor, back, ahead = (
            line.find,
            group.pattern.search,
            group.needles,
            group.anchor,
            group.back,
            group.ahead,
        )
        found: list[Match] = []
        append = found.append
        floor = 0
        hit = find(anchor)
        while hit >= 0:
            lo = hit - back
            # endpos must leave the boundary look-ahead its two bytes: the regex treats endpos as the end
            match = search(line, lo if lo > floor else floor, hit + ahead)
            if match is None:
                hit = find(anchor, hit + 1)
                continue
            floor = match.end()
            needle = needles[match[0]]
            append((match.start(), floor, needle.new, needle.delta))
            if floor > hit:  # else that match ended before this hit: look at the hit again
                hit = find(anchor, floor)
        return found


def _rarest(anchor: bytes) -> int:
    """Given an anchor, return the index of its byte that is likely rarest in a dump. The regex engine scans
    for a pattern's leading literal byte by byte, checking each place its first byte occurs: "xample.com"
    is found faster than "shop.example.com"."""
    return max(range(len(anchor)), key=lambda i: _COMMON.find(anchor[i]) % (len(_COMMON) + 1))


def _longest_segment(needle: bytes) -> bytes:
    """Given an escaped needle, return its longest host-ish run, or the needle itself if that is too short."""
    best = max(_SEGMENT.findall(needle), key=len, default=b"")
    return best if len(best) >= _MIN_ANCHOR else needle


def _drop_overlaps(matches: list[Match]) -> list[Match]:
    """Given matches from several anchor groups, return them by position, an earlier or longer one winning."""
    kept: list[Match] = []
    for match in sorted(matches, key=lambda m: (m[0], -m[1])):
        if not kept or match[0] >= kept[-1][1]:
            kept.append(match)
    return kept


# ------------------------------------------------------------------------------------------- hex literals

# A hex literal token; group 1 is its digits. "x" is no hex digit, so the nearest "0x" before a digit of a
# literal is the literal's start.
_HEX_LITERAL = re.compile(rb"0x([0-9A-Fa-f]+)")


class _HexBlobs:
    """Rewrites the hex literals of mysqldump INSERT lines (``--hex-blob``: ``0x613A...`` for BLOB/BINARY
    values) whose bytes hold a match.

    The bytes of a literal are the value as stored, without escapes, so they are matched and their serialized
    lengths repaired by a matcher of the RAW syntax as one value, and written back as uppercase hex (what
    mysqldump writes). Lines are searched for the hex forms of that matcher's anchors (``anchors``). Hex is
    byte-aligned: a hit at an odd offset from the literal's first digit straddles two bytes and is no anchor
    of the bytes; such a literal is decoded but its bytes do not match, so it is left as it was.
    """

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]):
        self.matcher = _Matcher(pairs, RAW)
        self.anchors: tuple[bytes, ...] = tuple(binascii.hexlify(anchor).upper() for anchor in self.matcher.anchors)

    def edits(self, line: bytes, stats: ReplaceStats) -> list[Edit]:
        """Given a line, return the sorted edits that replace the digits of each hex literal value whose bytes
        hold a match with those of its rewritten bytes; none unless it holds rows of an INSERT."""
        for anchor in self.anchors:  # most lines that get here hold a URL in a string but no hex anchor
            if anchor in line:
                break
        else:  # (a loop: any() with a generator costs more than the search of a row line)
            return []
        values = _rows_start(line)
        if values < 0:
            return []
        edits: list[Edit] = []
        hits = _Hits(line, self.anchors, values)
        outside = pos = values  # outside: a position outside every '...' string
        while (hit := hits.first(pos)) >= 0:
            token = _hex_token(line, pos, hit)
            if token is None:
                pos = hit + 1
                continue
            pos = token.end()
            if not _is_hex_value(line, token):
                continue
            outside = _past_strings(line, outside, token.start())
            if outside > token.start():  # hex-looking text inside a string
                pos = outside
                continue
            outside = pos  # the end of a value is outside every string too
            new = _rewrite(binascii.unhexlify(token[1]), self.matcher, stats)
            if new is not None:
                edits.append((token.start(1), token.end(1), binascii.hexlify(b"".join(new)).upper(), 0))
        return edits


def _rows_start(line: bytes) -> int:
    """Given a mysqldump line, return where its VALUES rows start, or -1 if it holds none: after the head of
    an ``INSERT``/``REPLACE`` line (which holds no string); 0 for a line starting with ``(``, a row of an
    INSERT that has each row on a line of its own (mariadb-dump 10.11 writes them so). mysqldump writes no
    newline inside a value, so any other line starting with ``(`` is not in a string either."""
    if line.startswith(b"("):
        return 0
    if line.startswith((b"INSERT ", b"REPLACE ")):
        return line.find(b" VALUES (")
    return -1


def _hex_token(line: bytes, floor: int, pos: int) -> re.Match[bytes] | None:
    """Given a line and a position of a hex digit, return the ``0x...`` token starting at or after ``floor``
    whose digits include that position, or None."""
    start = line.rfind(b"0x", floor, pos)
    token = _HEX_LITERAL.match(line, start) if start >= 0 else None
    return token if token is not None and token.end() > pos else None


def _is_hex_value(line: bytes, token: re.Match[bytes]) -> bool:
    """Given a ``0x...`` token, return whether it is a whole value of a VALUES list with whole bytes: right
    after ``(`` or ``,``, right before ``,`` or ``)``, an even number of digits (MySQL reads an odd count
    with a leading 0 nibble; mysqldump never writes one)."""
    start, end = token.span()
    return line[start - 1 : start] in (b"(", b",") and line[end : end + 1] in (b",", b")") and not (end - start) % 2


def _past_strings(line: bytes, pos: int, until: int) -> int:
    """Given a mysqldump line, a position outside its ``'...'`` strings and a later position ``until``,
    return ``until`` if that is outside them too, else the position just past the string that holds it.
    Costs one find() per string between the two."""
    while (quote := line.find(b"'", pos, until)) >= 0:
        pos = _mysql_close(line, quote + 1) + 1
    return max(pos, until)


# ---------------------------------------------------------------------------------------- line rewriting


def _rewrite(line: bytes, matcher: _Matcher, stats: ReplaceStats, blobs: bool = True) -> list[Piece] | None:
    """Given a line, return it rewritten (as pieces to write) with every match replaced and every enclosing
    serialized length fixed, in its strings and (unless ``blobs`` is False: none holds an anchor) in its hex
    literals, or None when nothing in it matches."""
    edits = _match_edits(line, matcher, stats)
    if blobs and matcher.blobs is not None:
        # Whole hex literals. A match in the text never lies in one: only a needle of hex digits could, and
        # such a needle (no "//") is a bare one, which is not matched after the "x" of "0x" or a digit.
        blob_edits = matcher.blobs.edits(line, stats)
        if blob_edits:
            edits = sorted(edits + blob_edits)
    return _splice(line, edits) if edits else None


def _match_edits(line: bytes, matcher: _Matcher, stats: ReplaceStats) -> list[Edit]:
    """Given a line, return the sorted edits replacing its matches and fixing the serialized lengths around
    them."""
    edits = matcher.find(line)
    if not edits:
        return []
    stats.replacements += len(edits)
    fixes = _serialized_fixes(line, edits, matcher, stats)
    if fixes:
        return sorted(edits + fixes)
    return edits


class _SerializedSyntax(Protocol):
    """What _serialized_fixes reads of a matcher (a _Matcher, or _ValueEdits for edits found elsewhere)."""

    @property
    def syntax(self) -> _Syntax: ...

    @property
    def token(self) -> re.Pattern[bytes]: ...


def _serialized_fixes(line: bytes, matches, matcher: _SerializedSyntax, stats: ReplaceStats) -> list[Edit]:
    """Given a line and its matches, return the edits of the length prefixes of the serialized strings that
    enclose them, one SQL value at a time.

    A match can only be inside a serialized string whose opening token precedes it in the same value, so
    the matches before the next token (HTML, JSON, plain URLs) are skipped together, and a line without a
    token costs one regex search; only values with a token pay for bounds and the token walk."""
    search, bounds = matcher.token.search, matcher.syntax.bounds
    fixes: list[Edit] = []
    seen = i = 0  # line[:seen] and matches[:i] are done
    while i < len(matches):
        token = search(line, seen)
        if token is None:
            break
        j = bisect_left(matches, token.end(), i, key=_START)  # the matches before the token ends: no token
        if j > i:
            i, seen = j, matches[j - 1][1]
            if seen > token.start() or i == len(matches):  # (a token inside a match would not count)
                continue
        lo, hi = bounds(line, matches[i][0])
        if token.start() < lo:  # the token is in an earlier value: look again from this one's start
            seen = lo
            continue
        j = bisect_right(matches, hi, i + 1, key=_END)  # the matches inside this value
        fixes += _length_fixes(line, lo, hi, matches[i:j], matcher, stats)
        seen, i = max(hi, matches[j - 1][1]), j
    return fixes


_START, _END = itemgetter(0), itemgetter(1)  # of an Edit


def _length_fixes(
    line: bytes, lo: int, hi: int, matches, matcher: _SerializedSyntax, stats: ReplaceStats
) -> list[Edit]:
    """Given the matches inside one value line[lo:hi], return edits of the length prefixes of the serialized
    strings that enclose them."""
    strings = _enclosing_strings(line, lo, hi, matches, matcher, stats)
    edits: list[Edit] = []
    widened: list[tuple[int, int]] = []  # (position, growth) of length prefixes that gained or lost a digit
    # innermost first: a nested string's new prefix can change its container's length by a digit
    for content, end, length, digits_at, digits_end, first, last in reversed(strings):
        delta = matches[first][3] if first == last else sum(m[3] for m in matches[first : last + 1])
        if widened:
            delta += sum(g for p, g in widened if content <= p < end)
        if not delta:
            continue
        digits = b"%d" % (length + delta)
        edits.append((digits_at, digits_end, digits, 0))
        stats.serialized_fixed += 1
        if len(digits) != digits_end - digits_at:
            widened.append((digits_at, len(digits) - (digits_end - digits_at)))
    return edits


def _enclosing_strings(
    line: bytes, lo: int, hi: int, matches, matcher: _SerializedSyntax, stats: ReplaceStats
) -> list[tuple[int, int, int, int, int, int, int]]:
    """Given a value line[lo:hi] and its matches, return (content start, content end, length, digits start,
    digits end, first match, last match) of every well-formed serialized string in it that holds a match,
    by position."""
    found = []
    starts = [m[0] for m in matches]
    esc, close, count = matcher.syntax.esc, matcher.syntax.close, len(starts)
    after_digits = 1 + len(matcher.syntax.quote)  # from the end of the digits to the content: ':"'
    for token in matcher.token.finditer(line, lo, starts[-1]):  # the hot loop of serialized values
        digits_at, digits_end = token.span(1)
        if digits_at - 2 > lo and line[digits_at - 3] not in _BEFORE_TOKEN:  # the token is "s:<digits>..."
            continue
        length, content = int(token[1]), digits_end + after_digits
        first = bisect_left(starts, content)
        # an escaped byte takes at most two bytes: skip strings that cannot reach the next match
        if first == count or starts[first] >= content + 2 * length:
            continue
        stop = content + length
        end = (
            _content_end(line, content, length, esc, hi)
            if stop > hi or (esc and line.find(esc, content, stop) >= 0)
            else stop
        )  # else no escapes: common
        if end is None or not line.startswith(close, end):
            stats.serialized_skipped += 1
            continue
        last = bisect_left(starts, end) - 1
        if last < first:  # a well-formed string, but the next match lies after it
            continue
        if matches[last][1] > end:  # a match running past the closing quote: not a string around it
            stats.serialized_skipped += 1
            continue
        found.append((content, end, length, digits_at, digits_end, first, last))
    return found


def _content_end(line: bytes, pos: int, length: int, esc: bytes, limit: int) -> int | None:
    """Given escaped text starting at line[pos] and a length in unescaped bytes, return the index just past
    those bytes, or None if that would pass ``limit``. Costs one find() per escape sequence, not per byte.
    An empty ``esc`` means raw text: every byte stands for itself."""
    if not esc:
        return pos + length if pos + length <= limit else None
    while True:
        end = pos + length
        if end > limit:
            return None
        esc_at = line.find(esc, pos, end)
        if esc_at < 0:
            return end
        length -= esc_at - pos + 1
        pos = esc_at + 2


def _splice(line: bytes, edits: list[Edit]) -> list[Piece]:
    """Given a line and sorted, non-overlapping edits, return the edited line as pieces. (Slices, not
    memoryviews: a line of a million URLs makes two million pieces, and a memoryview takes 184 bytes.)"""
    pieces: list[Piece] = []
    append, pos = pieces.append, 0
    for start, end, new, _ in edits:
        append(line[pos:start])
        append(new)
        pos = end
    append(line[pos:])
    return pieces


# ------------------------------------------------------------------------------------------------ streams


class _Replacer:
    """Rewrites blocks of whole lines of one dialect. For PostgreSQL it follows the switches into and out of
    COPY, and joins an INSERT whose string literal spans lines (pg_dump --inserts writes newlines raw)."""

    def __init__(self, pairs: Sequence[Pair], dialect: str):
        try:
            syntaxes = _DIALECTS[dialect.lower()]
        except KeyError:
            raise UsageError(f"unknown dump dialect {dialect!r} (known: {', '.join(_DIALECTS)})") from None
        raw = _raw_pairs(pairs)
        self._matchers = {syntax.name: _Matcher(raw, syntax) for syntax in syntaxes}
        # plain anchors first (a set would give hash order): any() below stops at the first for most blocks
        self._anchors = tuple(dict.fromkeys(a for m in self._matchers.values() for a in m.anchors))
        self._syntax = syntaxes[0]
        self.stateful = len(syntaxes) > 1  # a line's syntax depends on the lines before it
        self._open: list[bytes] = []  # lines of an unfinished PostgreSQL INSERT
        self._quotes = 0  # quotes seen in self._open
        self.stats = ReplaceStats()

    def feed(self, block: bytes) -> list[Piece]:
        """Given the next block of whole lines, return its replacement as pieces to write."""
        stats = self.stats
        stats.bytes_in += len(block)
        stats.lines += _count_lines(block)
        if self._syntax is PG_SQL or self._open or (self.stateful and b"\\." in block):
            return self._by_line(block)
        if not any(anchor in block for anchor in self._anchors):
            return [block]
        return self._by_hit(block)

    def finish(self) -> list[Piece]:
        """Return the pieces still held back at the end of the input (an INSERT left open)."""
        pieces: list[Piece] = []
        if self._open:
            self._emit(b"".join(self._open), pieces)
            self._open = []
        return pieces

    def _by_hit(self, block: bytes) -> list[Piece]:
        """Rewrite only the lines that hold an anchor; the syntax cannot change inside this block."""
        matcher = self._matchers[self._syntax.name]
        pieces: list[Piece] = []
        view, done, scan = memoryview(block), 0, 0
        hits = _Hits(block, matcher.anchors)
        blobs = matcher.blobs is not None and hits.holds(matcher.blobs.anchors)
        while (hit := hits.first(scan)) >= 0:
            start = block.rfind(b"\n", 0, hit) + 1
            scan = block.find(b"\n", hit) + 1 or len(block)
            new = _rewrite(block[start:scan], matcher, self.stats, blobs)  # [0:len] is the block, no copy
            if new is not None:
                self.stats.lines_changed += 1
                pieces.append(view[done:start])
                pieces += new
                done = scan
        pieces.append(view[done:])
        return pieces

    def _by_line(self, block: bytes) -> list[Piece]:
        """Rewrite statement by statement, switching syntax at ``COPY ... FROM stdin;`` and ``\\.`` lines."""
        pieces: list[Piece] = []
        for line in _lines(block):
            statement = self._statement(line)
            if statement is not None:
                self._emit(statement, pieces)
                self._syntax = _syntax_after(statement, self._syntax)
        return pieces

    def _statement(self, line: bytes) -> bytes | None:
        """Given the next line, return the next complete statement or data line, or None while an INSERT's
        string literal is still open. Quotes inside literals come in pairs, so an odd count means "open"."""
        if self._open:
            self._open.append(line)
            self._quotes += line.count(b"'")
        elif self._syntax is PG_SQL and line.startswith(b"INSERT ") and line.count(b"'") % 2:
            self._open, self._quotes = [line], line.count(b"'")
        else:
            return line
        if self._quotes % 2:
            return None
        statement, self._open = b"".join(self._open), []
        return statement

    def _emit(self, line: bytes, pieces: list[Piece]) -> None:
        """Append the line, rewritten if it matches, to pieces."""
        matcher = self._matchers[self._syntax.name]
        new = _rewrite(line, matcher, self.stats) if matcher.may_match(line) else None
        if new is None:
            pieces.append(line)
        else:
            self.stats.lines_changed += 1
            pieces += new


def _syntax_after(line: bytes, current: _Syntax) -> _Syntax:
    """Given a PostgreSQL dump line and the syntax it was read in, return the syntax of the next line."""
    if current is PG_SQL and line.startswith(b"COPY ") and line.rstrip(b"\r\n").endswith(b" FROM stdin;"):
        return PG_COPY
    if current is PG_COPY and line.rstrip(b"\r\n") == b"\\.":
        return PG_SQL
    return current


class _Hits:
    """Where any of several anchors occurs next in some bytes, for a scan that moves forward only.

    Each anchor is searched again only once the scan has passed its last hit, so a block costs about one pass
    per anchor however many hits it has (searching every anchor anew at each hit would rescan the rest of the
    block for an anchor that is not there, once per hit)."""

    def __init__(self, data: bytes, anchors: tuple[bytes, ...], pos: int = 0):
        self._data, self._anchors = data, anchors
        self._next = [data.find(anchor, pos) for anchor in anchors]  # -1: none left

    def holds(self, anchors: tuple[bytes, ...]) -> bool:
        """Return whether any of these anchors occurs at or after the start position; before first()."""
        return any(at >= 0 for at, anchor in zip(self._next, self._anchors, strict=True) if anchor in anchors)

    def first(self, pos: int) -> int:
        """Return the first index >= pos where any anchor occurs, or -1; pos must not decrease."""
        upcoming, first = self._next, -1
        for i, at in enumerate(upcoming):  # called once per changed line: a plain loop, no generator
            if 0 <= at < pos:
                at = upcoming[i] = self._data.find(self._anchors[i], pos)
            if at >= 0 and (first < 0 or at < first):
                first = at
        return first


def _count_lines(block: bytes) -> int:
    """Given a block, return how many lines it has (the last may lack its newline). bytes.count() of one
    byte compares byte by byte, bytes.find() uses memchr: for long lines (mysqldump writes ~1 MB ones) a
    few finds cost a fifth of it. Once lines turn out short, count() does the rest."""
    lines = pos = 0
    while lines < 16:
        pos = block.find(b"\n", pos) + 1
        if not pos:
            return lines + (len(block) > 0 and not block.endswith(b"\n"))
        lines += 1
    return lines + block.count(b"\n", pos) + (not block.endswith(b"\n"))


def _lines(block: bytes) -> Iterator[bytes]:
    """Given a block, yield its lines, each with its newline."""
    pos = 0
    while pos < len(block):
        end = block.find(b"\n", pos) + 1 or len(block)
        yield block[pos:end]
        pos = end


def _read_blocks(src: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Given a binary stream, yield consecutive blocks of whole lines (only the last may lack its newline).
    A block is about chunk_size bytes, or one line when the line is longer. Each byte is copied once at most:
    pieces are memoryviews until the join."""
    pending: list[memoryview] = []
    while chunk := src.read(chunk_size):
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            pending.append(memoryview(chunk))  # inside a long line: collect, join once
            continue
        if pending or cut < len(chunk):
            view = memoryview(chunk)
            block = b"".join([*pending, view[:cut]])
            pending = [view[cut:]] if cut < len(chunk) else []  # drop the pieces before processing the block
        else:
            block = chunk
        yield block
    if pending:
        yield b"".join(pending)


def _raw_pairs(pairs: Sequence[Pair]) -> list[tuple[bytes, bytes]]:
    """Given (old, new) pairs as str or bytes, return them as UTF-8 bytes, dropping no-ops and repeats of an
    old value (the first one wins)."""
    out: dict[bytes, bytes] = {}
    for old, new in pairs:
        old_b = old.encode() if isinstance(old, str) else bytes(old)
        new_b = new.encode() if isinstance(new, str) else bytes(new)
        if not old_b:
            raise UsageError("a replacement pair has an empty old value")
        if old_b != new_b:
            out.setdefault(old_b, new_b)
    if not out:
        raise UsageError("no replacement pairs given")
    return list(out.items())


def replace_stream(
    src: BinaryIO,
    dst: BinaryIO,
    pairs: Sequence[Pair],
    *,
    dialect: str = "mysql",
    chunk_size: int = 1 << 20,
    workers: int = 1,
) -> ReplaceStats:
    """Given a dump on ``src``, write it to ``dst`` with every pair's old value replaced by its new value and
    serialized lengths fixed; return what was done.

    ``dialect``: "mysql"/"mariadb" or "postgres"/"pg". Memory stays around ``chunk_size`` plus a few times
    the longest line, per worker. ``workers`` > 1 rewrites a MySQL dump in that many forked processes (see
    _replace_parallel; the output is the same, byte for byte); ``src`` and ``dst`` then need file
    descriptors (files or pipes, nothing read from ``src`` yet). A PostgreSQL dump takes one process:
    whether a line is COPY text depends on the lines before it.
    """
    replacer = _Replacer(pairs, dialect)
    if workers > 1 and not replacer.stateful:
        dst.flush()
        return _replace_parallel(src.fileno(), dst.fileno(), replacer, workers, chunk_size)
    for block in _read_blocks(src, chunk_size):
        replacer.stats.bytes_out += _write_joined(dst, replacer.feed(block))
    replacer.stats.bytes_out += _write_joined(dst, replacer.finish())
    return replacer.stats


def _write_joined(dst: BinaryIO, pieces: list[Piece]) -> int:
    """Write pieces to a stream in one write (a write per piece costs more than the copy); return the size."""
    out = b"".join(pieces)
    dst.write(out)
    return len(out)


def replace_bytes(data: bytes, pairs: Sequence[Pair], *, dialect: str = "mysql") -> tuple[bytes, ReplaceStats]:
    """Given a whole dump in memory, return (replaced dump, stats); see replace_stream()."""
    out = io.BytesIO()
    stats = replace_stream(io.BytesIO(data), out, pairs, dialect=dialect)
    return out.getvalue(), stats


# ------------------------------------------------------------------------------------------- single values


@dataclass(frozen=True)
class _ValueEdits:
    """What _serialized_fixes needs of a matcher, for edits someone else found in one stored value: the value's
    syntax (raw bytes) and the opening of any serialized string that could enclose an edit."""

    syntax: _Syntax = RAW
    token: re.Pattern[bytes] = re.compile(rb's:([1-9]\d*):"')


def edit_value(value: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    """Given a stored value (its raw bytes) and sorted, non-overlapping edits (start, end, new bytes), return the
    value with the edits made and the byte length of every PHP-serialized string enclosing one fixed, nested
    ones too (the repair the dump replacer makes around a URL)."""
    if not edits:
        return value
    matches = [(start, end, new, len(new) - (end - start)) for start, end, new in edits]
    fixes = _serialized_fixes(value, matches, _ValueEdits(), ReplaceStats())
    return b"".join(_splice(value, sorted(matches + fixes)))


def row_rewriter(pairs: Sequence[Pair]) -> Callable[[bytes], bytes]:
    """Given pairs, return a function rewriting one row of a mysqldump VALUES list (its text between the
    parentheses) as replace_stream() rewrites a dump: URLs replaced, serialized lengths fixed, hex literals
    looked into. The function returns the row unchanged when nothing in it matches."""
    replacer = _Replacer(pairs, "mysql")

    def rewrite(row: bytes) -> bytes:
        pieces = replacer.feed(b"(" + row + b")")
        return row if len(pieces) == 1 else b"".join(pieces)[1:-1]

    return rewrite


# ------------------------------------------------------------------------------------------------ workers
#
# A MySQL dump's lines are independent (mysqldump writes no raw newline inside a value), so blocks of whole
# lines can be rewritten in parallel. The workers are forked processes in a ring. Each reads its block
# straight from the input descriptor and writes its result straight to the output descriptor, so no dump
# byte crosses between processes but the partial last line of a read, which goes to the next reader in a
# shared buffer. Two tokens go round the ring: "your turn to read" (with the carried length) and "your turn
# to write", so blocks are read and written in input order while the rewriting overlaps.

_TOKEN = struct.Struct("<q")
_EOF = -1  # read token: the input is done


def default_workers() -> int:
    """Return how many workers a host script uses: one per CPU this process may run on, at most 4. More
    would not make a staging load faster: the database import after the replacer takes a dump at tens of
    MB/s, and each worker holds ~15 MB."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel at once (for a
    process that only streams a dump). Each block allocates and frees a few MB; by default the top of the
    heap is handed back and faulted in again per block: ~80,000 page faults per 500 MB here. Does nothing
    where the C library has no mallopt() (musl) or ctypes is missing."""
    try:
        import ctypes  # noqa: PLC0415 - only the host script calls this

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: free heap top kept up to 256 MB (a high-water mark, not a cap)
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks under 32 MB come from the heap, so they are reused


def _replace_parallel(src: int, dst: int, replacer: _Replacer, workers: int, chunk_size: int) -> ReplaceStats:
    """Given input and output descriptors and a replacer of a stateless dialect, rewrite the input with that
    many forked workers; return their stats summed. Raise OSError if a worker fails (it says why on
    stderr); the others are then stopped. Any exception here stops them too."""
    carry = mmap.mmap(-1, chunk_size)  # anonymous and MAP_SHARED: the forked workers all see it
    read_turns = [os.pipe() for _ in range(workers)]  # read_turns[i]: worker i may read next
    write_turns = [os.pipe() for _ in range(workers)]
    ring_fds = [fd for pipe in read_turns + write_turns for fd in pipe]
    running: dict[int, int] = {}  # report pipe -> pid of a worker not waited for yet
    try:
        for i in range(workers):
            ring = (
                read_turns[i][0],
                read_turns[(i + 1) % workers][1],
                write_turns[i][0],
                write_turns[(i + 1) % workers][1],
            )
            report, report_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child; its exit status and report_w say how it went
                # keep only its own ends: a worker that dies then ends its successor's read with EOF
                for fd in (*ring_fds, *running, report):
                    if fd not in ring:
                        os.close(fd)
                os._exit(_work(replacer, src, dst, carry, ring, report_w))
            os.close(report_w)
            running[report] = pid
        os.write(read_turns[0][1], _TOKEN.pack(0))
        os.write(write_turns[0][1], _TOKEN.pack(0))
        for fd in ring_fds:
            os.close(fd)
        ring_fds = []
        return _collect(running)
    finally:
        _stop(running)
        for fd in ring_fds:
            os.close(fd)
        carry.close()


def _work(
    replacer: _Replacer, src: int, dst: int, carry: mmap.mmap, ring: tuple[int, int, int, int], report: int
) -> int:
    """Run one worker of the ring until the input is done; write its stats to ``report``; return its exit
    status."""
    may_read, next_read, may_write, next_write = ring
    try:
        while (carried := _take(may_read)) != _EOF:
            block, carried = _read_block(src, carry, carried)
            _give(next_read, carried)
            out = b"".join(replacer.feed(block))  # one copy costs less than writev() of ~10,000 pieces
            _take(may_write)
            _write_all(dst, out)
            _give(next_write, 0)
            replacer.stats.bytes_out += len(out)
            if carried == _EOF:
                break
        else:
            _give(next_read, _EOF)
        os.write(report, json.dumps(asdict(replacer.stats)).encode())
        return 0
    except BaseException as exc:  # noqa: BLE001 - the child must exit, never return into the caller's code
        os.write(2, f"replace worker {os.getpid()}: {exc!r}\n".encode())
        return 1


def _take(fd: int) -> int:
    """Wait for the token on a ring pipe; return its value. Raise OSError if the worker that was to pass
    it is gone."""
    data = os.read(fd, _TOKEN.size)  # written in one write of < PIPE_BUF bytes: arrives whole
    if len(data) != _TOKEN.size:
        raise OSError("the previous replace worker stopped")
    return _TOKEN.unpack(data)[0]


def _give(fd: int, value: int) -> None:
    """Pass a token on to the next worker. At the end of the input the next one may have finished already:
    then nobody needs it (a worker that failed is reported by its exit status)."""
    with contextlib.suppress(BrokenPipeError):
        os.write(fd, _TOKEN.pack(value))


def _read_block(src: int, carry: mmap.mmap, carried: int) -> tuple[bytes, int]:
    """Given the input descriptor and the carried partial line's length, return (a block of whole lines of
    about the carry buffer's size, the length now carried) and leave the new partial line in ``carry``. At
    the end of the input, return the rest (it may lack its final newline) and _EOF."""
    size = len(carry)
    pieces: list[bytes | memoryview] = [memoryview(carry)[:carried]]
    have = carried
    while True:
        data = os.read(src, size)
        if not data:
            return b"".join(pieces), _EOF
        pieces.append(data)
        have += len(data)
        cut = data.rfind(b"\n") + 1 if have >= size else 0  # else read on: blocks of at least `size`
        if cut:
            pieces[-1] = memoryview(data)[:cut]
            block = b"".join(pieces)  # before the carry buffer, which pieces[0] shows, is overwritten
            carry[: len(data) - cut] = memoryview(data)[cut:]
            return block, len(data) - cut


def _write_all(fd: int, data: bytes) -> None:
    """Write all of data to a descriptor (a pipe may take less per write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _collect(running: dict[int, int]) -> ReplaceStats:
    """Given the workers' report pipes (-> pid), wait for each to finish, removing it from ``running``;
    return their stats summed. Raise OSError at the first that fails."""
    total = ReplaceStats()
    while running:
        ready, _, _ = select.select(list(running), [], [])
        for fd in ready:
            data = _read_all(fd)
            os.close(fd)
            _, status = os.waitpid(running.pop(fd), 0)
            if status or not data:
                raise OSError(f"a replace worker failed (wait status {status})")
            for key, value in json.loads(data).items():
                setattr(total, key, getattr(total, key) + value)
    return total


def _stop(running: dict[int, int]) -> None:
    """Stop and wait for the workers still running (none after a run that went well)."""
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for fd, pid in running.items():
        os.waitpid(pid, 0)
        os.close(fd)
    running.clear()


def _read_all(fd: int) -> bytes:
    """Read a pipe until its writer has closed it."""
    pieces = []
    while data := os.read(fd, 1 << 16):
        pieces.append(data)
    return b"".join(pieces)
