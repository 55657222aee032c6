"""The docker runner against a stand-in Docker Engine (tests/standins/docker_engine.py): the
real docker SDK over a Unix socket, containers emulated by real subprocesses."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from core.pipelines.runners import LogLine, StepSpec
from core.pipelines.runners.docker import DockerRunner, RunnerUnavailable
from core.pipelines.runners.lines import LineSplitter
from tests.helpers import free_port
from tests.standins.docker_engine import DockerEngineStandin, EmulatedContainer, StandinImage

MakeRunner = Callable[..., DockerRunner]
BROKEN_IMAGE = "registry.example.com/team/broken:1"


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[LogLine]] = []
        self.got_line = asyncio.Event()

    async def __call__(self, batch: list[LogLine]) -> None:
        self.batches.append(batch)
        self.got_line.set()

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]

    def text(self, stream: str = "stdout") -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]

    async def until(self, count: int) -> None:
        while len(self.lines) < count:
            await self.got_line.wait()
            self.got_line.clear()


def spec(
    workdir: Path,
    command: str,
    *,
    timeout: float = 30,
    image: str | None = None,
    step_id: str = "step-1",
    **env: str,
) -> StepSpec:
    return StepSpec(
        step_id=step_id, command=command, env=env, workdir=workdir, timeout=timeout, image=image
    )


def alive(pid: int | None) -> bool:
    """True while `pid` is a live process (a zombie counts as gone)."""
    assert pid is not None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


@pytest.fixture
def engine() -> Iterator[DockerEngineStandin]:
    with DockerEngineStandin(
        images=["alpine:3.20"],
        pullable=["busybox:1.36"],
        pull_errors={BROKEN_IMAGE: "failed to register layer: no space left on device"},
    ) as standin:
        yield standin


@pytest.fixture
def make_runner(engine: DockerEngineStandin) -> Iterator[MakeRunner]:
    """DockerRunner(**options) on the stand-in (unless base_url is given), closed after."""
    made: list[DockerRunner] = []

    def make(**options: Any) -> DockerRunner:
        options.setdefault("base_url", engine.base_url)
        made.append(DockerRunner(**options))
        return made[-1]

    yield make
    for runner in made:
        runner.close()


@pytest.fixture
def runner(make_runner: MakeRunner) -> DockerRunner:
    return make_runner(stop_timeout=1)


def only_container(engine: DockerEngineStandin) -> EmulatedContainer:
    assert len(engine.created) == 1
    return engine.created[0]


# -- output ----------------------------------------------------------------------------------
async def test_output_lines_in_order_per_stream_with_one_seq(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    sink = Sink()
    command = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    outcome = await runner.run(spec(tmp_path, command), sink)
    assert outcome.status == "succeeded" and outcome.exit_code == 0 and outcome.error is None
    assert sink.text("stdout") == ["out1", "out2", "out3"]
    assert sink.text("stderr") == ["err1", "err2", "err3"]
    assert [line.seq for line in sink.lines] == list(range(1, 7))
    assert all(line.at.tzinfo is not None for line in sink.lines)
    container = only_container(engine)
    assert container.removed and engine.live == []


async def test_batches_are_bounded_and_complete(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    sink = Sink()
    runner = make_runner(flush_lines=50)
    outcome = await runner.run(spec(tmp_path, "seq 1 1000"), sink)
    assert outcome.status == "succeeded"
    assert sink.text() == [str(i) for i in range(1, 1001)]
    assert max(len(batch) for batch in sink.batches) <= 50
    assert [line.seq for line in sink.lines] == list(range(1, 1001))


async def test_long_lines_crlf_bad_utf8_and_a_last_line_without_newline(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    sink = Sink()
    runner = make_runner(max_line_bytes=1000)
    command = (
        "head -c 2500 /dev/zero | tr '\\0' a; echo; printf 'dos\\r\\n'; "
        "printf '\\377ok\\n'; printf 'tail'; printf 'err-tail' >&2"
    )
    outcome = await runner.run(spec(tmp_path, command), sink)
    assert outcome.status == "succeeded"
    out = sink.text()
    assert out[-3:] == ["dos", "\ufffdok", "tail"]
    assert [len(part) for part in out[:-3]] == [1000, 1000, 500]
    assert sink.text("stderr") == ["err-tail"]


async def test_a_line_is_streamed_while_the_step_still_runs(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    running_at_arrival: list[bool] = []

    async def sink(batch: list[LogLine]) -> None:
        all_lines.extend(batch)
        running_at_arrival.append(engine.created[-1].running)

    all_lines: list[LogLine] = []
    outcome = await runner.run(spec(tmp_path, "echo first; sleep 2; echo second"), sink)
    assert outcome.status == "succeeded"
    assert [line.text for line in all_lines] == ["first", "second"]
    # the first line went out alone while the container still ran (for 2 more seconds):
    # followed, not collected at the end (speed is for bench/, not asserted here)
    assert running_at_arrival[0] is True


async def test_a_step_silent_for_longer_than_the_api_timeout_keeps_its_streams(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    sink = Sink()
    runner = make_runner(api_timeout=1)
    outcome = await runner.run(spec(tmp_path, "echo early; sleep 2.5; echo late"), sink)
    assert outcome.status == "succeeded", outcome.error
    assert sink.text() == ["early", "late"]


# -- the container ---------------------------------------------------------------------------
async def test_environment_is_exactly_the_step_env(
    runner: DockerRunner,
    engine: DockerEngineStandin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDP_TEST_WORKER_SECRET", "hunter2")
    worker_home = os.environ["HOME"]
    sink = Sink()
    command = 'echo "${IDP_TEST_WORKER_SECRET:-unset}"; echo "${HOME:-no-home}"; echo "$FOO"; env'
    outcome = await runner.run(spec(tmp_path, command, FOO="bar", CI="true"), sink)
    assert outcome.status == "succeeded"
    out = sink.text()
    assert out[0] == "unset"
    assert out[1] != worker_home
    assert out[2] == "bar"
    assert not any("hunter2" in line for line in out)
    names = {line.split("=", 1)[0] for line in out[3:] if "=" in line}
    assert "IDP_TEST_WORKER_SECRET" not in names
    container = only_container(engine)
    assert sorted(container.env) == ["CI=true", "FOO=bar"]  # what the engine was asked for


async def test_workspace_is_bind_mounted_and_the_working_dir(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    (tmp_path / "seed.txt").write_text("from the checkout\n")
    sink = Sink()
    command = "cat seed.txt; echo built > out.txt"
    outcome = await runner.run(spec(tmp_path, command, step_id="s-42"), sink)
    assert outcome.status == "succeeded"
    assert sink.text() == ["from the checkout"]
    assert (tmp_path / "out.txt").read_text() == "built\n"  # written through the mount
    container = only_container(engine)
    assert [(b.source, b.target, b.read_only) for b in container.binds] == [
        (str(tmp_path), "/workspace", False)
    ]
    assert container.working_dir == "/workspace"
    assert container.argv == ["/bin/sh", "-e", "-c", command]
    assert container.labels == {"idp.step-id": "s-42", "idp.managed-by": "idp"}
    assert container.image == "alpine:3.20"
    assert container.config["Tty"] is False


async def test_image_entrypoint_does_not_wrap_the_step(
    tmp_path: Path, make_runner: MakeRunner
) -> None:
    git_image = StandinImage("alpine/git:2.45", entrypoint=("git",), cmd=("--help",))
    with DockerEngineStandin(images=[git_image]) as engine:
        sink = Sink()
        runner = make_runner(base_url=engine.base_url, default_image="alpine/git:2.45")
        outcome = await runner.run(spec(tmp_path, "echo shell"), sink)
        assert outcome.status == "succeeded"
        assert sink.text() == ["shell"]
        assert engine.created[0].argv == ["/bin/sh", "-e", "-c", "echo shell"]


async def test_network_and_user_are_passed(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    runner = make_runner(network="ci-net", user="1000:1000")
    outcome = await runner.run(spec(tmp_path, "true"), Sink())
    assert outcome.status == "succeeded"
    container = only_container(engine)
    assert (container.network_mode, container.user) == ("ci-net", "1000:1000")


async def test_steps_run_as_non_root_without_capabilities_or_new_privileges(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    outcome = await runner.run(spec(tmp_path, "true"), Sink())
    assert outcome.status == "succeeded"
    container = only_container(engine)
    assert container.user == "65534:65534"  # never the image's (root) user
    host = container.config["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert not host.get("Privileged")
    assert [m["Source"] for m in host["Mounts"]] == [str(tmp_path)]  # the workspace only


async def test_the_step_uid_is_configurable(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    outcome = await make_runner(uid=1000).run(spec(tmp_path, "true"), Sink())
    assert outcome.status == "succeeded"
    assert only_container(engine).user == "1000:1000"


async def test_a_missing_workdir_fails_the_step(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    outcome = await runner.run(spec(tmp_path / "gone", "true"), Sink())
    assert outcome.status == "failed" and outcome.exit_code is None
    assert "could not create the container (alpine:3.20)" in (outcome.error or "")
    assert "bind source path does not exist" in (outcome.error or "")
    assert engine.created == []


async def test_a_container_of_a_previous_attempt_is_removed_first(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    client = docker.DockerClient(base_url=engine.base_url)
    try:
        old = client.containers.run(
            "alpine:3.20",
            ["/bin/sh", "-c", "sleep 1000"],
            labels={"idp.step-id": "step-1", "idp.managed-by": "idp"},
            detach=True,
        )
        other = client.containers.create(
            "alpine:3.20", ["true"], labels={"idp.step-id": "another-step"}
        )
    finally:
        client.close()
    old_pid = engine.container(old.id).pid
    assert alive(old_pid)
    outcome = await runner.run(spec(tmp_path, "echo again"), Sink())
    assert outcome.status == "succeeded"
    assert engine.container(old.id).removed and not alive(old_pid)
    assert not engine.container(other.id).removed
    assert [c.id for c in engine.live] == [other.id]


# -- exits, timeout, cancellation ------------------------------------------------------------
async def test_non_zero_exit_fails_with_the_code_and_sh_e_stops_early(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    sink = Sink()
    outcome = await runner.run(spec(tmp_path, "echo a; exit 3"), sink)
    assert (outcome.status, outcome.exit_code) == ("failed", 3)
    assert outcome.error == "exited with code 3"
    assert sink.text() == ["a"]
    sink = Sink()
    outcome = await runner.run(spec(tmp_path, "false; echo never"), sink)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert "never" not in sink.text()
    assert len(engine.created) == 2 and engine.live == []  # removed after a failure too


async def test_timeout_stops_and_removes_the_container(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    sink = Sink()
    command = "echo started; sleep 1000 & sleep 1000"
    outcome = await runner.run(spec(tmp_path, command, timeout=1), sink)
    assert outcome.status == "timed_out" and outcome.exit_code is None
    assert "timed out after 1s" in (outcome.error or "")
    assert sink.text() == ["started"]
    container = only_container(engine)
    assert container.stops == [1]  # stopped with the runner's stop_timeout
    assert container.removed and not alive(container.pid)


async def test_timeout_of_a_step_ignoring_sigterm_ends_in_a_kill(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    command = "trap '' TERM; echo $$; while true; do sleep 0.1; done"
    outcome = await runner.run(spec(tmp_path, command, timeout=1), Sink())
    assert outcome.status == "timed_out"
    container = only_container(engine)
    assert container.exit_code == 137  # SIGKILL after the stop's grace period
    assert container.removed and not alive(container.pid)


async def test_cancellation_stops_removes_flushes_and_reraises(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    sink = Sink()
    runner = make_runner(stop_timeout=1, flush_interval=30)
    task = asyncio.create_task(runner.run(spec(tmp_path, "echo one; echo two; sleep 1000"), sink))
    # (the stand-in's wait_for blocks: wait in a thread, the runner needs the event loop)
    started = lambda: len(engine.created) == 1 and engine.created[0].running  # noqa: E731
    assert await asyncio.to_thread(engine.wait_for, started)
    container = engine.created[0]
    assert await asyncio.to_thread(engine.wait_for, lambda: len(container.frames) > 0)
    await asyncio.sleep(0.3)  # let the runner read the lines (nothing is sent before 30 s)
    assert sink.batches == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert container.stops and container.removed
    assert not alive(container.pid)
    assert sink.text() == ["one", "two"]  # what was read is sent before re-raising


async def test_a_failing_sink_stops_the_container_and_raises(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    async def broken(batch: list[LogLine]) -> None:
        raise RuntimeError("log store down")

    with pytest.raises(RuntimeError, match="log store down"):
        await runner.run(spec(tmp_path, "echo hi; sleep 1000"), broken)
    container = only_container(engine)
    assert container.removed and not alive(container.pid)


async def test_heartbeat_is_called_while_running(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    beats: list[int] = []
    runner = make_runner(heartbeat_interval=0.2)
    outcome = await runner.run(
        spec(tmp_path, "sleep 1.2"), Sink(), heartbeat=lambda: beats.append(1)
    )
    assert outcome.status == "succeeded"
    assert len(beats) >= 3


# -- images ----------------------------------------------------------------------------------
async def test_a_present_image_is_not_pulled(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    outcome = await runner.run(spec(tmp_path, "true"), Sink())
    assert outcome.status == "succeeded"
    assert engine.pulls == []


async def test_a_missing_image_is_pulled(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    assert "busybox:1.36" not in engine.images
    sink = Sink()
    outcome = await runner.run(spec(tmp_path, "echo pulled", image="busybox:1.36"), sink)
    assert outcome.status == "succeeded"
    assert engine.pulls == ["busybox:1.36"]
    assert "busybox:1.36" in engine.images
    assert only_container(engine).image == "busybox:1.36"
    assert sink.text() == ["pulled"]


async def test_pull_always_pulls_a_present_image(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    engine.pullable["alpine:3.20"] = engine.images["alpine:3.20"]
    runner = make_runner(pull="always")
    outcome = await runner.run(spec(tmp_path, "true"), Sink())
    assert outcome.status == "succeeded"
    assert engine.pulls == ["alpine:3.20"]


async def test_pull_never_fails_on_a_missing_image(
    engine: DockerEngineStandin, tmp_path: Path, make_runner: MakeRunner
) -> None:
    runner = make_runner(pull="never")
    outcome = await runner.run(spec(tmp_path, "true", image="busybox:1.36"), Sink())
    assert outcome.status == "failed" and outcome.exit_code is None
    assert "'busybox:1.36'" in (outcome.error or "") and "pull is 'never'" in (outcome.error or "")
    assert engine.pulls == [] and engine.created == []


async def test_an_unpullable_image_fails_the_step_naming_it(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    outcome = await runner.run(spec(tmp_path, "true", image="nosuch/image:9"), Sink())
    assert outcome.status == "failed" and outcome.exit_code is None
    assert "could not pull image 'nosuch/image:9'" in (outcome.error or "")
    assert "pull access denied for nosuch/image" in (outcome.error or "")
    assert engine.pulls == ["nosuch/image:9"] and engine.created == []


async def test_a_pull_that_fails_midway_fails_the_step_naming_the_image(
    runner: DockerRunner, engine: DockerEngineStandin, tmp_path: Path
) -> None:
    outcome = await runner.run(spec(tmp_path, "true", image=BROKEN_IMAGE), Sink())
    assert outcome.status == "failed"
    assert f"could not pull image {BROKEN_IMAGE!r}" in (outcome.error or "")
    assert "no space left on device" in (outcome.error or "")
    assert engine.created == []


# -- the engine ------------------------------------------------------------------------------
async def test_an_unreachable_engine_raises_runner_unavailable(tmp_path: Path) -> None:
    socket_url = f"unix://{tmp_path}/nothing-here.sock"
    runner = DockerRunner(base_url=socket_url)  # never connects: nothing to close
    with pytest.raises(RunnerUnavailable, match=f"Docker engine at {socket_url} is unreachable"):
        await runner.run(spec(tmp_path, "true"), Sink())
    assert issubclass(RunnerUnavailable, RuntimeError)


async def test_docker_host_is_used_and_named_without_a_base_url(
    engine: DockerEngineStandin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_runner: MakeRunner,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", engine.base_url)
    sink = Sink()
    outcome = await make_runner(base_url=None).run(spec(tmp_path, "echo via env"), sink)
    assert outcome.status == "succeeded" and sink.text() == ["via env"]
    nowhere = f"tcp://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    with pytest.raises(RunnerUnavailable, match=f"DOCKER_HOST={nowhere} is unreachable"):
        await make_runner(base_url=None).run(spec(tmp_path, "true"), Sink())


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="pull must be one of"):
        DockerRunner(pull="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workspace_mount must be an absolute path"):
        DockerRunner(workspace_mount="workspace")


def _closed_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


# -- line splitting (core.pipelines.runners.lines) -------------------------------------------
def test_line_splitter_across_chunks() -> None:
    splitter = LineSplitter(max_line_bytes=8)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\r\nde") == [b"abc"]
    assert splitter.feed(b"f\n\n") == [b"def", b""]
    assert splitter.feed(b"0123456789") == [b"01234567"]
    assert splitter.end() == [b"89"]
    assert splitter.end() == []


def test_line_splitter_never_cuts_a_utf8_character() -> None:
    splitter = LineSplitter(max_line_bytes=4)
    euro = "€".encode()  # 3 bytes
    pieces = splitter.feed(b"a" + euro + euro + b"\n")
    assert b"".join(pieces) == b"a" + euro + euro
    assert all(len(piece) <= 4 for piece in pieces)
    assert [piece.decode() for piece in pieces] == ["a€", "€"]
