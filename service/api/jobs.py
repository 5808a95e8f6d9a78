"""Training jobs: list, show, cancel (the queue itself lives in ``service.jobs``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import func, select

from service import jobs
from service.api import docs
from service.api.deps import ServiceDep, SessionDep
from service.errors import ErrorCode, ServiceError
from service.schemas import DECIMAL_DIGITS, JobList, JobOut, JobStatus
from service.state import Service
from service.tables import JobRow

router = APIRouter(prefix="/jobs", tags=["jobs"])
UNKNOWN_JOB = docs.Problem(
    404, "an unknown job id", "no job with id 'job-0123456789abcdef' (GET /jobs lists them)"
)
FINISHED = docs.Problem(
    409,
    "the job has finished",
    "job job-0123456789abcdef already succeeded; only queued or running jobs can be cancelled",
)
BAD_STATUS = docs.Problem(
    422,
    "an unknown status",
    docs.field_error(
        ["query", "status"],
        "literal_error",
        "Input should be 'queued', 'running', 'cancelling', 'succeeded', 'failed' or 'cancelled'",
        "done",
        expected="'queued', 'running', 'cancelling', 'succeeded', 'failed' or 'cancelled'",
    ),
)


def valid_job(
    job_id: Annotated[
        str,
        Path(description="the job's id (GET /jobs)", openapi_examples=docs.example("job-0123456789abcdef")),
    ],
    session: SessionDep,
) -> JobRow:
    """Load the job named in the path, or 404."""
    job = session.scalars(select(JobRow).where(JobRow.id == job_id)).one_or_none()
    if job is None:
        raise ServiceError(ErrorCode.NOT_FOUND, f"no job with id {job_id!r} (GET /jobs lists them)")
    return job


JobDep = Annotated[JobRow, Depends(valid_job)]


def _view(service: Service, job: JobRow) -> dict[str, Any]:
    return jobs.job_view(job, service.settings.paths.hide)


def _where_status(status: JobStatus | None) -> list[Any]:
    """``running`` and ``cancelling`` are one stored status, told apart by ``cancel_requested``."""
    if status is None:
        return []
    if status in (jobs.RUNNING, jobs.CANCELLING):
        return [JobRow.status == jobs.RUNNING, JobRow.cancel_requested.is_(status == jobs.CANCELLING)]
    return [JobRow.status == status]


@router.get(
    "", response_model=JobList, summary="List jobs", responses=docs.errors(docs.BAD_LIMIT, BAD_STATUS)
)
def read_jobs(
    session: SessionDep,
    service: ServiceDep,
    status: Annotated[
        JobStatus | None,
        Query(description="only jobs in this status", openapi_examples=docs.example("running")),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=1000, description="page size", openapi_examples=docs.example(100)), DECIMAL_DIGITS
    ] = 100,
    offset: Annotated[
        int,
        Query(ge=0, le=2**62, description="jobs to skip", openapi_examples=docs.example(0)),
        DECIMAL_DIGITS,
    ] = 0,
) -> dict[str, Any]:
    """Jobs, newest first, optionally of one status."""
    where = _where_status(status)
    total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
    rows = session.scalars(
        select(JobRow).where(*where).order_by(JobRow.seq.desc()).limit(limit).offset(offset)
    )
    return {"jobs": [_view(service, j) for j in rows], "total": total, "limit": limit, "offset": offset}


@router.get("/{job_id}", response_model=JobOut, summary="Read a job", responses=docs.errors(UNKNOWN_JOB))
def read_job(job: JobDep, service: ServiceDep) -> dict[str, Any]:
    """One job: status, progress, per-epoch metrics, log tail, error, resulting model."""
    return _view(service, job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job",
    responses={
        202: {"model": JobOut, "description": "A running job asked to stop at its next step (cancelling)"},
        **docs.errors(UNKNOWN_JOB, FINISHED),
    },
)
def cancel_job(job: JobDep, session: SessionDep, service: ServiceDep, response: Response) -> dict[str, Any]:
    """Cancel a queued job at once (200, ``cancelled``), or ask a running one to stop at its next step
    (202, ``cancelling``: no model is kept); a finished job is a 409."""
    try:
        view = _view(service, jobs.request_cancel(session, job.id))
    except jobs.JobStateError as exc:
        raise ServiceError(ErrorCode.CONFLICT, str(exc)) from exc
    if view["status"] == jobs.CANCELLING:
        response.status_code = 202
        response.headers["Location"] = f"/jobs/{job.id}"
    return view
