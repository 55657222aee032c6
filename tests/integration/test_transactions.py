"""Transactions on a real database: SQLite reads take no lock and a read-then-write never
fails on a snapshot another writer made stale; every backend knows which task holds which
transaction, and Temporal calls made while holding one are refused (core/db/transactions.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from core.db import migrate, transactions
from core.db.engine import create_engine, session_factory
from core.settings import Settings
from core.temporal.interceptors import TransactionGuardInterceptor
from core.topology import Topology
from tests.conftest import BACKENDS, PostgresDatabases
from tests.integration.identity_helpers import assert_error, running_api

_meta = MetaData()
counters = Table(
    "counters", _meta, Column("name", String(20), primary_key=True), Column("n", Integer)
)


async def _counters(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
        await conn.execute(insert(counters).values(name="a", n=0))
    yield engine
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresDatabases | None
) -> AsyncIterator[AsyncEngine]:
    """A table `counters` with one row ("a", 0), on each backend."""
    if request.param == "postgresql":
        assert postgres is not None
        url = postgres.create()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}"
    async for engine in _counters(url):
        yield engine


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The same on SQLite, for its locking (PostgreSQL locks rows, not the database)."""
    async for engine in _counters(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}"):
        yield engine


async def _no_wait(conn: AsyncConnection) -> None:
    """This connection fails at once instead of waiting for SQLite's write lock."""
    await conn.exec_driver_sql("PRAGMA busy_timeout=0")
    await conn.commit()


async def test_a_read_transaction_does_not_hold_the_write_lock(sqlite_engine: AsyncEngine) -> None:
    engine = sqlite_engine
    async with engine.connect() as reader, engine.connect() as writer:
        await _no_wait(writer)
        async with reader.begin():
            assert (await reader.scalar(select(counters.c.n))) == 0
            async with writer.begin():  # would fail "database is locked" under BEGIN IMMEDIATE
                await writer.execute(update(counters).values(n=1))
            # The reader's snapshot is its own until it ends.
            assert (await reader.scalar(select(counters.c.n))) == 0


async def test_a_read_then_write_after_another_commit_waits_instead_of_failing(
    sqlite_engine: AsyncEngine,
) -> None:
    engine = sqlite_engine
    async with engine.connect() as first, engine.connect() as second:
        async with first.begin():
            assert (await first.scalar(select(counters.c.n))) == 0
            async with second.begin():
                await second.execute(update(counters).values(n=5))
            # In place, this upgrade would fail with SQLITE_BUSY (the snapshot is stale).
            await first.execute(update(counters).values(n=counters.c.n + 1))
        assert (await first.scalar(select(counters.c.n))) == 6


async def test_a_writer_holds_the_lock_until_it_commits(sqlite_engine: AsyncEngine) -> None:
    engine = sqlite_engine
    async with engine.connect() as first, engine.connect() as second:
        await _no_wait(second)
        async with first.begin():
            await first.execute(update(counters).values(n=1))
            with pytest.raises(OperationalError, match="database is locked"):
                async with second.begin():
                    await second.execute(update(counters).values(n=2))
        async with second.begin():
            await second.execute(update(counters).values(n=2))
        assert (await first.scalar(select(counters.c.n))) == 2


async def test_select_for_update_takes_the_write_lock(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        await session.scalar(select(counters.c.n))
        assert transactions.held() == "read"
        await session.scalar(select(counters.c.n).with_for_update())
        assert transactions.held() == "write"
        if engine.dialect.name == "sqlite":
            async with engine.connect() as other:
                await _no_wait(other)
                with pytest.raises(OperationalError, match="database is locked"):
                    async with other.begin():
                        await other.execute(update(counters).values(n=9))
        await session.commit()
        assert transactions.held() is None


async def test_each_task_knows_what_it_holds(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    assert transactions.held() is None
    async with sessions() as session:
        await session.execute(select(counters))
        assert transactions.held() == "read"
        # Another task holds nothing of this one's.
        assert await asyncio.create_task(_held()) is None
        await session.execute(update(counters).values(n=3))
        assert transactions.held() == "write"
        await session.rollback()
        assert transactions.held() is None
        await session.execute(select(counters))
        await session.commit()
    assert transactions.held() is None


async def _held() -> str | None:
    return transactions.held()


async def test_a_savepoint_begun_after_reads_survives_the_upgrade(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        assert (await session.scalar(select(counters.c.n))) == 0
        async with session.begin_nested() as nested:
            await session.execute(update(counters).values(n=7))
            await nested.rollback()
        await session.execute(insert(counters).values(name="b", n=1))
        await session.commit()
    async with engine.connect() as conn:
        rows = (await conn.execute(select(counters).order_by(counters.c.name))).all()
    assert [tuple(r) for r in rows] == [("a", 0), ("b", 1)]


async def test_the_guard_refuses_a_call_while_a_transaction_is_open(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        transactions.guard("nothing yet")  # no transaction begun
        await session.execute(select(counters))
        with pytest.raises(transactions.TransactionHeld, match="open read transaction"):
            transactions.guard("call out")
        await session.execute(text("UPDATE counters SET n = 4"))
        with pytest.raises(transactions.TransactionHeld, match="open write transaction"):
            transactions.guard("call out")
        await session.commit()
        transactions.guard("call out")


async def test_temporal_calls_inside_a_transaction_are_refused(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment
) -> None:
    target = temporal_env.client.service_client.config.target_host
    client = await Client.connect(target, interceptors=[TransactionGuardInterceptor()])
    sessions = session_factory(engine)
    handle = client.get_workflow_handle("no-such-workflow-for-the-guard")
    async with sessions() as session:
        await session.execute(update(counters).values(n=1))
        with pytest.raises(transactions.TransactionHeld, match="Temporal describe_workflow"):
            await handle.describe()
        with pytest.raises(transactions.TransactionHeld, match="Temporal list_workflows"):
            client.list_workflows("WorkflowId = 'x'")
        await session.commit()
    with pytest.raises(RPCError) as caught:  # reached the server: it does not exist
        await handle.describe()
    assert caught.value.status == RPCStatusCode.NOT_FOUND


async def test_a_write_that_cannot_have_the_lock_in_time_is_a_503_that_saves_nothing(
    settings: Settings, topology: Topology, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    migrate.upgrade(url)
    quick = settings.model_copy(update={"sqlite_busy_timeout": 0.2})
    async with running_api(quick, topology, url) as api:
        _, admin = await api.token("admin")
        body = {"name": "Busy", "slug": f"busy-{uuid.uuid4().hex[:6]}"}
        holder = create_engine(url)
        async with holder.connect() as conn:
            await conn.begin()  # another writer, holding on to the lock
            await conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
            # Reads go on meanwhile; the write waits its 0.2 s and gives up cleanly.
            assert (await api.client.get("/organizations", headers=admin)).status_code == 200
            busy = await api.client.post("/organizations", json=body, headers=admin)
            await conn.rollback()
        await holder.dispose()
        assert "nothing was saved" in assert_error(busy, 503, "database_busy")["message"]
        assert busy.headers["Retry-After"] == "1"
        listed = (await api.client.get("/organizations", headers=admin)).json()["items"]
        assert body["slug"] not in [o["slug"] for o in listed]
        again = await api.client.post("/organizations", json=body, headers=admin)
        assert again.status_code == 201, again.text
