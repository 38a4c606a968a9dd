"""One error hierarchy for the whole runtime.

Every class carries the HTTP status and the error code of DESIGN §6; its docstring is
its default message. Driver (psycopg) errors are translated in `translate_db_error`, the
one boundary where they become runtime errors, keeping `__cause__`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg
from psycopg import errors as pg_errors


class RuntimeFailure(Exception):
    """The runtime could not complete the call."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    attempts: int = 0  # transaction attempts the call used before failing (0: none ran)

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InvalidJSON(RuntimeFailure):
    """The request body is not valid JSON."""

    status = 400
    code = "invalid_json"


class InvalidArgs(RuntimeFailure):
    """The arguments do not match the function's schema."""

    status = 400
    code = "invalid_args"


class InvalidMessage(RuntimeFailure):
    """The WebSocket message is not one of the protocol's messages."""

    status = 400
    code = "invalid_message"


class InvalidDocument(RuntimeFailure):
    """The document does not match the table's schema."""

    status = 400
    code = "invalid_document"


class Unauthenticated(RuntimeFailure):
    """Authentication is required."""

    status = 401
    code = "unauthenticated"


class Forbidden(RuntimeFailure):
    """The caller is not allowed to do this."""

    status = 403
    code = "forbidden"


class NotFound(RuntimeFailure):
    """Not found."""

    status = 404
    code = "not_found"


class MethodNotAllowed(RuntimeFailure):
    """Method not allowed."""

    status = 405
    code = "method_not_allowed"


class Conflict(RuntimeFailure):
    """The call conflicts with the current state."""

    status = 409
    code = "conflict"


class RetriesExhausted(Conflict):
    """The transaction kept conflicting with concurrent transactions and retries were exhausted."""


class PayloadTooLarge(RuntimeFailure):
    """The request body is larger than the limit."""

    status = 413
    code = "payload_too_large"


class RateLimited(RuntimeFailure):
    """Too many requests; slow down."""

    status = 429
    code = "rate_limited"


class Unavailable(RuntimeFailure):
    """The database is unavailable; try again shortly."""

    status = 503
    code = "unavailable"


class Timeout(RuntimeFailure):
    """The call took longer than the statement timeout."""

    status = 504
    code = "timeout"


class OutcomeUnknown(Unavailable):
    """The connection was lost during COMMIT: the transaction may or may not have committed."""


class Internal(RuntimeFailure):
    """Internal error."""


# UserError codes an application may raise, with the status each maps to.
USER_ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_args": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "gone": 410,
    "precondition_failed": 412,
    "unprocessable": 422,
    "rate_limited": 429,
    "unavailable": 503,
}


class UserError(RuntimeFailure):
    """An error raised on purpose by application code; its code chooses the status.

    `UserError("not_found", "Ticket not found")` answers 404. Unknown codes answer 400,
    or pass `status=` explicitly. A UserError rolls back the transaction and is never retried.
    """

    def __init__(
        self, code: str, message: str, details: Any = None, *, status: int | None = None
    ) -> None:
        super().__init__(message, details)
        self.code = code  # type: ignore[misc]
        self.status = status or USER_ERROR_STATUS.get(code, 400)  # type: ignore[misc]


class LoadError(Exception):
    """schema.json, app_functions or plugins could not be loaded; `problems` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class DestructiveChange(LoadError):
    """A schema change would drop or rewrite data; it needs --allow-destructive."""


def translate_db_error(exc: BaseException) -> RuntimeFailure:
    """Map a psycopg error that escaped a transaction to the runtime's error model."""
    if isinstance(exc, pg_errors.QueryCanceled):
        err: RuntimeFailure = Timeout()
    elif isinstance(exc, psycopg.OperationalError):
        err = Unavailable()
    elif isinstance(exc, pg_errors.UniqueViolation):
        err = Conflict("A row with the same unique key already exists")
    elif isinstance(exc, pg_errors.ForeignKeyViolation):
        err = InvalidDocument("A referenced row does not exist")
    elif isinstance(exc, (pg_errors.NotNullViolation, pg_errors.CheckViolation)):
        column = getattr(getattr(exc, "diag", None), "column_name", None)
        err = InvalidDocument(f"Column {column!r} violates a constraint" if column else None)
    elif isinstance(exc, pg_errors.InvalidTextRepresentation):
        err = InvalidArgs("A value has the wrong format for its column")
    else:
        err = Internal()
    err.__cause__ = exc
    return err
