"""Training jobs: list, show, cancel (the queue itself lives in ``service.jobs``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select

from service import jobs
from service.api.deps import SessionDep
from service.errors import ErrorCode, ServiceError
from service.schemas import JobList, JobOut
from service.tables import JobRow

router = APIRouter(prefix="/jobs", tags=["jobs"])


def valid_job(job_id: str, session: SessionDep) -> JobRow:
    """Load the job named in the path, or 404."""
    job = session.scalars(select(JobRow).where(JobRow.id == job_id)).one_or_none()
    if job is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no job with id {job_id!r} (GET /jobs lists them)")
    return job


JobDep = Annotated[JobRow, Depends(valid_job)]


@router.get("", response_model=JobList)
def read_jobs(
    session: SessionDep,
    status: jobs.JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> dict[str, Any]:
    """Jobs, newest first, optionally of one status."""
    where = [JobRow.status == status] if status else []
    total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
    rows = session.scalars(
        select(JobRow).where(*where).order_by(JobRow.seq.desc()).limit(limit).offset(offset)
    )
    return {"jobs": [jobs.job_view(j) for j in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{job_id}", response_model=JobOut)
def read_job(job: JobDep) -> dict[str, Any]:
    """One job: status, progress, per-epoch metrics, log tail, error, resulting model."""
    return jobs.job_view(job)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job: JobDep, session: SessionDep) -> dict[str, Any]:
    """Cancel a queued job at once, or stop a running one at its next step (no model is kept)."""
    try:
        return jobs.job_view(jobs.request_cancel(session, job.id))
    except jobs.JobStateError as exc:
        raise ServiceError(ErrorCode.CONFLICT, str(exc)) from exc
