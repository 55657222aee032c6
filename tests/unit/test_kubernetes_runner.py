"""The kubernetes runner against kmock, an emulated Kubernetes API: the official client talks
HTTP to it. kmock stores the objects the runner creates but runs nothing, so each test plays
the cluster: it writes the Job's status and the pod (with the labels of the Job's template)
into kmock's stored objects, and serves the pod log endpoint with a scripted handler (kmock
answers `pods/<name>/log` with the pod object itself otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock import KubernetesEmulator, Object, Request
from kubernetes import client as k8s

from core.pipelines.runners import LogLine, StepSpec
from core.pipelines.runners.kubernetes import (
    KubernetesRunner,
    RunnerUnavailable,
    job_name,
    safe_step_id,
)

NS = "idp-pipelines"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[LogLine]] = []

    async def __call__(self, batch: list[LogLine]) -> None:
        self.batches.append(batch)

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]

    @property
    def text(self) -> list[str]:
        return [line.text for line in self.lines]


class Logs:
    """The pod log endpoint: serves the lines added so far, as the kubelet does: with their
    timestamps when asked, from `sinceTime` (whole seconds, inclusive) when given."""

    def __init__(self, *, timestamps: bool = True) -> None:
        self.timestamps = timestamps
        self.lines: list[tuple[str, str]] = []
        self.requests: list[dict[str, str]] = []

    def add(self, stamp: str, text: str) -> None:
        self.lines.append((stamp, text))

    def __call__(self, request: Request) -> bytes:
        params = dict(request.params)
        self.requests.append(params)
        since = params.get("sinceTime")
        out = []
        for stamp, text in self.lines:
            if since is not None and stamp[:19] < since[:19]:
                continue
            with_stamp = self.timestamps and params.get("timestamps") == "true"
            out.append(f"{stamp} {text}\n" if with_stamp else f"{text}\n")
        return "".join(out).encode()


def serve_logs(kmock: KubernetesEmulator, logs: Logs | None = None) -> Logs:
    logs = logs or Logs()
    kmock["get", kmock.resource("v1/pods"), kmock.subresource("log")] << logs
    return logs


def api_client(kmock: KubernetesEmulator) -> k8s.ApiClient:
    return k8s.ApiClient(k8s.Configuration(host=str(kmock.url).rstrip("/")))


def runner(kmock: KubernetesEmulator, **options: Any) -> KubernetesRunner:
    options.setdefault("poll_interval", 0.05)
    options.setdefault("heartbeat_interval", 0.05)
    return KubernetesRunner(api_client=api_client(kmock), **options)


def spec(
    workdir: Path,
    command: str = "make test",
    *,
    step_id: str = "0d6c5c1e-run-step",
    timeout: float = 30,
    image: str | None = None,
    env: dict[str, str] | None = None,
) -> StepSpec:
    return StepSpec(
        step_id=step_id,
        command=command,
        env=env or {},
        workdir=workdir,
        timeout=timeout,
        image=image,
    )


async def eventually(check: Callable[[], Any], what: str) -> Any:
    for _ in range(1000):
        result = check()
        if result:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def created_job(
    kmock: KubernetesEmulator, name: str, *, not_attempt: str | None = None
) -> dict[str, Any]:
    """The Job `name` as the runner created it, once it has."""

    def find() -> Object | None:
        with contextlib.suppress(KeyError):
            job = kmock.objects[JOBS, NS, name]
            attempt = job.raw["metadata"]["labels"].get("idp.attempt") if not job.deleted else None
            if attempt is not None and attempt != not_attempt:
                return job
        return None

    job: Object = await eventually(find, f"the Job {name} is created")
    return job.raw


def add_pod(
    kmock: KubernetesEmulator,
    job: dict[str, Any],
    *,
    name: str = "step-pod-1",
    phase: str = "Running",
    state: dict[str, Any] | None = None,
) -> None:
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    kmock.objects[PODS, NS, name] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "step", "state": state or {"running": {}}}],
        },
    }


def end_pod(
    kmock: KubernetesEmulator, exit_code: int, reason: str, *, name: str = "step-pod-1"
) -> None:
    kmock.objects[PODS, NS, name].patch(
        {
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "step",
                        "state": {"terminated": {"exitCode": exit_code, "reason": reason}},
                    }
                ],
            }
        }
    )


def finish(
    kmock: KubernetesEmulator, name: str, kind: str, reason: str = "", message: str = ""
) -> None:
    condition = {"type": kind, "status": "True", "reason": reason, "message": message}
    kmock.objects[JOBS, NS, name].patch({"status": {"conditions": [condition]}})


def deletes(kmock: KubernetesEmulator, name: str) -> list[str | None]:
    """The propagation policies of the DELETE requests for the Job `name`, in order."""
    return [
        request.params.get("propagationPolicy")
        for request in kmock
        if request.method == "DELETE" and request.resource == JOBS and request.name == name
    ]


# -- the Job -----------------------------------------------------------------------------------
def test_job_names_are_dns_safe_deterministic_and_distinct() -> None:
    ids = ["0d6c5c1e-9b1f-4b43-a0b3-3a3c1e0f7d11", "Step 1", "step-1", "--", "x" * 200, "ÄÖ"]
    names = [job_name(step_id) for step_id in ids]
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        assert len(name) <= 63
    assert len(set(names)) == len(names)
    assert names == [job_name(step_id) for step_id in ids]
    assert names[0] == f"idp-{safe_step_id(ids[0])}"
    assert names[0].startswith("idp-0d6c5c1e-9b1f-4b43-a0b3-3a3c1e0f7d11-")


async def test_the_job_the_runner_creates_and_deletes(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    serve_logs(kmock)
    step = spec(tmp_path, "echo hi; make", timeout=90.5, env={"CI": "true", "FOO": "b a r"})
    name = job_name(step.step_id)
    resources = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": 1024}}
    task = asyncio.create_task(
        runner(kmock, resources=resources, ttl_seconds_after_finished=300).run(step, Sink())
    )
    job = await created_job(kmock, name)
    finish(kmock, name, "Complete")
    outcome = await task
    assert outcome.status == "succeeded" and outcome.exit_code == 0

    sent = kmock.objects[JOBS, NS, name].history[0]  # as the runner created it
    safe = safe_step_id(step.step_id)
    assert sent == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"idp.managed-by": "idp", "idp.step-id": safe, "idp.attempt": ...},
            "annotations": {"idp.step-id": step.step_id},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 91,
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {
                    "labels": {"idp.managed-by": "idp", "idp.step-id": safe, "idp.attempt": ...}
                },
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "runAsGroup": 65534,
                        "fsGroup": 65534,
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "step",
                            "image": "alpine:3.20",
                            "command": ["/bin/sh", "-e", "-c", "echo hi; make"],
                            "env": [
                                {"name": "CI", "value": "true"},
                                {"name": "FOO", "value": "b a r"},
                            ],
                            "workingDir": "/workspace",
                            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": 65534,
                                "runAsGroup": 65534,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "256Mi"},
                                "limits": {"memory": "1024"},
                            },
                        }
                    ],
                    "volumes": [{"name": "workspace", "emptyDir": {}}],
                },
            },
        },
    }
    labels = job["metadata"]["labels"]
    assert labels["idp.attempt"] == job["spec"]["template"]["metadata"]["labels"]["idp.attempt"]
    # deleted at the end, its finished pods with it
    assert kmock.objects[JOBS, NS, name].deleted
    assert deletes(kmock, name) == ["Background"]


async def test_workspace_claim_is_mounted_with_the_workdir_as_sub_path(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    serve_logs(kmock)
    root = tmp_path / "workspaces"
    step = spec(root / "run-42" / "app", image="node:22", step_id="claim-step")
    name = job_name(step.step_id)
    kube = runner(
        kmock,
        workspace_claim="idp-workspaces",
        workspace_root=root,
        service_account="builder",
    )
    task = asyncio.create_task(kube.run(step, Sink()))
    job = await created_job(kmock, name)
    finish(kmock, name, "Complete")
    assert (await task).status == "succeeded"
    pod_spec = job["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["image"] == "node:22"
    assert container["workingDir"] == "/workspace"
    assert container["volumeMounts"] == [
        {"name": "workspace", "mountPath": "/workspace", "subPath": "run-42/app"}
    ]
    assert pod_spec["volumes"] == [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": "idp-workspaces"}}
    ]
    assert pod_spec["serviceAccountName"] == "builder"
    assert pod_spec["automountServiceAccountToken"] is True


def test_steps_run_as_the_configured_non_root_uid_without_privileges(tmp_path: Path) -> None:
    kube = KubernetesRunner(api_client=k8s.ApiClient(), uid=1000)
    pod_spec = kube.build_job(spec(tmp_path, "id"), attempt="a1")["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert (pod_spec["securityContext"]["runAsUser"], pod_spec["securityContext"]["fsGroup"]) == (
        1000,
        1000,
    )
    assert pod_spec["automountServiceAccountToken"] is False
    (container,) = pod_spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["runAsUser"] == 1000
    assert [e["name"] for e in container["env"]] == []  # nothing of the worker's environment
    assert "volumes" in pod_spec and all("secret" not in v for v in pod_spec["volumes"])


async def test_workdir_outside_the_shared_workspace_fails_without_a_job(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    kube = runner(kmock, workspace_claim="idp-workspaces", workspace_root=tmp_path / "ws")
    for workdir in (tmp_path / "elsewhere", tmp_path / "ws" / ".." / "etc"):
        outcome = await kube.run(spec(workdir), Sink())
        assert outcome.status == "failed" and outcome.exit_code is None
        assert "not under the workspace root" in (outcome.error or "")
    assert len(kmock.objects) == 0
    assert not list(kmock)  # not a single request
    with pytest.raises(ValueError, match="workspace_root"):
        KubernetesRunner(api_client=api_client(kmock), workspace_claim="idp-workspaces")


# -- how a step ends ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exit_code", "reason", "error"),
    [
        (3, "Error", "exited with code 3"),
        (137, "OOMKilled", "exited with code 137 (OOMKilled)"),
    ],
)
async def test_failed_job_reports_the_container_exit_code(
    kmock: KubernetesEmulator, tmp_path: Path, exit_code: int, reason: str, error: str
) -> None:
    serve_logs(kmock)
    step = spec(tmp_path, "exit 3")
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    job = await created_job(kmock, name)
    add_pod(kmock, job)
    end_pod(kmock, exit_code, reason)
    finish(kmock, name, "Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")
    outcome = await task
    assert (outcome.status, outcome.exit_code, outcome.error) == ("failed", exit_code, error)
    assert kmock.objects[JOBS, NS, name].deleted


async def test_failed_job_without_a_pod_reports_the_condition(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    await created_job(kmock, name)
    finish(kmock, name, "Failed", "PodFailurePolicy", "Container step was evicted")
    outcome = await task
    assert (outcome.status, outcome.exit_code) == ("failed", None)
    assert outcome.error == "the Job failed: PodFailurePolicy: Container step was evicted"


async def test_complete_job_reports_the_pod_exit_code(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    serve_logs(kmock)
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    job = await created_job(kmock, name)
    add_pod(kmock, job)
    end_pod(kmock, 0, "Completed")
    finish(kmock, name, "Complete")
    outcome = await task
    assert (outcome.status, outcome.exit_code, outcome.error) == ("succeeded", 0, None)
    assert outcome.duration_seconds > 0


async def test_deadline_exceeded_is_timed_out(kmock: KubernetesEmulator, tmp_path: Path) -> None:
    step = spec(tmp_path, "sleep 1000", timeout=5)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    await created_job(kmock, name)
    finish(kmock, name, "Failed", "DeadlineExceeded", "Job was active longer than specified")
    outcome = await task
    assert (outcome.status, outcome.exit_code) == ("timed_out", None)
    assert outcome.error is not None
    assert outcome.error.startswith("timed out after 5s; the cluster stopped the Job")
    assert "DeadlineExceeded" in outcome.error
    assert kmock.objects[JOBS, NS, name].deleted


async def test_runner_backstop_deletes_a_job_the_cluster_never_stops(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    step = spec(tmp_path, "sleep 1000", timeout=0.2)
    name = job_name(step.step_id)
    outcome = await runner(kmock, active_deadline_margin=0.2).run(step, Sink())
    assert (outcome.status, outcome.exit_code) == ("timed_out", None)
    assert "the runner deleted the Job" in (outcome.error or "")
    assert "no pod was created" in (outcome.error or "")
    assert kmock.objects[JOBS, NS, name].deleted
    assert kmock.objects[JOBS, NS, name].history.last.raw["spec"]["activeDeadlineSeconds"] == 1
    assert deletes(kmock, name) == ["Foreground"]


@pytest.mark.parametrize(
    ("waiting", "error"),
    [
        ({"reason": "InvalidImageName", "message": "bad ref"}, "could not start"),
        ({"reason": "ImagePullBackOff", "message": "not found"}, "could not pull the image"),
    ],
)
async def test_container_that_cannot_start_fails_the_step(
    kmock: KubernetesEmulator, tmp_path: Path, waiting: dict[str, str], error: str
) -> None:
    step = spec(tmp_path, image="registry.invalid/nope:1")
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock, image_pull_timeout=0.2).run(step, Sink()))
    job = await created_job(kmock, name)
    add_pod(kmock, job, phase="Pending", state={"waiting": waiting})
    outcome = await task
    assert (outcome.status, outcome.exit_code) == ("failed", None)
    assert error in (outcome.error or "")
    assert waiting["reason"] in (outcome.error or "")
    assert kmock.objects[JOBS, NS, name].deleted


async def test_job_deleted_by_someone_else_fails_the_step(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    await created_job(kmock, name)
    kmock.objects[JOBS, NS, name].delete()
    outcome = await task
    assert outcome.status == "failed"
    assert "deleted outside the runner" in (outcome.error or "")


# -- output and heartbeat ----------------------------------------------------------------------
async def test_logs_reach_the_sink_in_order_once_with_seq(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    logs = serve_logs(kmock)
    sink = Sink()
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, sink))
    job = await created_job(kmock, name)
    add_pod(kmock, job)
    logs.add("2030-05-01T10:00:00.100000000Z", "one")
    logs.add("2030-05-01T10:00:00.200000000Z", "two")
    await eventually(lambda: len(sink.lines) == 2, "the first two lines")
    # the same second again (sinceTime has whole seconds), a later one, an empty line
    logs.add("2030-05-01T10:00:00.300000000Z", "three")
    logs.add("2030-05-01T10:00:01.000000000Z", "four")
    logs.add("2030-05-01T10:00:01.500000000Z", "")
    await eventually(lambda: len(sink.lines) == 5, "three more lines")
    # a line with exactly the timestamp of the last one seen is still new
    logs.add("2030-05-01T10:00:01.500000000Z", "five, same instant\r")
    await eventually(lambda: len(sink.lines) == 6, "the same-instant line")
    # the end of the output is read after the pod ended, before the Job is deleted
    logs.add("2030-05-01T10:00:02.000000000Z", "last words")
    end_pod(kmock, 0, "Completed")
    finish(kmock, name, "Complete")
    outcome = await task
    assert outcome.status == "succeeded"
    assert sink.text == ["one", "two", "three", "four", "", "five, same instant", "last words"]
    assert [line.seq for line in sink.lines] == list(range(1, 8))
    assert {line.stream for line in sink.lines} == {"stdout"}
    assert sink.lines[0].at == datetime(2030, 5, 1, 10, 0, 0, 100000, tzinfo=UTC)
    assert sink.lines[3].at == datetime(2030, 5, 1, 10, 0, 1, tzinfo=UTC)
    # streamed while the step ran, not in one batch at its end
    assert len(sink.batches) >= 4
    assert logs.requests[0] == {"container": "step", "timestamps": "true"}
    assert {"container": "step", "timestamps": "true", "sinceTime": "2030-05-01T10:00:01Z"} in (
        logs.requests
    )


async def test_logs_without_timestamps_are_read_whole_and_counted(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    logs = serve_logs(kmock, Logs(timestamps=False))
    sink = Sink()
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock, flush_lines=2).run(step, sink))
    job = await created_job(kmock, name)
    add_pod(kmock, job)
    for i in range(3):
        logs.add("2030-05-01T10:00:00Z", f"line {i}")
    await eventually(lambda: len(sink.lines) == 3, "three lines")
    logs.add("2030-05-01T10:00:00Z", "line 3")
    end_pod(kmock, 0, "Completed")
    finish(kmock, name, "Complete")
    await task
    assert sink.text == ["line 0", "line 1", "line 2", "line 3"]
    assert [line.seq for line in sink.lines] == [1, 2, 3, 4]
    assert max(len(batch) for batch in sink.batches) <= 2
    assert all("sinceTime" not in request for request in logs.requests)


async def test_heartbeat_is_called_while_the_job_runs(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    beats: list[int] = []
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink(), heartbeat=lambda: beats.append(1)))
    await created_job(kmock, name)
    await eventually(lambda: len(beats) >= 3, "three heartbeats")
    finish(kmock, name, "Complete")
    assert (await task).status == "succeeded"


# -- stopping early ----------------------------------------------------------------------------
async def test_cancellation_deletes_the_job_and_reraises(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    serve_logs(kmock)
    step = spec(tmp_path, "sleep 1000")
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    job = await created_job(kmock, name)
    add_pod(kmock, job)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kmock.objects[JOBS, NS, name].deleted
    assert deletes(kmock, name) == ["Foreground"]


async def test_a_failing_sink_deletes_the_job_and_raises(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    logs = serve_logs(kmock)

    async def broken(batch: list[LogLine]) -> None:
        raise RuntimeError("the log store is down")

    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock).run(step, broken))
    job = await created_job(kmock, name)
    add_pod(kmock, job)
    logs.add("2030-05-01T10:00:00Z", "hello")
    with pytest.raises(RuntimeError, match="the log store is down"):
        await task
    assert kmock.objects[JOBS, NS, name].deleted


async def test_a_failing_heartbeat_deletes_the_job_and_raises(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    beats: list[int] = []

    def heartbeat() -> None:
        beats.append(1)
        if len(beats) == 3:
            raise RuntimeError("worker shutting down")

    step = spec(tmp_path)
    name = job_name(step.step_id)
    with pytest.raises(RuntimeError, match="worker shutting down"):
        await runner(kmock).run(step, Sink(), heartbeat=heartbeat)
    assert kmock.objects[JOBS, NS, name].deleted
    assert deletes(kmock, name) == ["Foreground"]


async def test_keep_jobs_leaves_a_finished_job(kmock: KubernetesEmulator, tmp_path: Path) -> None:
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock, keep_jobs=True).run(step, Sink()))
    await created_job(kmock, name)
    finish(kmock, name, "Complete")
    assert (await task).status == "succeeded"
    assert not kmock.objects[JOBS, NS, name].deleted
    assert deletes(kmock, name) == []


async def test_a_job_left_by_a_previous_attempt_is_replaced(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    step = spec(tmp_path)
    name = job_name(step.step_id)
    kmock.objects[JOBS, NS, name] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": {"idp.attempt": "previous"}},
    }
    task = asyncio.create_task(runner(kmock).run(step, Sink()))
    await created_job(kmock, name, not_attempt="previous")
    finish(kmock, name, "Complete")
    assert (await task).status == "succeeded"
    old, gone, new = kmock.objects[JOBS, NS, name].history[:3]
    assert gone is None  # deleted before the new Job was created
    assert old is not None and old.raw["metadata"]["labels"]["idp.attempt"] == "previous"
    assert new is not None and new.raw["metadata"]["labels"]["idp.attempt"] != "previous"
    assert deletes(kmock, name) == ["Foreground", "Background"]


# -- the API server ----------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_api_raises_runner_unavailable(tmp_path: Path) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    configuration = k8s.Configuration(host=host)
    configuration.retries = 0
    kube = KubernetesRunner(api_client=k8s.ApiClient(configuration))
    with pytest.raises(RunnerUnavailable, match=re.escape(f"API server at {host} is unreachable")):
        await kube.run(spec(tmp_path), Sink())


async def test_api_lost_while_a_step_runs_raises_runner_unavailable(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    step = spec(tmp_path)
    name = job_name(step.step_id)
    task = asyncio.create_task(runner(kmock, api_retry_seconds=0.2).run(step, Sink()))
    await created_job(kmock, name)
    kmock["get", kmock.resource(JOBS)] << 503  # the Job can no longer be read
    with pytest.raises(RunnerUnavailable, match="lost the Kubernetes API server at .* 503"):
        await task
    assert kmock.objects[JOBS, NS, name].deleted  # deleting still worked
    assert deletes(kmock, name) == ["Foreground"]


async def test_forbidden_raises_runner_unavailable(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    kmock["post", kmock.resource(JOBS)] << 403 << {"kind": "Status", "message": "no jobs for you"}
    with pytest.raises(RunnerUnavailable, match=r"refused the runner \(403 .*no jobs for you"):
        await runner(kmock).run(spec(tmp_path), Sink())


async def test_job_the_cluster_rejects_fails_the_step(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    invalid = {"kind": "Status", "message": 'Job.batch "x" is invalid: spec.template: Invalid'}
    kmock["post", kmock.resource(JOBS)] << 422 << invalid
    outcome = await runner(kmock).run(spec(tmp_path), Sink())
    assert (outcome.status, outcome.exit_code) == ("failed", None)
    assert outcome.error == f"the cluster rejected the step's Job: {invalid['message']}"


async def test_no_configuration_raises_runner_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(RunnerUnavailable, match="no Kubernetes API server configured"):
        await KubernetesRunner().run(spec(tmp_path), Sink())


async def test_kubeconfig_context_is_used(
    kmock: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "elsewhere",
        "clusters": [
            {"name": "dead", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}},
            {"name": "emulated", "cluster": {"server": str(kmock.url).rstrip("/")}},
        ],
        "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
        "contexts": [
            {"name": "elsewhere", "context": {"cluster": "dead", "user": "ci"}},
            {"name": "emulator", "context": {"cluster": "emulated", "user": "ci"}},
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    step = spec(tmp_path)
    name = job_name(step.step_id)
    kube = KubernetesRunner(context="emulator", poll_interval=0.05)
    task = asyncio.create_task(kube.run(step, Sink()))
    await created_job(kmock, name)
    finish(kmock, name, "Complete")
    assert (await task).status == "succeeded"
    assert kube.host == str(kmock.url).rstrip("/")
    created = [request for request in kmock if request.method == "POST"]
    assert created and created[0].headers.get("Authorization") == "Bearer not-a-secret"
