"""Bulk import: a `.npz` of vectors (``x``, optional ``ids`` and ``labels``) into a collection, fast.

``POST /items`` validates every item as a JSON object (tens of microseconds each); an import takes
columns instead: one array of vectors checked at once, ids and labels validated as two lists, the model
run on large batches, and rows written with one ``executemany`` per table. Everything is checked before
anything is written (bad vectors, ids, labels, ids repeated or already stored without ``upsert``); the
rows then commit in chunks of ``COMMIT_CHUNK``, so searches wait at most one chunk's write.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from service import items
from service.catalogue import Catalogue
from service.datasets import UNPACKED_FACTOR, check_npz
from service.errors import ErrorCode, ModelChanged, ServiceError
from service.items import NewRow
from service.schemas import ItemId, Label
from service.state import Service

COMMIT_CHUNK = 10_000
_IDS = TypeAdapter(list[ItemId])
_LABELS = TypeAdapter(list[Label])


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_INPUT, f"import: {message}")


def _read(path: Path, limit: int, max_items: int) -> tuple[np.ndarray, list[str] | None, list[str] | None]:
    check_npz(path, limit)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 - zip and format errors all mean "not an import file"
        raise _invalid(f"not a .npz archive of arrays ({type(exc).__name__})") from None
    unknown = sorted(set(arrays) - {"x", "ids", "labels"})
    if "x" not in arrays or unknown:
        raise _invalid(f"expected arrays x[, ids, labels], found {', '.join(sorted(arrays)) or 'none'}")
    x = arrays["x"]
    if x.dtype.kind not in "iuf" or x.ndim != 2 or not 1 <= len(x) <= max_items:
        raise _invalid(f"x must be a 2-D numeric array of 1 to {max_items} rows, got {x.dtype} {x.shape}")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(x, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise _invalid(f"row {int(bad[0])} of x is not finite within float32 (NaN, Infinity or overflow)")
    columns = []
    for name, adapter in (("ids", _IDS), ("labels", _LABELS)):
        column = arrays.get(name)
        if column is None:
            columns.append(None)
            continue
        if column.dtype.kind != "U" or column.shape != (len(x),):
            raise _invalid(f"{name} must be an array of {len(x)} strings, got {column.dtype} {column.shape}")
        try:
            columns.append(adapter.validate_python(column.tolist()))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise _invalid(f"{name}[{error['loc'][0]}]: {error['msg']}") from None
    return x, columns[0], columns[1]


def import_npz(service: Service, catalogue: Catalogue, path: Path, upsert: bool) -> dict[str, Any]:
    """Check the whole file, embed it, then store it in chunks; returns what was imported."""
    s = service.settings
    x, ids, labels = _read(path, UNPACKED_FACTOR * s.max_upload_bytes, s.max_import_items)
    generated = ids is None
    ids = ids if ids is not None else [uuid.uuid4().hex for _ in range(len(x))]
    if len(set(ids)) != len(ids):
        raise _invalid("ids repeat within the file")
    with service.db.session() as session:
        taken = items.ids_present(session, catalogue.name, ids)
    if taken and not upsert:
        shown = ", ".join(sorted(taken)[:5])
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"{len(taken)} item id(s) already exist ({shown}); use ?upsert=true to replace them",
        )
    runtime = catalogue.require_runtime()
    encoder = runtime.encoder
    if x.shape[1] != encoder.input_dim:
        raise _invalid(f"rows of x have {x.shape[1]} values; {encoder.model_id} takes {encoder.input_dim}")
    batch = x.reshape(len(x), *encoder.input_shape)
    labelled = labels if labels is not None else [None] * len(x)

    def embed(start: int) -> np.ndarray:
        out = encoder.embed(batch[start : start + COMMIT_CHUNK])
        if not np.isfinite(out).all():
            raise _invalid(f"the model produced non-finite embeddings for rows {start} to {start + len(out)}")
        return out

    stored = 0
    # The next chunk is embedded (torch, another core) while this one is written (SQLite).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-embed") as ahead:
        pending = ahead.submit(embed, 0)
        try:
            for start in range(0, len(x), COMMIT_CHUNK):
                embeddings = pending.result()
                if start + COMMIT_CHUNK < len(x):
                    pending = ahead.submit(embed, start + COMMIT_CHUNK)
                end = start + len(embeddings)
                rows = [NewRow(ids[i], labelled[i], None, x[i]) for i in range(start, end)]
                catalogue.add(runtime, rows, embeddings, upsert)
                stored = end
        except ModelChanged:  # another model went live meanwhile: what is stored stays (it is re-embedded)
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"the collection's model changed during the import: {stored} of {len(x)} rows are stored; "
                "import the file again with ?upsert=true",
            ) from None
    return {"imported": len(x), "ids": ids if generated else None}
