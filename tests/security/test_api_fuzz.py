"""The API under Schemathesis (issue 15): every operation of the OpenAPI document, with
generated valid and invalid requests (wrong JSON types, nulls, NUL bytes, huge integers, odd
Unicode), as a platform admin and as a viewer. No answer may be a 5xx, and every answer must
match the schema the document gives for it (errors in the one error shape).

The app runs under uvicorn on a loopback port in a thread of its own, with its own lifespan,
on a fresh database of the session's backend and a Temporal namespace of its own (workflows it
starts never reach another test's workers). `make test` runs a few examples per operation;
`make fuzz` runs many (IDP_FUZZ_EXAMPLES)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.db import migrate
from core.db.engine import create_engine, session_factory, transaction
from core.identity.users import UserService
from core.security.tokens import issue_access_token
from core.settings import Settings
from core.topology import Topology
from tests.conftest import PostgresDatabases
from tests.integration.identity_helpers import JWT_SECRET, PASSWORD

EXAMPLES = int(os.environ.get("IDP_FUZZ_EXAMPLES", "3"))
ONLY = {label for label in os.environ.get("IDP_FUZZ_ONLY", "").split(",") if label}  # "POST /teams"
FUZZ_NAMESPACE = "fuzz"
READ_TIMEOUT = 60  # seconds: the client's patience, not a speed check (a busy CI machine)


@dataclass
class FuzzTarget:
    url: str
    headers: dict[str, dict[str, str]]  # identity -> Authorization header


async def _users(database_url: str) -> dict[str, uuid.UUID]:
    engine = create_engine(database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            users = UserService(session)
            ids = {}
            for role in ("admin", "viewer"):
                user = await users.create(f"fuzz-{role}@example.com", f"Fuzz {role}", PASSWORD)
                await users.grant_role(user, role)
                ids[role] = user.id
            return ids
    finally:
        await engine.dispose()


def _fresh_database(database_url: str, postgres: PostgresDatabases | None, where: Path) -> str:
    """An empty database of the session's backend, migrated: what the fuzzer creates stays out
    of the database the other tests share."""
    if database_url.startswith("postgresql"):
        assert postgres is not None
        url = postgres.create()
    else:
        url = f"sqlite+aiosqlite:///{where / 'fuzz.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module")
def fuzz_target(
    database_url: str,
    postgres: PostgresDatabases | None,
    temporal_env: WorkflowEnvironment,
    topology: Topology,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FuzzTarget]:
    where = tmp_path_factory.mktemp("fuzz")
    url = _fresh_database(database_url, postgres, where)
    address = temporal_env.client.service_client.config.target_host
    config = Settings(
        env="test",
        data_dir=where / "data",
        database_url=url,
        jwt_secret=SecretStr(JWT_SECRET),
        temporal_address=address,
        temporal_namespace=FUZZ_NAMESPACE,
        rate_limit_enabled=False,
    )
    app = create_app(config, topology)
    ids = asyncio.run(_users(url))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the fuzzed API did not start")
            threading.Event().wait(0.01)
        headers = {}
        for role, user_id in ids.items():
            token, _ = issue_access_token(JWT_SECRET, user_id, timedelta(hours=2))
            headers[role] = {"Authorization": f"Bearer {token}"}
        yield FuzzTarget(f"http://127.0.0.1:{port}", headers)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture(scope="module")
async def _fuzz_namespace(temporal_env: WorkflowEnvironment) -> None:
    try:
        await temporal_env.client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=FUZZ_NAMESPACE,
                workflow_execution_retention_period=Duration(seconds=86_400),
            )
        )
    except Exception as exc:  # already registered by the other backend's run
        if "already" not in str(exc).lower():
            raise


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget, _fuzz_namespace: None) -> OpenApiSchema:
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json", timeout=READ_TIMEOUT)
    schema.config.generation.update(allow_x00=True)
    return schema


# Valid requests must not fail on the server's side; invalid ones must be refused with a 4xx
# the document describes. (negative_data_rejection is left out: FastAPI accepts some values a
# strict reading of the schema would refuse, such as extra query parameters.)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing case is reported
    database=None,
)


# What valid-looking requests carry in every string and number of their body (and, where a URL
# can carry them, of their query): NUL bytes, lone surrogates, bidi and combining marks, a BOM,
# astral characters, long digit runs, and integers no column can hold.
ODD_STRINGS = ["\x00", "a\x00b", "\ud800", "x\udfff", "\u202e\u0301\ufeff", "\U0001d518", "9" * 400]
ODD_NUMBERS = [10**30, -(10**30), 2**63, 1e308]
_URL_SAFE = [text for text in ODD_STRINGS if not any(0xD800 <= ord(c) <= 0xDFFF for c in text)]


def _oddify(value: Any, data: st.DataObject, strings: list[str]) -> Any:
    if isinstance(value, str):
        return data.draw(st.sampled_from(strings))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return data.draw(st.sampled_from(ODD_NUMBERS))
    if isinstance(value, dict):
        return {key: _oddify(item, data, strings) for key, item in value.items()}
    if isinstance(value, list):
        return [_oddify(item, data, strings) for item in value]
    return value


def _caller(operation: Any, mode: str, target: FuzzTarget, identity: str) -> Any:
    """A Hypothesis test of `operation` in `mode`, calling the API as `identity`."""
    generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=generation), data=st.data())
    def call(case: schemathesis.Case, data: st.DataObject) -> None:
        request = case.as_transport_kwargs(base_url=target.url, headers=target.headers[identity])
        if mode == "odd values":  # after as_transport_kwargs, which cannot encode surrogates
            if isinstance(request.get("json"), dict | list):
                request["json"] = _oddify(request["json"], data, ODD_STRINGS)
            if request.get("params"):
                request["params"] = _oddify(request["params"], data, _URL_SAFE)
        if "json" in request:  # serialised here: lone surrogates go out as JSON escapes
            request["data"] = json.dumps(request.pop("json")).encode()
        response = requests.request(**request, timeout=READ_TIMEOUT)
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as failure:
            sent = {key: request.get(key) for key in ("params", "data") if request.get(key)}
            failure.add_note(f"sent: {sent!r:.2000}")
            raise

    return call


def _fuzz(schema: OpenApiSchema, target: FuzzTarget, identity: str) -> None:
    """Every operation: valid requests, invalid ones (wrong types, nulls, missing fields), and
    valid ones carrying odd values; one report of all that failed."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if ONLY and operation.label not in ONLY:
            continue
        for mode in ("positive", "negative", "odd values"):
            try:
                _caller(operation, mode, target, identity)()
            except Unsatisfiable:  # nothing to send wrong: no parameters and no body
                continue
            except (Exception, BaseExceptionGroup) as exc:  # one failure must not hide others
                where = "".join(traceback.format_exception(exc)[-6:])
                failures.append(f"{operation.label} ({mode}): {exc}\n{where}")
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)


def test_as_an_admin_no_operation_answers_a_server_error_or_breaks_its_schema(
    api_schema: OpenApiSchema, fuzz_target: FuzzTarget
) -> None:
    _fuzz(api_schema, fuzz_target, "admin")


def test_as_a_viewer_no_operation_answers_a_server_error_or_breaks_its_schema(
    api_schema: OpenApiSchema, fuzz_target: FuzzTarget
) -> None:
    _fuzz(api_schema, fuzz_target, "viewer")
