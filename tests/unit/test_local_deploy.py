"""The local deploy target with real processes and real HTTP: a blue-green switch, a version
that never becomes healthy (the old one keeps serving), one that exits, and the process's
environment."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from core.deploy.local import LocalRelease, LocalTarget, alive
from core.environments.policy import ResourceLimits, quantity_bytes

SERVER = f"{shlex.quote(sys.executable)} -m http.server $PORT --bind 127.0.0.1"


def release(version: str, command: str = SERVER, health: str = "/") -> LocalRelease:
    return LocalRelease(service="shop", version=version, command=command, health_path=health)


@pytest.fixture
async def target(tmp_path: Path):  # type: ignore[no-untyped-def]
    local = LocalTarget(tmp_path / "deployments", health_timeout=5, stop_grace=2)
    yield local
    running = local.current("staging", "shop")
    if running is not None:
        await local.stop(running)


async def test_a_new_version_replaces_the_old_once_healthy(target: LocalTarget) -> None:
    first = await target.deploy("staging", release("1.0.0"), {})
    assert first.ok and first.current is not None and first.replaced is None
    assert await target.probe(first.current, "/")
    second = await target.deploy("staging", release("1.1.0"), {})
    assert second.ok and second.current is not None
    assert second.replaced is not None and second.replaced.version == "1.0.0"
    assert not alive(first.current.pid)  # the old version was stopped after the switch
    current = target.current("staging", "shop")
    assert current is not None and current.version == "1.1.0"
    assert current.port != first.current.port


async def test_an_unhealthy_version_is_stopped_and_the_old_one_keeps_serving(
    target: LocalTarget,
) -> None:
    good = await target.deploy("staging", release("1.0.0"), {})
    assert good.ok and good.current is not None
    target.health_timeout = 1.5
    bad = await target.deploy("staging", release("2.0.0", health="/health"), {})
    assert not bad.ok and bad.error is not None
    assert bad.error == "2.0.0 not healthy within 1.5s (HTTP 404)"
    assert bad.current is not None and bad.current.version == "1.0.0"
    assert alive(good.current.pid) and await target.probe(good.current, "/")
    exits = await target.deploy("staging", release("2.0.1", command="echo boom; exit 3"), {})
    assert not exits.ok and "2.0.1 exited before it became healthy" in (exits.error or "")
    current = target.current("staging", "shop")
    assert current is not None and current.version == "1.0.0"


async def test_the_process_gets_the_environments_config_and_nothing_of_the_worker(
    target: LocalTarget, tmp_path: Path
) -> None:
    os.environ["IDP_TEST_WORKER_ONLY"] = "leak"
    dump = tmp_path / "env.txt"
    try:
        done = await target.deploy(
            "staging",
            release("1.0.0", command=f"env > {dump}; exec {SERVER}"),
            {"DB_PASSWORD": "hunter2", "LOG_LEVEL": "debug"},
        )
    finally:
        del os.environ["IDP_TEST_WORKER_ONLY"]
    assert done.ok, done.error
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["DB_PASSWORD"] == "hunter2" and seen["LOG_LEVEL"] == "debug"
    assert seen["IDP_VERSION"] == "1.0.0" and seen["IDP_ENVIRONMENT"] == "staging"
    assert seen["PORT"] == str(done.current.port if done.current else "")
    assert "IDP_TEST_WORKER_ONLY" not in seen


async def test_a_memory_limit_caps_each_process(target: LocalTarget, tmp_path: Path) -> None:
    limited = f"ulimit -v > limit.txt; exec {SERVER}"
    outcome = await target.deploy("staging", release("1.0.0", limited), {}, memory_limit=2**28)
    assert outcome.ok, outcome.error
    written = tmp_path / "deployments" / "staging" / "shop" / "limit.txt"
    assert written.read_text().strip() == str(2**28 // 1024)  # KiB, as ulimit says


def test_memory_quantities_in_bytes() -> None:
    assert quantity_bytes("256Mi") == 2**28 and quantity_bytes("1G") == 10**9
    assert quantity_bytes("1500") == 1500 and quantity_bytes("2000m") == 2
    assert ResourceLimits(default_memory="64Mi").process_memory == 64 * 2**20
    assert ResourceLimits(memory="8Gi").process_memory is None  # the total is not per process
