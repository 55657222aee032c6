"""How a workflow tells what went wrong in an activity: the message a person can act on."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError


def failure_message(err: ActivityError) -> str:
    """The activity's own message (its ApplicationError's), else the cause as text."""
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)
