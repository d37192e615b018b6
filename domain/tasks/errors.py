"""Errors the tasks feature raises (codes mapped to HTTP statuses in interfaces/http/errors.py)."""

from __future__ import annotations

from domain.errors import DomainError


class TaskInvalid(DomainError):
    """A task's name, schedule, action, payload or policy is malformed (the field is named)."""

    code = "VALIDATION_FAILED"


class TaskNotFound(DomainError):
    code = "TASK_NOT_FOUND"


class TaskExists(DomainError):
    code = "TASK_ALREADY_EXISTS"


class TaskDeleted(DomainError):
    code = "TASK_DELETED"


class RunNotFound(DomainError):
    code = "TASK_RUN_NOT_FOUND"


class RunFinished(DomainError):
    """A run already ended (succeeded, failed for good, timed out for good, cancelled)."""

    code = "TASK_RUN_FINISHED"


class RunNotStartable(DomainError):
    """The run is not waiting to start (another replica holds it, or it ended)."""

    code = "TASK_RUN_NOT_STARTABLE"
