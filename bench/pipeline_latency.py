"""Pipeline start latency and completion (issue 6), on the Temporal dev server with real git.

1. **Webhook → first step's process.** A signed GitHub push webhook is POSTed over real HTTP
   to the API (uvicorn); its pipeline's first step prints `date +%s%N`, taken in the step's
   own process (in the sandbox, which writes nothing outside the run's workspace; read from
   the run's log once it ends). Latency: from just before the POST to that timestamp. One
   webhook at a time (each run finishes before the next), `BENCH_WEBHOOKS` (default 100).
2. **The floor, in the same run:** a bare workflow whose one activity starts the same
   `date` process, from just before `start_workflow` to the timestamp.
3. **50 concurrent three-step runs:** 50 webhooks at once; how many runs succeed, and how long
   until the last one ends.

Everything runs in this process (API, workers, floor worker) on a throw-away SQLite file.
Alone: `python -m bench.pipeline_latency`."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from bench.server import run_alone
from bench.stats import report, summary
from core.db import migrate
from core.db.engine import transaction
from core.local_secrets import with_local_secrets
from core.models.pipelines import PipelineLogChunk, PipelineRun
from core.pipelines.pipelines import PipelineFields, PipelineService
from core.settings import Settings
from core.temporal.client import connect
from core.topology import load_topology
from tests.helpers import seed_service
from tests.integration.pipeline_helpers import github_delivery, make_repo, push_payload
from workers.resources import WorkerResources
from workers.runner import build_workers

WEBHOOKS = int(os.environ.get("BENCH_WEBHOOKS", "100"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT_RUNS", "50"))
SECRET = "bench-webhook-secret"
MARK = "date +%s%N"  # printed: a sandboxed step writes nothing outside its workspace


def _push(owner: str, sha: str, message: str, branch: str = "main") -> dict[str, Any]:
    """A push of its own: deliveries are deduplicated by their body, so each differs."""
    payload = push_payload(owner, "app", sha, branch=branch)
    payload["head_commit"]["message"] = message
    return payload


@activity.defn(name="bench.start_process")
async def start_process(path: str) -> None:
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"date +%s%N > {path}")
    await proc.wait()


@workflow.defn(sandboxed=False)
class OneProcessWorkflow:
    @workflow.run
    async def run(self, path: str) -> None:
        await workflow.execute_activity(
            start_process, path, start_to_close_timeout=timedelta(seconds=30)
        )


def definition(steps: int) -> str:
    lines = ["stages:"]
    for i in range(steps):
        run = MARK if i == 0 else f"echo step-{i}"
        lines += [
            f"  - name: s{i}",
            "    steps:",
            f"      - name: step{i}",
            f"        run: '{run}'",
        ]
    return "\n".join(lines) + "\n"


async def _setup(sessions: async_sessionmaker[AsyncSession], url: str) -> None:
    """A team, a service on `url`, and two push-triggered pipelines (1 and 3 steps) on
    different branches."""
    async with transaction(sessions) as session:
        service = await seed_service(session, repository_url=url)
        for name, steps, branch in (("latency", 1, "main"), ("three", 3, "load")):
            await PipelineService(session).create(
                service,
                PipelineFields(
                    name=name,
                    definition=definition(steps),
                    triggers={"push": {"branches": [branch]}},
                ),
            )


async def _wait_for(path: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no mark at {path}")
        await asyncio.sleep(0.002)
    return int(path.read_text())


async def _first_line(sessions: async_sessionmaker[AsyncSession], run_id: str) -> int:
    """The first log line of a finished run: its first step's `date +%s%N`."""
    async with transaction(sessions) as session:
        lines = await session.scalar(
            select(PipelineLogChunk.lines)
            .where(PipelineLogChunk.run_id == uuid.UUID(run_id))
            .order_by(PipelineLogChunk.id)
            .limit(1)
        )
    if not lines:
        raise RuntimeError(f"run {run_id} logged nothing")
    return int(lines[0]["text"])


async def _finished(
    sessions: async_sessionmaker[AsyncSession], run_ids: list[str], timeout: float
) -> dict[str, str]:
    """Run id -> status, once every run has ended (or at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        async with transaction(sessions) as session:
            rows = await session.execute(
                select(PipelineRun.id, PipelineRun.status).where(
                    PipelineRun.id.in_([uuid.UUID(r) for r in run_ids])
                )
            )
            status = {str(run_id): value for run_id, value in rows}
        done = {k: v for k, v in status.items() if v in ("succeeded", "failed", "cancelled")}
        if len(done) == len(run_ids) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)


async def run(_: Client, base: Settings) -> None:
    """`_` (the dev server's plain client) is not used: workers and the floor use a client
    with the API's payload codec, as deployed workers do."""
    work = Path(tempfile.mkdtemp(prefix="idp-bench-pipelines-"))
    marks = work / "marks"
    marks.mkdir()
    repo = work / "repo"
    sha = make_repo(repo, {"README.md": "bench\n"})
    owner = f"bench-{uuid.uuid4().hex[:6]}"
    url = f"https://github.com/{owner}/app"
    settings = with_local_secrets(
        base.model_copy(
            update={
                "github_webhook_secret": SecretStr(SECRET),
                "git_url_rewrites": {url: f"file://{repo}"},
                "rate_limit_enabled": False,
            }
        )
    )
    migrate.upgrade(settings.effective_database_url)
    topology = load_topology(settings.temporal_config)
    resources = WorkerResources.create(settings, topology)
    await _setup(resources.sessions, url)
    client = await connect(settings, topology)
    floor_queue = f"floor-{uuid.uuid4().hex[:6]}"
    workers = [
        *build_workers(client, resources, ["pipelines"]),
        Worker(
            client,
            task_queue=floor_queue,
            workflows=[OneProcessWorkflow],
            activities=[start_process],
        ),
    ]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, topology), log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    for w in workers:
        await w.__aenter__()
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            pipeline_ms, floor_ms = [], []
            for i in range(WEBHOOKS + 5):
                body, headers = github_delivery(_push(owner, sha, f"push {i}"), secret=SECRET)
                t0 = time.time_ns()
                answer = await http.post("/webhooks/github", content=body, headers=headers)
                answer.raise_for_status()
                run_id = answer.json()["runs"][0]["id"]
                await _finished(resources.sessions, [run_id], 60)
                started = await _first_line(resources.sessions, run_id)
                path = marks / f"floor-{i}"
                f0 = time.time_ns()
                await client.execute_workflow(
                    OneProcessWorkflow.run,
                    str(path),
                    id=f"floor-{uuid.uuid4()}",
                    task_queue=floor_queue,
                )
                floor_started = await _wait_for(path)
                if i >= 5:  # warm-up
                    pipeline_ms.append((started - t0) / 1e6)
                    floor_ms.append((floor_started - f0) / 1e6)
            report("floor: workflow + 1 activity -> process", floor_ms)
            report("webhook -> first step process started", pipeline_ms, floor_ms)
            s = summary(pipeline_ms)
            print(
                f"{'  (webhook -> first step)':<44} median={s['p50']:.1f}ms "
                f"p95={s['p95']:.1f}ms max={max(pipeline_ms):.1f}ms "
                f"ratio p50 x{s['p50'] / summary(floor_ms)['p50']:.2f}",
                flush=True,
            )

            load_t0 = time.perf_counter()
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/webhooks/github",
                        content=(
                            d := github_delivery(
                                _push(owner, sha, f"load {n}", branch="load"), secret=SECRET
                            )
                        )[0],
                        headers=d[1],
                    )
                    for n in range(CONCURRENT)
                )
            )
            run_ids = [a.json()["runs"][0]["id"] for a in answers if a.status_code == 202]
            status = await _finished(resources.sessions, run_ids, 600)
            elapsed = time.perf_counter() - load_t0
            ok = sum(1 for v in status.values() if v == "succeeded")
            print(
                f"{CONCURRENT} concurrent three-step runs: {ok}/{CONCURRENT} succeeded "
                f"({100 * ok / CONCURRENT:.0f}%), last finished after {elapsed:.1f}s",
                flush=True,
            )
    finally:
        for w in reversed(workers):
            await w.__aexit__(None, None, None)
        server.should_exit = True
        await serving
        await resources.close()


if __name__ == "__main__":
    asyncio.run(run_alone(run))
