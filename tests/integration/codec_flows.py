"""A workflow and activity that carry a secret, for the payload codec tests (own module so the
workflow sandbox imports nothing from pytest)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from core.temporal.policies import activity_options


@dataclass
class SecretInput:
    name: str
    secret: str


@dataclass
class SecretResult:
    name: str
    secret: str  # returned as is, so the result payload carries the secret too
    length: int


@activity.defn(name="tests.use_secret")
async def use_secret(data: SecretInput) -> SecretResult:
    return SecretResult(data.name, data.secret, len(data.secret))


@workflow.defn
class SecretCarrierWorkflow:
    @workflow.run
    async def run(self, data: SecretInput) -> SecretResult:
        return await workflow.execute_activity(use_secret, data, **activity_options("default"))
