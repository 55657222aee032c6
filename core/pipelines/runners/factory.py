"""The runner a worker uses, from PIPELINE_RUNNER: `auto` (default: `sandbox` where bubblewrap
works, else `local`), `sandbox`, `local` (unsandboxed, development only), `docker`,
`kubernetes`. The docker and kubernetes clients are imported only when chosen.

Called once at worker start-up: the warnings about a weaker runner are logged then."""

from __future__ import annotations

import logging
import os
from typing import Any

from core.errors import ConfigError
from core.pipelines.runners.base import Runner
from core.pipelines.runners.local import LocalRunner
from core.pipelines.runners.sandbox import INSTALL_BWRAP, INSTALL_SLIRP, SandboxRunner
from core.settings import Settings

log = logging.getLogger(__name__)

UNSANDBOXED = (
    "pipeline steps run unsandboxed (PIPELINE_RUNNER=local): a step can read the worker's "
    "secrets, the database and other runs' workspaces; for development only"
)


def build_runner(settings: Settings, **options: Any) -> Runner:
    """`options` (kill_grace, ...) go to the local and sandbox runners (tests shorten them)."""
    kind = settings.pipeline_runner
    if kind == "docker":
        from core.pipelines.runners.docker import DockerRunner

        return DockerRunner(uid=settings.pipeline_step_uid)
    if kind == "kubernetes":
        from core.pipelines.runners.kubernetes import KubernetesRunner

        return KubernetesRunner(
            namespace=settings.pipeline_namespace,
            context=settings.kubernetes_context,
            workspace_root=settings.workspace_root,
            workspace_claim=settings.pipeline_workspace_claim,
            uid=settings.pipeline_step_uid,
        )
    if kind == "local":
        log.warning("%s", UNSANDBOXED)
        return LocalRunner(**options)
    sandbox = SandboxRunner(uid=settings.pipeline_step_uid, **options)
    problem = sandbox.check()
    if problem is None:
        _warn_about(sandbox)
        return sandbox
    if kind == "sandbox":
        raise ConfigError(f"PIPELINE_RUNNER=sandbox: {problem}")
    if settings.env == "production":
        raise ConfigError(
            f"pipeline steps cannot be sandboxed: {problem}; production refuses the "
            "unsandboxed local runner"
        )
    log.warning("%s; %s. To sandbox them, %s", problem, UNSANDBOXED, INSTALL_BWRAP)
    return LocalRunner(**options)


def _warn_about(sandbox: SandboxRunner) -> None:
    if sandbox.slirp4netns is None:
        log.warning(
            "slirp4netns was not found: steps with `network: true` share the worker's network "
            "and can reach its loopback ports (Temporal, the API, the database); %s",
            INSTALL_SLIRP,
        )
    if os.geteuid() == 0:
        log.warning(
            "the worker runs as root: sandboxed steps keep host uid 0 (without capabilities, "
            "read-only system directories); run workers as an unprivileged user"
        )
