"""Finding 1 (issue 15): a pipeline step tries to read the platform's secrets and data and to
reach Temporal on loopback. In the sandbox (bubblewrap, the default where it works) it sees
none of them; the unsandboxed `local` runner, run as a control, shows the attack is real.
A production start with PIPELINE_RUNNER=local stops with a one-line error."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from core.errors import ConfigError
from core.local_secrets import local_secrets_path
from core.pipelines.runners import LocalRunner, LogLine, Runner, SandboxRunner, StepSpec
from core.pipelines.runners.factory import build_runner
from core.settings import PROJECT_ROOT, Settings, load_settings
from core.temporal import policies
from core.topology import Topology
from tests.integration.pipeline_helpers import (
    Stack,
    commit,
    make_repo,
    pipeline_stack,
    pipelines_worker,
    stack_settings,
)

STRONG = "k" * 40
# What a step must never see: the worker's environment, the local secrets file, the database,
# another run's workspace and artifacts.
CANARY = {
    "worker_env": f"worker-env-{uuid.uuid4().hex}",
    "local_secret": f"local-secret-{uuid.uuid4().hex}",
    "database": f"database-row-{uuid.uuid4().hex}",
    "other_workspace": f"other-workspace-{uuid.uuid4().hex}",
    "artifact": f"other-artifact-{uuid.uuid4().hex}",
}
# The attacker's script: dump every process's environment, the secrets file, the database
# file and another run's files, read /etc/shadow, connect to the platform's port.
ATTACK = r"""
for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f" 2>/dev/null || true; done
cat "$SECRETS_FILE" 2>&1 || true
cat "$DB_FILE" 2>&1 | tr -c '[:print:]\n' '.' || true
cat "$OTHER_RUN"/* 2>&1 || true
cat "$OTHER_ARTIFACTS"/* 2>&1 || true
ls -la "$DATA_DIR" 2>&1 || true
head -c 64 /etc/shadow 2>&1 || true
python3 -c "
import socket, sys
for host in sys.argv[2:]:
    try:
        socket.create_connection((host, int(sys.argv[1])), 3).close()
        print('CONNECTED', host)
    except OSError as exc:
        print('refused', host, exc)
" "$PLATFORM_PORT" 127.0.0.1 10.0.2.2
echo written > mine.txt
echo attack-done
"""


@dataclass
class Platform:
    """The platform's files and a loopback port, as a worker's host has them."""

    data: Path
    workspace: Path
    listener: socket.socket
    connections: list[object]

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def env(self) -> dict[str, str]:
        return {
            "DATA_DIR": str(self.data),
            "SECRETS_FILE": str(self.data / "local-secrets.json"),
            "DB_FILE": str(self.data / "idp.db"),
            "OTHER_RUN": str(self.data / "workspaces" / "other-run"),
            "OTHER_ARTIFACTS": str(self.data / "artifacts" / "other-run"),
            "PLATFORM_PORT": str(self.port),
        }


def plant(data: Path) -> None:
    """The platform's data directory with a canary in each place a step must not read."""
    data.mkdir(parents=True, exist_ok=True)
    secrets = data / "local-secrets.json"
    if not secrets.exists():
        secrets.write_text(f'{{"jwt_secret": "{CANARY["local_secret"]}"}}')
    else:  # the platform's own: add the canary next to its real secrets
        secrets.write_text(secrets.read_text()[:-1] + f', "canary": "{CANARY["local_secret"]}"}}')
    os.chmod(secrets, 0o600)
    with sqlite3.connect(data / "idp.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS canary (value TEXT)")
        db.execute("INSERT INTO canary VALUES (?)", (CANARY["database"],))
    other = data / "workspaces" / "other-run"
    other.mkdir(parents=True, exist_ok=True)
    (other / "token.txt").write_text(CANARY["other_workspace"])
    artifacts = data / "artifacts" / "other-run"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "build.txt").write_text(CANARY["artifact"])


@pytest.fixture
def worker_process() -> Iterator[None]:
    """A process of the worker's uid started with secrets in its environment, as the worker
    is (/proc/<pid>/environ shows a process's initial environment)."""
    holder = subprocess.Popen(
        ["sleep", "600"], env={"JWT_SECRET": CANARY["worker_env"], "PATH": os.defpath}
    )
    yield
    holder.kill()
    holder.wait()


@pytest.fixture
def platform(tmp_path: Path, worker_process: None) -> Iterator[Platform]:
    data = tmp_path / "data"
    plant(data)
    workspace = data / "workspaces" / "this-run"
    workspace.mkdir(parents=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    connections: list[object] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield Platform(data, workspace, listener, connections)
    listener.close()


def sandboxed(kill_grace: float = 5.0) -> SandboxRunner:
    """The sandbox runner, which these tests need for real (.ci/run installs bubblewrap)."""
    runner = SandboxRunner(kill_grace=kill_grace)
    problem = runner.check()
    assert problem is None, f"{problem} (the sandbox tests need bubblewrap and slirp4netns)"
    return runner


class Sink:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    async def __call__(self, batch: list[LogLine]) -> None:
        self.lines.extend(batch)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


async def attack(runner: Runner, platform: Platform, *, network: bool = False) -> str:
    sink = Sink()
    spec = StepSpec(
        step_id="attack",
        command=ATTACK,
        env=platform.env(),
        workdir=platform.workspace,
        timeout=60,
        network=network,
    )
    outcome = await runner.run(spec, sink)
    assert outcome.status == "succeeded", (outcome, sink.text)
    assert "attack-done" in sink.text
    return sink.text


def assert_nothing_leaked(out: str, platform: Platform) -> None:
    for what, canary in CANARY.items():
        assert canary not in out, f"the step read {what}"
    assert "SQLite format 3" not in out
    assert "CONNECTED" not in out and platform.connections == []
    assert "root:" not in out  # /etc/shadow is not in the sandbox
    assert (platform.workspace / "mine.txt").read_text() == "written\n"  # its own workspace


async def test_the_unsandboxed_runner_leaks_everything(platform: Platform) -> None:
    """The control: the same step under the `local` runner reads all of it (the finding)."""
    out = await attack(LocalRunner(kill_grace=1), platform)
    assert CANARY["worker_env"] in out  # /proc/<worker>/environ
    assert CANARY["local_secret"] in out and CANARY["database"] in out
    assert CANARY["other_workspace"] in out and CANARY["artifact"] in out
    assert "CONNECTED 127.0.0.1" in out


async def test_a_sandboxed_step_sees_no_secret_no_data_and_no_platform_port(
    platform: Platform,
) -> None:
    out = await attack(sandboxed(kill_grace=1), platform)
    assert_nothing_leaked(out, platform)
    assert "refused 127.0.0.1" in out  # its own loopback: nothing listens there


async def test_with_network_the_platforms_loopback_ports_stay_unreachable(
    platform: Platform,
) -> None:
    runner = sandboxed(kill_grace=1)
    assert runner.slirp4netns is not None, "slirp4netns is installed by .ci/run"
    out = await attack(runner, platform, network=True)
    assert_nothing_leaked(out, platform)
    assert "refused 127.0.0.1" in out and "refused 10.0.2.2" in out
    sink = Sink()
    routes = StepSpec(
        step_id="net",
        command="cat /proc/net/route",
        workdir=platform.workspace,
        timeout=30,
        network=True,
    )
    assert (await runner.run(routes, sink)).status == "succeeded"
    assert "tap0" in sink.text  # a network of its own (user-mode NAT), not none


# A networked step run by a worker that is not root: slirp4netns must join the user namespace
# that owns the sandbox's network namespace (bwrap nests the step in another one).
AS_WORKER = """
import asyncio, sys
from pathlib import Path
from core.pipelines.runners import SandboxRunner, StepSpec

async def main() -> None:
    lines = []

    async def sink(batch):
        lines.extend(line.text for line in batch)

    spec = StepSpec(step_id="net", command="cat /proc/net/route", workdir=Path(sys.argv[1]),
                    timeout=30, network=True)
    outcome = await SandboxRunner(kill_grace=1).run(spec, sink)
    print(outcome.status, outcome.error or "", *lines, sep="\\n")

asyncio.run(main())
"""


def test_a_non_root_worker_gives_a_networked_step_a_network_of_its_own() -> None:
    # Not under tmp_path: pytest's base directory is private to root.
    with tempfile.TemporaryDirectory(prefix="idp-nonroot-") as where:
        workspace = Path(where)
        os.chmod(workspace, 0o777)
        done = _as_nobody(workspace)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("succeeded"), done.stdout
    assert "tap0" in done.stdout  # slirp4netns's interface: not none, not the host's network


def _as_nobody(workspace: Path) -> subprocess.CompletedProcess[str]:
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [
            *(as_nobody if os.geteuid() == 0 else []),
            sys.executable,
            "-c",
            AS_WORKER,
            str(workspace),
        ],
        cwd=PROJECT_ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJECT_ROOT), "HOME": str(workspace)},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_sandboxed_step_is_an_unprivileged_user_in_its_own_namespaces(
    platform: Platform,
) -> None:
    sink = Sink()
    command = (
        "id -u; hostname; ls /proc | grep -c '^[0-9]' ; "
        "(echo x > /proc/sys/kernel/core_pattern) 2>&1 || true; "
        "(unshare -U true) 2>&1 || echo no-userns; "
        "(touch /usr/pwned) 2>&1 || true; echo $HOME; env | cut -d= -f1 | sort | tr '\\n' ' '"
    )
    spec = StepSpec(
        step_id="who", command=command, env={"FOO": "bar"}, workdir=platform.workspace, timeout=30
    )
    outcome = await sandboxed(kill_grace=1).run(spec, sink)
    assert outcome.status == "succeeded", sink.text
    lines = sink.text.splitlines()
    assert lines[0] == "65534" and lines[1] == "idp-step"
    assert int(lines[2]) <= 5  # its own few processes, not the worker's
    assert "Read-only file system" in sink.text  # /proc/sys and /usr
    assert "no-userns" in sink.text
    assert not Path("/usr/pwned").exists()
    names = lines[-1].split()
    assert set(names) <= {"FOO", "HOME", "LANG", "PATH", "PWD", "SHLVL", "TMPDIR", "_"}


async def test_a_sandboxed_step_keeps_the_runners_process_handling(tmp_path: Path) -> None:
    """Timeout and the end of a step kill what it left running, inside the sandbox too."""
    marker = f"1000.{uuid.uuid4().int % 10**6}"
    sink = Sink()
    command = f"sleep {marker} & echo started; sleep {marker}"
    spec = StepSpec(step_id="t", command=command, workdir=tmp_path, timeout=1)
    outcome = await sandboxed(kill_grace=1).run(spec, sink)
    assert outcome.status == "timed_out" and sink.text == "started"
    left = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and marker.encode() in _cmdline(p)
    ]
    assert left == []
    failed = await sandboxed().run(
        StepSpec(step_id="f", command="echo out; exit 3", workdir=tmp_path, timeout=30), Sink()
    )
    assert (failed.status, failed.exit_code) == ("failed", 3)
    missing = await sandboxed().run(
        StepSpec(step_id="m", command="true", workdir=tmp_path / "gone", timeout=30), Sink()
    )
    assert missing.status == "failed" and "could not start the step" in (missing.error or "")


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


# -- choosing the runner -----------------------------------------------------------------------
def test_production_refuses_the_local_runner_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", STRONG)
    monkeypatch.setenv("ENCRYPTION_KEY", STRONG)
    monkeypatch.setenv("PIPELINE_RUNNER", "local")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("PIPELINE_RUNNER=local runs pipeline steps unsandboxed")
    monkeypatch.setenv("PIPELINE_RUNNER", "sandbox")
    assert load_settings().pipeline_runner == "sandbox"


def test_the_default_is_the_sandbox_where_bwrap_works(tmp_path: Path) -> None:
    settings = Settings(env="development", data_dir=tmp_path)
    assert settings.pipeline_runner == "auto"
    assert isinstance(build_runner(settings), SandboxRunner)


def test_without_bwrap_development_falls_back_with_a_warning_and_production_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with caplog.at_level(logging.WARNING):
        runner = build_runner(Settings(env="development", data_dir=tmp_path))
    assert type(runner) is LocalRunner
    assert "apt-get install bubblewrap" in caplog.text and "unsandboxed" in caplog.text
    production = Settings(
        env="production", data_dir=tmp_path, jwt_secret=STRONG, encryption_key=STRONG
    )
    with pytest.raises(ConfigError, match="production refuses the unsandboxed local runner"):
        build_runner(production)
    with pytest.raises(ConfigError, match="^PIPELINE_RUNNER=sandbox: bwrap was not found"):
        build_runner(production.model_copy(update={"pipeline_runner": "sandbox"}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_runner(Settings(env="development", pipeline_runner="local", data_dir=tmp_path))
    assert "unsandboxed" in caplog.text


# -- through a real pipeline run on the worker ---------------------------------------------------
@pytest.fixture
async def stack(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
) -> AsyncIterator[tuple[Stack, Path, str]]:
    policies.install(topology)
    repo = tmp_path / "repo"
    url = f"https://github.com/acme-{uuid.uuid4().hex[:8]}/app"
    configured = stack_settings(settings, temporal_env, {url: f"file://{repo}"}, github_token=None)
    async with pipeline_stack(configured, topology, database_url) as running:
        yield running, repo, url


async def test_a_pipeline_run_on_the_worker_cannot_read_the_platform(
    stack: tuple[Stack, Path, str], worker_process: None, database_url: str
) -> None:
    running, repo, url = stack
    settings = running.settings
    data = settings.resolved_data_dir
    plant(data)
    assert local_secrets_path(settings) == data / "local-secrets.json"
    jwt = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    temporal_port = (
        settings.temporal_address.rpartition(":")[2] if settings.temporal_address else ""
    )
    db_file = database_url.removeprefix("sqlite+aiosqlite:///")
    env = {
        "DATA_DIR": str(data),
        "SECRETS_FILE": str(data / "local-secrets.json"),
        "DB_FILE": db_file if database_url.startswith("sqlite") else str(data / "idp.db"),
        "OTHER_RUN": str(data / "workspaces" / "other-run"),
        "OTHER_ARTIFACTS": str(data / "artifacts" / "other-run"),
        "PLATFORM_PORT": temporal_port,
    }
    pipeline = "stages:\n  - name: s\n    steps:\n      - name: attack\n        run: sh attack.sh\n"
    pipeline += "        env:\n" + "".join(f"          {k}: '{v}'\n" for k, v in env.items())
    make_repo(repo, {".idp/pipeline.yaml": pipeline, "attack.sh": ATTACK})
    service = await running.service(url)
    created = await running.pipeline(service["id"], source="repository")
    assert isinstance(build_runner(settings), SandboxRunner)  # what the worker below runs
    async with pipelines_worker(running.client, settings):
        run = await running.finished(await running.start(created["id"], ref="main"))
    logs = await running.logs(run["id"])
    assert run["status"] == "succeeded", (run, logs)
    assert "attack-done" in logs
    for what, canary in CANARY.items():
        assert canary not in logs, f"the step read {what}"
    if jwt:
        assert jwt not in logs
    assert "SQLite format 3" not in logs
    assert "refused 127.0.0.1" in logs and "CONNECTED" not in logs


async def test_a_definition_linked_to_a_worker_file_is_refused_unread(
    stack: tuple[Stack, Path, str], worker_process: None
) -> None:
    # The worker reads .idp/pipeline.yaml itself, outside the sandbox: a repository whose
    # definition is a symbolic link to the worker's secrets file must not have it read.
    running, repo, url = stack
    data = running.settings.resolved_data_dir
    plant(data)
    make_repo(repo, {"README.md": "linked\n"})
    (repo / ".idp").mkdir()
    (repo / ".idp" / "pipeline.yaml").symlink_to(data / "local-secrets.json")
    commit(repo, {}, "link the definition")
    service = await running.service(url)
    created = await running.pipeline(service["id"], source="repository")
    async with pipelines_worker(running.client, running.settings):
        run = await running.finished(await running.start(created["id"], ref="main"))
    assert run["status"] == "failed"
    assert "is a link to a file outside the repository" in run["error"]
    for canary in CANARY.values():
        assert canary not in str(run)
