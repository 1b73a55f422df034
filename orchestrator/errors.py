"""One exception hierarchy; the CLI turns each into one clear line and a documented exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an operation ran and failed
    USAGE = 2  # bad arguments, broken inventory, untrusted host key
    LOCKED = 3  # the site is locked by another operation
    REFUSED = 4  # a safety guard refused the request


class OrchError(Exception):
    """Base of every error orch reports to a user. The message is one line meant for humans."""

    exit_code = ExitCode.FAILED


class UsageError(OrchError, ValueError):
    exit_code = ExitCode.USAGE


class InventoryError(UsageError):
    """The inventory is broken. `problems` holds one 'file: key.path: message' line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SecretError(InventoryError):
    """A secret reference ({env:..}, {file:..}, {command:..}) could not be resolved."""


class HostKeyError(UsageError):
    """A host presented an unknown or changed SSH host key; nothing was run on it."""


class RemoteError(OrchError, RuntimeError):
    """A command failed on a host. The command text is already masked."""

    def __init__(self, host: str, command: str, exit_status: int | None, stderr: str = ""):
        self.host, self.command, self.exit_status, self.stderr = host, command, exit_status, stderr
        tail = stderr.strip().splitlines()[-3:]
        detail = f": {' | '.join(tail)}" if tail else ""
        super().__init__(f"{host}: `{command}` exited {exit_status}{detail}")


class ConnectError(OrchError, ConnectionError):
    """A host could not be reached or refused our credentials."""


class LockHeld(OrchError):
    exit_code = ExitCode.LOCKED


class Refused(OrchError, PermissionError):
    """A safety guard refused the request (production, missing --yes, ...)."""

    exit_code = ExitCode.REFUSED


class OperationFailed(OrchError):
    """An operation ran and failed; details are in the oplog."""
