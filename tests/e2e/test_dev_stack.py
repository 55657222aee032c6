"""`idp dev` as a new user meets it: everything answers, Ctrl-C leaves no process behind,
and a restart finds the earlier workflow history (the dev server's file persists)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core.local_secrets import with_local_secrets
from core.settings import PROJECT_ROOT, Settings
from core.temporal.client import connect
from core.topology import load_topology
from tests.helpers import free_port
from workers.dev import port_in_use
from workers.selfcheck import run_selfcheck
from workflows.selfcheck import SelfCheckResult

pytestmark = pytest.mark.e2e
START_TIMEOUT = 120


class Stack:
    def __init__(self, data_dir: Path, temporal_address: str | None = None) -> None:
        self.data_dir = data_dir
        self.temporal_address = temporal_address
        self.api_port, self.grpc_port, self.ui_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def settings(self) -> Settings:
        """What the stack's processes use, including its generated development secrets."""
        return with_local_secrets(
            Settings(
                data_dir=self.data_dir,
                temporal_dev_port=self.grpc_port,
                temporal_address=self.temporal_address,
            )
        )

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "workers.cli",
            "--set",
            f"IDP_DATA_DIR={self.data_dir}",
            "--set",
            f"API_PORT={self.api_port}",
            "--set",
            f"TEMPORAL_DEV_PORT={self.grpc_port}",
            "--set",
            f"TEMPORAL_UI_PORT={self.ui_port}",
            *(
                ["--set", f"TEMPORAL_ADDRESS={self.temporal_address}"]
                if self.temporal_address
                else []
            ),
            "dev",
        ]

    @staticmethod
    def env() -> dict[str, str]:
        """The caller's environment without settings that would redirect the stack."""
        return {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IDP_", "TEMPORAL_", "API_")) and k != "DATABASE_URL"
        }

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv(),
            cwd=PROJECT_ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"idp dev exited:\n{self.process.stdout.read()}"  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.api}/api/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("idp dev did not become ready")

    def interrupt(self) -> str:
        """Ctrl-C: SIGINT to idp dev, as a terminal sends it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, output
        return output

    def leftovers(self) -> list[str]:
        """Processes whose command line names this stack's data dir or ports."""
        marks = (str(self.data_dir), f"--port {self.grpc_port}")
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                found.append(f"{proc.name}: {cmdline}")
        return found


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
        f"(another `idp dev`?) or choose another with --set API_PORT=PORT"
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
