"""Where a version came from, as the platform recorded it: the branch and commit of the
pipeline run that built it. A promotion's branch (what `allowed_branches` checks and what
approvers are shown) is read from here, never from the request or the version's free config.

A version registered by hand, or linked to a run whose commit a person named, has no
provenance: its branch is unknown (None), and a policy with `allowed_branches` refuses it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from core.models.catalog import ServiceVersion
from core.models.pipelines import Pipeline, PipelineRun

NO_PROVENANCE = "no provenance (registered by hand, not linked to the pipeline run that built it)"


@dataclass(frozen=True)
class Provenance:
    branch: str | None
    git_sha: str | None
    pipeline_run_id: uuid.UUID | None
    label: str  # what approvers read: "main (from pipeline run …)" or "no provenance (…)"

    @property
    def known(self) -> bool:
        return self.branch is not None


async def provenance_of(session: AsyncSession, version: ServiceVersion) -> Provenance:
    if version.pipeline_run_id is None:
        return Provenance(None, None, None, NO_PROVENANCE)
    run = await session.get(PipelineRun, version.pipeline_run_id)
    assert run is not None  # a foreign key
    pipeline = await session.get(Pipeline, run.pipeline_id)
    name = f"{pipeline.name} #{run.number}" if pipeline is not None else f"#{run.number}"
    where = f"pipeline run {run.id}: {name}"
    sha = run.git_sha
    if not run.branch_from_host:
        return Provenance(
            None,
            sha,
            run.id,
            f"no provenance (from {where}, started at a commit a person named, so its branch "
            "is not the Git host's)",
        )
    if run.branch is None:
        return Provenance(None, sha, run.id, f"no branch (from {where}, which built no branch)")
    commit = f", commit {sha[:12]}" if sha else ""
    return Provenance(run.branch, sha, run.id, f"{run.branch} (from {where}{commit})")
