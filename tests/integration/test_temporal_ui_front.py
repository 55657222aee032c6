"""The Temporal UI's front (workers/temporal_ui.py), without a browser.

Against a stand-in upstream (an ASGI app on a local port) it must pass requests and responses
through byte for byte, status codes, headers and streaming included; against the real UI server
of `temporal server start-dev` it must rewrite the codec settings and nothing else, and its
"failed in the last hour" link must be a query the real server accepts and answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from core.temporal import search_attributes
from core.temporal.client import find_temporal_cli
from tests.helpers import free_port, wait_until
from workers.temporal_ui import (
    FAILED_LAST_HOUR_PATH,
    CodecConfig,
    UiFront,
    failed_since,
    rewrite_settings,
    server,
)

CODEC = CodecConfig(
    endpoint="http://127.0.0.1:8000/api/temporal/codec",
    sign_in="http://127.0.0.1:8000/api/temporal/codec/sign-in",
)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free local port, in this event loop; its base URL."""
    port = free_port()
    srv = server("127.0.0.1", port, app)
    task = asyncio.create_task(srv.serve())

    async def started() -> bool:
        return srv.started

    await wait_until("the server to start", started)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await task


class Upstream:
    """A stand-in for the UI server: echoes requests, streams on demand, answers any status."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.settings_body = b"{}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path == "/stream":
            await self._start(send, 200, [(b"content-type", b"text/plain")])
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
            await self.release.wait()  # until the test has read the first chunk
            await send({"type": "http.response.body", "body": b"second\n", "more_body": False})
        elif path.startswith("/status/"):
            await self._whole(send, int(path.rsplit("/", 1)[1]), b"as the upstream said")
        elif path == "/api/v1/settings":
            await self._whole(send, 200, self.settings_body, [(b"content-type", b"text/plain")])
        else:
            echo = {
                "method": scope["method"],
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            }
            cookies = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/")]
            status = 201 if scope["method"] == "POST" else 200
            await self._whole(send, status, json.dumps(echo).encode(), cookies)

    @staticmethod
    async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def _whole(
        self, send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        length = [(b"content-length", str(len(body)).encode())]
        await self._start(send, status, [*headers, *length])
        await send({"type": "http.response.body", "body": body, "more_body": False})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    app = Upstream()
    async with serving(app) as url:
        yield app, url


@pytest.fixture
async def front(upstream: tuple[Upstream, str]) -> AsyncIterator[str]:
    app = UiFront(upstream[1], CODEC, "default")
    async with serving(app) as url:
        yield url


async def test_a_large_post_passes_through_byte_for_byte(front: str) -> None:
    body = uuid.uuid4().bytes * (5 * 1024 * 1024 // 16)  # 5 MiB
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{front}/api/v1/namespaces/default/workflows/x%2Fy/signal?a=%22b%22&c=1",
            content=body,
            headers={"X-Csrf-Token": "t0k3n", "Cookie": "_csrf=t0k3n", "Connection": "close"},
        )
    assert response.status_code == 201
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["raw_path"] == "/api/v1/namespaces/default/workflows/x%2Fy/signal"
    assert echo["query"] == "a=%22b%22&c=1"
    assert (echo["length"], echo["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    sent = dict(echo["headers"])
    assert sent["x-csrf-token"] == "t0k3n"
    assert sent["cookie"] == "_csrf=t0k3n"
    assert sent["host"] == front.removeprefix("http://")  # the address the browser used
    assert "connection" not in sent  # hop-by-hop: not passed on
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_a_streamed_request_body_and_every_method(front: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            yield f"chunk {i};".encode()

    expected = b"".join(f"chunk {i};".encode() for i in range(100))
    async with httpx.AsyncClient() as client:
        streamed = await client.put(f"{front}/anything", content=chunks())
        assert streamed.json()["sha256"] == hashlib.sha256(expected).hexdigest()
        for method in ("GET", "DELETE", "PATCH", "OPTIONS"):
            answer = await client.request(method, f"{front}/anything")
            assert (answer.status_code, answer.json()["method"]) == (200, method)
        head = await client.head(f"{front}/anything")
        assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("status", [204, 302, 400, 401, 404, 500, 503])
async def test_status_codes_pass_through(front: str, status: int) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{front}/status/{status}")
    assert response.status_code == status
    if status != 204:
        assert response.text == "as the upstream said"


async def test_a_response_is_streamed_not_buffered(
    front: str, upstream: tuple[Upstream, str]
) -> None:
    app, _ = upstream
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", f"{front}/stream") as response,
    ):
        lines = response.aiter_lines()
        try:
            # The upstream holds the rest until this first line has arrived through the front:
            # a front that buffered the whole response would never deliver it.
            assert await asyncio.wait_for(anext(lines), timeout=10) == "first"
        finally:
            app.release.set()
        assert await asyncio.wait_for(anext(lines), timeout=10) == "second"


async def test_settings_that_are_not_json_pass_unchanged(
    front: str, upstream: tuple[Upstream, str]
) -> None:
    upstream[0].settings_body = b"not json"
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{front}/api/v1/settings")
    assert (response.status_code, response.content) == (200, b"not json")


async def test_an_upstream_that_does_not_answer_is_a_502() -> None:
    app = UiFront(f"http://127.0.0.1:{free_port()}", CODEC, "default")  # nothing listens there
    async with serving(app) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/namespaces")
    assert response.status_code == 502
    assert "the Temporal UI server is not answering" in response.text


def test_rewrite_keeps_every_other_setting() -> None:
    original = {"Codec": {"Endpoint": "", "Extra": 1}, "Version": "2.54.1", "Auth": {"x": 1}}
    rewritten = json.loads(rewrite_settings(json.dumps(original).encode(), CODEC))
    assert rewritten["Version"] == "2.54.1" and rewritten["Auth"] == {"x": 1}
    assert rewritten["Codec"]["Extra"] == 1
    assert rewritten["Codec"]["IncludeCredentials"] is True
    with pytest.raises(ValueError):
        rewrite_settings(b"[1, 2]", CODEC)


# -- against the real UI server ---------------------------------------------------------------
@pytest.fixture(scope="module")
async def ui_server() -> AsyncIterator[tuple[WorkflowEnvironment, str]]:
    """A dev server with its UI (the one `idp dev` runs), and the platform's attributes."""
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_temporal_cli()),
        dev_server_log_level="error",
        search_attributes=search_attributes.ALL,
        ui=True,
        ui_port=ui_port,
    )
    yield env, f"http://127.0.0.1:{ui_port}"
    await env.shutdown()


@pytest.fixture
async def real_front(ui_server: tuple[WorkflowEnvironment, str]) -> AsyncIterator[str]:
    async with serving(UiFront(ui_server[1], CODEC, "default")) as url:
        yield url


async def test_the_real_ui_settings_get_the_platforms_codec(
    ui_server: tuple[WorkflowEnvironment, str], real_front: str
) -> None:
    async with httpx.AsyncClient() as client:
        direct = (await client.get(f"{ui_server[1]}/api/v1/settings")).json()
        # As a browser asks: compressed. The front asks for the JSON uncompressed to edit it.
        response = await client.get(
            f"{real_front}/api/v1/settings", headers={"Accept-Encoding": "gzip"}
        )
        page = await client.get(f"{real_front}/", headers={"Accept-Encoding": "gzip"})
    assert direct["Codec"]["IncludeCredentials"] is False  # what the CLI's UI server says
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers.get("set-cookie", "").startswith("_csrf=")  # the UI's CSRF cookie
    settings = response.json()
    assert settings["Codec"] == {
        "Endpoint": CODEC.endpoint,
        "PassAccessToken": False,
        "IncludeCredentials": True,
        "DefaultErrorMessage": CODEC.error_message,
        "DefaultErrorLink": CODEC.sign_in,
    }
    assert {k: v for k, v in settings.items() if k != "Codec"} == {
        k: v for k, v in direct.items() if k != "Codec"
    }
    # Everything else is passed as the UI server sent it, compressed included.
    assert page.status_code == 200
    assert page.headers["content-encoding"] == "gzip"
    assert "_app/immutable" in page.text  # httpx decompressed what the front passed on


async def test_the_failed_last_hour_link_lists_what_failed_in_that_hour(
    ui_server: tuple[WorkflowEnvironment, str], real_front: str
) -> None:
    env, _ = ui_server
    client = env.client
    tag = uuid.uuid4().hex[:8]

    async def closed(workflow_id: str, status: str | None) -> None:
        attrs = search_attributes.attributes(status=status, service=f"svc-{tag}")
        handle = await client.start_workflow(
            "Nobody", id=workflow_id, task_queue=f"nobody-{tag}", search_attributes=attrs
        )
        await handle.terminate("test")

    await closed(f"failed-{tag}", "failed")
    await closed(f"fine-{tag}", "succeeded")

    async with httpx.AsyncClient() as http:
        response = await http.get(f"{real_front}{FAILED_LAST_HOUR_PATH}")
    assert response.status_code == 303
    assert response.headers["cache-control"] == "no-store"
    location = urlsplit(response.headers["location"])
    assert location.path == "/namespaces/default/workflows"
    query = parse_qs(location.query)["query"][0]
    stamp = datetime.fromisoformat(query.rsplit('"', 2)[1])
    assert abs(stamp - (datetime.now(UTC) - timedelta(hours=1))) < timedelta(minutes=1)

    # The query the UI will run, as the real server answers it.
    async def found() -> bool:
        ids = [w.id async for w in client.list_workflows(f'{query} AND IdpService="svc-{tag}"')]
        return ids == [f"failed-{tag}"]

    await wait_until("the failed workflow in the list", found, timeout=20)
    old = failed_since("default", datetime.now(UTC) + timedelta(minutes=1))
    old_query = parse_qs(urlsplit(old).query)["query"][0]
    later = [w async for w in client.list_workflows(f'{old_query} AND IdpService="svc-{tag}"')]
    assert later == []  # closed before the window: not listed
