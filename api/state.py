"""What the API process builds once at start-up and shares between requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.db.engine import create_engine, session_factory
from core.errors import ConfigError, Unavailable
from core.settings import Settings
from core.temporal.client import connect, connect_options
from core.topology import Topology

TEMPORAL_CONNECT_TIMEOUT = 5.0


@dataclass
class TemporalConnector:
    """Connects on first use and again after a failure, so the API starts without Temporal."""

    settings: Settings
    topology: Topology
    _client: Client | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    target = connect_options(self.settings, self.topology).target
                except ConfigError as exc:
                    raise Unavailable(f"Temporal is not configured correctly: {exc}") from None
                try:
                    self._client = await asyncio.wait_for(
                        connect(self.settings, self.topology), TEMPORAL_CONNECT_TIMEOUT
                    )
                except (TimeoutError, RuntimeError, OSError) as exc:
                    raise Unavailable(
                        f"Temporal is not reachable at {target}",
                        details={"reason": str(exc).splitlines()[0] if str(exc) else "timeout"},
                    ) from None
        return self._client


@dataclass
class AppState:
    settings: Settings
    topology: Topology
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: TemporalConnector

    @classmethod
    def create(cls, settings: Settings, topology: Topology) -> AppState:
        engine = create_engine(
            settings.effective_database_url,
            echo=settings.database_echo,
            busy_timeout=settings.sqlite_busy_timeout,
        )
        return cls(
            settings,
            topology,
            engine,
            session_factory(engine),
            TemporalConnector(settings, topology),
        )

    async def close(self) -> None:
        await self.engine.dispose()
