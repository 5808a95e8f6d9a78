"""POST /train: validate a training request completely, then queue it for the worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service import jobs
from service.api.deps import OrjsonRoute, SessionDep, StateDep
from service.errors import ErrorCode, ServiceError
from service.schemas import JobCreated, TrainRequest
from service.state import ServiceState
from service.store import DatasetRow, ItemRow, JobRow, ModelRow
from trainer.config import ItemsSource, check_encoder_fits, new_model_id
from trainer.data import BUILTIN_DATASETS, DataError, resolve_dataset_path
from trainer.losses import build_loss

router = APIRouter(tags=["training"], route_class=OrjsonRoute)  # its JSON checks, not its speed
PAIR_FREE_LOSSES = ("ce", "ntxent")  # losses that do not need two samples of every class


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_REQUEST, f"dataset: {message}")


def _check_fits(body: TrainRequest, input_shape: tuple[int, ...]) -> None:
    """An encoder that cannot read the data's samples (a CNN on vectors) is a 422 now, not a failed job."""
    try:
        check_encoder_fits(body, input_shape)
    except ValueError as exc:
        raise ServiceError(ErrorCode.INVALID_REQUEST, str(exc)) from exc


def _check_items(session: Any, body: TrainRequest) -> None:
    """Training on the stored items needs labelled items of one kind, 2+ classes, pairs per class."""
    loss = body.loss
    kinds = session.execute(
        select(ItemRow.input_kind, ItemRow.input_dim).where(ItemRow.label.is_not(None)).distinct()
    ).all()
    if not kinds:
        raise _invalid("the service holds no labelled items (POST /items with a label)")
    if len({kind for kind, _ in kinds}) > 1 or len({dim for kind, dim in kinds if kind == "vector"}) > 1:
        raise _invalid("the labelled items mix inputs (vectors of several lengths, or vectors and images)")
    kind, dim = kinds[0]
    if kind == "vector":
        _check_fits(body, (dim,))
    counts = dict(
        session.execute(
            select(ItemRow.label, func.count()).where(ItemRow.label.is_not(None)).group_by(ItemRow.label)
        ).all()
    )
    if len(counts) < 2:
        raise _invalid(f"the labelled items hold {len(counts)} class; training needs at least 2")
    lonely = sorted(label for label, n in counts.items() if n < 2)
    if lonely and loss not in PAIR_FREE_LOSSES:
        raise _invalid(
            f"classes with a single labelled item cannot form pairs for loss {loss!r}: {lonely[:10]}"
        )


def _under_datasets(state: ServiceState, name: str) -> str:
    """``datasets/<name>`` relative to the data dir; 400 when it escapes, 422 when it does not exist."""
    try:
        path = resolve_dataset_path(name, state.settings.datasets_dir)
        exists = path.exists()
    except DataError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"dataset: {exc}") from exc
    except OSError as exc:  # a name too long for the file system, a symlink loop: no path in the answer
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"dataset: {name[:100]!r} cannot be used ({exc.strerror})"
        ) from exc
    if not exists:
        raise _invalid(
            f"{name!r} is not a built-in data set ({', '.join(BUILTIN_DATASETS)}), an uploaded data set id "
            "(GET /datasets) or a file under the data directory's datasets/ folder"
        )
    return str(path.relative_to(state.settings.data_dir.resolve()))


def _check_test_dataset(body: TrainRequest) -> None:
    """The worker loads ``test_dataset`` as given, from its working directory: only a built-in name is
    safe (a path could name any file on the server, "/" a folder of everything)."""
    if body.test_dataset is not None and body.test_dataset not in BUILTIN_DATASETS:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"test_dataset: over the API, only a built-in data set ({', '.join(BUILTIN_DATASETS)})",
        )


def resolve_dataset(state: ServiceState, session: Any, body: TrainRequest) -> str:
    """The job's data set spec as the worker will load it (relative to the data dir)."""
    dataset = body.dataset
    if isinstance(dataset, ItemsSource):
        _check_items(session, body)
        return jobs.ITEMS_SPEC
    if dataset in BUILTIN_DATASETS:
        return dataset
    uploaded = session.get(DatasetRow, dataset)
    if uploaded is not None:
        _check_fits(body, tuple(uploaded.shape))
        return f"datasets/{uploaded.filename}"
    if dataset.startswith("idx:"):
        parts = [p.strip() for p in dataset[4:].split(",")]
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise _invalid("an IDX data set is 'idx:IMAGES_FILE[,LABELS_FILE]' (names under datasets/)")
        return "idx:" + ",".join(_under_datasets(state, part) for part in parts)
    return _under_datasets(state, dataset)


def _check_loss(body: TrainRequest) -> None:
    """Let the loss validate its own parameters now, rather than fail inside the worker."""
    if body.loss == "ce":
        return
    try:
        build_loss(body.loss, **body.loss_params())
    except ValueError as exc:
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"loss: {exc}") from exc


def _check_model_id(state: ServiceState, session: Any, model_id: str) -> None:
    taken = (
        session.get(ModelRow, model_id) is not None
        or (state.settings.models_dir / model_id).exists()
        or session.scalar(
            select(JobRow.id).where(
                JobRow.model_id == model_id, JobRow.status.in_([jobs.QUEUED, jobs.RUNNING])
            )
        )
    )
    if taken:
        raise ServiceError(
            ErrorCode.CONFLICT, f"name: a model or pending job named {model_id!r} already exists"
        )


@router.post("/train", response_model=JobCreated, status_code=202)
def create_train_job(
    body: TrainRequest, state: StateDep, session: SessionDep, response: Response
) -> dict[str, Any]:
    """Queue a training job (the trainer config as JSON, plus ``activate``); 202 with its Location."""
    _check_loss(body)
    _check_test_dataset(body)
    spec = resolve_dataset(state, session, body)
    model_id = body.name or new_model_id(body)
    _check_model_id(state, session, model_id)
    config = body.model_dump(mode="json", exclude={"activate"})
    try:
        job = jobs.enqueue(
            session,
            job_id=jobs.new_job_id(),
            config=config,
            dataset_spec=spec,
            model_id=model_id,
            activate=body.activate,
        )
    except IntegrityError as exc:  # a concurrent request queued the same name first
        raise ServiceError(
            ErrorCode.CONFLICT, f"name: a pending job named {model_id!r} already exists"
        ) from exc
    response.headers["Location"] = f"/jobs/{job.id}"
    return {"id": job.id, "status": job.status, "model_id": model_id}
