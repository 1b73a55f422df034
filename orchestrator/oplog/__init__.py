"""Operation log: every operation, its steps and artifacts, and the per-site locks, in one database."""

from .operation import Operation, Step
from .run import locked_operation
from .schema import CURRENT_VERSION, SchemaTooNew
from .store import OperationNotFound, Oplog

__all__ = ["CURRENT_VERSION", "Operation", "OperationNotFound", "Oplog", "SchemaTooNew", "Step", "locked_operation"]
