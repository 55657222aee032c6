"""Request context carried through a request, into workflows and down to activities.

The API sets it per request; the Temporal interceptors copy it into workflow and activity
headers so an activity's audit entries and log lines name the request that caused them.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class RequestContext:
    """Who asked for the current operation, and from where."""

    request_id: str | None = None
    actor_id: uuid.UUID | None = None
    actor_type: str = "system"  # user | api_key | system | webhook
    actor_label: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    def to_header(self) -> dict[str, Any]:
        data = asdict(self)
        data["actor_id"] = str(self.actor_id) if self.actor_id else None
        return data

    @classmethod
    def from_header(cls, data: dict[str, Any]) -> RequestContext:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("actor_id"):
            known["actor_id"] = uuid.UUID(str(known["actor_id"]))
        return cls(**known)


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar(
    "idp_request_context",
    default=RequestContext(),  # noqa: B039 (frozen dataclass: immutable)
)


def current() -> RequestContext:
    return _current.get()


def set_current(ctx: RequestContext) -> contextvars.Token[RequestContext]:
    return _current.set(ctx)


def reset(token: contextvars.Token[RequestContext]) -> None:
    _current.reset(token)


def update(**changes: Any) -> None:
    """Change fields of the current context for the rest of this task (e.g. after login)."""
    _current.set(replace(current(), **changes))


@contextmanager
def bound(ctx: RequestContext | None = None, **changes: Any) -> Iterator[RequestContext]:
    """Run a block with `ctx` (or the current context with `changes`) as the current context."""
    new = replace(ctx or current(), **changes)
    token = _current.set(new)
    try:
        yield new
    finally:
        # A block that ends in another context (a workflow's coroutine closed by an eviction
        # or the garbage collector, in whatever task is running) has nothing of its own to
        # undo there: leave that context alone.
        with suppress(ValueError):
            _current.reset(token)
