"""`idp dev` as a new user meets it: everything answers, Ctrl-C leaves no process behind,
and a restart finds the earlier workflow history (the dev server's file persists)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core.settings import PROJECT_ROOT
from core.temporal.client import connect
from core.topology import load_topology
from tests.e2e.stack import Stack
from workers.dev import port_in_use
from workers.selfcheck import run_selfcheck
from workflows.selfcheck import SelfCheckResult

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "data")
    yield s
    if s.process and s.process.poll() is None:
        s.process.kill()
        s.process.wait()


def selfcheck(stack: Stack, workflow_id: str) -> SelfCheckResult:
    settings = stack.settings()
    return asyncio.run(
        run_selfcheck(settings, load_topology(settings.temporal_config), workflow_id)
    )


def workflow_status(stack: Stack, workflow_id: str) -> WorkflowExecutionStatus | None:
    async def go() -> WorkflowExecutionStatus | None:
        settings = stack.settings()
        client = await connect(settings, load_topology(settings.temporal_config))
        return (await client.get_workflow_handle(workflow_id).describe()).status

    return asyncio.run(go())


def test_dev_stack_answers_stops_cleanly_and_keeps_history(stack: Stack) -> None:
    stack.start()
    ready = httpx.get(f"{stack.api}/api/health/ready").json()
    assert ready["checks"]["database"]["status"] == "ok"
    assert ready["checks"]["temporal"]["status"] == "ok"
    assert httpx.get(f"{stack.api}/api/health").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{stack.ui_port}/").status_code == 200
    assert httpx.get(f"{stack.api}/docs").status_code == 200
    assert "/api/health/ready" in httpx.get(f"{stack.api}/openapi.json").json()["paths"]

    workflow_id = f"e2e-selfcheck-{uuid.uuid4()}"
    result = selfcheck(stack, workflow_id)
    assert result.ok and len(result.queues) == 7

    output = stack.interrupt()
    assert "Internal Developer Platform is running" in output
    assert "idp dev: stopped" in output
    assert stack.leftovers() == []
    assert (stack.data_dir / "temporal.db").exists()

    stack.start()  # a restart finds the earlier run in the persisted history
    assert workflow_status(stack, workflow_id) == WorkflowExecutionStatus.COMPLETED
    stack.interrupt()
    assert stack.leftovers() == []


def test_port_in_use_stops_before_starting_anything(stack: Stack) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.api_port))
        holder.listen()
        result = subprocess.run(
            stack.argv(),
            cwd=PROJECT_ROOT,
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"idp: error: port {stack.api_port} (API_PORT) is already in use; stop what holds it "
        f"(another `idp dev`?) or choose another: `API_PORT={stack.api_port + 1} make run`, "
        f"or `idp --set API_PORT={stack.api_port + 1} dev`"
    )
    assert stack.leftovers() == []
    assert not (stack.data_dir / "temporal.db").exists()


async def test_external_cluster_starts_no_dev_server(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    """With TEMPORAL_ADDRESS set, `idp dev` uses that cluster and starts no dev server."""
    cluster = temporal_env.client.service_client.config.target_host
    stack = Stack(tmp_path / "data", temporal_address=cluster)
    try:
        await asyncio.to_thread(stack.start)
        ready = httpx.get(f"{stack.api}/api/health/ready").json()
        assert ready["checks"]["temporal"]["status"] == "ok"
        assert not port_in_use("127.0.0.1", stack.ui_port)  # no UI: no dev server of its own
        assert not any("server start-dev" in p for p in stack.leftovers())
        workflow_id = f"e2e-external-{uuid.uuid4()}"
        await asyncio.to_thread(selfcheck, stack, workflow_id)
        # the run is in the external cluster's history
        described = await temporal_env.client.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        output = await asyncio.to_thread(stack.interrupt)
        assert "(external cluster)" in output
        assert stack.leftovers() == []
    finally:
        if stack.process and stack.process.poll() is None:
            stack.process.kill()
