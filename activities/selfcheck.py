"""Self-check activities: is every task queue served, does the database answer at the
expected schema revision. Used by `SelfCheckWorkflow` (on start-up and on a schedule)."""

from __future__ import annotations

import os
import socket
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.db.migrate import schema_status


class PingResult(BaseModel):
    task_queue: str
    worker: str
    at: datetime


class DatabaseStatus(BaseModel):
    ok: bool
    dialect: str
    revision: str | None
    expected_revision: str | None
    error: str | None = None


def worker_identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


class PingActivities:
    """Registered on every task queue: answering proves a worker serves that queue."""

    @activity.defn(name="selfcheck.ping")
    async def ping(self) -> PingResult:
        info = activity.info()
        return PingResult(
            task_queue=info.task_queue, worker=worker_identity(), at=info.started_time
        )


class SelfCheckActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], task_queues: list[str]) -> None:
        self._sessions = sessions
        self._task_queues = task_queues

    @activity.defn(name="selfcheck.task_queues")
    async def task_queues(self) -> list[str]:
        return list(self._task_queues)

    @activity.defn(name="selfcheck.database")
    async def database(self) -> DatabaseStatus:
        async with self._sessions() as session:
            connection = await session.connection()
            status = await schema_status(connection)
        return DatabaseStatus(
            ok=status.problem is None,
            dialect=connection.dialect.name,
            revision=status.revision,
            expected_revision=status.expected,
            error=status.problem,
        )
