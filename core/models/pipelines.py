"""Pipeline tables: pipelines of a service, and the projections of their runs (stages, steps,
log chunks, artifacts) written by the run's activities."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity, SoftDeleteMixin, live_unique
from core.db.types import utcnow

# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Pipeline(Entity, SoftDeleteMixin):
    """A service's pipeline: its definition (inline YAML, or `.idp/pipeline.yaml` read from the
    repository at each run's commit) and its triggers."""

    __tablename__ = "pipelines"
    __table_args__ = (live_unique("uq_pipelines_service_id_name_live", "service_id", "name"),)

    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(20), default="inline")  # inline | repository
    definition: Mapped[str | None] = mapped_column(Text)  # the YAML as written (inline)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the parsed definition
    triggers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    cancel_superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class PipelineRun(Entity):
    __tablename__ = "pipeline_runs"
    __table_args__ = (UniqueConstraint("pipeline_id", "number"),)

    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, … per pipeline
    # push | pull_request | tag | manual | cron | rerun
    trigger_type: Mapped[str] = mapped_column(String(20))
    triggered_by: Mapped[str | None] = mapped_column(String(255))  # a user id or a host's sender
    delivery_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    ref: Mapped[str | None] = mapped_column(String(1024))
    branch: Mapped[str | None] = mapped_column(String(1024), index=True)
    git_sha: Mapped[str | None] = mapped_column(String(40))
    # Whether `branch` and `git_sha` came from the Git host (a push delivery, or the branch's
    # head resolved at checkout) rather than named by a person: a version built by the run
    # takes its branch from it only then (core/promotions/provenance.py).
    branch_from_host: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the GitEvent
    # The definition this run follows, resolved at its commit (a re-run follows it too).
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Every commit status reported for the run: [{state, at, reported, detail}]
    commit_statuses: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # awaiting_approval | queued | running | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    # A fork's pull request (or a re-run of one): waits for approval, gets no secrets.
    from_fork: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    approved_by: Mapped[str | None] = mapped_column(String(255))  # who let a fork's run go
    approved_at: Mapped[datetime | None] = mapped_column(default=None)
    workflow_id: Mapped[str] = mapped_column(String(255), unique=True)
    rerun_of_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pipeline_runs.id"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class PipelineStage(Base):
    __tablename__ = "pipeline_stages"
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    position: Mapped[int] = mapped_column(Integer)
    # pending | running | succeeded | failed | skipped | cancelled
    status: Mapped[str] = mapped_column(String(20), default="pending")
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class PipelineStep(Base):
    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("stage_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    stage_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_stages.id"), index=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    position: Mapped[int] = mapped_column(Integer)
    command: Mapped[str] = mapped_column(Text)
    # pending | running | succeeded | failed | timed_out | skipped | cancelled
    status: Mapped[str] = mapped_column(String(20), default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    output: Mapped[str | None] = mapped_column(Text)  # the last lines, for a summary
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    duration: Mapped[float | None] = mapped_column(Float)  # seconds


class PipelineLogChunk(Base):
    """A batch of a step's log lines, written as they are produced. `id` orders every chunk of
    a run, so a live stream follows with `id > last seen`; (step, first_seq) makes a retried
    write of the same batch a no-op."""

    __tablename__ = "pipeline_log_chunks"
    __table_args__ = (
        UniqueConstraint("step_id", "first_seq"),
        Index("ix_pipeline_log_chunks_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_runs.id"))
    step_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_steps.id"))
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{seq, at, stream, text}]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BuildArtifact(Base):
    __tablename__ = "build_artifacts"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_runs.id"), index=True)
    step_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pipeline_steps.id"))
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(2048))  # inside the artifact store
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PipelineSecret(Entity):
    """A pipeline's secret: given to its steps as an environment variable `name`, masked in
    their logs. `value` is the key ring's ciphertext bound to this row's id
    (`core.pipelines.secrets`); it is decrypted only by the step activity."""

    __tablename__ = "pipeline_secrets"
    __table_args__ = (UniqueConstraint("pipeline_id", "name"),)

    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)  # ciphertext
