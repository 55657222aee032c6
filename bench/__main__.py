"""`make bench`: runs every benchmark against a fresh Temporal dev server and prints figures."""

from __future__ import annotations

import asyncio
import platform

from bench import (
    api_latency,
    catalog_latency,
    cost_latency,
    db_contention,
    notification_throughput,
    pipeline_latency,
    promotion_latency,
    workflow_latency,
)
from bench.server import bench_server
from core.db import migrate


async def main() -> None:
    machine = platform.processor() or platform.machine()
    print(f"# idp benchmarks on {machine}, Python {platform.python_version()}")
    async with bench_server("idp-bench-wf-") as (client, settings):
        address = settings.temporal_address
        assert address is not None
        migrate.upgrade(settings.effective_database_url)
        await workflow_latency.run(client, settings)
        await notification_throughput.run(client, settings)
        await pipeline_latency.run(client, settings)
        await promotion_latency.run(client, settings)
        await asyncio.to_thread(api_latency.run, address)
        await asyncio.to_thread(db_contention.run, address)
        # PostgreSQL (BENCH_DATABASE_URL); prints one line and goes on when it is not reachable.
        await asyncio.to_thread(catalog_latency.run, address)
        await asyncio.to_thread(cost_latency.run, address)


if __name__ == "__main__":
    asyncio.run(main())
