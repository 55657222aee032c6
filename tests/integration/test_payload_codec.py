"""The encryption codec on a real Temporal dev server: secrets never reach history in clear
text, the codec client reads results, a ring without the key fails clearly, and histories
written without the codec still read."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.security.encryption import DecryptionError, KeyRing
from core.temporal import policies
from core.temporal.codec import ENCODING, EncryptionCodec
from core.temporal.converter import data_converter
from core.temporal.interceptors import ContextPropagationInterceptor
from core.topology import Topology
from tests.integration.codec_flows import (
    SecretCarrierWorkflow,
    SecretInput,
    SecretResult,
    use_secret,
)
from workers.runner import sandbox_runner

KEY = "k" * 16 + uuid.uuid4().hex  # 48 characters, fresh per session
OTHER_KEY = "o" * 16 + uuid.uuid4().hex


@pytest.fixture(autouse=True)
def _policies(topology: Topology) -> None:
    policies.install(topology)


async def codec_client(env: WorkflowEnvironment, ring: KeyRing) -> Client:
    return await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=data_converter(EncryptionCodec(ring)),
        interceptors=[ContextPropagationInterceptor()],
    )


def worker(client: Client, queue: str) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[SecretCarrierWorkflow],
        activities=[use_secret],
        workflow_runner=sandbox_runner(),
    )


def raw(history: WorkflowHistory) -> bytes:
    """The history as the server stores it: payload bytes appear verbatim when unencrypted."""
    return History(events=history.events).SerializeToString()


async def carry(client: Client, secret: str) -> tuple[SecretResult, WorkflowHistory, str]:
    queue = f"codec-{uuid.uuid4()}"
    workflow_id = f"codec-{uuid.uuid4()}"
    async with worker(client, queue):
        result = await client.execute_workflow(
            SecretCarrierWorkflow.run,
            SecretInput(name="db-password", secret=secret),
            id=workflow_id,
            task_queue=queue,
        )
    return result, await client.get_workflow_handle(workflow_id).fetch_history(), workflow_id


async def test_without_the_codec_the_secret_is_in_history(
    temporal_env: WorkflowEnvironment,
) -> None:
    """The control: proves the assertions of the encrypted case can fail."""
    secret = f"s3cr3t-{uuid.uuid4()}"
    result, history, _ = await carry(temporal_env.client, secret)
    assert result.secret == secret
    assert secret.encode() in raw(history) and b"json/plain" in raw(history)


async def test_payloads_are_encrypted_in_history(temporal_env: WorkflowEnvironment) -> None:
    ring = KeyRing.from_material(KEY)
    client = await codec_client(temporal_env, ring)
    secret = f"s3cr3t-{uuid.uuid4()}"

    result, _, workflow_id = await carry(client, secret)
    assert result == SecretResult("db-password", secret, len(secret))

    # Read back by a client without the codec: what the server (and its UI) holds.
    history = await temporal_env.client.get_workflow_handle(workflow_id).fetch_history()
    stored = raw(history)
    assert secret.encode() not in stored
    assert secret not in history.to_json()
    assert b"db-password" not in stored and b"json/plain" not in stored
    assert ENCODING in stored and ring.current.kid.encode() in stored

    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == ENCODING
    assert started.metadata["encryption-key-id"] == ring.current.kid.encode()


async def test_a_ring_without_the_key_fails_clearly(temporal_env: WorkflowEnvironment) -> None:
    ring = KeyRing.from_material(KEY)
    secret = f"s3cr3t-{uuid.uuid4()}"
    _, _, workflow_id = await carry(await codec_client(temporal_env, ring), secret)

    stranger = await codec_client(temporal_env, KeyRing.from_material(OTHER_KEY))
    with pytest.raises(DecryptionError) as info:
        await stranger.get_workflow_handle(workflow_id).result()
    assert ring.current.kid in str(info.value)
    assert KEY not in str(info.value)

    rotated = await codec_client(temporal_env, KeyRing.from_material(OTHER_KEY, [KEY]))
    handle = rotated.get_workflow_handle(workflow_id, result_type=SecretResult)
    assert (await handle.result()).secret == secret


async def test_histories_written_without_the_codec_still_read(
    temporal_env: WorkflowEnvironment,
) -> None:
    secret = f"s3cr3t-{uuid.uuid4()}"
    _, _, workflow_id = await carry(temporal_env.client, secret)
    client = await codec_client(temporal_env, KeyRing.from_material(KEY))
    handle = client.get_workflow_handle(workflow_id, result_type=SecretResult)
    assert (await handle.result()).secret == secret
