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
      ``bytes.find``) is written through unchanged. Around each anchor hit a regex of all needles, with the
      boundary rules below, runs on a small window only.
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
import io
import ipaddress
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import BinaryIO
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

Pair = tuple[str | bytes, str | bytes]
Edit = tuple[int, int, bytes]  # replace line[start:end] with bytes


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
    while start >= 0 and _run_before(line, start, 0x5C) % 2:
        start = line.rfind(b"'", 0, start)
    return start + 1, _mysql_close(line, pos)


def _mysql_close(line: bytes, pos: int) -> int:
    """Given a mysqldump line and a position inside a ``'...'`` literal, return the index of its closing
    quote, or len(line) if it has none."""
    end = line.find(b"'", pos)
    while end >= 0 and _run_before(line, end, 0x5C) % 2:
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
    b"\\", b'\\"', _mysql_bounds, hex_blobs=True,
)
# The bytes of one value as stored, without escapes: a decoded hex literal.
RAW = _Syntax("raw", {}, b"", b'"', _whole_bounds)
PG_COPY = _Syntax(
    "pg-copy",
    {0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x08: b"\\b", 0x0C: b"\\f", 0x0B: b"\\v"},
    b"\\", b'"', _copy_bounds,
)
PG_SQL = _Syntax("pg-sql", {0x27: b"''"}, b"'", b'"', _pg_sql_bounds)

# dialect -> the syntaxes it can switch between; the first is where a dump starts
_DIALECTS: dict[str, tuple[_Syntax, ...]] = {
    "mysql": (MYSQL,), "mariadb": (MYSQL,),
    "postgres": (PG_SQL, PG_COPY), "postgresql": (PG_SQL, PG_COPY), "pg": (PG_SQL, PG_COPY),
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
    """Needles sharing one anchor, and how to look for them around an anchor hit."""

    anchor: bytes
    pattern: re.Pattern[bytes]  # all needles, longest first, with their boundary rules
    back: int  # how far before a hit a needle can start
    ahead: int  # how far after a hit a needle plus its boundary context can reach
    needles: dict[bytes, _Needle]  # by escaped old value


class _Matcher:
    """Finds the needles of a list of pairs in lines of one syntax.

    Python's regex engine scans an alternation of literals at ~100 MB/s; ``bytes.find`` runs at GB/s. So each
    needle gets an anchor (its longest host-ish run, shared where one contains another: ``shop.example.com``
    for all url_pairs() variants), lines are searched for anchors, and the needles' regex is run only on a
    small window around each hit. ``anchors`` also holds the hex forms of the anchors where the syntax has hex
    literals (``blobs``), so a line holding either is looked at.
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
                _Needle(old, syntax.escape(raw_new), len(raw_new) - len(raw_old), bare))
        self._groups = [self._group(anchor, needles) for anchor, needles in by_anchor.items()]
        self.blobs = _HexBlobs(pairs) if syntax.hex_blobs else None
        self.anchors = tuple(by_anchor) + (self.blobs.anchors if self.blobs else ())
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
        pattern = re.compile(b"(?:" + alternatives + b")(?![A-Za-z0-9_-]|\\.[A-Za-z0-9_-])")
        offsets = [n.old.find(anchor) for n in needles]
        return _Group(anchor, pattern, back=max(offsets),
                      ahead=max(len(n.old) - at for n, at in zip(needles, offsets, strict=True)) + 2,
                      needles={n.old: n for n in needles})

    def may_match(self, data: bytes) -> bool:
        """Given bytes, return False when no match can be in them (the fast path)."""
        return any(anchor in data for anchor in self.anchors)

    def find(self, line: bytes) -> list[tuple[int, int, _Needle]]:
        """Given a line, return its non-overlapping matches (start, end, needle), by position."""
        if len(self._groups) == 1:
            return self._find_group(line, self._groups[0])
        return _drop_overlaps([m for group in self._groups for m in self._find_group(line, group)])

    @staticmethod
    def _find_group(line: bytes, group: _Group) -> list[tuple[int, int, _Needle]]:
        # the hot loop of changed lines: names bound locally, no max(), on purpose
        find, search, needles, anchor, back, ahead = (line.find, group.pattern.search, group.needles,
                                                      group.anchor, group.back, group.ahead)
        found: list[tuple[int, int, _Needle]] = []
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
            append((match.start(), floor, needles[match[0]]))
            if floor > hit:  # else that match ended before this hit: look at the hit again
                hit = find(anchor, floor)
        return found


def _longest_segment(needle: bytes) -> bytes:
    """Given an escaped needle, return its longest host-ish run, or the needle itself if that is too short."""
    best = max(_SEGMENT.findall(needle), key=len, default=b"")
    return best if len(best) >= _MIN_ANCHOR else needle


def _drop_overlaps(matches: list[tuple[int, int, _Needle]]) -> list[tuple[int, int, _Needle]]:
    """Given matches from several anchor groups, return them by position, an earlier or longer one winning."""
    kept: list[tuple[int, int, _Needle]] = []
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
        self.anchors = tuple(binascii.hexlify(anchor).upper() for anchor in self.matcher.anchors)

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
                edits.append((token.start(1), token.end(1), binascii.hexlify(b"".join(new)).upper()))
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
    return (line[start - 1:start] in (b"(", b",") and line[end:end + 1] in (b",", b")")
            and not (end - start) % 2)


def _past_strings(line: bytes, pos: int, until: int) -> int:
    """Given a mysqldump line, a position outside its ``'...'`` strings and a later position ``until``,
    return ``until`` if that is outside them too, else the position just past the string that holds it.
    Costs one find() per string between the two."""
    while (quote := line.find(b"'", pos, until)) >= 0:
        pos = _mysql_close(line, quote + 1) + 1
    return max(pos, until)


# ---------------------------------------------------------------------------------------- line rewriting


def _rewrite(line: bytes, matcher: _Matcher, stats: ReplaceStats) -> list[bytes] | None:
    """Given a line, return it rewritten (as pieces to write) with every match replaced and every enclosing
    serialized length fixed, in its strings and in its hex literals, or None when nothing in it matches."""
    edits = _match_edits(line, matcher, stats)
    if matcher.blobs is not None:
        # Whole hex literals. A match in the text never lies in one: only a needle of hex digits could, and
        # such a needle (no "//") is a bare one, which is not matched after the "x" of "0x" or a digit.
        blob_edits = matcher.blobs.edits(line, stats)
        if blob_edits:
            edits = sorted(edits + blob_edits)
    return _splice(line, edits) if edits else None


def _match_edits(line: bytes, matcher: _Matcher, stats: ReplaceStats) -> list[Edit]:
    """Given a line, return the sorted edits replacing its matches and fixing the serialized lengths around
    them."""
    matches = matcher.find(line)
    if not matches:
        return []
    stats.replacements += len(matches)
    edits: list[Edit] = [(start, end, needle.new) for start, end, needle in matches]
    fixes = _serialized_fixes(line, matches, matcher, stats)
    if fixes:
        edits += fixes
        edits.sort()
    return edits


def _serialized_fixes(line: bytes, matches, matcher: _Matcher, stats: ReplaceStats) -> list[Edit]:
    """Given a line and its matches, return the edits of the length prefixes of the serialized strings that
    enclose them, one SQL value at a time.

    A match can only be inside a serialized string whose opening token precedes it in the same value, so a
    match with no token between it and what was already looked at (HTML, JSON, plain URLs) costs one regex
    search over that gap; only values with a token pay for bounds and the token walk."""
    token, bounds = matcher.token, matcher.syntax.bounds
    fixes: list[Edit] = []
    seen = i = 0  # line[:seen] and matches[:i] are done
    while i < len(matches):
        start, end, _ = matches[i]
        if not token.search(line, seen, start):
            seen, i = end, i + 1
            continue
        lo, hi = bounds(line, start)
        j = bisect_right(matches, hi, i + 1, key=_end)  # the matches inside this value
        fixes += _length_fixes(line, lo, hi, matches[i:j], matcher, stats)
        seen, i = max(hi, matches[j - 1][1]), j
    return fixes


def _end(match: tuple[int, int, _Needle]) -> int:
    return match[1]


def _length_fixes(line: bytes, lo: int, hi: int, matches, matcher: _Matcher, stats: ReplaceStats) -> list[Edit]:
    """Given the matches inside one value line[lo:hi], return edits of the length prefixes of the serialized
    strings that enclose them."""
    starts = [m[0] for m in matches]
    strings = _enclosing_strings(line, lo, hi, matches, starts, matcher, stats)
    if not strings:
        return []
    sums = list(accumulate((m[2].delta for m in matches), initial=0))
    edits: list[Edit] = []
    widened: list[tuple[int, int]] = []  # (position, growth) of length prefixes that gained or lost a digit
    # innermost first: a nested string's new prefix can change its container's length by a digit
    for content, end, length, digits_at, digits_end in reversed(strings):
        first, last = bisect_left(starts, content), bisect_left(starts, end)
        delta = sums[last] - sums[first] + sum(g for p, g in widened if content <= p < end)
        if not delta:
            continue
        digits = b"%d" % (length + delta)
        edits.append((digits_at, digits_end, digits))
        stats.serialized_fixed += 1
        if len(digits) != digits_end - digits_at:
            widened.append((digits_at, len(digits) - (digits_end - digits_at)))
    return edits


def _enclosing_strings(line: bytes, lo: int, hi: int, matches, starts: list[int], matcher: _Matcher,
                       stats: ReplaceStats) -> list[tuple[int, int, int, int, int]]:
    """Given a value line[lo:hi] and its matches, return (content start, content end, length, digits start,
    digits end) of every well-formed serialized string in it that may hold a match, by position."""
    found = []
    esc, close = matcher.syntax.esc, matcher.syntax.close
    for token in matcher.token.finditer(line, lo, starts[-1]):
        at = token.start()
        if at > lo and line[at - 1] not in _BEFORE_TOKEN:
            continue
        length, content = int(token[1]), token.end()
        first = bisect_left(starts, content)
        # an escaped byte takes at most two bytes: skip strings that cannot reach the next match
        if first == len(starts) or starts[first] >= content + 2 * length:
            continue
        end = _content_end(line, content, length, esc, hi)
        if end is None or not line.startswith(close, end):
            stats.serialized_skipped += 1
            continue
        last = bisect_left(starts, end) - 1
        if last < first:  # a well-formed string, but the next match lies after it
            continue
        if matches[last][1] > end:  # a match running past the closing quote: not a string around it
            stats.serialized_skipped += 1
            continue
        found.append((content, end, length, token.start(1), token.end(1)))
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


def _splice(line: bytes, edits: list[Edit]) -> list[bytes]:
    """Given a line and sorted, non-overlapping edits, return the edited line as pieces."""
    pieces, pos = [], 0
    for start, end, new in edits:
        pieces += (line[pos:start], new)
        pos = end
    pieces.append(line[pos:])
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
        self._stateful = len(syntaxes) > 1
        self._open: list[bytes] = []  # lines of an unfinished PostgreSQL INSERT
        self._quotes = 0  # quotes seen in self._open
        self.stats = ReplaceStats()

    def feed(self, block: bytes) -> list[bytes]:
        """Given the next block of whole lines, return its replacement as pieces to write."""
        stats = self.stats
        stats.bytes_in += len(block)
        stats.lines += block.count(b"\n") + (not block.endswith(b"\n"))
        if self._syntax is PG_SQL or self._open or (self._stateful and b"\\." in block):
            return self._by_line(block)
        if not any(anchor in block for anchor in self._anchors):
            return [block]
        return self._by_hit(block)

    def finish(self) -> list[bytes]:
        """Return the pieces still held back at the end of the input (an INSERT left open)."""
        pieces: list[bytes] = []
        if self._open:
            self._emit(b"".join(self._open), pieces)
            self._open = []
        return pieces

    def _by_hit(self, block: bytes) -> list[bytes]:
        """Rewrite only the lines that hold an anchor; the syntax cannot change inside this block."""
        matcher = self._matchers[self._syntax.name]
        pieces: list[bytes] = []
        done = scan = 0
        hits = _Hits(block, matcher.anchors)
        while (hit := hits.first(scan)) >= 0:
            start = block.rfind(b"\n", 0, hit) + 1
            scan = block.find(b"\n", hit) + 1 or len(block)
            new = _rewrite(block[start:scan], matcher, self.stats)  # [0:len] is the block itself, no copy
            if new is not None:
                self.stats.lines_changed += 1
                pieces.append(block[done:start])
                pieces += new
                done = scan
        pieces.append(block[done:])
        return pieces

    def _by_line(self, block: bytes) -> list[bytes]:
        """Rewrite statement by statement, switching syntax at ``COPY ... FROM stdin;`` and ``\\.`` lines."""
        pieces: list[bytes] = []
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

    def _emit(self, line: bytes, pieces: list[bytes]) -> None:
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

    def first(self, pos: int) -> int:
        """Return the first index >= pos where any anchor occurs, or -1; pos must not decrease."""
        upcoming, first = self._next, -1
        for i, at in enumerate(upcoming):  # called once per changed line: a plain loop, no generator
            if 0 <= at < pos:
                at = upcoming[i] = self._data.find(self._anchors[i], pos)
            if at >= 0 and (first < 0 or at < first):
                first = at
        return first


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


def replace_stream(src: BinaryIO, dst: BinaryIO, pairs: Sequence[Pair], *, dialect: str = "mysql",
                   chunk_size: int = 1 << 20) -> ReplaceStats:
    """Given a dump on ``src``, write it to ``dst`` with every pair's old value replaced by its new value and
    serialized lengths fixed; return what was done.

    Memory stays around ``chunk_size`` plus a few times the longest line. ``dst`` gets many writes: give it a
    buffered stream (``open(path, "wb")`` is one). ``dialect``: "mysql"/"mariadb" or "postgres"/"pg".
    """
    replacer = _Replacer(pairs, dialect)
    for pieces in map(replacer.feed, _read_blocks(src, chunk_size)):
        dst.writelines(pieces)
        replacer.stats.bytes_out += sum(map(len, pieces))
    pieces = replacer.finish()
    dst.writelines(pieces)
    replacer.stats.bytes_out += sum(map(len, pieces))
    return replacer.stats


def replace_bytes(data: bytes, pairs: Sequence[Pair], *, dialect: str = "mysql") -> tuple[bytes, ReplaceStats]:
    """Given a whole dump in memory, return (replaced dump, stats); see replace_stream()."""
    out = io.BytesIO()
    stats = replace_stream(io.BytesIO(data), out, pairs, dialect=dialect)
    return out.getvalue(), stats
