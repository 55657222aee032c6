"""The one error shape, `{"error": {"code", "message", "details", "request_id"}}`, for every
error: domain errors, validation (422), unknown routes (404), wrong methods (405) and crashes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import context
from core.errors import AppError, code_for_status

log = logging.getLogger("idp.api")
CURRENT_API_VERSION = "1"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class _ErrorJSON(JSONResponse):
    """JSON with non-ASCII characters escaped: an error may quote the caller's input, lone
    surrogates included, which UTF-8 cannot encode (JSON's `\\udXXX` escapes can)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id or context.current().request_id
    body = {
        "error": {"code": code, "message": message, "details": details, "request_id": request_id}
    }
    return _ErrorJSON(jsonable_encoder(body), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        details.append({"field": ".".join(loc), "message": err.get("msg"), "type": err.get("type")})
    return details


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    first = details[0] if details else {"field": "", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    return error_response(422, "validation_error", message, details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(
        exc.status_code, code_for_status(exc.status_code), message, headers=exc.headers
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # SQLite's write lock not had within the busy timeout: a writer held it for that long.
    # The request's transaction rolled back, so asking again is safe.
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc.orig)
        return error_response(
            503,
            "database_busy",
            "the database was busy for too long; nothing was saved, try again",
            headers={"Retry-After": "1"},
        )
    return await _unhandled(request, exc)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # Runs outside the middleware stack (Starlette's ServerErrorMiddleware), after the request
    # context was reset: the id is read from the request state, and the header set here.
    request_id = getattr(request.state, "request_id", None)
    log.exception(
        "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
    )
    return error_response(
        500,
        "internal_error",
        "an internal error occurred; quote the request id when reporting it",
        request_id=request_id,
        headers={"X-Request-ID": request_id or "", "X-API-Version": CURRENT_API_VERSION},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(Exception, _unhandled)


# Documented on every route so clients see the error shape in /docs.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Bad request (including an unsupported X-API-Version)"),
        (422, "Validation error"),
        (500, "Internal error"),
    )
}
