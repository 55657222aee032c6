"""The kubernetes runner: each step is one `batch/v1` Job, driven through the official
`kubernetes` client (its blocking calls run in threads, `asyncio.to_thread`).

- **Configuration.** An `api_client` passed in is used as is. Without one, the runner loads
  its configuration on the first step: the kubeconfig context `context` when one is named,
  else the in-cluster service account when the worker runs in a pod, else the kubeconfig's
  current context. No usable configuration, an unreachable API server, or an API server that
  refuses the runner's credentials raise `RunnerUnavailable` (a `RuntimeError`, so the
  activity fails and Temporal retries it), naming the API server.
- **Namespace.** Steps run in `namespace` (default `idp-pipelines`). The runner reads it and
  creates it when it is missing, once per runner; any failure to create it (409 Conflict, 403
  for a service account without cluster rights, an emulator that cannot create cluster-scoped
  objects) is taken as "it exists": a namespace that really is missing shows up as a 404 when
  the Job is created, raised as `RunnerUnavailable`.
- **The Job.** Named `idp-<slug of the step id>-<10 hex of its sha256>`: DNS-1123, at most 63
  characters, deterministic, so a retried activity (a lost worker) finds the Job of the
  previous attempt. That Job is **deleted** (foreground propagation, waiting up to
  `replace_timeout` seconds until it is gone) and the step starts again with a new Job: the
  activity reports a retried step as starting over, never as re-attached. Labels
  `idp.managed-by=idp`, `idp.step-id=<safe id>` and `idp.attempt=<random token>` (also on the
  pod template, so this attempt's pods are told apart from a previous attempt's); the raw
  step id is the annotation `idp.step-id`. `backoffLimit: 0` and `restartPolicy: Never` (a
  step runs once, like a local one); `activeDeadlineSeconds` = the step's timeout rounded up;
  `ttlSecondsAfterFinished` as a safety net should the runner die before deleting it.
- **Container.** One container `step`: the image is `spec.image` or `default_image`, the
  command `["/bin/sh", "-e", "-c", spec.command]`, the environment exactly `spec.env` (plus
  whatever the image's own `ENV` sets and the `KUBERNETES_SERVICE_*` variables the kubelet
  always adds; service links are off, and the service-account token is mounted only when a
  `service_account` is given). The pod runs as `uid` (default 65534, `runAsNonRoot`, group
  and `fsGroup` the same, so a shared workspace claim is writable), the container without
  privilege escalation, with every capability dropped and the runtime's default seccomp
  profile; no secret of the worker is mounted or in its environment. `resources`
  (`{"requests": {...}, "limits": {...}}`) is copied into the container.
- **Workspace.** With `workspace_claim` (a PersistentVolumeClaim), the claim is mounted at
  `workspace_mount` (default `/workspace`) with `subPath` = `spec.workdir` relative to
  `workspace_root`, and that mount is the working directory. This only works when the
  worker's workspace root *is* that volume (the worker mounts the same claim at its
  `workspace_root`, e.g. a ReadWriteMany claim shared by the worker pods and the step pods):
  the checkout the worker made is then what the step sees, and what the step writes (build
  output, artifacts) is what the worker collects. A workdir outside `workspace_root` fails the
  step without creating a Job. Without a claim, the step gets an empty `emptyDir` at
  `workspace_mount` as its working directory: **the checkout is not visible** to the step and
  its files are lost with the pod, which suits only steps that need nothing but their image
  (and report through their output).
- **Status.** Every `poll_interval` seconds the runner reads the Job and lists its pods.
  Job condition `Complete` → `succeeded`, exit code from the pod's terminated container (0 if
  the pod is gone); `Failed` (or `FailureTarget`) → `failed` with the container's exit code
  and, when not the plain `Error`, its reason (`OOMKilled`); reason `DeadlineExceeded` →
  `timed_out`. A container that cannot start (`InvalidImageName`,
  `CreateContainerConfigError`, ...) fails the step at once; one whose image cannot be pulled
  fails it after `image_pull_timeout` seconds. As a backstop, a Job the cluster has not
  finished `active_deadline_margin` seconds after the step's timeout (scheduling and image
  pulls count against `activeDeadlineSeconds` too, so the cluster normally stops it first) is
  deleted by the runner: `timed_out`. A Job deleted by someone else fails the step.
- **Output.** Logs are polled, not followed: every poll fetches
  `GET .../pods/<pod>/log?container=step&timestamps=true&sinceTime=<second of the last line>`
  and drops the lines already seen (compared by their nanosecond timestamps). A followed
  stream is one blocking read per pod that a cancelled step cannot interrupt, has to be
  reopened when it breaks, and cannot start while the container is still being created;
  polling with `sinceTime` works the same against a real API server and against the kmock
  emulator. (`sinceTime` is not a parameter of the client's `read_namespaced_pod_log`, so the
  request is built with the client's own `ApiClient.param_serialize`/`call_api`; on an old
  client without them the whole log is fetched each poll and de-duplicated the same way.)
  A log server that sends no timestamps is handled too: the whole log each poll, lines
  counted. The log API merges stdout and stderr, so every line is `stream="stdout"`; its
  `at` is the container runtime's timestamp. Lines longer than `max_line_chars` are split.
  Lines go to `on_output` in batches of at most `flush_lines`, one increasing `seq` per step,
  within about `poll_interval` of the kubelet writing them. After the Job finishes, a last
  fetch per pod collects the end of the output before the Job is deleted.
- **Heartbeat.** `heartbeat()` is called at start and every `heartbeat_interval` seconds.
- **The end.** The Job is deleted when the step ends (background propagation: its pods have
  finished), unless `keep_jobs=True` (for debugging; `ttlSecondsAfterFinished` still
  applies). A Job the runner stops itself (runner timeout, a failing sink or heartbeat, the
  API lost for more than `api_retry_seconds`, and cancellation) is always deleted, with
  foreground propagation so it stays visible until its pods are gone. Cancellation (a
  cancelled Temporal activity) deletes the Job, then re-raises `CancelledError`.
- **API hiccups.** While a Job runs, failed reads (connection errors, 5xx, 429) are retried
  on the next poll; after `api_retry_seconds` without one successful read the runner deletes
  the Job if it can and raises `RunnerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from core.pipelines.runners.base import (
    DEFAULT_STEP_UID,
    Heartbeat,
    LogLine,
    OutputSink,
    RunnerUnavailable,
    StepOutcome,
    StepSpec,
    StepStatus,
)

log = logging.getLogger(__name__)

CONTAINER = "step"
VOLUME = "workspace"
MANAGED_BY = "idp.managed-by"
STEP_ID = "idp.step-id"
ATTEMPT = "idp.attempt"

# A container waiting for one of these will not start without a new Job: fail the step now.
_FATAL_WAITING = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)
# Retried by the kubelet (a registry hiccup may pass): fail after `image_pull_timeout`.
_PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff"})
_TERMINAL_CONDITIONS = ("Complete", "Failed", "FailureTarget")
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)

T = TypeVar("T")
_Key = tuple[int, int]  # (epoch seconds, nanoseconds) of a log line


class _Unreachable(Exception):
    """A request that never got an HTTP answer (connection refused, timeout, TLS failure)."""


class _StepRejected(ValueError):
    """The step cannot become a Job (e.g. its workdir is outside the shared workspace)."""


def safe_step_id(step_id: str) -> str:
    """A DNS-1123 label (at most 58 characters) for `step_id`: a readable slug plus 10 hex
    digits of its sha256, so two ids that slug alike still differ."""
    digest = hashlib.sha256(step_id.encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", step_id.lower()).strip("-")[:47].strip("-")
    return f"{slug}-{digest}" if slug else digest


def job_name(step_id: str) -> str:
    """The Job of a step: `idp-<safe id>`, at most 63 characters, the same on every attempt."""
    return f"idp-{safe_step_id(step_id)}"


class KubernetesRunner:
    """Runs steps as Kubernetes Jobs. See the module docstring for the semantics."""

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient | None = None,
        context: str | None = None,
        namespace: str = "idp-pipelines",
        default_image: str = "alpine:3.20",
        workspace_claim: str | None = None,
        workspace_mount: str = "/workspace",
        workspace_root: Path | None = None,
        service_account: str | None = None,
        uid: int = DEFAULT_STEP_UID,
        resources: Mapping[str, Mapping[str, str | int | float]] | None = None,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 2.0,
        ttl_seconds_after_finished: int | None = 600,
        active_deadline_margin: float = 60.0,
        keep_jobs: bool = False,
        image_pull_timeout: float = 300.0,
        api_retry_seconds: float = 60.0,
        replace_timeout: float = 120.0,
        request_timeout: float = 30.0,
        flush_lines: int = 200,
        max_line_chars: int = 64 * 1024,
    ) -> None:
        if workspace_claim is not None and workspace_root is None:
            raise ValueError(
                "workspace_claim needs workspace_root: the worker's path of the same volume, "
                "so a step's workdir can be turned into a subPath of the claim"
            )
        if not workspace_mount.startswith("/"):
            raise ValueError(f"workspace_mount must be an absolute path, not {workspace_mount!r}")
        self._api_client = api_client
        self.context = context
        self.namespace = namespace
        self.default_image = default_image
        self.workspace_claim = workspace_claim
        self.workspace_mount = workspace_mount
        self.workspace_root = workspace_root
        self.service_account = service_account
        self.uid = uid
        self.resources = _normalise_resources(resources)
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.ttl_seconds_after_finished = ttl_seconds_after_finished
        self.active_deadline_margin = active_deadline_margin
        self.keep_jobs = keep_jobs
        self.image_pull_timeout = image_pull_timeout
        self.api_retry_seconds = api_retry_seconds
        self.replace_timeout = replace_timeout
        self.request_timeout = request_timeout
        self.flush_lines = flush_lines
        self.max_line_chars = max_line_chars
        self._client_lock = asyncio.Lock()
        self._namespace_ready = False

    # -- the Job -------------------------------------------------------------------------------
    def build_job(self, spec: StepSpec, *, attempt: str) -> dict[str, Any]:
        """The Job manifest of one attempt of `spec` (raises `_StepRejected`)."""
        safe = safe_step_id(spec.step_id)
        labels = {MANAGED_BY: "idp", STEP_ID: safe}
        mount: dict[str, Any] = {"name": VOLUME, "mountPath": self.workspace_mount}
        volume: dict[str, Any]
        if self.workspace_claim is not None:
            mount_sub = self._sub_path(spec.workdir)
            if mount_sub:
                mount["subPath"] = mount_sub
            volume = {"name": VOLUME, "persistentVolumeClaim": {"claimName": self.workspace_claim}}
        else:
            volume = {"name": VOLUME, "emptyDir": {}}
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": spec.image or self.default_image,
            "command": ["/bin/sh", "-e", "-c", spec.command],
            "env": [{"name": key, "value": value} for key, value in spec.env.items()],
            "workingDir": self.workspace_mount,
            "volumeMounts": [mount],
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": self.uid,
                "runAsGroup": self.uid,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        if self.resources:
            container["resources"] = self.resources
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "automountServiceAccountToken": self.service_account is not None,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": self.uid,
                "runAsGroup": self.uid,
                "fsGroup": self.uid,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [volume],
        }
        if self.service_account is not None:
            pod_spec["serviceAccountName"] = self.service_account
        job_spec: dict[str, Any] = {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(spec.timeout)),
            "template": {"metadata": {"labels": {**labels, ATTEMPT: attempt}}, "spec": pod_spec},
        }
        if self.ttl_seconds_after_finished is not None:
            job_spec["ttlSecondsAfterFinished"] = self.ttl_seconds_after_finished
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name(spec.step_id),
                "namespace": self.namespace,
                "labels": {**labels, ATTEMPT: attempt},
                "annotations": {STEP_ID: spec.step_id},
            },
            "spec": job_spec,
        }

    def _sub_path(self, workdir: Path) -> str:
        assert self.workspace_root is not None
        root = PurePosixPath(self.workspace_root)
        try:
            relative = PurePosixPath(workdir).relative_to(root)
        except ValueError:
            relative = None
        if relative is None or ".." in relative.parts:
            raise _StepRejected(
                f"the step's workdir {workdir} is not under the workspace root {root}, "
                f"the worker's path of the claim {self.workspace_claim!r} the step mounts"
            )
        return "" if str(relative) == "." else str(relative)

    # -- running -------------------------------------------------------------------------------
    async def run(
        self,
        spec: StepSpec,
        on_output: OutputSink,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> StepOutcome:
        started = time.monotonic()
        attempt = uuid.uuid4().hex[:12]
        try:
            manifest = self.build_job(spec, attempt=attempt)
        except _StepRejected as exc:
            return _outcome(started, "failed", error=str(exc))
        beater = asyncio.create_task(self._beat(heartbeat))
        try:
            return await self._run(spec, manifest, attempt, on_output, beater, started)
        finally:
            beater.cancel()
            if beater.done() and not beater.cancelled():
                beater.exception()  # a heartbeat that failed after the step ended: retrieved

    async def _run(
        self,
        spec: StepSpec,
        manifest: dict[str, Any],
        attempt: str,
        on_output: OutputSink,
        beater: asyncio.Task[None],
        started: float,
    ) -> StepOutcome:
        await self._client()
        name = manifest["metadata"]["name"]
        await self._ensure_namespace()
        await self._remove_previous(name)
        # the create request runs on even if `run` is cancelled meanwhile: a cancellation
        # waits for it, so the delete below cannot overtake it and leave the Job running
        creating = asyncio.ensure_future(self._create(manifest))
        try:
            rejected = await asyncio.shield(creating)
            if rejected is not None:
                return _outcome(started, "failed", error=rejected)
            outcome, stopped = await self._supervise(spec, name, attempt, on_output, beater)
        except BaseException:
            # cancellation, a failing sink or heartbeat, the API lost: the Job must not outlive
            # the step; shielded, so a second cancel does not leave it running
            cleanup = asyncio.ensure_future(self._stop(name, creating))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise
        if not stopped and not self.keep_jobs:
            await self._delete(name, "Background")
        return outcome.model_copy(update={"duration_seconds": time.monotonic() - started})

    async def _stop(self, name: str, creating: asyncio.Future[str | None]) -> None:
        """Delete the Job of a step that ends early, once its create request has landed."""
        with contextlib.suppress(Exception):
            await creating
        await self._delete(name, "Foreground")

    async def _supervise(
        self,
        spec: StepSpec,
        name: str,
        attempt: str,
        on_output: OutputSink,
        beater: asyncio.Task[None],
    ) -> tuple[StepOutcome, bool]:
        """Poll until the Job ends. Returns the outcome and whether the runner stopped the Job
        itself (then it is deleted already)."""
        started = time.monotonic()
        deadline = started + spec.timeout + self.active_deadline_margin
        pump = _LogPump(self, on_output)
        last_ok = time.monotonic()
        pods: list[dict[str, Any]] = []
        pull_waiting_since: float | None = None
        while True:
            try:
                job = await self._read_job(name)
                pods = await self._list_pods(attempt)
                last_ok = time.monotonic()
            except (_Unreachable, ApiException) as exc:
                if isinstance(exc, ApiException) and not _transient(exc):
                    raise self._unavailable(exc) from exc
                if time.monotonic() - last_ok > self.api_retry_seconds:
                    raise self._unavailable(exc, lost=True) from exc  # `run` deletes it
                await self._pause(beater)
                continue
            await pump.pump(pods)
            if job is None:
                return _outcome(
                    started,
                    "failed",
                    error=f"the Job {self.namespace}/{name} was deleted outside the runner",
                ), True
            condition = _terminal_condition(job)
            if condition is not None:
                break
            waiting = _waiting(pods)
            if waiting is not None and waiting[0] in _FATAL_WAITING:
                await self._delete(name, "Foreground")
                return _outcome(
                    started,
                    "failed",
                    error=f"the container could not start: {_join(*waiting)}",
                ), True
            if waiting is not None and waiting[0] in _PULL_WAITING:
                pull_waiting_since = pull_waiting_since or time.monotonic()
                if time.monotonic() - pull_waiting_since >= self.image_pull_timeout:
                    await self._delete(name, "Foreground")
                    image = spec.image or self.default_image
                    return _outcome(
                        started,
                        "failed",
                        error=f"could not pull the image {image}: {_join(*waiting)}",
                    ), True
            else:
                pull_waiting_since = None
            if time.monotonic() >= deadline:
                await pump.pump(pods, final=True)
                await self._delete(name, "Foreground")
                note = _pending_note(pods) if pods else "no pod was created"
                return _outcome(
                    started,
                    "timed_out",
                    error=f"timed out after {spec.timeout:g}s; the runner deleted the Job "
                    f"(the cluster had not stopped it{'; ' + note if note else ''})",
                ), True
            await self._pause(beater)
        # the Job has ended: the rest of the output, then how it ended
        with contextlib.suppress(_Unreachable, ApiException):
            pods = await self._list_pods(attempt)
        await pump.pump(pods, final=True)
        return self._ended(spec, condition, pods, started), False

    def _ended(
        self,
        spec: StepSpec,
        condition: dict[str, Any],
        pods: list[dict[str, Any]],
        started: float,
    ) -> StepOutcome:
        terminated = _terminated(pods)
        code = terminated.get("exitCode") if terminated else None
        if condition.get("type") == "Complete":
            exit_code = code if isinstance(code, int) else 0
            return _outcome(started, "succeeded", exit_code=exit_code)
        reason = condition.get("reason")
        if reason == "DeadlineExceeded":
            note = _pending_note(pods)
            return _outcome(
                started,
                "timed_out",
                error=f"timed out after {spec.timeout:g}s; the cluster stopped the Job "
                f"(DeadlineExceeded{'; ' + note if note else ''})",
            )
        if isinstance(code, int):
            why = terminated.get("reason") if terminated else None
            suffix = f" ({why})" if why and why not in ("Error", "Completed") else ""
            return _outcome(
                started, "failed", exit_code=code, error=f"exited with code {code}{suffix}"
            )
        return _outcome(
            started,
            "failed",
            error=f"the Job failed: {_join(reason, condition.get('message'))}",
        )

    async def _pause(self, beater: asyncio.Task[None]) -> None:
        done, _ = await asyncio.wait({beater}, timeout=self.poll_interval)
        if beater in done:
            beater.result()  # raises what the heartbeat raised

    async def _beat(self, heartbeat: Heartbeat | None) -> None:
        if heartbeat is None:
            await asyncio.Event().wait()  # never ends on its own
            return
        while True:
            heartbeat()
            await asyncio.sleep(self.heartbeat_interval)

    # -- API calls -----------------------------------------------------------------------------
    async def _client(self) -> k8s.ApiClient:
        if self._api_client is not None:
            return self._api_client
        async with self._client_lock:
            if self._api_client is None:
                self._api_client = await asyncio.to_thread(load_api_client, self.context)
        return self._api_client

    @property
    def host(self) -> str:
        if self._api_client is None:
            return "(not configured yet)"
        return str(self._api_client.configuration.host)

    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._api_client)

    def _batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self._api_client)

    def _timeout(self) -> tuple[float, float]:
        return (min(10.0, self.request_timeout), self.request_timeout)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking client call in a thread; no HTTP answer at all becomes `_Unreachable`."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if not exc.status:  # the client's wrapping of TLS errors
                raise _Unreachable(str(exc.reason)) from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Unreachable(str(exc)) from exc

    async def _json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A typed client method's raw JSON answer, as plain dicts: the runner reads only a few
        fields, and parsing them into the client's models would only add ways to fail."""
        body = await self._call(_raw, fn, *args, _request_timeout=self._timeout(), **kwargs)
        return json.loads(body or b"{}")

    def _unavailable(self, exc: BaseException, *, lost: bool = False) -> RunnerUnavailable:
        if isinstance(exc, ApiException) and exc.status in (401, 403):
            return RunnerUnavailable(
                f"the Kubernetes API server at {self.host} refused the runner "
                f"({exc.status} {exc.reason}): {_api_message(exc)}"
            )
        if isinstance(exc, ApiException):
            detail = f"{exc.status} {exc.reason}: {_api_message(exc)}"
        else:
            detail = str(exc)
        if lost:
            return RunnerUnavailable(
                f"lost the Kubernetes API server at {self.host} for more than "
                f"{self.api_retry_seconds:g}s while a step ran (last error: {detail})"
            )
        if isinstance(exc, ApiException):
            return RunnerUnavailable(f"the Kubernetes API server at {self.host} answered {detail}")
        return RunnerUnavailable(
            f"the Kubernetes API server at {self.host} is unreachable: {detail}"
        )

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        core = self._core()
        try:
            try:
                await self._json(core.read_namespace, self.namespace)
            except ApiException:
                body = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.namespace, "labels": {MANAGED_BY: "idp"}},
                }
                try:
                    await self._json(core.create_namespace, body)
                except ApiException as exc:
                    log.debug(
                        "could not create the namespace %s (%s %s); assuming it exists",
                        self.namespace,
                        exc.status,
                        exc.reason,
                    )
        except _Unreachable as exc:
            raise self._unavailable(exc) from exc
        self._namespace_ready = True

    async def _read_job(self, name: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = await self._json(
                self._batch().read_namespaced_job, name, self.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return job

    async def _list_pods(self, attempt: str) -> list[dict[str, Any]]:
        selector = f"{ATTEMPT}={attempt}"
        try:
            listing = await self._json(
                self._core().list_namespaced_pod, self.namespace, label_selector=selector
            )
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        # filtered here too: a label selector is the server's promise, not every server's
        pods = [
            pod
            for pod in listing.get("items") or []
            if (pod.get("metadata", {}).get("labels") or {}).get(ATTEMPT) == attempt
        ]
        return sorted(
            pods,
            key=lambda pod: (
                pod.get("metadata", {}).get("creationTimestamp") or "",
                pod.get("metadata", {}).get("name") or "",
            ),
        )

    async def _remove_previous(self, name: str) -> None:
        """Delete a Job of the same name (a previous attempt) and wait until it is gone."""
        try:
            if await self._read_job(name) is None:
                return
            log.info("deleting %s/%s left by a previous attempt", self.namespace, name)
            await self._delete_call(name, "Foreground")
            waited = time.monotonic() + self.replace_timeout
            while await self._read_job(name) is not None:
                if time.monotonic() >= waited:
                    raise RunnerUnavailable(
                        f"the Job {self.namespace}/{name} of a previous attempt is still being "
                        f"deleted after {self.replace_timeout:g}s (API server {self.host})"
                    )
                await asyncio.sleep(self.poll_interval)
        except _Unreachable as exc:
            raise self._unavailable(exc) from exc
        except ApiException as exc:
            raise self._unavailable(exc) from exc

    async def _create(self, manifest: dict[str, Any]) -> str | None:
        """Create the Job; a Job the cluster rejects as invalid is the step's failure (returned
        as an error message), anything else that keeps it from running is `RunnerUnavailable`."""
        try:
            await self._json(self._batch().create_namespaced_job, self.namespace, manifest)
        except _Unreachable as exc:
            raise self._unavailable(exc) from exc
        except ApiException as exc:
            if exc.status in (400, 422):
                return f"the cluster rejected the step's Job: {_api_message(exc)}"
            if exc.status == 404:
                raise RunnerUnavailable(
                    f"the namespace {self.namespace!r} does not exist on the Kubernetes API "
                    f"server at {self.host} and the runner could not create it"
                ) from exc
            raise self._unavailable(exc) from exc
        return None

    async def _delete_call(self, name: str, propagation: str) -> None:
        try:
            await self._json(
                self._batch().delete_namespaced_job,
                name,
                self.namespace,
                propagation_policy=propagation,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _delete(self, name: str, propagation: str) -> None:
        """Delete the Job, best effort: a failure is logged (ttlSecondsAfterFinished remains)."""
        try:
            await self._delete_call(name, propagation)
        except (ApiException, _Unreachable) as exc:
            log.warning("could not delete the Job %s/%s: %s", self.namespace, name, exc)

    async def _read_log(self, pod: str, since: str | None) -> str | None:
        """The container's log with timestamps from `since` (RFC 3339, whole seconds); None
        while there is none to read (container not started, pod gone)."""
        api = self._api_client
        assert api is not None
        try:
            if hasattr(api, "param_serialize"):
                query = [("container", CONTAINER), ("timestamps", "true")]
                if since is not None:
                    query.append(("sinceTime", since))
                request = api.param_serialize(
                    method="GET",
                    resource_path="/api/v1/namespaces/{namespace}/pods/{name}/log",
                    path_params={"namespace": self.namespace, "name": pod},
                    query_params=query,
                    header_params={"Accept": "text/plain"},
                    auth_settings=["BearerToken"],
                )
                data = await self._call(_fetch, api, request, self._timeout())
            else:  # an older client: no sinceTime, the whole log (de-duplicated the same way)
                data = await self._call(
                    _raw,
                    self._core().read_namespaced_pod_log,
                    pod,
                    self.namespace,
                    container=CONTAINER,
                    timestamps=True,
                    _request_timeout=self._timeout(),
                )
        except ApiException as exc:
            if exc.status in (400, 404):
                return None
            raise
        return data.decode("utf-8", errors="replace")


@dataclass
class _Cursor:
    """How far the log of one pod has been read."""

    last: _Key | None = None  # timestamp of the newest line emitted
    at_last: int = 0  # lines emitted with exactly that timestamp
    plain: int = 0  # lines without a timestamp emitted (those logs are re-read whole)
    drained: bool = False  # read after the pod ended: nothing more will come


class _LogPump:
    """Reads the new lines of the step's pods and hands them to the sink in batches."""

    def __init__(self, runner: KubernetesRunner, on_output: OutputSink) -> None:
        self.runner = runner
        self.on_output = on_output
        self.seq = 0
        self.cursors: dict[str, _Cursor] = {}

    async def pump(self, pods: list[dict[str, Any]], *, final: bool = False) -> None:
        for pod in pods:
            name = pod.get("metadata", {}).get("name")
            phase = (pod.get("status") or {}).get("phase")
            if not name or phase == "Pending":
                continue
            cursor = self.cursors.setdefault(name, _Cursor())
            if cursor.drained:
                continue
            try:
                text = await self.runner._read_log(name, _since(cursor.last))
            except (_Unreachable, ApiException) as exc:
                if final:
                    log.warning("could not read the last output of pod %s: %s", name, exc)
                continue  # the next poll reads it
            if text is None:
                continue
            await self._emit(self._new_lines(cursor, text))
            if phase in ("Succeeded", "Failed"):
                cursor.drained = True

    def _new_lines(self, cursor: _Cursor, text: str) -> list[LogLine]:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        fresh: list[LogLine] = []
        plain_index = 0
        equal = 0  # lines in this reply with the timestamp `cursor.last`
        for raw in lines:
            stamp, _, body = raw.partition(" ")
            parsed = _parse_timestamp(stamp)
            if parsed is None:  # no timestamps from this server: the whole log every time
                plain_index += 1
                if plain_index <= cursor.plain:
                    continue
                cursor.plain += 1
                fresh.extend(self._lines(datetime.now(UTC), raw))
                continue
            key, at = parsed
            if cursor.last is not None and key < cursor.last:
                continue
            if cursor.last is not None and key == cursor.last:
                equal += 1
                if equal <= cursor.at_last:
                    continue
                cursor.at_last += 1
            else:
                cursor.last, cursor.at_last, equal = key, 1, 1
            fresh.extend(self._lines(at, body))
        return fresh

    def _lines(self, at: datetime, text: str) -> list[LogLine]:
        if text.endswith("\r"):
            text = text[:-1]
        limit = self.runner.max_line_chars
        parts = [text[i : i + limit] for i in range(0, len(text), limit)] or [""]
        out = []
        for part in parts:
            self.seq += 1
            out.append(LogLine(seq=self.seq, at=at, stream="stdout", text=part))
        return out

    async def _emit(self, lines: list[LogLine]) -> None:
        size = self.runner.flush_lines
        for start in range(0, len(lines), size):
            await self.on_output(lines[start : start + size])


# -- helpers -----------------------------------------------------------------------------------
def load_api_client(context: str | None) -> k8s.ApiClient:
    from kubernetes import config

    configuration = k8s.Configuration()
    if context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except config.ConfigException:
            pass  # not in a pod: the kubeconfig
    try:
        # KUBECONFIG read now (the client reads it once, at import), ':'-separated files merged
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None,
            context=context,
            client_configuration=configuration,
        )
    except Exception as exc:
        where = f"context {context!r} of the kubeconfig" if context else "kubeconfig"
        raise RunnerUnavailable(
            "no Kubernetes API server configured: the worker is not running in a cluster "
            f"and its {where} cannot be used ({exc})"
        ) from exc
    return k8s.ApiClient(configuration)


def _fetch(api: Any, request: tuple[Any, ...], timeout: tuple[float, float]) -> bytes:
    """Send a request built by `ApiClient.param_serialize` (in a thread) and read its body."""
    method, url, headers, body, post_params = request
    response = api.call_api(
        method,
        url,
        header_params=headers,
        body=body,
        post_params=post_params,
        _request_timeout=timeout,
    )
    data = _read_body(response.response)
    if not 200 <= response.status <= 299:
        error = ApiException(status=response.status, reason=response.reason)
        error.body = data.decode("utf-8", errors="replace") if data else None
        raise error
    return data


def _raw(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """Call a typed client method (in a thread) for its raw answer and read the body there."""
    return _read_body(fn(*args, _preload_content=False, **kwargs))


def _read_body(response: Any) -> bytes:
    """The body of a raw urllib3 response, its connection back in the pool."""
    try:
        return cast(bytes, response.data)
    finally:
        with contextlib.suppress(Exception):
            response.release_conn()


def _normalise_resources(
    resources: Mapping[str, Mapping[str, str | int | float]] | None,
) -> dict[str, dict[str, str]] | None:
    if not resources:
        return None
    unknown = set(resources) - {"requests", "limits"}
    if unknown:
        raise ValueError(f"resources takes 'requests' and 'limits', not {sorted(unknown)}")
    return {
        kind: {key: str(value) for key, value in values.items()}
        for kind, values in resources.items()
    }


def _transient(exc: ApiException) -> bool:
    return exc.status in (408, 429) or (exc.status or 0) >= 500


def _api_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str) and body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        return str(message) if message else body[:500]
    return str(exc.reason)


def _terminal_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (job.get("status") or {}).get("conditions") or []
    for wanted in _TERMINAL_CONDITIONS:
        for condition in conditions:
            if condition.get("type") == wanted and condition.get("status") == "True":
                return cast(dict[str, Any], condition)
    return None


def _step_container(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return cast(dict[str, Any], status)
    return None


def _terminated(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The terminated state of the step container of the newest pod that has one."""
    for pod in reversed(pods):
        status = _step_container(pod)
        state = (status or {}).get("state") or {}
        if state.get("terminated"):
            return cast(dict[str, Any], state["terminated"])
    return None


def _waiting(pods: list[dict[str, Any]]) -> tuple[str, str | None] | None:
    """(reason, message) of the newest pod's step container while it waits to start."""
    if not pods:
        return None
    status = _step_container(pods[-1])
    waiting = ((status or {}).get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        return str(waiting["reason"]), waiting.get("message")
    return None


def _pending_note(pods: list[dict[str, Any]]) -> str | None:
    """Why the newest pod has not run, if it has not: for timeout messages."""
    if not pods:
        return None
    waiting = _waiting(pods)
    if waiting is not None:
        return f"container waiting: {_join(*waiting)}"
    for condition in (pods[-1].get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"pod not scheduled: {_join(condition.get('reason'), condition.get('message'))}"
    return None


def _join(*parts: Any) -> str:
    return ": ".join(str(part) for part in parts if part) or "no reason given"


def _parse_timestamp(text: str) -> tuple[_Key, datetime] | None:
    match = _TIMESTAMP.match(text)
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    if zone == "Z":
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        base = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    except ValueError:
        return None
    nanos = int((fraction or "").ljust(9, "0"))
    epoch = int(base.timestamp())
    at = datetime.fromtimestamp(epoch, UTC) + timedelta(microseconds=nanos // 1000)
    return (epoch, nanos), at


def _since(key: _Key | None) -> str | None:
    if key is None:
        return None
    return datetime.fromtimestamp(key[0], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _outcome(
    started: float,
    status: StepStatus,
    *,
    exit_code: int | None = None,
    error: str | None = None,
) -> StepOutcome:
    return StepOutcome(
        exit_code=exit_code,
        status=status,
        duration_seconds=time.monotonic() - started,
        error=error,
    )
