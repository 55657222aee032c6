"""From a step's raw output bytes to numbered log lines, sent to the sink in batches.

Shared by the runners that read raw output streams (local and docker).

- `LineSplitter` cuts one byte stream into lines: on `\\n`; a line longer than
  `max_line_bytes` is cut into pieces of at most that size (never inside a UTF-8 character);
  a trailing `\\r` is dropped; `end()` returns a last line that had no `\\n`. Feed each stream
  (stdout, stderr) to its own splitter: their chunks interleave.
- `LineBatcher` stamps lines (`seq` increasing by one across all streams, in the order they
  were added; `at` = when added; text decoded as UTF-8 with replacement) and sends them to
  the `OutputSink` in batches of at most `flush_lines`, at least every `flush_interval`
  seconds while its flush loop runs. With `flush_lines * 5` lines pending, `add` waits for
  the sink (back-pressure: a slow sink slows the reader, not the worker's memory).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime

from core.pipelines.runners.base import LogLine, OutputSink, Stream

DEFAULT_MAX_LINE_BYTES = 64 * 1024
PENDING_BATCHES = 5  # back-pressure starts at this many full batches waiting for the sink


def _is_utf8_continuation(byte: int) -> bool:
    return (byte & 0xC0) == 0x80


class LineSplitter:
    """Incremental line splitter for one byte stream (not thread-safe; one per stream)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 4:
            raise ValueError("max_line_bytes must be at least 4 (one UTF-8 character)")
        self.max_line_bytes = max_line_bytes
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines (and over-long pieces) that `chunk` finishes."""
        data = self._rest + chunk if self._rest else chunk
        limit = self.max_line_bytes
        lines: list[bytes] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start, start + limit + 1)
            if newline != -1:
                lines.append(_strip_cr(data[start:newline]))
                start = newline + 1
            elif len(data) - start > limit:
                cut = start + limit
                # back off over at most 3 continuation bytes: a character is <= 4 bytes
                while cut > start + limit - 3 and _is_utf8_continuation(data[cut]):
                    cut -= 1
                lines.append(_strip_cr(data[start:cut]))
                start = cut
            else:
                break
        self._rest = data[start:]
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the stream ended without a `\\n` after it."""
        rest, self._rest = self._rest, b""
        return [_strip_cr(rest)] if rest else []


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class LineBatcher:
    """Numbers lines and sends them to `on_output` in bounded, timely batches.

    `start()` runs the flush loop as a task (`task`: it fails with what the sink raised);
    `close()` stops taking lines and sends what is pending; `abandon()` cancels the loop.
    """

    def __init__(
        self,
        on_output: OutputSink,
        *,
        flush_lines: int = 200,
        flush_interval: float = 0.5,
    ) -> None:
        if flush_lines < 1:
            raise ValueError("flush_lines must be at least 1")
        self._on_output = on_output
        self.flush_lines = flush_lines
        self.flush_interval = flush_interval
        self._high_water = flush_lines * PENDING_BATCHES
        self.seq = 0
        self._pending: list[LogLine] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._sending = asyncio.Lock()
        self._closing = False
        self.sink_failed = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._flush_loop())
        return self.task

    async def add(self, stream: Stream, lines: Iterable[bytes]) -> None:
        """Number and queue `lines` of `stream`; lines added after `close()` are dropped."""
        for raw in lines:
            if self._closing or self.sink_failed:
                return
            self.seq += 1
            self._pending.append(
                LogLine(
                    seq=self.seq,
                    at=datetime.now(UTC),
                    stream=stream,
                    text=raw.decode("utf-8", errors="replace"),
                )
            )
            if len(self._pending) >= self.flush_lines:
                self._wake.set()
            if len(self._pending) >= self._high_water:
                self._room.clear()
                await self._room.wait()

    async def flush(self) -> None:
        """Send everything pending, in batches of at most `flush_lines`."""
        async with self._sending:
            while self._pending and not self.sink_failed:
                batch = self._pending[: self.flush_lines]
                del self._pending[: len(batch)]
                try:
                    await self._on_output(batch)
                except BaseException:
                    self.sink_failed = True
                    raise
                finally:
                    if self.sink_failed or len(self._pending) < self._high_water:
                        self._room.set()

    async def _flush_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            await self.flush()
        await self.flush()

    async def close(self) -> None:
        """Take no more lines; send the pending ones unless the sink already failed."""
        self._closing = True
        self._wake.set()
        self._room.set()
        if self.sink_failed:
            return
        if self.task is not None:
            await self.task
        await self.flush()

    def abandon(self) -> None:
        self._closing = True
        self._room.set()
        if self.task is not None:
            self.task.cancel()
