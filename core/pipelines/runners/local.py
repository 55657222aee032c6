"""The unsandboxed runner: a step is a `/bin/sh -e -c <command>` subprocess on the worker, as
the worker's user (it can read what the worker can: development only; production refuses it).
The sandbox runner (sandbox.py) reuses all of this around a bubblewrap sandbox (`launch`).

- **Shell.** `/bin/sh -e` (POSIX sh, stops at the first failing command), the same shell the
  pipeline definition documents; pass `shell="/bin/bash"` for bash.
- **Environment.** Never the worker's (it holds secrets): a minimal base of `PATH` (the
  worker's search path, which is not secret), `HOME` (a fresh directory per step, removed
  afterwards, so caches never land in the workspace), `TMPDIR` inside it, `LANG=C.UTF-8`,
  then `spec.env` on top.
- **Process group.** The shell starts a new session (`start_new_session=True`), so it and
  everything it starts share one process group. Timeout, cancellation, a failing log sink
  and the step's end all signal the whole group: SIGTERM, then SIGKILL after `kill_grace`
  seconds. Processes the step leaves running in the background are killed when the shell
  exits. A process that leaves the group on purpose (`setsid`) escapes; containers
  (docker/kubernetes runners) are the isolation for that.
- **Zombies.** A killed background grandchild is re-parented; with `reap_orphans=True`
  (default, Linux) the worker becomes a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER,
  process-wide) so those orphans are re-parented to the worker, which reaps the ones of the
  step's group. Without it, reaping them is the job of PID 1 (run the worker under an init
  such as `tini` / `docker run --init`).
- **Output.** stdout and stderr are read concurrently in chunks and split on `\n`; lines
  longer than `max_line_bytes` are split, a final line without `\n` is kept, bytes are
  decoded as UTF-8 with replacement. Lines get one increasing `seq` across both streams and
  go to `on_output` in batches of at most `flush_lines`, at least every `flush_interval`
  seconds, so a live stream sees a line within a second.
- **Heartbeat.** `heartbeat()` is called at start and every `heartbeat_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.pipelines.runners.base import (
    Heartbeat,
    OutputSink,
    StepOutcome,
    StepSpec,
    StepStatus,
    Stream,
)
from core.pipelines.runners.lines import DEFAULT_MAX_LINE_BYTES, LineBatcher, LineSplitter

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PR_SET_CHILD_SUBREAPER = 36
_subreaper_enabled = False


def _enable_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux only; idempotent)."""
    global _subreaper_enabled
    if _subreaper_enabled:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    _subreaper_enabled = True
    return True


def _live_members(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] = state, fields[2] = pgrp
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap_group(pgid: int) -> None:
    """Reap exited children of group `pgid` (orphans re-parented to us as subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _Step:
    """One running step: its process, the readers of its pipes and its line batcher."""

    def __init__(
        self,
        runner: LocalRunner,
        proc: asyncio.subprocess.Process,
        on_output: OutputSink,
    ) -> None:
        self.runner = runner
        self.proc = proc
        self.pgid = proc.pid  # session leader: its pid is the group id
        self.batcher = LineBatcher(
            on_output, flush_lines=runner.flush_lines, flush_interval=runner.flush_interval
        )
        self.flusher = self.batcher.start()
        self.readers = [
            asyncio.create_task(self._read(proc.stdout, "stdout")),
            asyncio.create_task(self._read(proc.stderr, "stderr")),
        ]

    async def _read(self, reader: asyncio.StreamReader | None, stream: Stream) -> None:
        if reader is None:
            return
        splitter = LineSplitter(self.runner.max_line_bytes)
        while chunk := await reader.read(65536):
            await self.batcher.add(stream, splitter.feed(chunk))
        await self.batcher.add(stream, splitter.end())

    # -- ending ----------------------------------------------------------------------------
    async def kill_group(self, grace: float) -> None:
        """SIGTERM to the group, SIGKILL to whatever is left after `grace` seconds."""
        if _live_members(self.pgid):
            _signal_group(self.pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _live_members(self.pgid):
                await asyncio.sleep(0.05)
            _signal_group(self.pgid, signal.SIGKILL)
        # the shell itself is reaped by asyncio; then orphans re-parented to us
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace + 5)
        if self.runner.reap_orphans:
            for _ in range(100):
                _reap_group(self.pgid)
                if not _live_members(self.pgid):
                    break
                _signal_group(self.pgid, signal.SIGKILL)
                await asyncio.sleep(0.02)
            _reap_group(self.pgid)

    async def finish_output(self) -> None:
        """Let the readers reach the end of the pipes, then flush what is left."""
        _, late = await asyncio.wait(self.readers, timeout=self.runner.drain_timeout)
        for task in late:  # a process that escaped the group still holds a pipe
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.batcher.close()

    def abandon(self) -> None:
        for task in self.readers:
            task.cancel()
        self.batcher.abandon()


class LocalRunner:
    """Runs steps as local subprocesses. Keyword options exist mostly for tests."""

    def __init__(
        self,
        *,
        shell: str = "/bin/sh",
        kill_grace: float = 5.0,
        flush_interval: float = 0.5,
        flush_lines: int = 200,
        heartbeat_interval: float = 2.0,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        drain_timeout: float = 2.0,
        reap_orphans: bool = True,
        path: str | None = None,
    ) -> None:
        self.shell = shell
        self.kill_grace = kill_grace
        self.flush_interval = flush_interval
        self.flush_lines = flush_lines
        self.heartbeat_interval = heartbeat_interval
        self.max_line_bytes = max_line_bytes
        self.drain_timeout = drain_timeout
        self.reap_orphans = reap_orphans and _enable_subreaper()
        self.path = path or os.environ.get("PATH") or DEFAULT_PATH

    def environment(self, spec: StepSpec, home: Path) -> dict[str, str]:
        tmp = home / "tmp"
        tmp.mkdir(exist_ok=True)
        base = {"PATH": self.path, "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
        return {**base, **spec.env}

    async def run(
        self,
        spec: StepSpec,
        on_output: OutputSink,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> StepOutcome:
        started = time.monotonic()
        home = Path(tempfile.mkdtemp(prefix=f"idp-step-{_safe(spec.step_id)}-"))
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    proc = await self.launch(spec, home, stack)
                except OSError as exc:
                    return StepOutcome(
                        exit_code=None,
                        status="failed",
                        duration_seconds=time.monotonic() - started,
                        error=f"could not start the step: {exc.strerror or exc} ({spec.workdir})",
                    )
                return await self._supervise(spec, proc, on_output, heartbeat, started)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    def shell_argv(self, spec: StepSpec) -> list[str]:
        return [self.shell, "-e", "-c", spec.command]

    async def launch(
        self, spec: StepSpec, home: Path, stack: contextlib.AsyncExitStack
    ) -> asyncio.subprocess.Process:
        """Start the step's process. The hook a wrapping runner (the sandbox) overrides: it
        may wrap the argv, and push on `stack` what must be undone after the step."""
        return await self.spawn(self.shell_argv(spec), spec, home)

    async def spawn(
        self, argv: list[str], spec: StepSpec, home: Path, **options: Any
    ) -> asyncio.subprocess.Process:
        """`argv` as the leader of a new session (its process group is the step's), in the
        workspace, with the step's environment only; raises OSError when it cannot start."""
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=spec.workdir,
            env=self.environment(spec, home),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            **options,
        )

    async def _supervise(
        self,
        spec: StepSpec,
        proc: asyncio.subprocess.Process,
        on_output: OutputSink,
        heartbeat: Heartbeat | None,
        started: float,
    ) -> StepOutcome:
        step = _Step(self, proc, on_output)
        waiter = asyncio.create_task(proc.wait())
        beater = asyncio.create_task(self._beat(heartbeat))
        try:
            done, _ = await asyncio.wait(
                {waiter, step.flusher, beater},
                timeout=spec.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if step.flusher in done or beater in done:
                # the log sink or the heartbeat failed: nobody would see this step's output
                await step.kill_group(self.kill_grace)
                failed = step.flusher if step.flusher in done else beater
                failed.result()  # raises what the sink or the heartbeat raised
            timed_out = waiter not in done
            # the shell ended (or its time is up): nothing the step started outlives it
            await step.kill_group(self.kill_grace)
            await step.finish_output()
        except BaseException:
            # cancellation (Temporal activity cancel), a failing sink, anything: the group
            # dies, what was read is flushed if the sink still works, the error goes on
            cleanup = asyncio.ensure_future(self._cleanup(step))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise
        finally:
            for task in (waiter, beater):
                task.cancel()
            step.abandon()
        duration = time.monotonic() - started
        if timed_out:
            return StepOutcome(
                exit_code=None,
                status="timed_out",
                duration_seconds=duration,
                error=f"timed out after {spec.timeout:g}s; its processes were killed",
            )
        code = proc.returncode
        assert code is not None
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return StepOutcome(
                exit_code=None,
                status="failed",
                duration_seconds=duration,
                error=f"killed by signal {name}",
            )
        status: StepStatus = "succeeded" if code == 0 else "failed"
        error = None if code == 0 else f"exited with code {code}"
        return StepOutcome(exit_code=code, status=status, duration_seconds=duration, error=error)

    async def _cleanup(self, step: _Step) -> None:
        await step.kill_group(self.kill_grace)
        with contextlib.suppress(Exception):
            await step.finish_output()

    async def _beat(self, heartbeat: Heartbeat | None) -> None:
        if heartbeat is None:
            await asyncio.Event().wait()  # never ends on its own
            return
        while True:
            heartbeat()
            await asyncio.sleep(self.heartbeat_interval)


def _safe(step_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in step_id)[:40]
