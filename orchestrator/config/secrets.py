"""Inventory secrets: a plain string or a reference ({env: NAME}, {file: PATH}, {command: "..."}), resolved lazily.

A Secret is created while the inventory loads, so a broken reference shape is an inventory error, but the value
is fetched only when a command needs it: `orch log` must not prompt for a password-store passphrase.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from orchestrator.errors import SecretError
from orchestrator.masking import register_secret

COMMAND_TIMEOUT = 30  # seconds; a password manager waiting for a PIN would otherwise hang the run forever


class Secret:
    """A secret value from the inventory. `where` says where it was written; str() and repr() never show it."""

    __slots__ = ("where", "kind", "_ref", "_base", "_value", "_lock")

    def __init__(self, ref: str | dict, where: str, base: Path | None = None):
        """Given a plain string or a one-key reference dict, the place it came from (`file: key.path`) and the
        folder relative file references are resolved against, return an unresolved Secret."""
        if isinstance(ref, str):
            self.kind, self._ref = "plain", ref
        else:
            ((self.kind, self._ref),) = ref.items()  # the schema guarantees exactly one key
        self.where = where
        self._base = base or Path.cwd()
        self._lock = threading.Lock()
        # A plain value is already in memory; registering it now masks it even if nothing ever reveals it.
        self._value = register_secret(self._ref) if self.kind == "plain" else None

    def reveal(self) -> str:
        """Return the secret's value, resolving it on first use; raise SecretError naming where and why."""
        with self._lock:  # parallel backups of one host may ask at once; run a `command` only once
            if self._value is None:
                try:
                    value = _RESOLVERS[self.kind](self._ref, self._base)
                except _ResolveError as exc:
                    raise SecretError(f"{self.where}: {exc}") from None
                if not value:
                    raise SecretError(f"{self.where}: {self.describe()} gave an empty value")
                self._value = register_secret(value)
            return self._value

    def describe(self) -> str:
        """Return how the secret is referenced, without its value (e.g. `environment variable X`)."""
        return {
            "plain": "the plain value",
            "env": f"environment variable {self._ref}",
            "file": f"file {self._ref}",
            "command": f"command `{self._ref}`",
        }[self.kind]

    def __repr__(self) -> str:
        return f"Secret({self.where})"

    __str__ = __repr__

    def __copy__(self) -> Secret:
        return self  # one Secret per place in the inventory: copies would resolve (and prompt) again

    def __deepcopy__(self, memo: dict) -> Secret:
        return self


class _ResolveError(Exception):
    """Why a reference could not be resolved; Secret.reveal prefixes it with where the secret was written."""


def _strip_newline(text: str) -> str:
    """Given a file's or command's output, return it without one trailing newline (echo/pass add one)."""
    return text.removesuffix("\n").removesuffix("\r")


def _resolve_env(name: str, base: Path) -> str:
    if name not in os.environ:
        raise _ResolveError(f"environment variable {name} is not set")
    return os.environ[name]


def _resolve_file(path: str, base: Path) -> str:
    full = base / Path(path).expanduser()
    try:
        return _strip_newline(full.read_text())
    except OSError as exc:
        raise _ResolveError(f"file {full}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _ResolveError(f"file {full}: not UTF-8 text") from exc


def _resolve_command(command: str, base: Path) -> str:
    try:
        done = subprocess.run(
            ["sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            cwd=base,
        )
    except subprocess.TimeoutExpired as exc:
        raise _ResolveError(f"command `{command}` timed out after {COMMAND_TIMEOUT} s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:]
        raise _ResolveError(f"command `{command}` exited {done.returncode}" + (f": {tail[0]}" if tail else ""))
    return _strip_newline(done.stdout)


_RESOLVERS = {"env": _resolve_env, "file": _resolve_file, "command": _resolve_command}
