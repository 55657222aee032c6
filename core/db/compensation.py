"""A change saved, then an outside call that must go with it, undone if that call fails.

Some changes only count together with a Temporal call: a health check with its monitor, a
pipeline's cron triggers with their schedule. Holding the transaction open across the call
would keep SQLite's write lock (and a pooled connection) for as long as Temporal takes
(core/db/transactions.py), so the change is committed first (the workflow's activities can
then read it), the call made, and if the call fails the change is reverted, audited as
`<resource>.revert` with the reason, before the error is answered. The result is the one a
caller expects from a failed request: nothing changed, and the audit log says what happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, column_values, snapshot
from core.db.base import SoftDeleteMixin
from core.errors import AppError

T = TypeVar("T")


def before_image(entity: Any) -> dict[str, Any]:
    """The entity's column values, to set back with `commit_then_call` if the call fails."""
    return column_values(entity)


async def _revert(
    session: AsyncSession,
    entity: SoftDeleteMixin,
    before: dict[str, Any] | None,
    resource_type: str,
    reason: str,
) -> None:
    changed = snapshot(entity)
    if before is None:  # it was created: it goes again
        entity.soft_delete()
    else:
        for key, value in before.items():
            if key not in ("updated_at", "updated_by"):
                setattr(entity, key, value)
    await session.flush()
    await AuditService(session).record(
        f"{resource_type}.revert",
        resource_type,
        inspect(entity).identity[0],
        before=changed,
        after={**snapshot(entity), "reason": reason},
    )


async def commit_then_call(
    session: AsyncSession,
    call: Callable[[], Awaitable[T]],
    *,
    entity: SoftDeleteMixin,
    before: dict[str, Any] | None,
    resource_type: str,
) -> T:
    """Commit the session's changes, then `call()`; when it raises an `AppError` (Temporal
    unavailable, a refusal), revert `entity` to `before` (None: it was created, so delete it),
    commit that, and raise the error."""
    await session.commit()
    try:
        return await call()
    except AppError as exc:
        await _revert(session, entity, before, resource_type, exc.message)
        await session.commit()
        raise
