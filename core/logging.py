"""Logging for every idp process: text or JSON lines, each carrying the current request id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from core import context
from core.errors import AppError


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.current().request_id or "-"
        return True


class ExpectedActivityFailures(logging.Filter):
    """One line, not a traceback, for an activity failure the platform raised on purpose.

    The Temporal SDK logs every failed activity attempt ("Completing activity as failed") at
    WARNING with the exception's traceback. For an `ApplicationError` our activities raise
    deliberately (such as `PulumiCliMissing`) or one of our `AppError`s, that traceback only
    shows where we raised it and buries the message; the record becomes one line naming the
    activity, the workflow, the error's type and its message. Any other exception is a bug
    and keeps its traceback. Installed on the SDK's `temporalio.activity` logger, whose
    records keep their level and still reach every handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "__temporal_error_identifier", None) != "ActivityFailure":
            return True
        from temporalio.exceptions import ApplicationError  # loaded: the SDK logged this

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ApplicationError):
            kind = error.type or type(error).__name__
            retry = "not retried" if error.non_retryable else "may be retried"
        elif isinstance(error, AppError):
            kind, retry = type(error).__name__, "may be retried"
        else:
            return True
        about: dict[str, Any] = getattr(record, "temporal_activity", None) or {}
        record.msg = "activity %s failed in workflow %s (attempt %s, %s): %s: %s"
        record.args = (
            about.get("activity_type", "?"),
            about.get("workflow_id", "?"),
            about.get("attempt", "?"),
            retry,
            kind,
            " ".join(error.message.split()),  # one line, whatever the message holds
        )
        record.exc_info = record.exc_text = None
        return True


def install_activity_failure_filter() -> None:
    """Make expected activity failures one line (idempotent)."""
    logger = logging.getLogger("temporalio.activity")
    if not any(isinstance(f, ExpectedActivityFailures) for f in logger.filters):
        logger.addFilter(ExpectedActivityFailures())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        _JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "httpx", "temporalio"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
    install_activity_failure_filter()
