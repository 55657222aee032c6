"""The `local` deploy target: a service version is a process on this host.

A deploy starts the new version's process beside the running one, on a fresh port, probes its
health endpoint until it answers 2xx, then records it as current and stops the old one (a
blue-green switch: the old version keeps serving until the new one is healthy). A new version
that never becomes healthy is stopped and the old one keeps running; the deploy reports why.

- **The process**: `/bin/sh -c <command>` from the version's configuration (`command`,
  `health_path`, `env`), in its own session (it outlives the worker that started it), with
  `PORT`, `IDP_SERVICE`, `IDP_VERSION`, `IDP_ENVIRONMENT` and the environment's configuration
  (secrets decrypted by the caller) as its whole environment, plus `PATH`, `HOME` and `LANG`.
  Output goes to `<root>/<environment>/<service>/<version>-<port>.log`.
- **The record**: `<root>/<environment>/<service>/current.json` names the current version,
  its pid, port and start time, written atomically; a new worker reads it to find what runs.
- **Stopping** signals the process group: SIGTERM, then SIGKILL after `stop_grace` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LocalRelease(BaseModel):
    """What to run for one version (from the service version's `config`)."""

    service: str
    version: str
    command: str = Field(min_length=1, description="Shell command; listens on $PORT")
    health_path: str = "/health"
    env: dict[str, str] = Field(default_factory=dict)


class RunningRelease(BaseModel):
    service: str
    version: str
    pid: int
    port: int
    started_at: datetime
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class DeployOutcome(BaseModel):
    ok: bool
    current: RunningRelease | None = Field(description="What runs after the deploy")
    replaced: RunningRelease | None = None
    error: str | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat[stat.rfind(")") + 2] not in "ZX"


def _memory_cap(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


class LocalTarget:
    def __init__(
        self,
        root: Path,
        *,
        health_timeout: float = 60.0,
        probe_interval: float = 0.25,
        stop_grace: float = 5.0,
        path: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.health_timeout = health_timeout
        self.probe_interval = probe_interval
        self.stop_grace = stop_grace
        self.path = path or os.environ.get("PATH") or DEFAULT_PATH

    def _dir(self, environment: str, service: str) -> Path:
        return self.root / environment / service

    def current(self, environment: str, service: str) -> RunningRelease | None:
        """The recorded current release, if its process still runs."""
        record = self._dir(environment, service) / "current.json"
        try:
            running = RunningRelease.model_validate_json(record.read_text())
        except (OSError, ValueError):
            return None
        return running if alive(running.pid) else None

    def _record(self, environment: str, running: RunningRelease | None) -> None:
        if running is None:
            return
        directory = self._dir(environment, running.service)
        tmp = directory / "current.json.tmp"
        tmp.write_text(running.model_dump_json())
        tmp.replace(directory / "current.json")

    async def deploy(
        self,
        environment: str,
        release: LocalRelease,
        config: Mapping[str, str],
        *,
        memory_limit: int | None = None,
    ) -> DeployOutcome:
        """Start `release`, wait for it to be healthy, switch, stop the previous one.
        `memory_limit` (bytes) caps each of its processes' address space (RLIMIT_AS)."""
        previous = self.current(environment, release.service)
        started = await self._start(environment, release, config, memory_limit)
        error = await self._healthy(started, release.health_path)
        if error is not None:
            await self.stop(started)
            return DeployOutcome(ok=False, current=previous, error=error)
        self._record(environment, started)
        if previous is not None:
            await self.stop(previous)
        return DeployOutcome(ok=True, current=started, replaced=previous)

    async def _start(
        self,
        environment: str,
        release: LocalRelease,
        config: Mapping[str, str],
        memory_limit: int | None = None,
    ) -> RunningRelease:
        directory = self._dir(environment, release.service)
        directory.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        log_path = directory / f"{release.version}-{port}.log"
        env = {
            "PATH": self.path,
            "HOME": str(directory),
            "LANG": "C.UTF-8",
            **config,
            **release.env,
            "PORT": str(port),
            "IDP_SERVICE": release.service,
            "IDP_VERSION": release.version,
            "IDP_ENVIRONMENT": environment,
        }
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                release.command,
                cwd=directory,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_memory_cap(memory_limit) if memory_limit else None,
            )
        return RunningRelease(
            service=release.service,
            version=release.version,
            pid=proc.pid,
            port=port,
            started_at=datetime.now(UTC),
            log_path=str(log_path),
        )

    async def _healthy(self, running: RunningRelease, health_path: str) -> str | None:
        """None once the release answers 2xx on its health path; else why not.

        Exempt from the egress guard (core/security/egress.py), as `probe` is: the address is
        the loopback port of a process this target started itself, not a user's URL."""
        deadline = time.monotonic() + self.health_timeout
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not alive(running.pid):
                    return f"{running.version} exited before it became healthy ({last})"
                try:
                    answer = await http.get(running.url + health_path)
                    if answer.is_success:
                        return None
                    last = f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                await asyncio.sleep(self.probe_interval)
        return f"{running.version} not healthy within {self.health_timeout:g}s ({last})"

    async def probe(self, running: RunningRelease, health_path: str) -> bool:
        """One health probe of a running release."""
        async with httpx.AsyncClient(timeout=2.0) as http:
            try:
                return (await http.get(running.url + health_path)).is_success
            except httpx.HTTPError:
                return False

    async def stop(self, running: RunningRelease) -> None:
        """SIGTERM to the release's process group, SIGKILL after `stop_grace` seconds."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while time.monotonic() < deadline and alive(running.pid):
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGKILL)
        # Not reaped here: when this worker started it, asyncio's child watcher reaps it.
