"""Domain errors. Each carries its HTTP status and a stable code; one API handler renders them."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A setting, config file or temporal.yaml is wrong; the message is one actionable line."""


class AppError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        keep_changes: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers
        # True when what the request changed before failing must still be saved, e.g. a
        # failed login's counter and its audit entry, or a token family revoked on reuse.
        self.keep_changes = keep_changes
        if code:
            self.code = code


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_error"

    @classmethod
    def on(cls, field: str, message: str) -> ValidationFailed:
        """One problem with one field: the message, and details naming the field."""
        return cls(message, details=[{"field": field, "message": message}])


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"


class Unavailable(AppError):
    status_code = 503
    code = "unavailable"


STATUS_CODES: dict[int, str] = {
    cls.status_code: cls.code
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        ValidationFailed,
        RateLimited,
        Unavailable,
        AppError,
    )
} | {
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def code_for_status(status: int) -> str:
    """The error code used for a bare HTTP status (unknown route, wrong method...)."""
    return STATUS_CODES.get(status, "client_error" if status < 500 else "internal_error")
