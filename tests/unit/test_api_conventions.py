"""The API's conventions, on an app with extra routes that exercise each error path."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel

from api.app import create_app
from api.pagination import PageOut, page_params
from core import context
from core.errors import Conflict
from core.pagination import PageRequest
from core.settings import Settings
from core.topology import Topology
from tests.helpers import http_client

probe = APIRouter(prefix="/probe")


class Payload(BaseModel):
    name: str
    size: int


@probe.get("/conflict")
async def conflict() -> None:
    raise Conflict("service 'api' already exists", details={"name": "api"})


@probe.post("/items")
async def create_item(payload: Payload) -> Payload:
    return payload


@probe.get("/crash")
async def crash() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@probe.get("/context")
async def whoami(request: Request) -> dict[str, str | None]:
    ctx = context.current()
    return {"request_id": ctx.request_id, "ip": ctx.ip, "user_agent": ctx.user_agent}


@probe.get("/page")
async def page(page: PageRequest = Depends(page_params)) -> dict[str, object]:
    return {"limit": page.limit, "cursor": page.cursor, "offset": page.offset}


@pytest.fixture
async def app(settings: Settings, topology: Topology) -> FastAPI:
    app = create_app(settings, topology)
    app.include_router(probe)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as c:
        yield c


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["x-api-version"] == "1"


async def test_request_id_generated_kept_or_replaced(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/api/health")).headers["x-request-id"]
    assert len(generated) == 32
    assert (await client.get("/api/health")).headers["x-request-id"] != generated
    kept = await client.get("/probe/context", headers={"X-Request-ID": "trace-42.a"})
    assert kept.headers["x-request-id"] == "trace-42.a"
    assert kept.json()["request_id"] == "trace-42.a"  # visible to the code handling the request
    unsafe = await client.get("/api/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_api_version_header(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/health", headers={"X-API-Version": "1"})).status_code == 200
    error = assert_error_shape(
        await client.get("/api/health", headers={"X-API-Version": "2"}),
        400,
        "unsupported_api_version",
    )
    assert error["details"] == {"supported": ["1"], "current": "1"}


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    error = assert_error_shape(await client.get("/no/such/thing"), 404, "not_found")
    assert error["message"] == "no route for GET /no/such/thing"
    assert_error_shape(await client.delete("/api/health"), 405, "method_not_allowed")


async def test_domain_error(client: httpx.AsyncClient) -> None:
    error = assert_error_shape(await client.get("/probe/conflict"), 409, "conflict")
    assert error["details"] == {"name": "api"}


async def test_validation_error(client: httpx.AsyncClient) -> None:
    error = assert_error_shape(
        await client.post("/probe/items", json={"name": "x", "size": "big"}),
        422,
        "validation_error",
    )
    assert error["message"].startswith("body.size:")
    assert error["details"][0]["field"] == "body.size"
    assert_error_shape(
        await client.post(
            "/probe/items", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "validation_error",
    )


async def test_unhandled_error_leaks_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/probe/crash", headers={"X-Request-ID": "crash-1"})
    error = assert_error_shape(response, 500, "internal_error")
    assert error["request_id"] == "crash-1"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text


async def test_pagination_parameters(client: httpx.AsyncClient) -> None:
    assert (await client.get("/probe/page")).json() == {"limit": 50, "cursor": None, "offset": None}
    assert (await client.get("/probe/page?limit=10&offset=20")).json()["offset"] == 20
    assert_error_shape(await client.get("/probe/page?limit=500"), 422, "validation_error")
    error = assert_error_shape(
        await client.get("/probe/page?cursor=abc&offset=3"), 400, "bad_request"
    )
    assert "either cursor or offset" in error["message"]


async def test_openapi_lists_routes_tags_and_error_shape(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/api/health", "/api/health/ready"} <= set(spec["paths"])
    assert {"name": "system", "description": "Liveness and readiness of the platform."} in spec[
        "tags"
    ]
    assert spec["paths"]["/api/health"]["get"]["tags"] == ["system"]
    assert "ErrorResponse" in spec["components"]["schemas"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_page_out_model_is_generic() -> None:
    page = PageOut[int](items=[1, 2], limit=2, next_cursor="c", next="http://x/?cursor=c")
    assert page.model_dump()["items"] == [1, 2]
