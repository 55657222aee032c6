"""Shared by the fork pull request and pipeline secret tests: a base repository whose fork's
commit is reachable as `refs/pull/<n>/head` (as on GitHub), a GitHub pull request delivery
from that fork, a stack fixture, and a workflow history with every payload decoded."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.pipelines.webhooks import sign
from core.settings import Settings
from core.temporal import policies
from core.topology import Topology
from tests.integration.pipeline_helpers import (
    SECRET,
    Stack,
    commit,
    git,
    make_repo,
    pipeline_stack,
    stack_settings,
)


class ForkedRepo:
    """`owner/app` with a `main` branch, and pull requests from `mallory/app`."""

    def __init__(self, root: Path) -> None:
        self.owner = f"acme-{uuid.uuid4().hex[:8]}"
        self.path = root / "base"
        self.url = f"https://github.com/{self.owner}/app"

    def init(self, files: dict[str, str]) -> str:
        return make_repo(self.path, files)

    def fork_pull_request(self, number: int, files: dict[str, str]) -> str:
        """A commit on top of main with `files` changed, as `refs/pull/<number>/head` (not on
        any branch of the base repository); its SHA."""
        git(self.path, "checkout", "-q", "-b", f"fork-{number}")
        sha = commit(self.path, files, f"fork change {number}")
        git(self.path, "update-ref", f"refs/pull/{number}/head", sha)
        git(self.path, "checkout", "-q", "main")
        git(self.path, "branch", "-q", "-D", f"fork-{number}")
        return sha


def pull_request_payload(
    repo: ForkedRepo, number: int, sha: str, *, fork: bool = True
) -> dict[str, Any]:
    """A GitHub `pull_request` (opened) event, with the fields GitHub sends that matter."""
    base = {"id": 1, "full_name": f"{repo.owner}/app", "html_url": repo.url}
    head = {"id": 2, "full_name": "mallory/app"} if fork else base
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number,
            "html_url": f"{repo.url}/pull/{number}",
            "head": {"ref": "feature", "sha": sha, "repo": head},
            "base": {"ref": "main", "sha": "0" * 40, "repo": base},
        },
        "repository": {"full_name": f"{repo.owner}/app", "html_url": repo.url},
        "sender": {"login": "mallory" if fork else "dev"},
    }


async def deliver_pull_request(stack: Stack, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, SECRET),
    }
    answer = await stack.api.client.post("/webhooks/github", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    [run] = answer.json()["runs"]
    return dict(run)


@pytest.fixture
def forked(tmp_path: Path) -> ForkedRepo:
    return ForkedRepo(tmp_path)


@pytest.fixture
async def stack(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    forked: ForkedRepo,
) -> AsyncIterator[Stack]:
    policies.install(topology)
    configured = stack_settings(
        settings, temporal_env, {forked.url: f"file://{forked.path}"}, github_token=None
    )
    async with pipeline_stack(configured, topology, database_url) as running:
        yield running


def _payloads(message: Message, found: list[Payload]) -> None:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Payload):
                found.append(item)
            elif isinstance(item, Message):
                _payloads(item, found)


async def decoded_history(client: Client, workflow_id: str) -> str:
    """The workflow's whole history as JSON, every payload decrypted by the client's codec:
    what someone reading Temporal with the key would see."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found: list[Payload] = []
    for event in history.events:
        _payloads(event, found)
    codec = client.data_converter.payload_codec
    if codec is not None:
        for payload, plain in zip(found, await codec.decode(found), strict=True):
            payload.CopyFrom(plain)
    text = history.to_json()
    # payload data is base64 in JSON: add each payload's decoded bytes to search them
    return text + "\n".join(p.data.decode("utf-8", "replace") for p in found)
