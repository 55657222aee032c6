"""Keep Temporal Schedules equal to the `schedules` section of temporal.yaml.

Each schedule has the id `idp-<name>`: created when missing, updated in place when present,
paused when `enabled: false`, and (when pruning) deleted when no longer configured.
"""

from __future__ import annotations

from datetime import datetime

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from core.temporal import search_attributes
from core.topology import Schedule as ScheduleConfig
from core.topology import Topology

PREFIX = "idp-"
# Scheduled workflows that keep IdpStatus up to date (core/temporal/search_attributes.py).
REPORTS_STATUS = frozenset({"CostCollectionWorkflow"})

_OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


def schedule_id(name: str) -> str:
    return f"{PREFIX}{name}"


def build_schedule(name: str, config: ScheduleConfig) -> Schedule:
    args = [config.input] if config.input is not None else []
    # A workflow that upserts IdpStatus as it moves starts `running`; each run is summarised
    # in the Temporal UI by its schedule.
    status = "running" if config.workflow in REPORTS_STATUS else None
    return Schedule(
        action=ScheduleActionStartWorkflow(
            config.workflow,
            args=args,
            id=f"{schedule_id(name)}-run",
            task_queue=config.task_queue,
            typed_search_attributes=search_attributes.attributes(status=status),
            static_summary=f"{name} (schedule {schedule_id(name)})"
            + (f": {config.note}" if config.note else ""),
        ),
        spec=ScheduleSpec(
            cron_expressions=[config.cron] if config.cron else [],
            intervals=[ScheduleIntervalSpec(every=config.interval)] if config.interval else [],
        ),
        policy=SchedulePolicy(overlap=_OVERLAP[config.overlap]),
        state=ScheduleState(paused=not config.enabled, note=config.note or None),
    )


async def sync_schedules(
    client: Client, topology: Topology, *, queues: set[str] | None = None, prune: bool = False
) -> list[str]:
    """Create or update the configured schedules (of `queues`, default all); return their ids."""
    synced = []
    for name, config in topology.schedules.items():
        if queues is not None and config.task_queue not in queues:
            continue
        sid, schedule = schedule_id(name), build_schedule(name, config)
        try:
            await client.create_schedule(sid, schedule)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(sid).update(replace)
        synced.append(sid)
    if prune:
        wanted = {schedule_id(name) for name in topology.schedules}
        async for listed in await client.list_schedules():
            if listed.id.startswith(PREFIX) and listed.id not in wanted:
                await client.get_schedule_handle(listed.id).delete()
    return synced


async def backfill(client: Client, name: str, start: datetime, end: datetime) -> None:
    """Run schedule `name`'s action for each time it would have fired between `start` and
    `end`, as if it had (each run sees its own scheduled start time)."""
    await client.get_schedule_handle(schedule_id(name)).backfill(
        ScheduleBackfill(start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    )
