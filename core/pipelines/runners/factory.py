"""The runner a worker uses, from PIPELINE_RUNNER: `local` (default), `docker`, `kubernetes`.
The docker and kubernetes clients are imported only when chosen."""

from __future__ import annotations

from core.pipelines.runners.base import Runner
from core.pipelines.runners.local import LocalRunner
from core.settings import Settings


def build_runner(settings: Settings) -> Runner:
    kind = settings.pipeline_runner
    if kind == "docker":
        from core.pipelines.runners.docker import DockerRunner

        return DockerRunner()
    if kind == "kubernetes":
        from core.pipelines.runners.kubernetes import KubernetesRunner

        return KubernetesRunner(
            namespace=settings.pipeline_namespace,
            context=settings.kubernetes_context,
            workspace_root=settings.workspace_root,
            workspace_claim=settings.pipeline_workspace_claim,
        )
    return LocalRunner()
