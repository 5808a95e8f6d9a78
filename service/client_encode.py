"""Request bodies for the client: items to JSON (numpy arrays, lists, image bytes or files, dicts), new
items with their ids, labels and metadata, training configs, and uploads."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import numpy as np
from pydantic_core import to_jsonable_python

from trainer.config import TrainConfig

ItemLike = (
    np.ndarray | Sequence[float] | bytes | bytearray | memoryview | os.PathLike[str] | Mapping[str, Any]
)
Items = Sequence[ItemLike] | np.ndarray
Upload = str | os.PathLike[str] | tuple[str, bytes | BinaryIO]  # a file, or (file name, its content)


def _vector(value: Any) -> list[float]:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"a vector must hold numbers, got dtype {arr.dtype}")
    return arr.ravel().tolist()  # an image-shaped array (C, H, W) goes as its row-major flattening


def _image(value: bytes | bytearray | memoryview[Any] | os.PathLike[str]) -> str:
    data = Path(value).read_bytes() if isinstance(value, os.PathLike) else bytes(value)
    return base64.b64encode(data).decode("ascii")


def encode_item(item: ItemLike) -> Any:
    """The JSON form of one item: ``{"vector": [...]}``, ``{"image": "<base64>"}`` or a dict passed on."""
    if isinstance(item, bytes | bytearray | memoryview | os.PathLike):
        return {"image": _image(item)}
    if isinstance(item, Mapping):
        out = dict(item)
        if out.get("vector") is not None:
            out["vector"] = _vector(out["vector"])
        if isinstance(out.get("image"), bytes | bytearray | memoryview | os.PathLike):
            out["image"] = _image(out["image"])
        return out
    if isinstance(item, np.ndarray | Sequence) and not isinstance(item, str):
        return {"vector": _vector(item)}
    raise TypeError(
        f"cannot send {type(item).__name__} as an item: pass a numpy array or list of numbers, "
        "image bytes or a Path, or a dict such as {'id': ...}"
    )


def encode_items(items: Items) -> list[Any]:
    """A batch: a sequence of items, or an array with one item per row (``(n, dim)`` or ``(n, C, H, W)``)."""
    if isinstance(items, np.ndarray):
        if items.ndim < 2:
            raise TypeError(
                "pass a batch as an array with one row per item (2-D or more), or a list of items"
            )
        return [_vector(row) for row in items]
    if isinstance(items, str | bytes | Mapping):
        raise TypeError("pass a list of items, not a single item")
    return [encode_item(item) for item in items]


def new_items(
    items: Items,
    ids: Sequence[Any] | None,
    labels: Sequence[Any] | None,
    metadata: Sequence[Mapping[str, Any] | None] | None,
) -> list[dict[str, Any]]:
    """``POST /items`` entries: each item with its id, label and metadata (None: left to the service)."""
    encoded = encode_items(items)
    for name, values in (("ids", ids), ("labels", labels), ("metadata", metadata)):
        if values is not None and len(values) != len(encoded):
            raise ValueError(f"{len(values)} {name} for {len(encoded)} items")
    out = []
    for i, item in enumerate(encoded):
        entry = dict(item) if isinstance(item, dict) else {"vector": item}  # a bare vector from an array
        if ids is not None and ids[i] is not None:  # None: the service picks an id
            entry["id"] = str(ids[i])
        if labels is not None and labels[i] is not None:
            entry["label"] = str(labels[i])  # labels are strings to the service; numpy ints become "3"
        if metadata is not None and metadata[i] is not None:
            entry["metadata"] = dict(metadata[i] or {})
        out.append(entry)
    return out


def train_body(
    config: Mapping[str, Any] | TrainConfig, activate: bool, collection: str | None, force: bool
) -> dict[str, Any]:
    """A ``TrainConfig`` sends only the fields it was given, so the server's defaults fill the rest; the
    keyword arguments override the config's own ``activate``/``collection``/``force`` only when given."""
    if isinstance(config, TrainConfig):
        body = config.model_dump(mode="json", exclude_unset=True)
    else:
        body = to_jsonable_python(dict(config))  # nested models (ItemsSource), paths: plain JSON
    if activate:
        body["activate"] = True
    if collection is not None:
        body["collection"] = collection
    if force:
        body["force"] = True
    return body


def dumps(body: Any) -> bytes:
    """Strict JSON: NaN and Infinity are refused here, before anything is sent."""
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise ValueError(f"the request cannot be sent as JSON (NaN or Infinity in an item?): {exc}") from None


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """Leave optional fields out, so the server's defaults apply."""
    return {k: v for k, v in values.items() if v is not None}


def flags(**values: bool) -> dict[str, str]:
    """Query flags that are on, as ``true`` (off ones are left to the server's default, false)."""
    return {name: "true" for name, on in values.items() if on}


def path_id(value: str) -> str:
    """An id or name as one path segment (``/`` and ``?`` escaped)."""
    return quote(value, safe="")


@contextmanager
def open_upload(file: Upload) -> Iterator[tuple[str, bytes | BinaryIO]]:
    """``(file name, content)`` for a multipart part: a path is opened (streamed, then closed)."""
    if isinstance(file, tuple):
        yield file
        return
    path = Path(file)
    with path.open("rb") as content:
        yield path.name, content
