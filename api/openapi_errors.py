"""The error answers each operation documents in /openapi.json, all in the one error shape.

Added to the generated document from what each operation declares, so a client (and the fuzz
test, which checks every answer against the document) knows which statuses to expect:

- every operation: 400 (bad request, unsupported X-API-Version), 422 (validation), 429 (rate
  limited), 500 (internal error) and 503 (the database is busy);
- an operation with a security requirement, or one that checks a credential or a signature
  itself (sign-in, Git host webhooks, Slack, the codec): 401 and 403;
- an operation with a path parameter, or one that changes something (its body names other
  objects): 404;
- an operation that changes something: 409 (a conflict with the current state);
- an operation with a body, and the public routes that cap theirs: 413.

An answer an operation describes itself (e.g. the readiness probe's 503) is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

_DESCRIPTIONS = {
    400: "Bad request (including an unsupported X-API-Version)",
    401: "Not authenticated, or the credential or signature is wrong",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is too large",
    422: "Validation error",
    429: "Too many requests",
    500: "Internal error",
    503: "The database is busy; try again",
}
_CHECK_THEIR_OWN_CREDENTIALS = ("/auth/", "/webhooks/", "/integrations/", "/api/temporal/codec")
_PUBLIC_BODIES = ("/webhooks/", "/integrations/")
_MUTATIONS = {"post", "put", "patch", "delete"}
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def _statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    statuses = {400, 422, 429, 500, 503}
    if operation.get("security") or path.startswith(_CHECK_THEIR_OWN_CREDENTIALS):
        statuses |= {401, 403}
    mutation = method in _MUTATIONS
    if mutation or any(p.get("in") == "path" for p in operation.get("parameters", [])):
        statuses.add(404)
    if mutation:
        statuses.add(409)
    if "requestBody" in operation or path.startswith(_PUBLIC_BODIES):
        statuses.add(413)
    return statuses


def add_error_responses(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (an OpenAPI dict) with every operation's error answers; changed in place."""
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _MUTATIONS | {"get", "head", "options"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(_statuses(path, method, operation)):
                responses.setdefault(
                    str(status), {"description": _DESCRIPTIONS[status], "content": _ERROR}
                )
    return document


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` include every operation's error answers (built once, cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
