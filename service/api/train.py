"""POST /train: the trainer's config as JSON, checked, then queued (``service.training``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from service import training
from service.api.deps import OrjsonRoute, ServiceDep, SessionDep
from service.schemas import JobCreated, TrainRequest

router = APIRouter(tags=["training"], route_class=OrjsonRoute)  # its JSON checks, not its speed


@router.post("/train", response_model=JobCreated, status_code=202)
def create_train_job(
    body: TrainRequest, service: ServiceDep, session: SessionDep, response: Response
) -> dict[str, Any]:
    """Queue a training job (the trainer config, plus ``activate`` and ``collection``); 202 + Location."""
    job = training.submit(service, session, body)
    response.headers["Location"] = f"/jobs/{job.id}"
    return {"id": job.id, "status": job.status, "model_id": job.model_id}
