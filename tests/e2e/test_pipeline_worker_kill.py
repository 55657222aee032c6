"""A pipeline run survives its worker being killed (SIGKILL) in the middle of a step: the step's
lines stored before the kill stay, a new `idp worker` runs the step again (the log says so),
and the run completes with every line of the new attempt, in order, numbered without gaps
or repeats."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core.db.engine import create_engine, session_factory, transaction
from core.models.pipelines import PipelineLogChunk, PipelineRun, PipelineStep
from core.pipelines.dispatch import run_labels, start_run
from core.pipelines.pipelines import PipelineFields, PipelineService
from core.pipelines.runs import RunRequest, RunService
from core.settings import PROJECT_ROOT
from core.temporal.client import connect
from core.topology import load_topology
from tests.e2e.stack import start_worker, worker_settings
from tests.helpers import seed_service, wait_until
from tests.integration.pipeline_helpers import make_repo
from workflows.pipeline_run import PIPELINES_QUEUE

pytestmark = pytest.mark.e2e

LINES = 30
PIPELINE = f"""\
stages:
  - name: build
    steps:
      - name: count
        run: |
          i=1
          while [ $i -le {LINES} ]; do echo line-$i; i=$((i+1)); sleep 0.1; done
"""


def fast_heartbeats(tmp_path: Path) -> Path:
    """temporal.yaml with a 2 s step heartbeat timeout, so a lost worker shows in seconds."""
    text = (PROJECT_ROOT / "temporal.yaml").read_text()
    marker = "  pipeline_step:\n    start_to_close_timeout: 6h\n    heartbeat_timeout: 30s\n"
    assert marker in text
    path = tmp_path / "temporal.yaml"
    path.write_text(text.replace(marker, marker.replace("30s", "2s")))
    return path


async def test_sigkill_mid_step_and_a_new_worker_completes_the_run_with_the_logs_whole(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    address = temporal_env.client.service_client.config.target_host
    settings = worker_settings(tmp_path / "data", address)
    repo = tmp_path / "repo"
    make_repo(repo, {".idp/pipeline.yaml": PIPELINE})
    url = f"https://github.com/acme-{uuid.uuid4().hex[:8]}/app"
    extra = {
        "GIT_URL_REWRITES": f"{url}=file://{repo}",
        "IDP_TEMPORAL_CONFIG": str(fast_heartbeats(tmp_path)),
    }
    topology = load_topology(settings.temporal_config)
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)

    async def rows(stmt: Any) -> list[Any]:
        async with transaction(sessions) as session:
            return list(await session.scalars(stmt))

    async def lines(run_id: uuid.UUID) -> list[dict[str, Any]]:
        chunks = await rows(
            select(PipelineLogChunk)
            .where(PipelineLogChunk.run_id == run_id)
            .order_by(PipelineLogChunk.id)
        )
        return [line for chunk in chunks for line in chunk.lines]

    async def status(run_id: uuid.UUID) -> str:
        [found] = await rows(select(PipelineRun.status).where(PipelineRun.id == run_id))
        return str(found)

    workers: list[subprocess.Popen[bytes]] = []
    client = await connect(settings, topology)
    try:
        async with transaction(sessions) as session:
            service = await seed_service(session, repository_url=url)
            pipeline = await PipelineService(session).create(
                service, PipelineFields(name="ci", source="repository")
            )
            run, _ = await RunService(session).create(
                pipeline, RunRequest(trigger_type="manual", ref="main", branch="main")
            )
            labels = await run_labels(session, [run])
        await start_run(client, run, labels[run.id])
        workers.append(start_worker(settings, PIPELINES_QUEUE, extra))

        async def some_lines() -> bool:
            return len(await lines(run.id)) >= 8

        await wait_until("the step's first lines", some_lines)
        os.killpg(workers[0].pid, signal.SIGKILL)  # no graceful shutdown
        workers[0].wait(timeout=10)
        before = await lines(run.id)
        assert 8 <= len(before) < LINES

        workers.append(start_worker(settings, PIPELINES_QUEUE, extra))

        async def finished() -> bool:
            return await status(run.id) in ("succeeded", "failed", "cancelled")

        await wait_until("the run to finish", finished, timeout=90)
        assert await status(run.id) == "succeeded"
        after = await lines(run.id)
        [step] = await rows(select(PipelineStep).where(PipelineStep.run_id == run.id))
    finally:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(run.workflow_id).terminate("test over")
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        await engine.dispose()

    assert step.status == "succeeded" and step.exit_code == 0
    assert after[: len(before)] == before  # nothing stored before the kill was lost
    seqs = [line["seq"] for line in after]
    assert seqs == list(range(1, len(after) + 1))  # in order, no gap, no repeat
    notice = next(i for i, line in enumerate(after) if line["stream"] == "system")
    assert "attempt 2" in after[notice]["text"]
    retried = [line["text"] for line in after[notice + 1 :] if line["stream"] == "stdout"]
    assert retried == [f"line-{i}" for i in range(1, LINES + 1)]
