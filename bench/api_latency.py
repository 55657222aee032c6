"""API latency over real HTTP: health, readiness and authenticated reads (token, API key),
each against a bare Starlette app on the same uvicorn (the floor).
Target (product spec): p95 < 200 ms."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.stats import report
from core.db import migrate
from core.settings import PROJECT_ROOT
from tests.helpers import free_port

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "500"))
BENCH_EMAIL = "bench@example.com"
BENCH_PASSWORD = "bench passphrase 1234"


def _serve(argv: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        argv, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{argv} did not start")


def _measure(url: str, n: int = REQUESTS, headers: dict[str, str] | None = None) -> list[float]:
    samples = []
    with httpx.Client(headers=headers) as client:
        for _ in range(20):  # warm-up
            client.get(url)
        for _ in range(n):
            started = time.perf_counter()
            response = client.get(url)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return samples


def api_env(data_dir: Path, temporal_address: str) -> dict[str, str]:
    """The environment of a benchmarked API: its own SQLite database under `data_dir`, the
    bench's admin, and a rate limiter that runs (its cost is part of every figure) but never
    refuses."""
    env = {
        **os.environ,
        "IDP_DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": temporal_address,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMITS": "default=1000000/minute;burst=1000000,auth=1000000/minute;burst=1000000",
        "IDP_ADMIN_EMAIL": BENCH_EMAIL,
        "IDP_ADMIN_PASSWORD": BENCH_PASSWORD,
    }
    env.pop("DATABASE_URL", None)
    return env


def credentials(base: str) -> tuple[dict[str, str], str]:
    """The bench admin's Authorization header (a fresh login) and a new API key."""
    token = httpx.post(
        f"{base}/auth/login", json={"email": BENCH_EMAIL, "password": BENCH_PASSWORD}
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    key = httpx.post(
        f"{base}/api-keys", json={"name": "bench", "permissions": ["users:read"]}, headers=bearer
    ).json()["key"]
    return bearer, str(key)


def run(temporal_address: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    env = api_env(data_dir, temporal_address)
    migrate.upgrade(f"sqlite+aiosqlite:///{data_dir / 'idp.db'}")
    floor_port, api_port = free_port(), free_port()
    floor = _serve(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:app",
            "--port",
            str(floor_port),
            "--log-level",
            "warning",
        ],
        floor_port,
        env,
    )
    api = _serve(
        [sys.executable, "-m", "workers.cli", "api", "--port", str(api_port)], api_port, env
    )
    try:
        floor_ms = _measure(f"http://127.0.0.1:{floor_port}/api/health")
        report("floor: bare Starlette GET /api/health", floor_ms)
        report(
            "api: GET /api/health", _measure(f"http://127.0.0.1:{api_port}/api/health"), floor_ms
        )
        report(
            "api: GET /api/health/ready (db + Temporal)",
            _measure(f"http://127.0.0.1:{api_port}/api/health/ready"),
            floor_ms,
        )
        base = f"http://127.0.0.1:{api_port}"
        bearer, key = credentials(base)
        report(
            "api: GET /auth/me (access token)",
            _measure(f"{base}/auth/me", headers=bearer),
            floor_ms,
        )
        report(
            "api: GET /auth/me (API key)",
            _measure(f"{base}/auth/me", headers={"X-API-Key": key}),
            floor_ms,
        )
        report(
            "api: GET /users?limit=50 (admin, 1 user)",
            _measure(f"{base}/users?limit=50", headers=bearer),
            floor_ms,
        )
    finally:
        for process in (floor, api):
            process.terminate()
            process.wait()
