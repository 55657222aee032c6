"""A health monitor survives its worker being killed (SIGKILL): its state and its timer live on
the Temporal server, and a new `idp worker` process keeps probing, carrying the failure count,
so the transitions healthy -> degraded -> unhealthy -> healthy come out whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core.catalog.health import CheckFields, HealthCheckService
from core.catalog.health_messages import ProbeConfig
from core.catalog.health_starter import monitor_input, start_monitor
from core.db.engine import create_engine, session_factory, transaction
from core.models.catalog import HealthCheck, HealthCheckResult, HealthTransition
from core.temporal.client import connect
from core.topology import load_topology
from tests.e2e.stack import start_worker, worker_settings
from tests.helpers import seed_service, wait_until
from tests.standins.http_target import HttpTarget
from workflows.health_monitor import HEALTH_QUEUE, workflow_id_for

pytestmark = pytest.mark.e2e


async def test_sigkill_the_worker_and_a_new_one_keeps_probing(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    address = temporal_env.client.service_client.config.target_host
    settings = worker_settings(tmp_path / "data", address)
    topology = load_topology(settings.temporal_config)
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)

    async def scalar(stmt: Any) -> Any:
        async with transaction(sessions) as session:
            return await session.scalar(stmt)

    async def results(check_id: uuid.UUID) -> int:
        stmt = select(func.count()).select_from(HealthCheckResult)
        return int(await scalar(stmt.where(HealthCheckResult.check_id == check_id)) or 0)

    async def status(check_id: uuid.UUID) -> str:
        return str(await scalar(select(HealthCheck.status).where(HealthCheck.id == check_id)))

    workers: list[subprocess.Popen[bytes]] = []
    client = await connect(settings, topology)  # encrypts, as the worker expects
    with HttpTarget() as target:
        try:
            async with transaction(sessions) as session:
                service = await seed_service(session, name="payments")
                check = await HealthCheckService(session).create(
                    service,
                    CheckFields(name="live", endpoint=target.url, interval_seconds=5),
                )
            # Probe twice a second (the API's minimum is 5 s; the input may go lower).
            fast = monitor_input(check)
            config: ProbeConfig = fast.config.model_copy(
                update={"interval_seconds": 0.5, "timeout_seconds": 0.4, "failure_threshold": 3}
            )
            await start_monitor(
                client, fast.model_copy(update={"config": config, "min_interval_seconds": 0.1})
            )
            workers.append(start_worker(settings, HEALTH_QUEUE))
            await wait_until("healthy", lambda: _is(status(check.id), "healthy"))

            target.status = 503
            await wait_until("one failure", lambda: _is(status(check.id), "degraded"))
            os.killpg(workers[0].pid, signal.SIGKILL)  # no graceful shutdown
            workers[0].wait(timeout=10)
            before = await results(check.id)
            await asyncio.sleep(1.5)  # three intervals with no worker: nothing probes
            assert await results(check.id) == before

            workers.append(start_worker(settings, HEALTH_QUEUE))
            await wait_until("unhealthy", lambda: _is(status(check.id), "unhealthy"))
            assert await results(check.id) > before
            target.status = 200
            await wait_until("healthy again", lambda: _is(status(check.id), "healthy"))
        finally:
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(workflow_id_for(check.id)).terminate("test over")
            for proc in workers:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
        async with transaction(sessions) as session:
            rows = await session.scalars(
                select(HealthTransition)
                .where(HealthTransition.check_id == check.id)
                .order_by(HealthTransition.at, HealthTransition.id)
            )
            path = [(t.from_status, t.to_status) for t in rows]
        await engine.dispose()
    assert path == [
        ("unknown", "healthy"),
        ("healthy", "degraded"),
        ("degraded", "unhealthy"),
        ("unhealthy", "healthy"),
    ]


async def _is(value: Awaitable[str], wanted: str) -> bool:
    return await value == wanted
