"""The Temporal dev server and settings every benchmark runs on: a throw-away data dir with
its own SQLite file (whatever DATABASE_URL says), the platform's payload codec."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.temporal import search_attributes
from core.temporal.client import find_temporal_cli
from core.temporal.converter import data_converter
from core.temporal.interceptors import ContextPropagationInterceptor


@asynccontextmanager
async def bench_server(prefix: str = "idp-bench-") -> AsyncIterator[tuple[Client, Settings]]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_temporal_cli()),
        data_converter=data_converter(),
        interceptors=[ContextPropagationInterceptor()],
        dev_server_log_level="error",
        search_attributes=search_attributes.ALL,
    )
    try:
        data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        yield (
            env.client,
            Settings(
                data_dir=data_dir,
                temporal_address=env.client.service_client.config.target_host,
                database_url=f"sqlite+aiosqlite:///{data_dir / 'idp.db'}",
            ),
        )
    finally:
        await env.shutdown()


async def run_alone(run: Callable[[Client, Settings], Awaitable[None]]) -> None:
    """One benchmark by itself (`python -m bench.<name>`)."""
    async with bench_server() as (client, settings):
        await run(client, settings)
