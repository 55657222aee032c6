"""A promotion waiting for approval survives its worker being killed (SIGKILL) and the Temporal
server being restarted: its state lives in the server's (persistent) store, a new `idp worker`
answers its live query, and the approval given afterwards proceeds: the deploy runs and the
service answers with the new version. The API runs in the test process; the Temporal dev
server and the workers are real processes that are killed and started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import Client

from core.deploy.targets import DeployTargets
from core.models.promotions import ServiceDeployment
from core.settings import Settings
from core.temporal import search_attributes
from core.temporal.client import connect, find_temporal_cli
from core.topology import Topology, load_topology
from tests.e2e.stack import start_worker, worker_settings
from tests.helpers import free_port, wait_until
from tests.integration.promotion_helpers import PromotionStack, promotion_stack, stop_all
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.promotion import PROMOTIONS_QUEUE

pytestmark = pytest.mark.e2e

SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 30.0


class DevServer:
    """`temporal server start-dev` on a fixed port with its history in a SQLite file, so it can
    be stopped and started again with every workflow where it was."""

    def __init__(self, port: int, db_file: Path, log_file: Path) -> None:
        self.port = port
        self.db_file = db_file
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(find_temporal_cli()),
                    "server",
                    "start-dev",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--headless",
                    "--db-filename",
                    str(self.db_file),
                    "--log-level",
                    "error",
                    *search_attributes.dev_server_flags(),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def ready(self, settings: Settings, topology: Topology) -> Client:
        """A client (with the platform's codec) once the server answers its health check."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, (
                f"the Temporal dev server exited:\n{self.log_file.read_text()}"
            )
            try:
                client = await asyncio.wait_for(connect(settings, topology), timeout=5)
                if await client.service_client.check_health(timeout=timedelta(seconds=2)):
                    return client
            except Exception as exc:  # not listening yet, or still starting
                last = exc
            await asyncio.sleep(0.3)
        raise AssertionError(f"the Temporal dev server did not become ready: {last!r}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL when it takes too long)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_workers(settings: Settings, extra: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """`idp worker` processes on the promotions and notifications queues."""
    return [
        start_worker(settings, queue, extra) for queue in (PROMOTIONS_QUEUE, NOTIFICATIONS_QUEUE)
    ]


def sigkill(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # no graceful shutdown
        proc.wait(timeout=10)


async def slack_posted(stack: PromotionStack, method: str, text: str) -> None:
    async def found() -> bool:
        return any(r.ok and text in (r.text or "") for r in stack.slack.calls(method))

    await wait_until(f"{method} with {text!r}", found, timeout=30, every=0.2)


async def test_awaiting_approval_survives_worker_sigkill_and_server_restart(
    tmp_path: Path,
) -> None:
    server = DevServer(free_port(), tmp_path / "temporal.db", tmp_path / "temporal.log")
    settings = worker_settings(tmp_path / "data", server.address).model_copy(
        update={"rate_limit_enabled": False}
    )
    topology = load_topology(settings.temporal_config)
    assert settings.database_url is not None
    targets = DeployTargets(settings.deploy_root)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        server.start()
        client = await server.ready(settings, topology)
        async with promotion_stack(
            settings, topology, settings.database_url, client, tmp_path
        ) as stack:
            extra = {"SLACK_API_URL": stack.slack.base_url}
            workers += start_workers(settings, extra)
            world = await stack.world(prod_policy={"required_approvals": 1})
            approver = await stack.person("approver", teams=(world.approvers_team,))
            await stack.version(world, "1.0.0")
            await stack.promoted(world, "dev", "1.0.0")
            await stack.promoted(world, "staging", "1.0.0")

            pid = (await stack.deploy(world, "prod", "1.0.0"))["id"]  # requested by the admin
            waiting = await stack.until(pid, "awaiting_approval")
            assert waiting["live"] and waiting["approvals"] == 0, waiting
            await slack_posted(stack, "chat.postMessage", "Approval needed")

            # Kill the workers outright, then restart the Temporal server on its store.
            sigkill(workers)
            server.stop()
            server.start()
            await server.ready(settings, topology)
            workers += start_workers(settings, extra)

            # The new worker answers the live query with the state from before the restart.
            async def live() -> bool:
                waiting.update(await stack.promotion(pid))
                return bool(waiting["live"])

            await wait_until("the live state after the restart", live, timeout=60, every=0.5)
            assert waiting["status"] == "awaiting_approval", waiting
            assert waiting["approvals"] == 0 and waiting["required_approvals"] == 1, waiting

            approved = await stack.post(f"/promotions/{pid}/approve", {}, approver.headers)
            assert approved.status_code == 200, approved.text
            assert approved.json()["approvals"] == 1, approved.text

            done = await stack.finished(pid, timeout=60)
            assert done["status"] == "succeeded", done
            assert [d["decision"] for d in done["decisions"]] == ["approve"], done

            rows = await stack.api.fetch(
                select(ServiceDeployment).where(
                    ServiceDeployment.environment_id == uuid.UUID(world.envs["prod"]["id"])
                )
            )
            assert [(r.version, r.status) for r in rows] == [("1.0.0", "healthy")], rows
            async with httpx.AsyncClient() as http:
                answer = await http.get(rows[0].details["url"] + "/", timeout=5)
            assert answer.status_code == 200 and answer.text.startswith("1.0.0"), answer.text

            # The approval request in Slack was updated in place by the new worker.
            await slack_posted(stack, "chat.update", "Promotion approved")
    finally:
        sigkill(workers)
        server.stop()
        await stop_all(targets, settings.deploy_root)
