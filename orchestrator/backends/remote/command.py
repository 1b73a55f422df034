"""The one type that builds every shell line orch runs, locally or on a host.

A `Command` is a value: a sequence of parts rendered to text in exactly one place (`Command.script`).
- plain values (`str`, `int`, `Path`) are arguments: always quoted, whatever they contain;
- `Raw` parts are trusted shell syntax written in our own code (`|`, `&&`, `>`), never user data;
- secrets (anything with a `reveal()` method, such as inventory `Secret`s or `Sensitive`) may only travel in
  the environment: `Command(...).env(MYSQL_PWD=secret)`. They are sent to the host on the command's stdin,
  read there into shell variables, and so never appear in any process's argv, nor in what we log.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Protocol, runtime_checkable

from orchestrator.masking import MASK, register_secret

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


@runtime_checkable
class Revealable(Protocol):
    def reveal(self) -> str: ...


class Sensitive:
    """A secret produced at run time (a generated password, a presigned token), masked like inventory secrets."""

    def __init__(self, value: str):
        self._value = register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Sensitive(***)"


@dataclass(frozen=True)
class Raw:
    """Trusted shell syntax from orch's own code. Never wrap a value that came from an inventory or a user."""

    text: str


PIPE, AND = Raw("|"), Raw("&&")
STATUS_MARK = "orch-pipestatus:"
_REPORT_STATUSES = (
    f'; set -- "${{PIPESTATUS[@]}}"; echo "{STATUS_MARK} $*" >&2; for s; do [ "$s" = 0 ] || exit "$s"; done'
)


def _quote(part) -> str:
    if isinstance(part, Raw):
        return part.text
    if isinstance(part, Revealable):
        raise TypeError("secrets may not be command arguments (they would show in ps); pass them via env()")
    if isinstance(part, bool) or not isinstance(part, str | int | float | PurePath):
        raise TypeError(f"cannot put {type(part).__name__} into a command")
    return shlex.quote(str(part))


@dataclass(frozen=True)
class Command:
    """A shell command line built from parts; see the module docstring for the rules."""

    parts: tuple = ()
    environment: tuple[tuple[str, object], ...] = field(default=())
    pipefail: bool = True

    def __init__(self, *parts, environment=(), pipefail: bool = True):
        for part in parts:
            _quote(part)  # fail at build time, not at run time, on a part that may not go in
        object.__setattr__(self, "parts", tuple(parts))
        object.__setattr__(self, "environment", tuple(environment))
        object.__setattr__(self, "pipefail", pipefail)

    # -- building -----------------------------------------------------------------------------------------
    def args(self, *parts) -> Command:
        """Given more arguments, return a new command with them appended."""
        return Command(*self.parts, *parts, environment=self.environment, pipefail=self.pipefail)

    def env(self, **values) -> Command:
        """Given NAME=value pairs (values may be secrets), return a command that runs with them exported."""
        for name in values:
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        merged = dict(self.environment) | {k: v for k, v in values.items() if v is not None}
        return Command(*self.parts, environment=tuple(merged.items()), pipefail=self.pipefail)

    def _join(self, op: Raw, other: Command) -> Command:
        merged = dict(self.environment) | dict(other.environment)
        return Command(
            *self.parts, op, *other.parts, environment=tuple(merged.items()), pipefail=self.pipefail and other.pipefail
        )

    def pipe(self, other: Command) -> Command:
        """`self | other`; with pipefail (default) the pipeline fails if any side fails."""
        return self._join(PIPE, other)

    def then(self, other: Command) -> Command:
        """`self && other`."""
        return self._join(AND, other)

    def reporting_statuses(self) -> Command:
        """Return this pipeline followed by one stderr line giving each part's exit status (read back with
        `part_statuses`), so a caller can tell which side of `dump | restic` failed. Exits with the first
        failure's status."""
        return Command(*self.parts, Raw(_REPORT_STATUSES), environment=self.environment, pipefail=self.pipefail)

    def to_file(self, path, append: bool = False) -> Command:
        """Redirect stdout to a (quoted) path."""
        return Command(
            *self.parts, Raw(">>" if append else ">"), path, environment=self.environment, pipefail=self.pipefail
        )

    # -- rendering ----------------------------------------------------------------------------------------
    def _body(self) -> str:
        return " ".join(_quote(p) for p in self.parts)

    def body(self) -> str:
        """Return the command line alone (no environment), e.g. to hand to `bash -c` inside another command."""
        return self._body()

    def _secrets(self) -> list[tuple[str, Revealable]]:
        return [(name, value) for name, value in self.environment if isinstance(value, Revealable)]

    def _secret_names(self) -> list[str]:
        return [name for name, _ in self._secrets()]

    def script(self) -> str:
        """Return the bash script to run. Secrets are read from stdin (one line each, in `stdin_prefix` order)."""
        lines = ["set -o pipefail"] if self.pipefail else []
        for name, value in self.environment:
            if isinstance(value, Revealable):
                lines.append(f"IFS= read -r {name} || exit 125; export {name}")
            else:
                lines.append(f"export {name}={_quote(value)}")
        lines.append(self._body())
        return "\n".join(lines)

    def stdin_prefix(self) -> bytes:
        """Return the secret values, one per line, that must precede any other stdin of this command."""
        out = []
        for name, secret in self._secrets():
            value = secret.reveal()
            register_secret(value)
            if "\n" in value or "\r" in value:
                raise ValueError(f"secret for {name} contains a newline; orch cannot pass it safely")
            out.append(value.encode() + b"\n")
        return b"".join(out)

    def argv(self) -> list[str]:
        """Return the local argv that runs this command (no secret inside)."""
        return ["bash", "-c", self.script()]

    def masked(self) -> str:
        """Return a one-line human rendering with secrets as `***`, for logs, errors and the oplog."""
        env = " ".join(f"{n}={MASK if isinstance(v, Revealable) else _quote(v)}" for n, v in self.environment)
        return f"{env} {self._body()}".strip()

    def __str__(self) -> str:
        return self.masked()


def part_statuses(stderr: str) -> tuple[list[int] | None, str]:
    """Given the stderr of a command built with `reporting_statuses`, return the exit status of each part of its
    pipeline (None when it did not get that far: stopped, or the connection dropped) and stderr without that
    line."""
    head, found, rest = stderr.rpartition(STATUS_MARK)
    if not found:
        return None, stderr
    line, _, tail = rest.partition("\n")
    try:
        return [int(word) for word in line.split()], head + tail
    except ValueError:
        return None, stderr


def sh(*parts) -> Command:
    """Shorthand: `sh("restic", "snapshots", "--json")`."""
    return Command(*parts)
