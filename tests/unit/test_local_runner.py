"""The local runner with real subprocesses: output, environment, exit codes, timeouts,
cancellation and the process group."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from core.pipelines.runners import LocalRunner, LogLine, StepSpec


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[LogLine]] = []
        self.arrivals: list[float] = []
        self.got_line = asyncio.Event()

    async def __call__(self, batch: list[LogLine]) -> None:
        self.batches.append(batch)
        self.arrivals.append(time.monotonic())
        self.got_line.set()

    @property
    def lines(self) -> list[LogLine]:
        return [line for batch in self.batches for line in batch]

    def text(self, stream: str = "stdout") -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]


def spec(workdir: Path, command: str, *, timeout: float = 30, **env: str) -> StepSpec:
    return StepSpec(step_id="s1", command=command, env=env, workdir=workdir, timeout=timeout)


def running(pid: int) -> bool:
    """True while `pid` is a live process (a zombie counts as gone, but see `exists`)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_output_order_seq_and_streams(tmp_path: Path) -> None:
    sink = Sink()
    command = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    outcome = await LocalRunner().run(spec(tmp_path, command), sink)
    assert outcome.status == "succeeded" and outcome.exit_code == 0 and outcome.error is None
    assert sink.text("stdout") == ["out1", "out2", "out3"]
    assert sink.text("stderr") == ["err1", "err2", "err3"]
    seqs = [line.seq for line in sink.lines]
    assert seqs == list(range(1, 7))
    assert all(line.at.tzinfo is not None for line in sink.lines)


async def test_batches_are_bounded_and_complete(tmp_path: Path) -> None:
    sink = Sink()
    outcome = await LocalRunner().run(spec(tmp_path, "seq 1 1000"), sink)
    assert outcome.status == "succeeded"
    assert sink.text() == [str(i) for i in range(1, 1001)]
    assert max(len(batch) for batch in sink.batches) <= 200
    assert [line.seq for line in sink.lines] == list(range(1, 1001))


async def test_exit_codes_and_sh_e(tmp_path: Path) -> None:
    sink = Sink()
    outcome = await LocalRunner().run(spec(tmp_path, "echo a; exit 3"), sink)
    assert (outcome.status, outcome.exit_code) == ("failed", 3)
    assert outcome.error == "exited with code 3"
    sink = Sink()
    outcome = await LocalRunner().run(spec(tmp_path, "false; echo never"), sink)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert "never" not in sink.text()


async def test_environment_is_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDP_TEST_WORKER_SECRET", "hunter2")
    sink = Sink()
    command = 'echo "${IDP_TEST_WORKER_SECRET:-unset}"; echo "$FOO"; pwd; echo "$HOME"; env'
    outcome = await LocalRunner().run(spec(tmp_path, command, FOO="bar"), sink)
    assert outcome.status == "succeeded"
    out = sink.text()
    assert out[:3] == ["unset", "bar", str(tmp_path)]
    assert out[3] != str(tmp_path) and out[3].startswith("/")
    assert not any("hunter2" in line for line in out)
    names = {line.split("=", 1)[0] for line in out[4:] if "=" in line}
    assert "IDP_TEST_WORKER_SECRET" not in names
    assert {"PATH", "HOME", "LANG", "FOO"} <= names
    assert not Path(out[3]).exists()  # the step's home is removed afterwards


async def test_long_lines_partial_last_line_and_bad_utf8(tmp_path: Path) -> None:
    sink = Sink()
    command = "head -c 200000 /dev/zero | tr '\\0' a; echo; printf '\\377ok\\n'; printf 'tail'"
    outcome = await LocalRunner(max_line_bytes=65536).run(spec(tmp_path, command), sink)
    assert outcome.status == "succeeded"
    out = sink.text()
    assert out[-2:] == ["\ufffdok", "tail"]
    long = out[:-2]
    assert len(long) == 4 and all(len(part) <= 65536 for part in long)
    assert "".join(long) == "a" * 200000


async def test_first_line_is_streamed_before_the_step_ends(tmp_path: Path) -> None:
    sink = Sink()
    outcome = await LocalRunner().run(spec(tmp_path, "echo first; sleep 2; echo second"), sink)
    assert outcome.status == "succeeded"
    # The first batch went out alone, while the step still had 2 s to run (speed is measured
    # in bench/, not asserted here).
    assert [line.text for line in sink.batches[0]] == ["first"]
    assert sink.text() == ["first", "second"]


async def test_heartbeat_is_called_while_running(tmp_path: Path) -> None:
    beats: list[float] = []
    runner = LocalRunner(heartbeat_interval=0.2)
    outcome = await runner.run(
        spec(tmp_path, "sleep 1.2"), Sink(), heartbeat=lambda: beats.append(time.monotonic())
    )
    assert outcome.status == "succeeded"
    assert len(beats) >= 3


async def test_timeout_kills_the_group_with_a_backgrounded_grandchild(tmp_path: Path) -> None:
    sink = Sink()
    command = "echo $$; sleep 1000 & echo $!; sleep 1000 & sleep 1000"
    outcome = await LocalRunner(kill_grace=1).run(spec(tmp_path, command, timeout=1), sink)
    assert outcome.status == "timed_out" and outcome.exit_code is None
    assert "timed out after 1s" in (outcome.error or "")
    shell, grandchild = (int(x) for x in sink.text()[:2])
    assert not group_alive(shell)
    assert not running(grandchild)
    assert not Path(f"/proc/{grandchild}").exists()  # reaped, not a zombie


async def test_timeout_escalates_to_sigkill(tmp_path: Path) -> None:
    sink = Sink()
    command = "trap '' TERM; echo $$; sleep 1000 & echo $!; wait"
    outcome = await LocalRunner(kill_grace=0.5).run(spec(tmp_path, command, timeout=1), sink)
    assert outcome.status == "timed_out"
    shell, grandchild = (int(x) for x in sink.text()[:2])
    assert not group_alive(shell)
    assert not Path(f"/proc/{grandchild}").exists()


async def test_background_leftovers_die_when_the_step_ends(tmp_path: Path) -> None:
    sink = Sink()
    command = "sleep 1000 > /dev/null 2>&1 & echo $!; echo done"
    outcome = await LocalRunner(kill_grace=1).run(spec(tmp_path, command), sink)
    assert outcome.status == "succeeded"
    grandchild = int(sink.text()[0])
    assert sink.text()[1] == "done"
    assert not running(grandchild)
    assert not Path(f"/proc/{grandchild}").exists()


async def test_cancellation_kills_the_group_flushes_and_reraises(tmp_path: Path) -> None:
    sink = Sink()
    command = "echo $$; sleep 1000 & echo $!; wait"
    task = asyncio.create_task(LocalRunner(kill_grace=1).run(spec(tmp_path, command), sink))
    while len(sink.lines) < 2:
        await sink.got_line.wait()
        sink.got_line.clear()
    shell, grandchild = (int(x) for x in sink.text()[:2])
    assert group_alive(shell)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not group_alive(shell)
    assert not Path(f"/proc/{grandchild}").exists()


async def test_cancellation_flushes_unsent_lines(tmp_path: Path) -> None:
    sink = Sink()
    runner = LocalRunner(flush_interval=30)  # nothing is sent before the cancel
    command = "echo one; echo two; sleep 1000"
    task = asyncio.create_task(runner.run(spec(tmp_path, command), sink))
    await asyncio.sleep(0.5)
    assert sink.batches == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.text() == ["one", "two"]


async def test_a_failing_sink_kills_the_group_and_raises(tmp_path: Path) -> None:
    pids: list[int] = []

    async def broken(batch: list[LogLine]) -> None:
        pids.extend(int(line.text) for line in batch)
        raise RuntimeError("log store down")

    with pytest.raises(RuntimeError, match="log store down"):
        await LocalRunner(kill_grace=1).run(spec(tmp_path, "echo $$; sleep 1000"), broken)
    assert pids and not group_alive(pids[0])


async def test_missing_workdir_fails_clearly(tmp_path: Path) -> None:
    outcome = await LocalRunner().run(spec(tmp_path / "nope", "true"), Sink())
    assert outcome.status == "failed" and outcome.exit_code is None
    assert "could not start the step" in (outcome.error or "")


async def test_killed_by_signal(tmp_path: Path) -> None:
    outcome = await LocalRunner().run(spec(tmp_path, "kill -9 $$"), Sink())
    assert outcome.status == "failed" and outcome.exit_code is None
    assert outcome.error == "killed by signal SIGKILL"
