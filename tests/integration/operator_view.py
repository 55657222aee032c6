"""What an operator sees of a workflow in the Temporal UI, read the way the UI reads it: the
executions a visibility query lists, the static summary, the current details, and the
summary of each activity in the timeline (decoded with the client's data converter, codec
included)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecution, WorkflowHandle


async def executions(
    client: Client, query: str, *, at_least: int = 1, timeout: float = 20
) -> list[WorkflowExecution]:
    """The executions `query` lists, polled until there are `at_least` (visibility is
    eventually consistent); fails after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [execution async for execution in client.list_workflows(query)]
        if len(found) >= at_least:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"{query!r} listed {len(found)} execution(s) after {timeout}s")
        await asyncio.sleep(0.2)


async def activity_summaries(client: Client, handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The summary of every activity the workflow scheduled, in history order."""
    summaries = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        assert event.HasField("user_metadata"), "an activity without a summary"
        [summary] = await client.data_converter.decode([event.user_metadata.summary])
        summaries.append(summary)
    return summaries


async def upserts(handle: WorkflowHandle[Any, Any], key: str = "IdpStatus") -> int:
    """How many times the workflow upserted `key` (each upsert is a history event; the SDK's
    own, such as TemporalChangeVersion for a patch, are not counted)."""
    count = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            count += key in fields.indexed_fields
    return count


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """What `workflow.set_current_details` last said (a running workflow answers)."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)
