"""The docker runner: each step is one container on a Docker Engine, driven through the
`docker` SDK (`docker>=7.1`).

- **Engine.** `base_url` (`unix:///var/run/docker.sock`, `tcp://host:2375`, ...) or, without
  one, `docker.from_env()`: `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH`),
  else the current Docker CLI context, else the default socket. The client is made on the
  first step and kept. An engine that cannot be reached (then or later) raises
  `RunnerUnavailable` (a `RuntimeError`, so the activity fails and Temporal retries it),
  naming the URL or `DOCKER_HOST` tried.
- **Image.** `spec.image`, else `default_image`. `pull="missing"` pulls it when the engine
  does not have it, `"always"` pulls it for every step, `"never"` only uses what the engine
  has. Registry credentials are the SDK's: the worker's `~/.docker/config.json`. An image
  that is missing and cannot be pulled fails the step (status `failed`, an error naming the
  image), it raises nothing.
- **The container.** Entrypoint `["/bin/sh", "-e", "-c"]` and command `[spec.command]`, so
  the step always runs as `/bin/sh -e -c <command>` (like a local step), whatever
  `ENTRYPOINT` the image declares (`docker:27-cli`, `alpine/git`, ...; an entrypoint set at
  create time also drops the image's `CMD`). Labels `idp.step-id=<step id>` and
  `idp.managed-by=idp`; `network` when given; no TTY. Containers a previous
  attempt of the same step left behind (a worker that died mid-step) are removed first.
- **Privileges.** The step runs as `user` (default `65534:65534`, nobody: never the image's
  root), with every capability dropped (`cap_drop ALL`) and `no-new-privileges` (setuid
  binaries do not raise it). Nothing of the worker is mounted but the workspace, and the
  engine's socket never is.
- **Environment.** Exactly `spec.env`: never the worker's. Unlike the local runner there is
  no base of `PATH` / `HOME` / `TMPDIR` / `LANG` from the runner: the image's own `ENV`
  (usually `PATH`) applies, and the engine adds `HOSTNAME` (and `HOME` from the image's user).
- **Workspace.** `spec.workdir` is bind-mounted read-write at `workspace_mount` (default
  `/workspace`), which is the working directory. The path is a path *on the engine's host*:
  a local engine sees the worker's checkout; a worker that itself runs in a container must
  have the workspace root mounted at the same path as on the host. A bind source that does
  not exist fails the step (a `Mount`, not a legacy `Binds` entry, so the engine never creates
  an empty directory in its place). Files the step writes belong to the container's user
  (`user`), which must be able to write the workspace.
- **Output.** The container's log stream (`follow`, stdout and stderr) is read as it comes;
  its multiplexed frames say which stream a payload belongs to. Lines are split like the
  local runner's (`lines.LineSplitter`: `\\n`, a trailing `\\r` dropped, over-long lines cut,
  a last line without `\\n` kept), get one increasing `seq` across both streams in the order
  the frames arrived, and `at` = when the worker read them; they reach `on_output` in
  batches of at most `flush_lines`, at least every `flush_interval` seconds.
- **Heartbeat.** `heartbeat()` is called at start and every `heartbeat_interval` seconds,
  the image pull included.
- **The end.** Exit code 0 → `succeeded`; another → `failed`, `"exited with code N"` (a
  process killed by signal N shows as code 128+N, the engine's convention, not as the local
  runner's "killed by signal"). The timeout counts from the container's start (an image pull
  is not part of it): the container is stopped (`SIGTERM`, then the engine's `SIGKILL` after
  `stop_timeout` seconds; note that a shell running as PID 1 ignores `SIGTERM` unless it
  traps it) → `timed_out`. Everything the step started lives in the container, so it all
  ends with it: no process-group handling as in the local runner. A cancelled `run` (a
  cancelled Temporal activity), a failing log sink or heartbeat stop the container the same
  way, send the lines already read, and re-raise. The container is always removed at the
  end (`force`, with its anonymous volumes).
- **Threads.** The SDK blocks, so its calls run in threads and the event loop never waits
  on the engine: short calls with `asyncio.to_thread`; the two that last as long as the step
  (following the logs, waiting for the exit) each in a dedicated daemon thread, so that
  long steps never occupy the default executor's few workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import docker
import requests
import urllib3
from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount

from core.pipelines.runners.base import (
    DEFAULT_STEP_UID,
    Heartbeat,
    OutputSink,
    RunnerUnavailable,
    StepOutcome,
    StepSpec,
    StepStatus,
    Stream,
)
from core.pipelines.runners.lines import DEFAULT_MAX_LINE_BYTES, LineBatcher, LineSplitter

log = logging.getLogger(__name__)

STEP_LABEL = "idp.step-id"
MANAGED_BY_LABEL = "idp.managed-by"
MANAGED_BY = "idp"
SHELL = ["/bin/sh", "-e", "-c"]
PullPolicy = Literal["missing", "always", "never"]
PULL_POLICIES: tuple[PullPolicy, ...] = ("missing", "always", "never")
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
_FRAME_HEADER = struct.Struct(">BxxxL")  # stream type, 3 bytes padding, payload size
_STDERR = 2

T = TypeVar("T")
# the engine did not answer: connection refused or reset, timeout, a broken stream
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    OSError,
)


class _PullFailed(Exception):
    """The engine answered the pull, then reported an error in its progress stream."""


class DockerRunner:
    """Runs steps as containers on a Docker Engine. See the module docstring."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        default_image: str = "alpine:3.20",
        pull: PullPolicy = "missing",
        workspace_mount: str = "/workspace",
        flush_interval: float = 0.5,
        flush_lines: int = 200,
        heartbeat_interval: float = 2.0,
        stop_timeout: int = 5,
        network: str | None = None,
        user: str | None = None,
        uid: int = DEFAULT_STEP_UID,
        api_timeout: float = 60.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        drain_timeout: float = 2.0,
    ) -> None:
        if pull not in PULL_POLICIES:
            raise ValueError(f"pull must be one of {', '.join(PULL_POLICIES)}, not {pull!r}")
        if not workspace_mount.startswith("/"):
            raise ValueError(f"workspace_mount must be an absolute path, not {workspace_mount!r}")
        self.base_url = base_url
        self.default_image = default_image
        self.pull = pull
        self.workspace_mount = workspace_mount
        self.flush_interval = flush_interval
        self.flush_lines = flush_lines
        self.heartbeat_interval = heartbeat_interval
        self.stop_timeout = stop_timeout
        self.network = network
        self.user = user or f"{uid}:{uid}"  # never the image's (often root) user
        self.api_timeout = api_timeout  # each Engine API call; never the log stream or wait
        self.max_line_bytes = max_line_bytes
        self.drain_timeout = drain_timeout
        self._client: Any = None  # docker.DockerClient once connected
        self._connecting = asyncio.Lock()
        self._background: set[asyncio.Future[Any]] = set()

    # -- the engine ------------------------------------------------------------------------
    @property
    def engine(self) -> str:
        """Where the runner looks for the engine, for messages."""
        if self.base_url:
            return self.base_url
        host = os.environ.get("DOCKER_HOST")
        if host:
            return f"DOCKER_HOST={host}"
        return f"the current Docker context or {DEFAULT_SOCKET} (DOCKER_HOST is not set)"

    def _unavailable(self, exc: BaseException) -> RunnerUnavailable:
        return RunnerUnavailable(f"the Docker engine at {self.engine} is unreachable: {exc}")

    def _connect(self) -> Any:
        # version=None (the default): the client asks the engine for its API version, so
        # an engine that does not answer fails here, not in the middle of a step
        if self.base_url:
            return docker.DockerClient(base_url=self.base_url, timeout=self.api_timeout)
        return docker.from_env(timeout=self.api_timeout)

    async def _api(self) -> Any:
        """The SDK's low-level `APIClient`, connected on first use."""
        async with self._connecting:
            if self._client is None:
                try:
                    self._client = await asyncio.to_thread(self._connect)
                except (DockerException, *_TRANSPORT_ERRORS) as exc:
                    raise self._unavailable(exc) from exc
            return self._client.api

    def close(self) -> None:
        """Close the client's connections (a new step connects again)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the SDK (in a thread); an engine that does not answer is `RunnerUnavailable`.
        `APIError` (the engine answered with an error) passes through."""
        try:
            return fn(*args, **kwargs)
        except APIError:
            raise
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc

    async def _engine(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(self._call, fn, *args, **kwargs)

    def _keep(self, aw: Awaitable[T]) -> asyncio.Future[T]:
        """A task that must finish even when its awaiter is cancelled (await it shielded)."""
        task = asyncio.ensure_future(aw)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- a step ----------------------------------------------------------------------------
    async def run(
        self,
        spec: StepSpec,
        on_output: OutputSink,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> StepOutcome:
        """Run one step in a new container, to its end; see the module docstring. Raises
        `RunnerUnavailable` when the engine cannot be reached."""
        started = time.monotonic()
        api = await self._api()
        beater = asyncio.create_task(self._beat(heartbeat))
        try:
            image = spec.image or self.default_image
            problem = await _alongside(beater, self._prepare_image(api, image))
            if problem is not None:
                return _failed(started, problem)
            await _alongside(beater, self._remove_leftovers(api, spec))
            create = self._keep(self._engine(self._create, api, spec, image))
            try:
                container_id = await _alongside(beater, asyncio.shield(create))
            except APIError as exc:
                return _failed(started, f"could not create the container ({image}): {_why(exc)}")
            except BaseException:
                # cancelled while the engine was creating it: remove what it creates
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._keep(self._discard(api, create)))
                raise
            return await self._supervise(api, container_id, spec, on_output, beater, started)
        finally:
            beater.cancel()

    async def _prepare_image(self, api: Any, image: str) -> str | None:
        """Make sure the engine has `image`; the reason the step cannot start, or None."""
        if self.pull != "always":
            try:
                await self._engine(api.inspect_image, image)
                return None
            except NotFound:
                if self.pull == "never":
                    return f"image {image!r} is not on the Docker engine and pull is 'never'"
        try:
            await self._engine(self._pull, api, image)
            await self._engine(api.inspect_image, image)
        except (APIError, _PullFailed) as exc:
            return f"could not pull image {image!r}: {_why(exc)}"
        return None

    def _pull(self, api: Any, image: str) -> None:
        log.info("pulling image %s", image)
        for event in api.pull(image, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                detail = event.get("errorDetail") or {}
                raise _PullFailed(str(detail.get("message") or event["error"]))

    async def _remove_leftovers(self, api: Any, spec: StepSpec) -> None:
        found = await self._engine(
            api.containers, all=True, filters={"label": [f"{STEP_LABEL}={spec.step_id}"]}
        )
        for container in found:
            log.info("removing container %s of a previous attempt", container["Id"][:12])
            await self._remove(api, container["Id"])

    def _create(self, api: Any, spec: StepSpec, image: str) -> str:
        workspace = Mount(
            target=self.workspace_mount,
            source=str(Path(spec.workdir).absolute()),
            type="bind",
            read_only=False,
        )
        created = api.create_container(
            image,
            entrypoint=SHELL,
            command=[spec.command],
            environment=dict(spec.env),
            labels={STEP_LABEL: spec.step_id, MANAGED_BY_LABEL: MANAGED_BY},
            working_dir=self.workspace_mount,
            user=self.user,
            host_config=api.create_host_config(
                mounts=[workspace],
                network_mode=self.network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
            ),
        )
        return str(created["Id"])

    async def _discard(self, api: Any, create: asyncio.Future[str]) -> None:
        with contextlib.suppress(Exception):
            await self._remove(api, await create)

    async def _remove(self, api: Any, container_id: str) -> None:
        try:
            await self._engine(api.remove_container, container_id, v=True, force=True)
        except NotFound:
            pass
        except (APIError, RunnerUnavailable) as exc:
            log.warning("could not remove container %s: %s", container_id[:12], exc)

    async def _supervise(
        self,
        api: Any,
        container_id: str,
        spec: StepSpec,
        on_output: OutputSink,
        beater: asyncio.Task[None],
        started: float,
    ) -> StepOutcome:
        step = _Container(self, api, container_id, on_output)
        try:
            try:
                await self._engine(api.start, container_id)
            except APIError as exc:
                return _failed(started, f"could not start the step: {_why(exc)}")
            step.follow()
            assert step.waiter is not None and step.reader is not None
            flusher = step.batcher.task
            assert flusher is not None
            deadline = time.monotonic() + spec.timeout
            watched: set[asyncio.Future[Any]] = {step.waiter, step.reader, flusher, beater}
            timed_out = False
            while not step.waiter.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                done, _ = await asyncio.wait(
                    watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                failed: asyncio.Future[Any] | None = next(
                    (f for f in (flusher, beater) if f in done), None
                )
                if step.reader in done:
                    watched.discard(step.reader)
                    if step.reader.exception() is not None:
                        failed = step.reader  # the log stream broke: nobody sees the output
                if failed is not None:
                    await step.halt()
                    failed.result()  # raises what the sink, the heartbeat or the reader raised
            if timed_out:
                await step.halt()
                result: dict[str, Any] = {}
            else:
                result = step.waiter.result()  # RunnerUnavailable when the engine went away
            await step.finish_output()
        except BaseException:
            # cancellation (Temporal activity cancel), a failing sink, anything: the container
            # stops, what was read is sent if the sink still works, the error goes on
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._keep(step.cleanup()))
            raise
        finally:
            step.abandon()
            await asyncio.shield(self._keep(self._remove(api, container_id)))
        duration = time.monotonic() - started
        if timed_out:
            return StepOutcome(
                exit_code=None,
                status="timed_out",
                duration_seconds=duration,
                error=f"timed out after {spec.timeout:g}s; its container was stopped",
            )
        code = int(result.get("StatusCode", -1))
        status: StepStatus = "succeeded" if code == 0 else "failed"
        error = None if code == 0 else f"exited with code {code}"
        engine_error = (result.get("Error") or {}).get("Message")
        if engine_error:
            error = f"{error or 'the engine reported an error'}: {engine_error}"
        return StepOutcome(exit_code=code, status=status, duration_seconds=duration, error=error)

    async def _beat(self, heartbeat: Heartbeat | None) -> None:
        if heartbeat is None:
            await asyncio.Event().wait()  # never ends on its own
            return
        while True:
            heartbeat()
            await asyncio.sleep(self.heartbeat_interval)

    # -- blocking halves, run in threads ---------------------------------------------------
    def _follow_logs(
        self, api: Any, container_id: str, deliver: Callable[[Stream, list[bytes]], None]
    ) -> None:
        """Read the container's log stream to its end (the container's), handing lines over."""
        url = f"{api.base_url}/v{api.api_version}/containers/{quote(container_id)}/logs"
        params = {"follow": 1, "stdout": 1, "stderr": 1}
        # timeout=None: a step may be silent for longer than any API timeout
        response = self._call(api.get, url, params=params, stream=True, timeout=None)
        with response:
            if response.status_code >= 400:
                raise RuntimeError(
                    f"the Docker engine refused the log stream of container "
                    f"{container_id[:12]}: {response.status_code} {_message(response)}"
                )
            splitters: dict[Stream, LineSplitter] = {
                "stdout": LineSplitter(self.max_line_bytes),
                "stderr": LineSplitter(self.max_line_bytes),
            }
            read = partial(self._call, response.raw.read)
            while True:
                header = read(_FRAME_HEADER.size)
                if len(header) < _FRAME_HEADER.size:
                    break
                kind, size = _FRAME_HEADER.unpack(header)
                payload = read(size) if size else b""
                stream: Stream = "stderr" if kind == _STDERR else "stdout"
                lines = splitters[stream].feed(payload)
                if lines:
                    deliver(stream, lines)
                if len(payload) < size:
                    break
            for stream, splitter in splitters.items():
                last = splitter.end()
                if last:
                    deliver(stream, last)

    def _wait(self, api: Any, container_id: str) -> dict[str, Any]:
        # timeout=None: as long as the step runs (the runner enforces the step's timeout)
        result = self._call(api.wait, container_id, timeout=None)
        return dict(result)


class _Container:
    """One started container: its log reader, its exit waiter, its pending output."""

    def __init__(
        self, runner: DockerRunner, api: Any, container_id: str, on_output: OutputSink
    ) -> None:
        self.runner = runner
        self.api = api
        self.id = container_id
        self.batcher = LineBatcher(
            on_output, flush_lines=runner.flush_lines, flush_interval=runner.flush_interval
        )
        self.reader: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[dict[str, Any]] | None = None

    def follow(self) -> None:
        """Start the flush loop, the log reader and the exit waiter (after the start)."""
        loop = asyncio.get_running_loop()
        self.batcher.start()

        def deliver(stream: Stream, lines: list[bytes]) -> None:
            # from the reader's thread: blocks while the batcher applies back-pressure
            asyncio.run_coroutine_threadsafe(self.batcher.add(stream, lines), loop).result()

        name = f"docker-{self.id[:12]}"
        self.reader = _in_thread(
            partial(self.runner._follow_logs, self.api, self.id, deliver), f"{name}-logs"
        )
        self.waiter = _in_thread(partial(self.runner._wait, self.api, self.id), f"{name}-wait")

    async def halt(self) -> None:
        """Stop the container: SIGTERM, the engine's SIGKILL after `stop_timeout`; a kill
        when the stop fails. Returns when it has exited (or the engine does not say)."""
        runner, api = self.runner, self.api
        try:
            await runner._engine(api.stop, self.id, timeout=runner.stop_timeout)
        except NotFound:
            return
        except (APIError, RunnerUnavailable) as exc:
            log.warning("could not stop container %s (%s): killing it", self.id[:12], exc)
            with contextlib.suppress(APIError, RunnerUnavailable):
                await runner._engine(api.kill, self.id)
        if self.waiter is not None:
            await asyncio.wait({self.waiter}, timeout=runner.stop_timeout + 5)

    async def finish_output(self) -> None:
        """Let the reader reach the end of the log stream, then send what is pending."""
        if self.reader is not None:
            await asyncio.wait({self.reader}, timeout=self.runner.drain_timeout)
            if not self.reader.done():
                log.warning("the log stream of container %s did not end", self.id[:12])
            elif self.reader.exception() is not None:
                log.warning(
                    "lost the log stream of container %s: %s",
                    self.id[:12],
                    self.reader.exception(),
                )
        await self.batcher.close()

    async def cleanup(self) -> None:
        await self.halt()
        with contextlib.suppress(Exception):
            await self.finish_output()

    def abandon(self) -> None:
        self.batcher.abandon()


async def _alongside(beater: asyncio.Task[None], aw: Awaitable[T]) -> T:
    """Await `aw`; should the heartbeat fail meanwhile, raise what it raised."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({task, beater}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    if not task.done():
        task.cancel()
        beater.result()
    return task.result()


def _in_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `fn` in a new daemon thread; its result as a future of the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    # a failure nobody awaited (the step had already ended) is logged, not warned about
    future.add_done_callback(_retrieve)

    def settle(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(outcome)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            settle(partial(_set_exception, future, exc))
        else:
            settle(partial(_set_result, future, result))

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("docker runner thread ended with %r", future.exception())


def _why(exc: BaseException) -> str:
    """The engine's own explanation when it gave one."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()


def _message(response: Any) -> str:
    try:
        return str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        return str(response.text).strip()


def _failed(started: float, error: str) -> StepOutcome:
    return StepOutcome(
        exit_code=None,
        status="failed",
        duration_seconds=time.monotonic() - started,
        error=error,
    )
