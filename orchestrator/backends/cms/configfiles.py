"""Config-file rewriting for a staging copy: pure functions, text in -> text out, plus a report of what changed.

Each format has one rewriter ``rewrite(text, target, settings, append) -> Rewrite``: it points the copy at its own
database and URL (``Target``), applies the playbook's extra ``settings`` (``config[].set``: defines, properties or
env keys, by format) and, for PHP formats that support it, an ``append`` block of PHP code.

Formats
    ``wp-config``        WordPress ``wp-config.php``: ``define()`` calls (either quote style, any spacing) for
                         DB_NAME/USER/PASSWORD/HOST, WP_HOME, WP_SITEURL (its path below the production URL is
                         kept, for WordPress in a sub-folder), COOKIE_DOMAIN/DOMAIN_CURRENT_SITE when present;
                         settings are defines. Missing defines are added before the "stop editing" comment, else
                         before ``require_once ABSPATH . 'wp-settings.php'``. Prefix: ``$table_prefix``.
    ``joomla``           Joomla ``configuration.php`` (``class JConfig``): ``public $host/$db/$user/$password``,
                         ``$live_site`` and ``$cookie_domain`` when not empty; settings are properties (missing ones
                         are added at the end of the class). Prefix: ``$dbprefix``.
    ``bitrix-settings``  Bitrix ``bitrix/.settings.php``: the ``'connections' => ... 'default' => array(...)`` entries
                         host, database, login, password (added when missing). A socket cannot be expressed there:
                         ``localhost`` (PHP's default socket) is written instead.
    ``bitrix-dbconn``    Bitrix ``bitrix/php_interface/dbconn.php``: ``$DBHost/$DBName/$DBLogin/$DBPassword`` when
                         present (recent versions keep them in .settings.php only); settings are defines; ``append``
                         is added in a marked block.
    ``drupal-settings``  Drupal ``sites/default/settings.php``: a marked block appended at the end (replaced on the
                         next run) overrides ``$databases['default']['default']`` with ``array_merge`` and sets
                         ``trusted_host_patterns`` to the staging host; ``append`` goes in the same block.
                         Prefix: the first ``'prefix' => '...'`` entry.
    ``laravel-env``      Laravel ``.env``: DB_HOST, DB_PORT, DB_DATABASE, DB_USERNAME, DB_PASSWORD (DB_SOCKET for a
                         socket), APP_URL, SESSION_DOMAIN when set; settings are env keys. Keys are replaced where
                         they are (every occurrence), else appended.

Quoting
    * PHP: every value is written as a single-quoted literal with ``\\`` and ``'`` escaped (the only escapes PHP
      reads there), whatever quote style the file used; booleans, numbers and None become ``true``/``42``/``null``.
    * ``.env`` (vlucas/phpdotenv v5, Laravel 8+): a value of only ``[A-Za-z0-9_./:@+-]`` is written bare; any
      other is double-quoted with ``\\`` -> ``\\\\`` and ``"`` -> ``\\"``, and ``$`` escaped as ``\\$`` only before
      ``{`` (phpdotenv interpolates ``${NAME}`` and nothing else; v4 rejects ``\\$`` elsewhere, so other ``$``
      stay bare). Newlines and NUL are refused: they cannot round-trip through every dotenv reader.

Reports never hold values (passwords are among them): only which setting was replaced, added or absent.

PHP files are read with a small tokenizer (strings, comments, variables, words, brackets), so settings inside
comments or strings are never touched and values may be any expression (``getenv('X') ?: 'y'`` is replaced whole).
Heredoc strings are not understood; config files do not use them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from orchestrator.backends.remote.command import Revealable
from orchestrator.errors import UsageError

BEGIN = "// BEGIN orch staging overrides: written by orch for this staging copy, replaced on every refresh."
END = "// END orch staging overrides"
ADDED = "/* Added by orch for this staging copy. */"


# ------------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Target:
    """Where a staging copy lives: its URL and folder, and its database (``database`` is a name, or a file path for
    SQLite). ``password`` may be a secret (revealed only when written). ``source_url`` is production's URL, used to
    keep the path of URL settings that point below it (WordPress in a sub-folder)."""

    url: str
    path: str
    database: str
    user: str | None = None
    password: str | Revealable | None = None
    host: str | None = None
    port: int | None = None
    socket: str | None = None
    source_url: str | None = None

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def password_text(self) -> str | None:
        value = self.password
        return value.reveal() if isinstance(value, Revealable) else value

    def mysql_host(self) -> str:
        """Return the host the way PHP MySQL clients read it: ``host:port`` or ``localhost:/path/to.sock``."""
        if self.socket:
            return f"localhost:{self.socket}"
        host = self.host or "localhost"
        return f"{host}:{self.port}" if self.port else host

    @classmethod
    def for_environment(cls, env, source=None) -> Target:
        """Given an inventory Environment (and optionally the production one), return its Target."""
        db = env.database
        if db is None or not env.url:
            raise UsageError(f"environment {env.name} of {env.site} needs a url and a database for a staging copy")
        return cls(
            url=env.url or "",
            path=env.path,
            database=db.name or db.path or "",
            user=db.user,
            password=db.password,
            host=db.host,
            port=db.port,
            socket=db.socket,
            source_url=getattr(source, "url", None),
        )


@dataclass(frozen=True)
class Change:
    """One setting and what happened to it: ``replaced``, ``added`` or ``absent`` (not in the file, left so)."""

    setting: str
    action: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.action}"


@dataclass(frozen=True)
class Rewrite:
    """A rewritten file's text and the report of what changed."""

    text: str
    changes: tuple[Change, ...]

    def report(self) -> list[str]:
        return [str(change) for change in self.changes]


Rewriter = Callable[[str, Target, Mapping[str, Any], "str | None"], Rewrite]


# ------------------------------------------------------------------------------------------------ literals


def php_string(value: str) -> str:
    """Given a string, return it as a PHP single-quoted literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def php_value(value: Any) -> str:
    """Given a str, bool, int, float or None, return its PHP literal; raise UsageError for anything else."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Revealable):
        value = value.reveal()
    if isinstance(value, str):
        return php_string(value)
    raise UsageError(f"cannot write {type(value).__name__} into a PHP config file")


def php_literal_value(literal: str) -> str | None:
    """Given a PHP string literal's source ('...' or "..." without variables), return its value, else None."""
    if len(literal) >= 2 and literal[0] == literal[-1] == "'":
        return re.sub(r"\\([\\'])", r"\1", literal[1:-1])
    if len(literal) >= 2 and literal[0] == literal[-1] == '"':
        body = literal[1:-1]
        if re.search(r"(?<!\\)(?:\\\\)*\$[A-Za-z_{]", body):
            return None
        simple = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "\\": "\\", "$": "$", '"': '"', "e": "\x1b"}
        return re.sub(r"\\(.)", lambda m: simple.get(m.group(1), m.group(0)), body)
    return None


_ENV_BARE = re.compile(r"^[A-Za-z0-9_./:@+-]*\Z")


def env_value(value: Any) -> str:
    """Given a value, return it as a ``.env`` value (see the module docstring); raise UsageError for newlines."""
    if isinstance(value, Revealable):
        value = value.reveal()
    if isinstance(value, bool):
        value = "true" if value else "false"
    value = str(value)
    if any(ch in value for ch in "\n\r\0"):
        raise UsageError("a .env value cannot hold a newline or NUL")
    if _ENV_BARE.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


# ------------------------------------------------------------------------------------------------ PHP tokens


class _Tok(NamedTuple):
    kind: str
    text: str
    start: int
    end: int


_TOKEN = re.compile(
    r"""
    (?P<sq>'(?:[^'\\]|\\.)*')
  | (?P<dq>"(?:[^"\\]|\\.)*")
  | (?P<comment>(?://|\#)[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<var>\$[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)
  | (?P<word>[A-Za-z_\x80-\uffff\\][A-Za-z0-9_\x80-\uffff\\]*)
  | (?P<num>[0-9][A-Za-z0-9_.]*)
  | (?P<ws>\s+)
  | (?P<op>=>|::|->|\?\?|.)
""",
    re.S | re.X,
)
_OPEN, _CLOSE = {"(": ")", "[": "]", "{": "}"}, {")", "]", "}"}


def _tokens(text: str) -> list[_Tok]:
    """Given PHP source, return its code tokens (strings, variables, words, numbers, operators), without
    whitespace or comments, so commented-out settings are never matched."""
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup  # every alternative of _TOKEN is a named group: never None
        if kind is not None and kind not in ("ws", "comment"):
            out.append(_Tok("str" if kind in ("sq", "dq") else kind, m.group(), m.start(), m.end()))
    return out


def _comments(text: str) -> list[_Tok]:
    return [_Tok("comment", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text) if m.lastgroup == "comment"]


def _is_op(toks: list[_Tok], i: int, text: str) -> bool:
    return 0 <= i < len(toks) and toks[i].kind == "op" and toks[i].text == text


def _expression_end(toks: list[_Tok], i: int, stops: set[str]) -> int:
    """Given tokens and the index where an expression starts, return the index of the first stop token at depth
    0 after it (or len(toks))."""
    depth = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "op":
            if depth == 0 and tok.text in stops:
                return i
            if tok.text in _OPEN:
                depth += 1
            elif tok.text in _CLOSE:
                if depth == 0:
                    return i
                depth -= 1
        i += 1
    return i


def _matching(toks: list[_Tok], i: int) -> int:
    """Given the index of an opening bracket token, return the index of its closing one (or len(toks))."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].kind == "op" and toks[j].text in _OPEN:
            depth += 1
        elif toks[j].kind == "op" and toks[j].text in _CLOSE:
            depth -= 1
            if depth == 0:
                return j
    return len(toks)


def _string_is(tok: _Tok, value: str) -> bool:
    return tok.kind == "str" and php_literal_value(tok.text) == value


Span = tuple[int, int]  # character offsets of a value expression in the source


def _define_spans(text: str, name: str) -> list[Span]:
    """Given PHP source and a constant name, return the span of the value of every ``define('NAME', value)``."""
    toks, spans = _tokens(text), []
    for i, tok in enumerate(toks):
        if (
            tok.kind == "word"
            and tok.text.lower() == "define"
            and _is_op(toks, i + 1, "(")
            and i + 3 < len(toks)
            and _string_is(toks[i + 2], name)
            and _is_op(toks, i + 3, ",")
            and not (_is_op(toks, i - 1, "->") or _is_op(toks, i - 1, "::"))
        ):
            end = _expression_end(toks, i + 4, {",", ")"})
            if i + 4 < end <= len(toks) - 1:
                spans.append((toks[i + 4].start, toks[end - 1].end))
    return spans


def _assignment_spans(text: str, variable: str, *, property_only: bool = False) -> list[Span]:
    """Given PHP source and a variable name (with ``$``), return the span of the value of every ``$name = value;``
    (with ``property_only``, only ``public|var|... $name = value;`` class properties)."""
    toks, spans = _tokens(text), []
    for i, tok in enumerate(toks):
        if tok.kind != "var" or tok.text != variable or not _is_op(toks, i + 1, "="):
            continue
        if _is_op(toks, i + 2, "=") or (i > 0 and toks[i - 1].kind == "op" and toks[i - 1].text in ("->", "::")):
            continue
        is_property = (
            i > 0
            and toks[i - 1].kind == "word"
            and toks[i - 1].text.lower() in ("public", "var", "protected", "private", "static")
        )
        if property_only and not is_property:
            continue
        end = _expression_end(toks, i + 2, {";", ","})
        if i + 2 < end <= len(toks):
            spans.append((toks[i + 2].start, toks[end - 1].end))
    return spans


def _replace_spans(text: str, spans: list[Span], literal: str) -> str:
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + literal + text[end:]
    return text


def _literal_at(text: str, spans: list[Span]) -> str | None:
    """Given spans, return the value of the first one if it is a plain string literal, else None."""
    return php_literal_value(text[spans[0][0] : spans[0][1]].strip()) if spans else None


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _append_php(text: str, block: str) -> str:
    """Given PHP source and a block of code, return the source with the block at its end (before a closing
    ``?>`` if the file ends with one), replacing a previous orch block."""
    text = _without_block(text)
    stripped = text.rstrip()
    if stripped.endswith("?>"):
        head = stripped[:-2].rstrip()
        return f"{head}\n\n{block}\n?>\n"
    return f"{stripped}\n\n{block}\n"


def _without_block(text: str) -> str:
    pattern = re.compile(r"\n*" + re.escape(BEGIN) + r".*?" + re.escape(END) + r"[^\n]*\n?", re.S)
    return pattern.sub("\n", text)


def _expand(value: Any, target: Target) -> Any:
    """Given a settings value, return it with ``{path}``, ``{url}`` and ``{host}`` replaced (strings only)."""
    if not isinstance(value, str):
        return value
    return (
        value.replace("{path}", target.path.rstrip("/"))
        .replace("{url}", target.url.rstrip("/"))
        .replace("{host}", target.hostname)
    )


def _rebase(old: str | None, target: Target) -> str:
    """Given an old URL setting, return it moved to the staging URL: the part below production's URL is kept."""
    new = target.url.rstrip("/")
    if old and target.source_url:
        base = urlsplit(target.source_url.rstrip("/"))
        for scheme in ("https", "http"):
            prefix = f"{scheme}://{base.netloc}{base.path}"
            if old == prefix or old.startswith(prefix + "/"):
                return new + old[len(prefix) :]
    return new


class _Editor:
    """Applies settings to PHP source one at a time, keeping the report."""

    def __init__(self, text: str):
        self.text = text
        self.changes: list[Change] = []

    def note(self, setting: str, action: str) -> None:
        self.changes.append(Change(setting, action))

    def result(self) -> Rewrite:
        return Rewrite(self.text, tuple(self.changes))


# ------------------------------------------------------------------------------------------------ WordPress


def _wp_anchor(text: str) -> int:
    """Given wp-config.php, return where added defines go; raise UsageError if there is no such place."""
    for comment in _comments(text):
        if "stop editing" in comment.text.lower():
            return _line_start(text, comment.start)
    toks = _tokens(text)
    for i, tok in enumerate(toks):
        if tok.kind == "word" and tok.text.lower() in ("require_once", "require", "include", "include_once"):
            end = _expression_end(toks, i + 1, {";"})
            if any(
                t.kind == "str" and (php_literal_value(t.text) or "").endswith("wp-settings.php")
                for t in toks[i + 1 : end]
            ):
                return _line_start(text, tok.start)
    raise UsageError('wp-config.php: no "stop editing" line nor require of wp-settings.php to add settings before')


def _set_define(
    ed: _Editor, name: str, value: Any, *, add: bool = True, anchor: Callable[[str], int] | None = None
) -> None:
    spans = _define_spans(ed.text, name)
    if spans:
        ed.text = _replace_spans(ed.text, spans, php_value(value))
        ed.note(name, "replaced")
    elif add:
        at = anchor(ed.text) if anchor else len(ed.text)
        line = f"define( {php_string(name)}, {php_value(value)} );\n"
        if ADDED not in ed.text[:at]:
            line = ADDED + "\n" + line
        if at > 0 and ed.text[at - 1] != "\n":
            line = "\n" + line
        ed.text = ed.text[:at] + line + ed.text[at:]
        ed.note(name, "added")
    else:
        ed.note(name, "absent")


def rewrite_wp_config(
    text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given wp-config.php, return it pointed at the target (see the module docstring); raise UsageError if
    there is no place to add settings, or for ``append`` (not supported by this format)."""
    if append:
        raise UsageError("wp-config: `append` is not supported; use `set` defines or a mu-plugin file")
    ed = _Editor(text)
    for name, value in (
        ("DB_NAME", target.database),
        ("DB_USER", target.user or ""),
        ("DB_PASSWORD", target.password_text or ""),
        ("DB_HOST", target.mysql_host()),
        ("WP_HOME", target.url.rstrip("/")),
        ("WP_SITEURL", _rebase(_literal_at(text, _define_spans(text, "WP_SITEURL")), target)),
    ):
        _set_define(ed, name, value, anchor=_wp_anchor)
    for name in ("COOKIE_DOMAIN", "DOMAIN_CURRENT_SITE"):
        if _literal_at(ed.text, _define_spans(ed.text, name)):
            _set_define(ed, name, target.hostname, add=False)
    for name, value in (settings or {}).items():
        _set_define(ed, name, _expand(value, target), anchor=_wp_anchor)
    return ed.result()


def read_wp_prefix(text: str) -> str | None:
    """Given wp-config.php, return ``$table_prefix`` (None if absent or not a plain string)."""
    return _literal_at(text, _assignment_spans(text, "$table_prefix"))


# ------------------------------------------------------------------------------------------------ Joomla


def _set_property(ed: _Editor, name: str, value: Any, *, add: bool = True) -> None:
    spans = _assignment_spans(ed.text, "$" + name, property_only=True)
    if spans:
        ed.text = _replace_spans(ed.text, spans, php_value(value))
        ed.note(name, "replaced")
        return
    close = ed.text.rfind("}")
    if not add or close < 0:
        ed.note(name, "absent")
        return
    at = _line_start(ed.text, close) if not ed.text[_line_start(ed.text, close) : close].strip() else close
    ed.text = ed.text[:at] + f"\tpublic ${name} = {php_value(value)};\n" + ed.text[at:]
    ed.note(name, "added")


def rewrite_joomla(
    text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given Joomla's configuration.php, return it pointed at the target (see the module docstring)."""
    if append:
        raise UsageError("joomla: `append` is not supported; use `set` properties")
    if "class JConfig" not in text:
        raise UsageError("configuration.php: no `class JConfig`")
    ed = _Editor(text)
    for name, value in (
        ("host", target.mysql_host()),
        ("db", target.database),
        ("user", target.user or ""),
        ("password", target.password_text or ""),
    ):
        _set_property(ed, name, value)
    live_site = _literal_at(text, _assignment_spans(text, "$live_site", property_only=True))
    if live_site:
        _set_property(ed, "live_site", _rebase(live_site, target))
    if _literal_at(text, _assignment_spans(text, "$cookie_domain", property_only=True)):
        _set_property(ed, "cookie_domain", target.hostname)
    for name, value in (settings or {}).items():
        _set_property(ed, name, _expand(value, target))
    return ed.result()


def read_joomla_prefix(text: str) -> str | None:
    """Given Joomla's configuration.php, return ``$dbprefix`` (None if absent)."""
    return _literal_at(text, _assignment_spans(text, "$dbprefix", property_only=True))


# ------------------------------------------------------------------------------------------------ Bitrix


def _array_after(toks: list[_Tok], start: int, end: int, key: str) -> tuple[int, int] | None:
    """Given tokens, a range and a key, return the (open, close) token indexes of the array that is the value of
    the first ``'key' => array(...)`` / ``'key' => [...]`` in the range."""
    for i in range(start, end):
        if _string_is(toks[i], key) and _is_op(toks, i + 1, "=>"):
            j = i + 2
            if j < end and toks[j].kind == "word" and toks[j].text.lower() == "array":
                j += 1
            if j < end and toks[j].kind == "op" and toks[j].text in ("(", "["):
                return j, _matching(toks, j)
    return None


def _array_entry(toks: list[_Tok], open_i: int, close_i: int, key: str) -> Span | None:
    """Given an array's bracket token indexes and a key, return the span of its value at the array's top level."""
    i = open_i + 1
    while i < close_i:
        entry_end = _expression_end(toks, i, {","})
        if _string_is(toks[i], key) and _is_op(toks, i + 1, "=>") and i + 2 < entry_end:
            return toks[i + 2].start, toks[entry_end - 1].end
        i = entry_end + 1
    return None


def rewrite_bitrix_settings(
    text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given Bitrix's bitrix/.settings.php, return it pointed at the target's database; raise UsageError if it
    has no ``connections`` / ``default`` array, or for settings/append (not supported by this format)."""
    if settings or append:
        raise UsageError("bitrix-settings: `set` and `append` are not supported")
    ed = _Editor(text)
    host = "localhost" if target.socket else target.mysql_host()
    for name, value in (
        ("host", host),
        ("database", target.database),
        ("login", target.user or ""),
        ("password", target.password_text or ""),
    ):
        toks = _tokens(ed.text)
        connections = _array_after(toks, 0, len(toks), "connections")
        default = connections and _array_after(toks, connections[0] + 1, connections[1], "default")
        if not default:
            raise UsageError("bitrix/.settings.php: no 'connections' => ... 'default' => array(...)")
        span = _array_entry(toks, *default, name)
        if span:
            ed.text = _replace_spans(ed.text, [span], php_value(value))
            ed.note(f"connections.default.{name}", "replaced")
        else:
            at = toks[default[0]].end
            ed.text = ed.text[:at] + f"\n        {php_string(name)} => {php_value(value)}," + ed.text[at:]
            ed.note(f"connections.default.{name}", "added")
    return ed.result()


def rewrite_bitrix_dbconn(
    text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given Bitrix's bitrix/php_interface/dbconn.php, return it with $DBHost/$DBName/$DBLogin/$DBPassword (when
    present) pointed at the target, ``settings`` as defines and ``append`` in a marked block at the end."""
    ed = _Editor(text)
    host = "localhost" if target.socket else target.mysql_host()
    for name, value in (
        ("$DBHost", host),
        ("$DBName", target.database),
        ("$DBLogin", target.user or ""),
        ("$DBPassword", target.password_text or ""),
    ):
        spans = _assignment_spans(ed.text, name)
        ed.text = _replace_spans(ed.text, spans, php_value(value))
        ed.note(name, "replaced" if spans else "absent")
    for name, value in (settings or {}).items():
        _set_define(ed, name, _expand(value, target), anchor=_block_anchor)
    if append:
        ed.text = _append_php(ed.text, f"{BEGIN}\n{append.strip()}\n{END}")
        ed.note("orch block", "added")
    return ed.result()


def _block_anchor(text: str) -> int:
    """Where defines are added in a PHP file that has no better place: at its end (before ``?>``, before an orch
    block)."""
    begin = text.find(BEGIN)
    if begin >= 0:
        return _line_start(text, begin)
    stripped = text.rstrip()
    if stripped.endswith("?>"):
        return _line_start(text, len(stripped) - 2)
    return len(text)


# ------------------------------------------------------------------------------------------------ Drupal


def rewrite_drupal_settings(
    text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given Drupal's settings.php, return it with the orch block (database, trusted host, ``append``) at its end;
    raise UsageError for settings (not supported: write PHP in ``append``)."""
    if settings:
        raise UsageError("drupal-settings: `set` is not supported; write PHP in `append`")
    entries = {"database": target.database, "username": target.user, "password": target.password_text}
    if target.socket:
        entries["unix_socket"] = target.socket
    else:
        entries["host"] = target.host or "localhost"
        entries["port"] = str(target.port) if target.port else None
    lines = [BEGIN, "$databases['default']['default'] = array_merge($databases['default']['default'] ?? [], ["]
    lines += [f"  {php_string(key)} => {php_value(value)}," for key, value in entries.items() if value is not None]
    lines += ["]);", f"$settings['trusted_host_patterns'] = [{php_string('^' + re.escape(target.hostname) + '$')}];"]
    if append:
        lines.append(append.strip())
    lines.append(END)
    had_block = BEGIN in text
    changes = [
        Change(f"databases.default.default.{key}", "replaced") for key, value in entries.items() if value is not None
    ]
    changes += [Change("trusted_host_patterns", "replaced"), Change("orch block", "replaced" if had_block else "added")]
    return Rewrite(_append_php(text, "\n".join(lines)), tuple(changes))


def read_drupal_prefix(text: str) -> str | None:
    """Given Drupal's settings.php, return the first ``'prefix' => '...'`` value (None if absent)."""
    toks = _tokens(text)
    for i, tok in enumerate(toks):
        if _string_is(tok, "prefix") and _is_op(toks, i + 1, "=>") and i + 2 < len(toks) and toks[i + 2].kind == "str":
            return php_literal_value(toks[i + 2].text)
    return None


# ------------------------------------------------------------------------------------------------ Laravel

_ENV_LINE = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z0-9_.]+)[ \t]*=(.*)\Z")


def _env_entries(text: str) -> list[tuple[str, int, int]]:
    """Given a .env file, return (key, start, end) character ranges of each entry, multi-line double-quoted
    values included."""
    entries, pos, lines = [], 0, text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        start = pos
        m = _ENV_LINE.match(lines[i].rstrip("\r\n"))
        pos += len(lines[i])
        i += 1
        if not m:
            continue
        value = m.group(2).lstrip()
        if value.startswith(('"', "'")) and not _closed(value):
            while i < len(lines) and not _closed(value):
                value += lines[i]
                pos += len(lines[i])
                i += 1
        entries.append((m.group(1), start, pos))
    return entries


def _closed(value: str) -> bool:
    """Given a quoted .env value (maybe spanning lines), return whether its closing quote is there."""
    quote, i = value[0], 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return True
        i += 1
    return False


def _set_env(ed: _Editor, key: str, value: Any, *, add: bool = True) -> None:
    entries = [e for e in _env_entries(ed.text) if e[0] == key]
    line = f"{key}={env_value(value)}\n"
    for _, start, end in reversed(entries):
        ed.text = ed.text[:start] + line + ed.text[end:]
    if entries:
        ed.note(key, "replaced")
    elif add:
        ed.text = (ed.text if not ed.text or ed.text.endswith("\n") else ed.text + "\n") + line
        ed.note(key, "added")
    else:
        ed.note(key, "absent")


def rewrite_laravel_env(
    text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given Laravel's .env, return it pointed at the target (see the module docstring); raise UsageError for
    ``append`` (not supported) or a value that cannot be written."""
    if append:
        raise UsageError("laravel-env: `append` is not supported; use `set`")
    ed = _Editor(text)
    if target.socket:
        _set_env(ed, "DB_SOCKET", target.socket)
    else:
        _set_env(ed, "DB_HOST", target.host or "127.0.0.1")
        if target.port:
            _set_env(ed, "DB_PORT", target.port)
    _set_env(ed, "DB_DATABASE", target.database)
    _set_env(ed, "DB_USERNAME", target.user or "")
    _set_env(ed, "DB_PASSWORD", target.password_text or "")
    _set_env(ed, "APP_URL", target.url.rstrip("/"))
    session = dict_env(text).get("SESSION_DOMAIN")
    if session and session != "null":
        _set_env(ed, "SESSION_DOMAIN", target.hostname)
    for key, value in (settings or {}).items():
        _set_env(ed, key, _expand(value, target))
    return ed.result()


def dict_env(text: str) -> dict[str, str]:
    """Given a .env file, return its raw values by key (quotes stripped, no escapes or interpolation applied):
    enough to see whether a key is set."""
    out = {}
    for key, start, end in _env_entries(text):
        value = text[start:end].split("=", 1)[1].strip()
        if value[:1] in ('"', "'") and value[-1:] == value[:1]:
            value = value[1:-1]
        elif "#" in value:
            value = value.split("#", 1)[0].strip()
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ dispatch

FORMATS: dict[str, Rewriter] = {
    "wp-config": rewrite_wp_config,
    "joomla": rewrite_joomla,
    "bitrix-settings": rewrite_bitrix_settings,
    "bitrix-dbconn": rewrite_bitrix_dbconn,
    "drupal-settings": rewrite_drupal_settings,
    "laravel-env": rewrite_laravel_env,
}
PREFIX_READERS: dict[str, Callable[[str], str | None]] = {
    "wp-config": read_wp_prefix,
    "joomla": read_joomla_prefix,
    "drupal-settings": read_drupal_prefix,
}


def rewrite_config(
    fmt: str, text: str, target: Target, settings: Mapping[str, Any] | None = None, append: str | None = None
) -> Rewrite:
    """Given a format name, a config file's text and the target, return the rewritten text and its report; raise
    UsageError for an unknown format or a file the rewriter cannot handle."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown config format {fmt!r} (known: {', '.join(sorted(FORMATS))})")
    return FORMATS[fmt](text, target, settings or {}, append)


def rewrite_config_file(item, text: str, target: Target) -> Rewrite:
    """Given a playbook ConfigFile, the file's text and the target, return the rewrite (with ``set``/``append``)."""
    return rewrite_config(item.format, text, target, item.set, item.append)


def read_table_prefix(fmt: str, text: str) -> str | None:
    """Given a config format and a file's text, return the table prefix it declares, or None if it declares
    none (or the format carries no prefix)."""
    reader = PREFIX_READERS.get(fmt)
    return reader(text) if reader else None
