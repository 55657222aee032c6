"""A service to probe: a real HTTP server on loopback whose answer the test sets.

    with HttpTarget() as target:
        target.url              # http://127.0.0.1:<port>/healthz
        target.status = 503     # every request is now answered 503
        target.delay = 2.0      # ... after 2 seconds (for timeouts)
        target.hits             # requests received so far, as (method, path)

Any method and path are answered; HEAD gets no body.
"""

from __future__ import annotations

import threading
import time

from tests.standins import BackgroundHTTPServer, StandinRequestHandler


class HttpTarget(BackgroundHTTPServer):
    def __init__(self, *, status: int = 200, port: int | None = None) -> None:
        super().__init__(_TargetHandler, port=port)
        self.status = status
        self.delay = 0.0
        self.headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._hits: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"{self.origin}/healthz"

    @property
    def hits(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._hits)

    def _hit(self, method: str, path: str) -> None:
        with self._lock:
            self._hits.append((method, path))


class _TargetHandler(StandinRequestHandler):
    def _serve(self) -> None:
        target: HttpTarget = self.server.owner
        target._hit(self.command, self.path)
        self.read_body()
        if target.delay:
            time.sleep(target.delay)
        status = target.status
        self.answer(status, f"status {status}\n".encode(), headers=dict(target.headers))

    do_GET = do_HEAD = do_POST = do_PUT = do_OPTIONS = _serve
