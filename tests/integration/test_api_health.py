"""Readiness against a real database and a real Temporal server."""

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.settings import Settings
from core.topology import Topology
from tests.helpers import free_port, http_client


async def readiness(settings: Settings, topology: Topology) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with http_client(create_app(settings, topology)) as client:
        response = await client.get("/api/health/ready")
    return response.status_code, response.json()


async def test_ready_when_database_and_temporal_answer(
    settings: Settings, topology: Topology, database_url: str, temporal_env: WorkflowEnvironment
) -> None:
    target = temporal_env.client.service_client.config.target_host
    status, body = await readiness(
        settings.model_copy(update={"database_url": database_url, "temporal_address": target}),
        topology,
    )
    assert status == 200, body
    assert body["status"] == "ok"
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "database": "ok",
        "temporal": "ok",
    }


async def test_not_ready_on_empty_database_and_absent_temporal(
    settings: Settings, topology: Topology, tmp_path: Path
) -> None:
    status, body = await readiness(
        settings.model_copy(
            update={
                "database_url": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}",
                "temporal_address": f"127.0.0.1:{free_port()}",
            }
        ),
        topology,
    )
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["detail"] == "database has no schema yet: run `idp migrate`"
    assert body["checks"]["temporal"]["status"] == "unavailable"
    assert "Temporal is not reachable at 127.0.0.1:" in body["checks"]["temporal"]["detail"]
