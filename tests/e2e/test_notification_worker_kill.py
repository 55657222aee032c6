"""A notification survives its worker being killed (SIGKILL) during a retry backoff: the
retry lives on the Temporal server, and a new `idp worker` process delivers the message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from core.db.engine import create_engine, session_factory, transaction
from core.models.notifications import Notification, NotificationAttempt
from core.notifications.channels import ChannelService
from core.notifications.messages import NotificationRequest, NotificationSummary
from core.notifications.starter import start_notification
from core.settings import Settings
from core.temporal.client import connect
from core.topology import load_topology
from tests.e2e.stack import start_worker, worker_settings
from tests.standins.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e
SECRET = "whsec_kill_test_" + "k" * 24


async def failed_attempts(settings: Settings, request_id: uuid.UUID) -> int:
    engine = create_engine(settings.effective_database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            rows = await session.scalars(
                select(NotificationAttempt)
                .join(Notification, Notification.id == NotificationAttempt.notification_id)
                .where(
                    Notification.request_id == request_id, NotificationAttempt.status == "failed"
                )
            )
            return len(rows.all())
    finally:
        await engine.dispose()


async def test_sigkill_during_backoff_then_a_new_worker_delivers(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    address = temporal_env.client.service_client.config.target_host
    settings = worker_settings(tmp_path / "data", address)
    topology = load_topology(settings.temporal_config)
    engine = create_engine(settings.effective_database_url)
    workers: list[subprocess.Popen[bytes]] = []
    with WebhookReceiver(secret=SECRET) as receiver:
        try:
            async with transaction(session_factory(engine)) as session:
                created = await ChannelService(session).create(
                    type="webhook",
                    name="kill-test",
                    config={"url": receiver.url},
                    secrets={"signing_secret": SECRET},
                )
            receiver.respond_next(1, 500)
            client = await connect(settings, topology)  # encrypts, as the worker expects
            request = NotificationRequest(
                event="custom",
                context={"title": "survives", "message": "a killed worker"},
                channel_ids=[created.channel.id],
            )
            workers.append(start_worker(settings, "notifications"))
            workflow_id = await start_notification(client, request)
            for _ in range(600):  # the first attempt fails (500); the retry waits 2 s
                if await failed_attempts(settings, request.request_id) >= 1:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the first attempt never failed")
            os.killpg(workers[0].pid, signal.SIGKILL)  # no graceful shutdown
            workers[0].wait(timeout=10)
            assert receiver.accepted == []

            workers.append(start_worker(settings, "notifications"))
            handle = client.get_workflow_handle(workflow_id, result_type=NotificationSummary)
            summary = await asyncio.wait_for(handle.result(), timeout=120)
        finally:
            for proc in workers:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
            await engine.dispose()
        assert summary.count("delivered") == 1
        assert len(receiver.accepted) == 1 and receiver.accepted[0].signature_valid
        assert await failed_attempts(settings, request.request_id) == 1  # then the success
