"""Base model mixins, the audit log and pagination on a real database (SQLite, and
PostgreSQL when TEST_DATABASE_URL is set)."""

import asyncio
import uuid

import pytest
from sqlalchemy import String, delete, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core import context
from core.audit import REDACTED, AuditFilter, AuditRepository, AuditService, snapshot
from core.db.base import Base, EntityMixin, SoftDeleteMixin
from core.models.audit import AuditLog
from core.pagination import PageRequest


class _ScratchBase(DeclarativeBase):
    type_annotation_map = Base.type_annotation_map


class Widget(EntityMixin, SoftDeleteMixin, _ScratchBase):
    """A scratch entity (not part of the schema) to exercise the mixins."""

    __tablename__ = "scratch_widgets"
    name: Mapped[str] = mapped_column(String(50))
    api_token: Mapped[str | None] = mapped_column(String(50), default=None)


@pytest.fixture
async def widgets(session: AsyncSession) -> None:
    """The scratch table, created inside the test's transaction (so the rollback removes it)."""
    await session.run_sync(lambda s: _ScratchBase.metadata.create_all(s.connection()))


async def test_entity_mixins_stamp_time_and_actor(session: AsyncSession, widgets: None) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with context.bound(actor_id=alice, actor_type="user"):
        widget = Widget(name="w1")
        session.add(widget)
        await session.flush()
    assert isinstance(widget.id, uuid.UUID)
    assert widget.created_at.tzinfo is not None
    assert (widget.created_by, widget.updated_by) == (alice, alice)
    created_at = widget.created_at

    await asyncio.sleep(0.01)
    with context.bound(actor_id=bob, actor_type="user"):
        widget.name = "w2"
        await session.flush()
        widget.soft_delete()
        await session.flush()
    await session.refresh(widget)
    assert (widget.created_by, widget.updated_by) == (alice, bob)
    assert widget.updated_at > created_at
    assert widget.is_deleted and widget.deleted_by == bob
    assert widget.created_at == created_at  # timezone-aware round trip on every backend


async def test_audit_record_carries_context_and_masks_secrets(
    session: AsyncSession, widgets: None
) -> None:
    actor = uuid.uuid4()
    widget = Widget(name="w", api_token="tok-very-secret")
    session.add(widget)
    await session.flush()
    ctx = context.RequestContext(
        request_id="req-1",
        actor_id=actor,
        actor_type="user",
        actor_label="alice@example.com",
        ip="10.0.0.9",
        user_agent="curl/8",
    )
    with context.bound(ctx):
        entry = await AuditService(session).record(
            "widget.update",
            "widget",
            widget.id,
            before=snapshot(widget),
            after={"name": "w2", "password": "hunter2", "nested": {"secret": "s"}},
        )
    await session.refresh(entry)
    assert (entry.actor_id, entry.actor_type, entry.actor_label) == (
        actor,
        "user",
        "alice@example.com",
    )
    assert (entry.ip, entry.user_agent, entry.request_id) == ("10.0.0.9", "curl/8", "req-1")
    assert entry.resource_id == str(widget.id)
    assert entry.before is not None and entry.before["name"] == "w"
    assert entry.before["api_token"] == REDACTED
    assert entry.after == {"name": "w2", "password": REDACTED, "nested": {"secret": REDACTED}}
    assert entry.occurred_at.tzinfo is not None


async def test_audit_log_is_append_only(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        outer = await conn.begin()
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
        entry = await AuditService(session).record("thing.create", "thing", "t1")
        for statement in (
            update(AuditLog).where(AuditLog.id == entry.id).values(action="forged"),
            delete(AuditLog).where(AuditLog.id == entry.id),
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                async with session.begin_nested():
                    await session.execute(statement)
        await session.close()
        await outer.rollback()


async def test_audit_pagination_by_cursor_and_offset(session: AsyncSession) -> None:
    resource = f"res-{uuid.uuid4().hex[:8]}"
    service = AuditService(session)
    for i in range(7):
        await service.record(f"thing.step{i}", "pagetest", resource)
    repo = AuditRepository(session)
    wanted = AuditFilter(resource_type="pagetest", resource_id=resource)

    seen, cursor = [], None
    while True:
        page = await repo.list(wanted, PageRequest(limit=3, cursor=cursor))
        seen.extend(e.action for e in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"thing.step{i}" for i in reversed(range(7))]  # newest first, no gaps

    by_offset = await repo.list(wanted, PageRequest(limit=3, offset=3))
    assert [e.action for e in by_offset.items] == seen[3:6]
    assert by_offset.next_offset == 6
    last = await repo.list(wanted, PageRequest(limit=3, offset=6))
    assert [e.action for e in last.items] == seen[6:] and last.next_offset is None

    one = await repo.list(AuditFilter(action="thing.step3", resource_id=resource), PageRequest())
    assert [e.action for e in one.items] == ["thing.step3"]
