"""POST /train: check a training request completely, then queue it for the worker.

Everything that can be checked is checked before a job row exists: the loss's parameters, the data set
(a built-in, an uploaded id, a file under ``datasets/`` that must not escape it, or a collection's
labelled items), whether the encoder can read its samples, the collection the model goes to, and the
model name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import jobs
from service.errors import ErrorCode, ServiceError
from service.schemas import TrainRequest
from service.state import Service
from service.tables import DatasetRow, ItemRow, JobRow, ModelRow
from trainer.config import ItemsSource, check_encoder_fits, new_model_id
from trainer.data import BUILTIN_DATASETS, DataError, parse_idx_spec, resolve_dataset_path
from trainer.losses import CRITERIA, build_criterion


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_REQUEST, f"{field}: {message}")


def _check_fits(body: TrainRequest, input_shape: tuple[int, ...]) -> None:
    """An encoder that cannot read the data's samples (a CNN on vectors) is a 422 now, not a failed job."""
    try:
        check_encoder_fits(body, input_shape)
    except ValueError as exc:
        raise ServiceError(ErrorCode.INVALID_REQUEST, str(exc)) from exc


def _check_items(session: Session, body: TrainRequest, collection: str) -> None:
    """Training on stored items needs labelled items of one kind, 2+ classes, pairs per class."""
    labelled = (ItemRow.collection == collection, ItemRow.label.is_not(None))
    kinds = session.execute(select(ItemRow.input_kind, ItemRow.input_dim).where(*labelled).distinct()).all()
    if not kinds:
        raise _invalid(
            "dataset", f"collection {collection!r} holds no labelled items (POST /items with a label)"
        )
    if len({kind for kind, _ in kinds}) > 1 or len({dim for kind, dim in kinds if kind == "vector"}) > 1:
        raise _invalid(
            "dataset", "the labelled items mix inputs (vectors of several lengths, or vectors and images)"
        )
    kind, dim = kinds[0]
    if kind == "vector":
        _check_fits(body, (dim,))
    query = select(ItemRow.label, func.count()).where(*labelled).group_by(ItemRow.label)
    counts = {label: n for label, n in session.execute(query)}
    if len(counts) < 2:
        raise _invalid("dataset", f"the labelled items hold {len(counts)} class; training needs at least 2")
    lonely = sorted(label for label, n in counts.items() if n < 2)
    if lonely and CRITERIA[body.loss].needs_pairs:
        raise _invalid(
            "dataset",
            f"classes with a single labelled item cannot form pairs for loss {body.loss!r}: {lonely[:10]}",
        )


def _under_datasets(service: Service, field: str, name: str) -> str:
    """``datasets/<name>`` relative to the data dir; 400 when it escapes, 422 when it does not exist."""
    try:
        path = resolve_dataset_path(name, service.settings.paths.datasets)
        exists = path.exists()
    except DataError as exc:
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"{field}: {service.settings.paths.scrub(str(exc))}"
        ) from exc
    except OSError as exc:  # a name too long for the file system, a symlink loop: no path in the answer
        raise ServiceError(
            ErrorCode.BAD_REQUEST, f"{field}: {name[:100]!r} cannot be used ({exc.strerror})"
        ) from exc
    if not exists:
        raise _invalid(
            field,
            f"{name!r} is not a built-in data set ({', '.join(BUILTIN_DATASETS)}), an uploaded data set id "
            "(GET /datasets) or a file under the data directory's datasets/ folder",
        )
    return service.settings.paths.relative(path)


def resolve_dataset(service: Service, session: Session, field: str, dataset: str, body: TrainRequest) -> str:
    """A data set spec as the worker will load it (paths relative to the data dir)."""
    if dataset in BUILTIN_DATASETS:
        return dataset
    uploaded = session.get(DatasetRow, dataset)
    if uploaded is not None:
        _check_fits(body, tuple(uploaded.shape))
        return f"datasets/{uploaded.filename}"
    try:
        parts = parse_idx_spec(dataset)
    except DataError as exc:
        raise _invalid(field, f"{exc} (names under datasets/)") from exc
    if parts is not None:
        return "idx:" + ",".join(_under_datasets(service, field, part) for part in parts)
    return _under_datasets(service, field, dataset)


def _check_loss(body: TrainRequest) -> None:
    """Let the loss validate its own parameters now, rather than fail inside the worker."""
    try:
        build_criterion(body.loss, **body.loss_params())
    except ValueError as exc:
        raise ServiceError(ErrorCode.INVALID_REQUEST, f"loss: {exc}") from exc


def _check_model_id(service: Service, session: Session, model_id: str) -> None:
    taken = (
        session.get(ModelRow, model_id) is not None
        or service.settings.paths.model_dir(model_id).exists()
        or session.scalar(
            select(JobRow.id).where(JobRow.model_id == model_id, JobRow.status.in_(jobs.PENDING))
        )
    )
    if taken:
        raise ServiceError(
            ErrorCode.CONFLICT, f"name: a model or pending job named {model_id!r} already exists"
        )


def submit(service: Service, session: Session, body: TrainRequest) -> JobRow:
    """Check the request (module docstring) and queue its job."""
    _check_loss(body)
    if body.activate:
        service.collections.get(body.collection)  # 404 now, not when the job has finished
    if isinstance(body.dataset, ItemsSource):
        service.collections.get(body.dataset.collection)
        _check_items(session, body, body.dataset.collection)
        spec = jobs.items_spec(body.dataset.collection)
    else:
        spec = resolve_dataset(service, session, "dataset", body.dataset, body)
    test_spec = (
        resolve_dataset(service, session, "test_dataset", body.test_dataset, body)
        if body.test_dataset is not None
        else None
    )
    model_id = body.name or new_model_id(body)
    _check_model_id(service, session, model_id)
    config: dict[str, Any] = body.model_dump(mode="json", exclude={"activate", "collection", "force"})
    try:
        return jobs.enqueue(
            session,
            job_id=jobs.new_job_id(),
            config=config,
            dataset_spec=spec,
            test_dataset_spec=test_spec,
            model_id=model_id,
            collection=body.collection,
            activate=body.activate,
            force=body.force,
        )
    except IntegrityError as exc:  # a concurrent request queued the same name first
        raise ServiceError(
            ErrorCode.CONFLICT, f"name: a pending job named {model_id!r} already exists"
        ) from exc
