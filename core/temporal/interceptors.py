"""Context propagation through Temporal, ready for tracing.

The client interceptor writes the current `RequestContext` into a header of every workflow
start, signal, query and update; the worker interceptor restores it while the workflow or
handler runs, forwards it to the activities and child workflows it starts, and restores it
in activities, so audit entries and log lines there carry the original request id and actor.
A tracing interceptor (OpenTelemetry) can sit beside this one in the same lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from temporalio import client, converter, worker
from temporalio.api.common.v1 import Payload

from core import context
from core.db import transactions

HEADER = "idp-context"
_payloads = converter.default().payload_converter


def _with_context(headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
    ctx = context.current()
    if ctx == context.RequestContext():
        return headers
    return {**headers, HEADER: _payloads.to_payloads([ctx.to_header()])[0]}


def _restored(headers: Mapping[str, Payload]) -> AbstractContextManager[Any]:
    payload = headers.get(HEADER)
    if payload is None:
        return nullcontext()
    try:
        data = _payloads.from_payloads([payload], [dict])[0]
        ctx = context.RequestContext.from_header(data)
    except Exception:  # a malformed header must never fail a workflow task
        return nullcontext()
    return context.bound(ctx)


class ContextPropagationInterceptor(client.Interceptor, worker.Interceptor):
    """Give it to `Client.connect`; workers created from that client use it too."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: worker.ActivityInboundInterceptor
    ) -> worker.ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: worker.WorkflowInterceptorClassInput
    ) -> type[worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _ClientOutbound(client.OutboundInterceptor):
    async def start_workflow(self, input: client.StartWorkflowInput) -> Any:
        input.headers = _with_context(input.headers)
        return await super().start_workflow(input)

    async def signal_workflow(self, input: client.SignalWorkflowInput) -> None:
        input.headers = _with_context(input.headers)
        await super().signal_workflow(input)

    async def query_workflow(self, input: client.QueryWorkflowInput) -> Any:
        input.headers = _with_context(input.headers)
        return await super().query_workflow(input)

    async def start_workflow_update(self, input: client.StartWorkflowUpdateInput) -> Any:
        input.headers = _with_context(input.headers)
        return await super().start_workflow_update(input)

    async def start_update_with_start_workflow(
        self, input: client.StartWorkflowUpdateWithStartInput
    ) -> Any:
        input.start_workflow_input.headers = _with_context(input.start_workflow_input.headers)
        input.update_workflow_input.headers = _with_context(input.update_workflow_input.headers)
        return await super().start_update_with_start_workflow(input)


class _ActivityInbound(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        with _restored(input.headers):
            return await super().execute_activity(input)


class _WorkflowInbound(worker.WorkflowInboundInterceptor):
    def init(self, outbound: worker.WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound))

    async def execute_workflow(self, input: worker.ExecuteWorkflowInput) -> Any:
        with _restored(input.headers):
            return await super().execute_workflow(input)

    async def handle_signal(self, input: worker.HandleSignalInput) -> None:
        with _restored(input.headers):
            await super().handle_signal(input)

    def handle_update_validator(self, input: worker.HandleUpdateInput) -> None:
        with _restored(input.headers):
            super().handle_update_validator(input)

    async def handle_update_handler(self, input: worker.HandleUpdateInput) -> Any:
        with _restored(input.headers):
            return await super().handle_update_handler(input)


class _WorkflowOutbound(worker.WorkflowOutboundInterceptor):
    def start_activity(self, input: worker.StartActivityInput) -> Any:
        input.headers = _with_context(input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: worker.StartLocalActivityInput) -> Any:
        input.headers = _with_context(input.headers)
        return super().start_local_activity(input)

    async def start_child_workflow(self, input: worker.StartChildWorkflowInput) -> Any:
        input.headers = _with_context(input.headers)
        return await super().start_child_workflow(input)


def _guarded(name: str) -> Any:
    def call(self: client.OutboundInterceptor, input: Any) -> Any:
        transactions.guard(f"Temporal {name}")
        return getattr(self.next, name)(input)

    call.__name__ = name
    return call


# Every call the client makes to the server, checked when it is made (coroutines and the
# async iterators of the list calls alike).
_GuardedOutbound = type(
    "_GuardedOutbound",
    (client.OutboundInterceptor,),
    {name: _guarded(name) for name in dir(client.OutboundInterceptor) if not name.startswith("_")},
)


class TransactionGuardInterceptor(client.Interceptor):
    """Refuses (or reports, by the process's guard mode) a Temporal call made while the
    calling task holds a database transaction: see core.db.transactions."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        outbound: client.OutboundInterceptor = _GuardedOutbound(next)
        return outbound
