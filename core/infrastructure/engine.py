"""The boundary to Pulumi: preview, up and destroy of one stack with an inline program, through
the Automation API (a local workspace, a stack per environment, the backend from
`PULUMI_BACKEND_URL` or a file backend under the data dir, the passphrase secrets provider).

`Engine` is what the provisioning activities use; `AutomationEngine` is the real one and tests
put a stand-in at this boundary. The Automation API drives the `pulumi` CLI: where it is not
installed, every call fails at once with `PulumiMissing`, which says how to install it, and
nothing is written (no workspace, no backend state)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

INSTALL_HINT = (
    "the Pulumi CLI is not installed on this worker: install it "
    "(curl -fsSL https://get.pulumi.com | sh, or see https://www.pulumi.com/docs/install/) "
    "and make `pulumi` reachable on PATH (or set PULUMI_HOME to where it is installed)"
)
Output = Callable[[str], None]
Program = Callable[[], None]


class PulumiMissing(Exception):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


@dataclass(frozen=True)
class StackRef:
    project: str
    stack: str
    backend_url: str  # file://<dir>, s3://..., https://api.pulumi.com
    passphrase: str  # for the passphrase secrets provider
    config: Mapping[str, str] = field(default_factory=dict)  # e.g. aws:region
    secret_config: Mapping[str, str] = field(default_factory=dict)  # credentials


@dataclass(frozen=True)
class PlannedResource:
    urn: str
    type: str
    name: str
    op: str  # create | update | replace | delete | same
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class DeployedResource:
    urn: str
    type: str
    name: str
    id: str | None
    parent: str | None
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deployed:
    outputs: Mapping[str, Any]
    resources: list[DeployedResource]


class Engine(Protocol):
    async def preview(
        self, ref: StackRef, program: Program, out: Output
    ) -> list[PlannedResource]: ...

    async def up(self, ref: StackRef, program: Program, out: Output) -> Deployed: ...

    async def destroy(
        self, ref: StackRef, program: Program, out: Output, targets: list[str] | None = None
    ) -> list[str]:
        """Destroy the stack's resources; with `targets` (URNs), those and their dependents.
        The names of the resources it deleted."""


def pulumi_cli() -> str:
    """The `pulumi` executable; PulumiMissing when there is none."""
    home = os.environ.get("PULUMI_HOME")
    candidates = [shutil.which("pulumi")]
    if home:
        candidates.append(str(Path(home) / "bin" / "pulumi"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise PulumiMissing


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class AutomationEngine:
    """The Automation API in a thread (it is blocking), one local workspace per call."""

    def _stack(self, ref: StackRef, program: Program) -> Any:
        cli = pulumi_cli()  # before anything is created
        from pulumi import automation as auto

        if ref.backend_url.startswith("file://"):
            Path(ref.backend_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        opts = auto.LocalWorkspaceOptions(
            project_settings=auto.ProjectSettings(
                name=ref.project,
                runtime="python",
                backend=auto.ProjectBackend(url=ref.backend_url),
            ),
            secrets_provider="passphrase",
            env_vars={"PULUMI_CONFIG_PASSPHRASE": ref.passphrase},
            pulumi_command=auto.PulumiCommand(root=str(Path(cli).parent.parent)),
        )
        stack = auto.create_or_select_stack(
            stack_name=ref.stack, project_name=ref.project, program=program, opts=opts
        )
        values = {k: auto.ConfigValue(value=v) for k, v in ref.config.items()}
        values |= {k: auto.ConfigValue(value=v, secret=True) for k, v in ref.secret_config.items()}
        if values:
            stack.set_all_config(values)
        return stack

    async def preview(self, ref: StackRef, program: Program, out: Output) -> list[PlannedResource]:
        planned: list[PlannedResource] = []

        def on_event(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            if pre is None:
                return
            meta = pre.metadata
            new = meta.new
            planned.append(
                PlannedResource(
                    urn=meta.urn,
                    type=meta.type,
                    name=_name(meta.urn),
                    op=str(getattr(meta.op, "value", meta.op)),
                    inputs=dict(new.inputs or {}) if new is not None else {},
                )
            )

        def run() -> None:
            self._stack(ref, program).preview(on_output=out, on_event=on_event)

        await asyncio.to_thread(run)
        return planned

    async def up(self, ref: StackRef, program: Program, out: Output) -> Deployed:
        def run() -> Deployed:
            stack = self._stack(ref, program)
            result = stack.up(on_output=out)
            state = stack.export_stack().deployment or {}
            resources = [
                DeployedResource(
                    urn=r["urn"],
                    type=r["type"],
                    name=_name(r["urn"]),
                    id=r.get("id"),
                    parent=r.get("parent"),
                    inputs=r.get("inputs") or {},
                    outputs=r.get("outputs") or {},
                    dependencies=tuple(r.get("dependencies") or ()),
                )
                for r in state.get("resources", [])
                if not r["type"].startswith("pulumi:")
            ]
            # a secret output is recorded as a marker, never its value
            outputs = {k: "[secret]" if v.secret else v.value for k, v in result.outputs.items()}
            return Deployed(outputs, resources)

        return await asyncio.to_thread(run)

    async def destroy(
        self, ref: StackRef, program: Program, out: Output, targets: list[str] | None = None
    ) -> list[str]:
        deleted: list[str] = []

        def on_event(event: Any) -> None:
            outputs = getattr(event, "res_outputs_event", None)
            meta = outputs.metadata if outputs is not None else None
            if meta is None or meta.type.startswith("pulumi:"):
                return
            if str(getattr(meta.op, "value", meta.op)) == "delete":
                deleted.append(_name(meta.urn))

        def run() -> None:
            stack = self._stack(ref, program)
            if targets:
                stack.destroy(
                    on_output=out, on_event=on_event, target=targets, target_dependents=True
                )
            else:
                stack.destroy(on_output=out, on_event=on_event)

        await asyncio.to_thread(run)
        return deleted
