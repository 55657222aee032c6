"""Local stand-ins for the services notifications are delivered to (Slack's Web API, an SMTP
server, a webhook receiver): real servers on 127.0.0.1, each run in a background thread so sync
and async tests can use them. Use them as context managers:

    with SlackApiStandin() as slack: ...       # tests.standins.slack_api
    with SmtpStandin() as smtp: ...            # tests.standins.smtp
    with WebhookReceiver(secret=...) as hook:  # tests.standins.webhook_receiver
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tests.helpers import free_port

LOOPBACK = "127.0.0.1"


class Running:
    """A server that starts on entering a `with` block and stops on leaving it."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: Any = None


class StandinRequestHandler(BaseHTTPRequestHandler):
    """Base handler: quiet, with helpers to read the body and answer."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def answer(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def answer_json(self, status: int, data: Any, *, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.answer(status, body, content_type="application/json; charset=utf-8", headers=headers)


class BackgroundHTTPServer(Running):
    """A ThreadingHTTPServer on loopback, served from a daemon thread; `handler.server.owner`
    is the stand-in that owns it. Start and stop it with `with` or start()/stop()."""

    def __init__(self, handler: type[StandinRequestHandler], *, port: int | None = None) -> None:
        self._handler = handler
        self.port = port or free_port()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server((LOOPBACK, self.port), self._handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
