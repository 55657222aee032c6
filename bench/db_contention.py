"""Authenticated reads while writers run, on the embedded SQLite database.

SQLite has one write lock. A transaction that takes it at its start (`BEGIN IMMEDIATE`) makes
every other transaction wait, reads included; one that begins deferred and takes it only at its
first write (core/db/transactions.py) lets reads run alongside the writer (WAL).

`GET /auth/me` with an access token and with an API key, sequential over real HTTP as in
bench/api_latency.py, each for BENCH_CONTENTION_SECONDS (default 3) per figure, three ways:

- **idle**: nothing else runs;
- **API writes**: BENCH_API_WRITERS (default 4) concurrent clients of the same API each PATCH
  their own team's description in a loop (authentication, the team's read, the update and its
  audit entry: one request's transaction);
- **log writes**: a separate process appends pipeline log chunks to the same SQLite file, one
  chunk per short transaction as a step's log sink does (activities/pipelines.py), from
  BENCH_LOG_WRITERS (default 8, a pipelines worker's concurrent steps) tasks that write as
  fast as they can (a chatty step; BENCH_LOG_PAUSE_MS between writes paces them).

Prints p50/p95/max of the reads (ratios to the idle figure), their errors (non-2xx answers
and failed requests are counted, not raised), and the writers' throughput and latency.
Alone: `.venv/bin/python -m bench.db_contention`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import core.db.engine
from bench.api_latency import _serve, api_env, credentials
from bench.stats import percentile
from core.db import migrate
from core.settings import PROJECT_ROOT
from tests.helpers import free_port

SECONDS = float(os.environ.get("BENCH_CONTENTION_SECONDS", "3"))
API_WRITERS = int(os.environ.get("BENCH_API_WRITERS", "4"))
LOG_WRITERS = int(os.environ.get("BENCH_LOG_WRITERS", "8"))
LOG_PAUSE_MS = float(os.environ.get("BENCH_LOG_PAUSE_MS", "0"))
WARMUP = 20
TIMEOUT = 120.0  # a read that waits for the lock is a slow read, not a failed one


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def _figures(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(samples_ms, 50),
        "p95": percentile(samples_ms, 95),
        "max": max(samples_ms),
    }


def _errors(errors: Counter[str]) -> str:
    if not errors:
        return ""
    return "  errors: " + ", ".join(f"{n} x {what}" for what, n in errors.most_common())


def report(name: str, samples: Samples, idle: Samples | None = None) -> None:
    """bench.stats.report's line with the max instead of p99, and ratios to the idle figure."""
    if not samples.ms:
        print(f"{name:<48} n=0{_errors(samples.errors)}", flush=True)
        return
    s = _figures(samples.ms)
    line = f"{name:<48} n={len(samples.ms):<5} " + " ".join(f"{k}={v:8.2f}ms" for k, v in s.items())
    if idle is not None and idle.ms:
        i = _figures(idle.ms)
        line += "  idle x" + "/x".join(f"{s[k] / i[k]:.2f}" for k in ("p50", "p95", "max"))
    print(line + _errors(samples.errors), flush=True)


def _reads(url: str, headers: dict[str, str], seconds: float = SECONDS) -> Samples:
    """Sequential GETs for `seconds`; every answer's time counts, a non-2xx one as an error."""
    out = Samples()
    with httpx.Client(headers=headers, timeout=TIMEOUT) as client:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                out.errors[type(exc).__name__] += 1
                continue
            out.ms.append((time.perf_counter() - started) * 1000)
            if response.is_error:
                out.errors[_describe(response)] += 1
    return out


def _describe(response: httpx.Response) -> str:
    try:
        detail = response.json().get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        detail = response.text[:80]
    return f"{response.status_code} {detail}".strip()


# -- the writers: each a process of its own, so that the reader's client shares no CPU time
# slice (GIL) with them; it prints "ready", writes until its stdin closes, then prints a JSON
# summary.


def _finish(started: float, samples: Samples) -> None:
    elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "ms": samples.ms, "errors": dict(samples.errors)}))
    sys.stdout.flush()


async def _until_stdin_closes() -> None:
    await asyncio.to_thread(sys.stdin.read)


async def _api_writers(base: str, token: str, team_ids: list[str]) -> None:
    samples = Samples()
    stop = asyncio.Event()

    async def write(client: httpx.AsyncClient, team_id: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                response = await client.patch(
                    f"{base}/teams/{team_id}", json={"description": f"bench write {n}"}
                )
            except httpx.HTTPError as exc:
                samples.errors[type(exc).__name__] += 1
                continue
            if response.is_error:
                samples.errors[_describe(response)] += 1
            else:
                samples.ms.append((time.perf_counter() - started) * 1000)

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT) as client:
        print("ready", flush=True)
        started = time.perf_counter()
        tasks = [asyncio.create_task(write(client, team_id)) for team_id in team_ids]
        await _until_stdin_closes()
        stop.set()
        await asyncio.gather(*tasks)
    _finish(started, samples)


async def _log_writers(database_url: str, writers: int, pause_ms: float) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from core.db.engine import create_engine, session_factory, transaction
    from core.models.catalog import Service
    from core.models.identity import Organization, Team
    from core.models.pipelines import (
        Pipeline,
        PipelineLogChunk,
        PipelineRun,
        PipelineStage,
        PipelineStep,
    )

    engine = create_engine(database_url)
    sessions = session_factory(engine)
    suffix = uuid.uuid4().hex[:8]
    async with transaction(sessions) as session:
        org = Organization(name="Bench logs", slug=f"bench-logs-{suffix}")
        session.add(org)
        await session.flush()
        team = Team(org_id=org.id, name="Bench logs", slug="bench-logs")
        session.add(team)
        await session.flush()
        service = Service(org_id=org.id, owner_team_id=team.id, name=f"bench-logs-{suffix}")
        session.add(service)
        await session.flush()
        pipeline = Pipeline(service_id=service.id, name="build")
        session.add(pipeline)
        await session.flush()
        run = PipelineRun(
            pipeline_id=pipeline.id, number=1, trigger_type="manual", workflow_id=f"bench-{suffix}"
        )
        session.add(run)
        await session.flush()
        stage = PipelineStage(run_id=run.id, name="build", position=0)
        session.add(stage)
        await session.flush()
        steps = [
            PipelineStep(stage_id=stage.id, run_id=run.id, name=f"s{i}", position=i, command="make")
            for i in range(writers)
        ]
        session.add_all(steps)
    run_id, step_ids = run.id, [step.id for step in steps]

    samples = Samples()
    stop = asyncio.Event()

    async def write(step_id: uuid.UUID) -> None:
        seq = 0
        while not stop.is_set():
            lines = [
                {"seq": seq + i, "at": "2026-01-01T00:00:00+00:00", "stream": "stdout", "text": t}
                for i, t in enumerate(["compiling module"] * 10, start=1)
            ]
            started = time.perf_counter()
            try:
                async with transaction(sessions) as session:
                    session.add(
                        PipelineLogChunk(
                            run_id=run_id,
                            step_id=step_id,
                            first_seq=seq + 1,
                            last_seq=seq + 10,
                            lines=lines,
                        )
                    )
            except SQLAlchemyError as exc:
                samples.errors[str(exc.orig if hasattr(exc, "orig") else exc)[:80]] += 1
            else:
                samples.ms.append((time.perf_counter() - started) * 1000)
            seq += 10
            if pause_ms:
                await asyncio.sleep(pause_ms / 1000)

    print("ready", flush=True)
    started = time.perf_counter()
    tasks = [asyncio.create_task(write(step_id)) for step_id in step_ids]
    await _until_stdin_closes()
    stop.set()
    await asyncio.gather(*tasks)
    _finish(started, samples)
    await engine.dispose()


def _start_writer(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.db_contention", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"writer {args[0]} did not start")
    return process


def _stop_writer(process: subprocess.Popen[str]) -> tuple[Samples, float]:
    out, _ = process.communicate(timeout=TIMEOUT)  # closes its stdin: the writer stops
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return Samples(result["ms"], Counter(result["errors"])), result["seconds"]


def _report_writes(name: str, samples: Samples, seconds: float) -> None:
    rate = len(samples.ms) / seconds if seconds else 0.0
    line = f"{name:<48} n={len(samples.ms):<5} {rate:8.1f}/s"
    if samples.ms:
        line += " " + " ".join(f"{k}={v:8.2f}ms" for k, v in _figures(samples.ms).items())
    print(line + _errors(samples.errors), flush=True)


def run(temporal_address: str) -> None:
    engine_dir = Path(core.db.engine.__file__).resolve().parents[2]
    print(f"# db contention (SQLite), code under test: {engine_dir}", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="idp-bench-contention-"))
    database = data_dir / "idp.db"
    env = api_env(data_dir, temporal_address)
    database_url = f"sqlite+aiosqlite:///{database}"
    migrate.upgrade(database_url)
    port = free_port()
    api = _serve([sys.executable, "-m", "workers.cli", "api", "--port", str(port)], port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        bearer, key = credentials(base)
        org = httpx.post(
            f"{base}/organizations", json={"name": "Bench", "slug": "bench"}, headers=bearer
        )
        org.raise_for_status()
        team_ids = []
        for i in range(API_WRITERS):
            team = httpx.post(
                f"{base}/teams",
                json={"org_id": org.json()["id"], "name": f"Bench {i}", "slug": f"bench-{i}"},
                headers=bearer,
            )
            team.raise_for_status()
            team_ids.append(team.json()["id"])
        readers = {"access token": bearer, "API key": {"X-API-Key": key}}
        me = f"{base}/auth/me"
        for headers in readers.values():
            with httpx.Client(headers=headers) as client:
                for _ in range(WARMUP):
                    client.get(me).raise_for_status()

        idle = {name: _reads(me, headers) for name, headers in readers.items()}
        for name, samples in idle.items():
            report(f"GET /auth/me ({name}), idle", samples)

        loads = {
            f"{API_WRITERS} API writers": [
                "api-writers",
                base,
                bearer["Authorization"].removeprefix("Bearer "),
                *team_ids,
            ],
            f"{LOG_WRITERS} log writers": [
                "log-writers",
                database_url,
                str(LOG_WRITERS),
                str(LOG_PAUSE_MS),
            ],
        }
        for load, args in loads.items():
            writer = _start_writer(args, env)
            try:
                loaded = {name: _reads(me, headers) for name, headers in readers.items()}
            finally:
                writes, seconds = _stop_writer(writer)
            for name, samples in loaded.items():
                report(f"GET /auth/me ({name}), {load}", samples, idle[name])
            what = "PATCH /teams/{id}" if args[0] == "api-writers" else "log chunk transaction"
            _report_writes(f"  writes: {what}, {load}", writes, seconds)
    finally:
        api.terminate()
        api.wait()


def _main(argv: list[str]) -> None:
    if not argv:
        from bench.server import run_alone

        async def alone(client: Any, settings: Any) -> None:
            await asyncio.to_thread(run, settings.temporal_address)

        asyncio.run(run_alone(alone))
    elif argv[0] == "api-writers":
        asyncio.run(_api_writers(argv[1], argv[2], argv[3:]))
    elif argv[0] == "log-writers":
        asyncio.run(_log_writers(argv[1], int(argv[2]), float(argv[3])))
    else:
        raise SystemExit(f"unknown writer {argv[0]!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
