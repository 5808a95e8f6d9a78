"""POST /train: the trainer's config as JSON, checked, then queued (``service.training``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from service import training
from service.api import docs
from service.api.deps import OrjsonRoute, ServiceDep, SessionDep
from service.schemas import JobCreated, TrainRequest

router = APIRouter(tags=["training"], route_class=OrjsonRoute)  # its JSON checks, not its speed
ESCAPES = docs.Problem(
    400,
    "a data set path that leaves datasets/",
    "dataset: data set name '../service.db' escapes the datasets folder",
)
BAD_CONFIG = docs.Problem(
    422,
    "a config the trainer would refuse",
    docs.field_error(
        ["body"],
        "value_error",
        "Value error, margin is a parameter of the contrastive/triplet loss, not of the chosen loss "
        "'supcon': leave margin unset or choose loss contrastive or triplet",
        {"dataset": "digits", "margin": 0.5},
        error="margin is a parameter of the contrastive/triplet loss, not of the chosen loss 'supcon'",
    ),
)
UNKNOWN_DATASET = docs.Problem(
    422,
    "a data set that is not there",
    "dataset: 'faces.npz' is not a built-in data set (digits, mnist-5k, fashion-mnist), an uploaded data set "
    "id (GET /datasets) or a file under the data directory's datasets/ folder",
)
NAME_TAKEN = docs.Problem(
    409, "the model name is taken", "name: a model or pending job named 'digits-2' already exists"
)


@router.post(
    "/train",
    response_model=JobCreated,
    status_code=202,
    summary="Start a training job",
    responses=docs.errors(
        *docs.JSON_BODY, ESCAPES, BAD_CONFIG, UNKNOWN_DATASET, docs.UNKNOWN_COLLECTION, NAME_TAKEN
    ),
)
def create_train_job(
    body: TrainRequest, service: ServiceDep, session: SessionDep, response: Response
) -> dict[str, Any]:
    """Queue a training job (the trainer config, plus ``activate`` and ``collection``); 202 + Location."""
    job = training.submit(service, session, body)
    response.headers["Location"] = f"/jobs/{job.id}"
    return {"id": job.id, "status": job.status, "model_id": job.model_id}
