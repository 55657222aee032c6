"""Percentiles and the one-line report format shared by the benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": statistics.median(samples_ms),
        "p95": percentile(samples_ms, 95),
        "p99": percentile(samples_ms, 99),
    }


def report(name: str, samples_ms: Sequence[float], floor_ms: Sequence[float] | None = None) -> None:
    s = summary(samples_ms)
    figures = " ".join(f"{k}={v:8.2f}ms" for k, v in s.items())
    line = f"{name:<44} n={len(samples_ms):<5} {figures}"
    if floor_ms:
        f = summary(floor_ms)
        line += f"  x{s['p50'] / f['p50']:.2f} of floor p50"
    print(line, flush=True)
