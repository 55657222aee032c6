"""The boundary to Pulumi: preview, up and destroy of one stack with an inline program, through
the Automation API (a local workspace, a stack per environment, the backend from
`PULUMI_BACKEND_URL` or a file backend under the data dir, the passphrase secrets provider).

`Engine` is what the provisioning activities use; `AutomationEngine` is the real one and tests
put a stand-in at this boundary. The Automation API drives the `pulumi` CLI: where it is not
installed, every call fails at once with `PulumiMissing`, which says how to install it, and
nothing is written (no workspace, no backend state).

Each operation runs the CLI (and so the provider plugins it starts) with `pulumi_environment()`
only, never the worker's environment: no ENCRYPTION_KEY, JWT_SECRET, DATABASE_URL or other
providers' credentials, and a fresh empty HOME, so no ambient credential of the worker
(~/.aws, ~/.kube/config, gcloud's) stands in for a provider that has none. The provider's own
credentials travel as the stack's secret configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

INSTALL_HINT = (
    "the Pulumi CLI is not installed on this worker ({host}): install it "
    "(curl -fsSL https://get.pulumi.com | sh, or see https://www.pulumi.com/docs/install/) "
    "and make `pulumi` reachable on PATH (or set PULUMI_HOME to where it is installed)"
)
Output = Callable[[str], None]
Program = Callable[[], None]


# The worker's variables a Pulumi run may see: none of them a secret of the platform.
PASSED_VARIABLES: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# What the CLI needs to reach the state backend, by the backend URL's scheme (file: nothing).
BACKEND_VARIABLES: dict[str, tuple[str, ...]] = {
    "https": ("PULUMI_ACCESS_TOKEN",),
    "s3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS"),
    "azblob": ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"),
}


def pulumi_environment(
    ref: StackRef, home: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of one Pulumi operation: a few harmless variables of the worker
    (`PASSED_VARIABLES`), the state backend's own (`BACKEND_VARIABLES`), the stacks'
    passphrase, `home` as HOME and the worker's Pulumi home for its plugins."""
    environ = os.environ if environ is None else environ
    scheme = ref.backend_url.split("://", 1)[0]
    names = (*PASSED_VARIABLES, *BACKEND_VARIABLES.get(scheme, ()))
    env = {name: environ[name] for name in names if name in environ}
    worker_home = environ.get("HOME") or str(Path.home())
    env |= {
        "PATH": env.get("PATH") or os.defpath,
        "HOME": home,
        "PULUMI_HOME": environ.get("PULUMI_HOME") or str(Path(worker_home) / ".pulumi"),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_CONFIG_PASSPHRASE": ref.passphrase,
    }
    return env


@contextmanager
def _fresh_home() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="idp-pulumi-home-") as home:
        yield home


class PulumiMissing(Exception):
    """The message names the worker's host, where the CLI must be installed."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT.format(host=f"host {socket.gethostname()}"))


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


def _isolated_command(cli: str, env: Mapping[str, str]) -> Any:
    """A `PulumiCommand` that starts the CLI with `env` and the workspace's additions only.
    Upstream's starts it with the worker's whole environment plus additions
    (pulumi.automation._cmd.PulumiCommand.run), which would hand every secret of the worker to
    the CLI, its provider plugins, and whatever they run."""
    from pulumi.automation import PulumiCommand
    from pulumi.automation._cmd import CommandResult, _parse_and_validate_pulumi_version
    from pulumi.automation._minimum_version import _MINIMUM_VERSION
    from pulumi.automation.errors import create_command_error

    def consume(stream: Any, callback: Output | None, lines: list[str]) -> None:
        for line in iter(stream.readline, ""):
            text = line.rstrip()
            if callback is not None:
                callback(text)
            lines.append(text)
        stream.close()

    class IsolatedCommand(PulumiCommand):
        def __init__(self) -> None:  # upstream's runs `pulumi version` with os.environ
            self.command = cli
            found = subprocess.check_output([cli, "version"], env=dict(env), text=True)
            self.version = _parse_and_validate_pulumi_version(
                _MINIMUM_VERSION,
                found.strip().removeprefix("v"),
                os.environ.get("PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK") is not None,
            )

        def run(
            self,
            args: list[str],
            cwd: str,
            additional_env: Mapping[str, str],
            on_output: Output | None = None,
            on_error: Output | None = None,
        ) -> Any:
            cut = args.index("--") if "--" in args else len(args)
            if "--non-interactive" not in args[:cut]:
                args.insert(0, "--non-interactive")
            full = {**env, **additional_env, "PULUMI_AUTOMATION_API": "true"}
            full["PATH"] = os.pathsep.join([str(Path(cli).parent), full["PATH"]])
            out: list[str] = []
            err: list[str] = []
            with subprocess.Popen(
                [cli, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=full,
                encoding="utf-8",
            ) as process:
                readers = [
                    threading.Thread(target=consume, args=(process.stdout, on_output, out)),
                    threading.Thread(target=consume, args=(process.stderr, on_error, err)),
                ]
                for reader in readers:
                    reader.start()
                for reader in readers:
                    reader.join()
                code = process.wait()
            result = CommandResult(stdout="\n".join(out), stderr="\n".join(err), code=code)
            if code != 0:
                raise create_command_error(result)
            return result

    return IsolatedCommand()


class AutomationEngine:
    """The Automation API in a thread (it is blocking), one local workspace and one fresh
    HOME per call, the CLI started with `pulumi_environment()` only."""

    def _stack(self, ref: StackRef, program: Program, home: str) -> Any:
        cli = pulumi_cli()  # before anything is created
        from pulumi import automation as auto

        if ref.backend_url.startswith("file://"):
            Path(ref.backend_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        env = pulumi_environment(ref, home)
        opts = auto.LocalWorkspaceOptions(
            project_settings=auto.ProjectSettings(
                name=ref.project,
                runtime="python",
                backend=auto.ProjectBackend(url=ref.backend_url),
            ),
            secrets_provider="passphrase",
            env_vars=env,
            pulumi_home=env["PULUMI_HOME"],
            pulumi_command=_isolated_command(cli, env),
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
            with _fresh_home() as home:
                self._stack(ref, program, home).preview(on_output=out, on_event=on_event)

        await asyncio.to_thread(run)
        return planned

    async def up(self, ref: StackRef, program: Program, out: Output) -> Deployed:
        def run() -> Deployed:
            with _fresh_home() as home:
                stack = self._stack(ref, program, home)
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
            with _fresh_home() as home:
                stack = self._stack(ref, program, home)
                if targets:
                    stack.destroy(
                        on_output=out, on_event=on_event, target=targets, target_dependents=True
                    )
                else:
                    stack.destroy(on_output=out, on_event=on_event)

        await asyncio.to_thread(run)
        return deleted
