"""What a worker process builds once and hands to its activity classes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.db.engine import create_engine, session_factory
from core.security.encryption import KeyRing, install_keyring
from core.settings import Settings
from core.topology import Topology


@dataclass
class WorkerResources:
    settings: Settings
    topology: Topology
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def create(cls, settings: Settings, topology: Topology) -> WorkerResources:
        if settings.encryption_key is not None:  # for encrypted columns
            install_keyring(KeyRing.from_settings(settings))
        engine = create_engine(
            settings.effective_database_url,
            echo=settings.database_echo,
            busy_timeout=settings.sqlite_busy_timeout,
        )
        return cls(settings, topology, engine, session_factory(engine))

    async def close(self) -> None:
        await self.engine.dispose()
