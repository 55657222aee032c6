"""`make bench`: runs every benchmark against a fresh Temporal dev server and prints figures."""

from __future__ import annotations

import asyncio
import platform
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from bench import (
    api_latency,
    catalog_latency,
    notification_throughput,
    pipeline_latency,
    workflow_latency,
)
from core.db import migrate
from core.settings import Settings
from core.temporal.client import find_temporal_cli
from core.temporal.converter import data_converter
from core.temporal.interceptors import ContextPropagationInterceptor


async def main() -> None:
    machine = platform.processor() or platform.machine()
    print(f"# idp benchmarks on {machine}, Python {platform.python_version()}")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_temporal_cli()),
        data_converter=data_converter(),
        interceptors=[ContextPropagationInterceptor()],
        dev_server_log_level="error",
    )
    try:
        address = env.client.service_client.config.target_host
        data_dir = Path(tempfile.mkdtemp(prefix="idp-bench-wf-"))
        settings = Settings(  # its own SQLite file, whatever DATABASE_URL says
            data_dir=data_dir,
            temporal_address=address,
            database_url=f"sqlite+aiosqlite:///{data_dir / 'idp.db'}",
        )
        migrate.upgrade(settings.effective_database_url)
        await workflow_latency.run(env.client, settings)
        await notification_throughput.run(env.client, settings)
        await pipeline_latency.run(env.client, settings)
        await asyncio.to_thread(api_latency.run, address)
        # PostgreSQL (BENCH_DATABASE_URL); prints one line and goes on when it is not reachable.
        await asyncio.to_thread(catalog_latency.run, address)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
