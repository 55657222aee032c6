"""A stand-in for OpenCost's allocation API (`GET /allocation/compute`), speaking its wire
format: `{"code": 200, "data": [{"<namespace>": {<allocation>}, ...}]}` for an RFC3339
window aggregated by namespace.

    with OpenCostStandin() as opencost:
        opencost.day(date(2026, 5, 1), {"shop": allocation("shop", 1.25)})
        ...  # point a provider's opencost_url at opencost.url
        opencost.requests[-1]  # the query parameters of each request

A window it has no figures for answers an empty set, like OpenCost with no data; a request
that is not a window of RFC3339 times aggregated by namespace answers 400 with OpenCost's
`{"code": 400, "message": ...}`.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.standins import BackgroundHTTPServer, StandinRequestHandler

GIB = 1024**3


def allocation(
    namespace: str,
    total: float,
    *,
    cpu_core_hours: float = 2.0,
    ram_byte_hours: float = 24.0 * GIB,
    day: date | None = None,
) -> dict[str, Any]:
    """One namespace's allocation as OpenCost returns it; `total` is split into its parts."""
    start = datetime.combine(day or date(2026, 1, 1), datetime.min.time())
    window = {
        "start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "end": f"{start + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}",
    }
    cpu, ram, pv = round(total * 0.5, 6), round(total * 0.3, 6), round(total * 0.15, 6)
    network = round(total - cpu - ram - pv, 6)
    return {
        "name": namespace,
        "properties": {"cluster": "default-cluster", "namespace": namespace},
        "window": window,
        "start": window["start"],
        "end": window["end"],
        "minutes": 1440.0,
        "cpuCores": cpu_core_hours / 24,
        "cpuCoreRequestAverage": cpu_core_hours / 24,
        "cpuCoreUsageAverage": cpu_core_hours / 48,
        "cpuCoreHours": cpu_core_hours,
        "cpuCost": cpu,
        "cpuCostAdjustment": 0,
        "cpuEfficiency": 0.5,
        "gpuCount": 0,
        "gpuHours": 0,
        "gpuCost": 0,
        "gpuCostAdjustment": 0,
        "networkTransferBytes": 1_000_000,
        "networkReceiveBytes": 2_000_000,
        "networkCost": network,
        "networkCostAdjustment": 0,
        "loadBalancerCost": 0,
        "loadBalancerCostAdjustment": 0,
        "pvBytes": 10 * GIB,
        "pvByteHours": 240.0 * GIB,
        "pvCost": pv,
        "pvs": None,
        "pvCostAdjustment": 0,
        "ramBytes": ram_byte_hours / 24,
        "ramByteRequestAverage": ram_byte_hours / 24,
        "ramByteUsageAverage": ram_byte_hours / 48,
        "ramByteHours": ram_byte_hours,
        "ramCost": ram,
        "ramCostAdjustment": 0,
        "ramEfficiency": 0.5,
        "sharedCost": 0,
        "externalCost": 0,
        "totalCost": total,
        "totalEfficiency": 0.5,
        "rawAllocationOnly": None,
    }


class OpenCostStandin(BackgroundHTTPServer):
    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(_OpenCostHandler, port=port)
        self._lock = threading.Lock()
        self._days: dict[str, dict[str, Any]] = {}  # window start (RFC3339) -> set
        self._requests: list[dict[str, str]] = []
        self._failures: list[int] = []

    @property
    def url(self) -> str:
        """What to give as `opencost_url` (OpenCost's API root)."""
        return self.origin

    @property
    def requests(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._requests)

    def day(self, day: date, allocations: dict[str, dict[str, Any]]) -> None:
        """The allocation set answered for the window of `day` (UTC)."""
        with self._lock:
            self._days[f"{day:%Y-%m-%d}T00:00:00Z"] = allocations

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` requests with HTTP `status` (a failing OpenCost pod)."""
        with self._lock:
            self._failures += [status] * n

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._requests.append(query)
            if self._failures:
                status = self._failures.pop(0)
                return status, {"code": status, "message": "error computing allocation"}
        if path != "/allocation/compute":
            return 404, {"code": 404, "message": f"no route {path}"}
        start, sep, end = query.get("window", "").partition(",")
        try:
            begin, finish = (datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ") for t in (start, end))
        except ValueError:
            return 400, {"code": 400, "message": f"invalid window {query.get('window')!r}"}
        if not sep or finish <= begin:
            return 400, {"code": 400, "message": "window end must follow its start"}
        if query.get("aggregate") != "namespace":
            return 400, {"code": 400, "message": "this stand-in aggregates by namespace only"}
        with self._lock:
            found = self._days.get(start, {})
        return 200, {"code": 200, "data": [found]}


class _OpenCostHandler(StandinRequestHandler):
    def do_GET(self) -> None:
        owner: OpenCostStandin = self.server.owner
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        status, body = owner._answer(parts.path, query)
        self.answer_json(status, body)
