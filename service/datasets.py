"""Data sets uploaded for training (`POST /datasets`): `.npz` or `.csv`, validated before they are kept.

Compressed uploads are inflated as a stream, counting and keeping nothing, before anything loads them:
a few megabytes that would unpack to gigabytes are a 413 at the cost of reading them once.
"""

from __future__ import annotations

import gzip
import math
import os
import secrets
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastapi import UploadFile
from numpy.lib import format as npy

from service.errors import ErrorCode, ServiceError
from service.schemas import DatasetOut
from service.state import Service
from service.tables import DatasetRow
from trainer.data import DataError, Dataset, load_dataset

UPLOAD_SUFFIXES = (".npz", ".csv")
ORIGINAL_NAME_CHARS = DatasetRow.__table__.c.original_name.type.length  # the column holding it
UNPACKED_FACTOR = 4  # a compressed .npz may unpack to this many times the upload limit, no more
# A gzip'd .csv may inflate to the upload limit itself: parsing text costs many times its size.
NPZ_MAX_MEMBERS = 16  # x, y and label_names; read from the zip's last record, before zipfile lists them
GZIP_MAGIC, ZIP_END = b"\x1f\x8b", b"PK\x05\x06"
CHUNK = 1 << 20
MAX_NAME_CHARS = 255  # as file systems allow; the name is stored (original_name)


def store_upload(service: Service, upload: UploadFile, label_column: str) -> dict[str, Any]:
    """Copy the upload beside its final place, load it as the trainer would, then rename it in."""
    name = Path(upload.filename or "").name
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"file: {name[:100] or 'the upload'!r} is not a .npz or .csv data set"
        )
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"file: its name must be printable and at most {MAX_NAME_CHARS} characters long",
        )
    if len(name) > ORIGINAL_NAME_CHARS:  # PostgreSQL enforces the size, SQLite would not
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"file: a name longer than {ORIGINAL_NAME_CHARS} characters"
        )
    folder = service.settings.paths.datasets
    folder.mkdir(parents=True, exist_ok=True)
    dataset_id = "ds-" + secrets.token_hex(6)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        _check_unpacked_size(tmp, service.settings.max_upload_bytes)
        try:
            data = load_dataset(str(tmp), label_column=label_column)
        except DataError as exc:
            message = str(exc).replace(str(tmp), name).replace(tmp.name, name)
            raise ServiceError(ErrorCode.INVALID_REQUEST, f"file: {message}") from exc
        if suffix == ".csv":  # kept as .npz: exactly what was validated, no label column to remember
            tmp.unlink()
            tmp = tmp.with_suffix(".npz")
            _write_npz(tmp, data)
            suffix = ".npz"
        final = folder / f"{dataset_id}{suffix}"
        tmp.chmod(0o644)  # mkstemp makes it private; a worker may run as another user
        row = DatasetRow(
            id=dataset_id,
            filename=final.name,
            original_name=name,
            n=len(data),
            classes=list(data.label_names),
            shape=list(data.x.shape[1:]),
            size_bytes=tmp.stat().st_size,
        )
        os.replace(tmp, final)
        try:
            with service.db.session() as session:
                session.add(row)
                session.commit()
                session.refresh(row)
        except BaseException:
            final.unlink(missing_ok=True)  # no file without its row
            raise
    finally:
        tmp.unlink(missing_ok=True)
    return dataset_view(row)


def _write_npz(path: Path, data: Dataset) -> None:
    with path.open("wb") as out:
        np.savez(out, x=data.x, y=data.y, label_names=np.asarray(data.label_names))
        out.flush()
        os.fsync(out.fileno())


def _check_unpacked_size(path: Path, upload_limit: int) -> None:
    """413 for an upload that inflates past its limit, 422 for a broken archive (zip and gzip bombs)."""
    with path.open("rb") as f:
        magic = f.read(2)
    if path.suffix == ".csv" and magic == GZIP_MAGIC:  # the .csv loader gunzips whatever the name
        try:
            with gzip.open(path, "rb") as stream:
                _count(stream, upload_limit, "the gzip'd .csv", "--max-upload-bytes")
        except (OSError, EOFError, zlib.error) as exc:
            raise _broken("the gzip'd .csv", exc) from exc
    elif path.suffix == ".npz":
        check_npz(path, UNPACKED_FACTOR * upload_limit)


def _count(stream: IO[bytes], limit: int, what: str, flag: str, start: int = 0) -> int:
    """Read ``stream`` to its end, keeping nothing; 413 once more than ``limit`` bytes came out."""
    inflated = start
    while chunk := stream.read(CHUNK):
        inflated += len(chunk)
        if inflated > limit:
            raise ServiceError(
                ErrorCode.TOO_LARGE, f"file: {what} unpacks to more than {limit} bytes ({flag})"
            )
    return inflated


def _broken(what: str, exc: BaseException) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_REQUEST, f"file: {what} is corrupt ({exc})")


def check_npz(path: Path, limit: int) -> None:
    """Every member is inflated and counted (what it really unpacks to, not what the archive declares),
    and no array header may promise more bytes than its member holds: numpy would allocate them first."""
    members = _zip_members(path)
    if members is None:
        return  # not a zip: np.load says what is wrong with it
    if members > NPZ_MAX_MEMBERS:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, f"file: the .npz holds {members} arrays; more than {NPZ_MAX_MEMBERS}"
        )
    inflated = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as stream:
                    _check_npy_header(member, stream)
                    inflated = _count(
                        stream, limit, "its arrays", f"{UNPACKED_FACTOR} x --max-upload-bytes", inflated
                    )
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise _broken("the .npz", exc) from exc  # RuntimeError: an encrypted member


def _zip_members(path: Path) -> int | None:
    """The member count in a zip's end-of-central-directory record; None when there is none."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - (1 << 16) - 22))  # the record (22 bytes) may trail a 64 KB comment
        tail = f.read()
    at = tail.rfind(ZIP_END)
    if at < 0 or len(tail) - at < 22:
        return None
    return struct.unpack_from("<H", tail, at + 10)[0]  # 0xFFFF for a zip64 archive: far too many too


NPY_HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}


def _check_npy_header(member: zipfile.ZipInfo, stream: IO[bytes]) -> None:
    """Consumes the ``.npy`` header of a member (``_count`` reads the rest)."""
    if not member.filename.endswith(".npy"):
        return
    try:
        reader = NPY_HEADER_READERS.get(npy.read_magic(stream))
        if reader is None:
            return  # a newer format: np.load judges it
        shape, _, dtype = reader(stream)
    except ValueError as exc:
        raise _broken(f"array {member.filename!r}", exc) from exc
    promised = dtype.itemsize * math.prod(shape)
    if promised > member.file_size:
        raise _broken(f"array {member.filename!r}", ValueError(f"its header promises {promised} bytes"))


def dataset_view(row: DatasetRow) -> dict[str, Any]:
    return {c: getattr(row, c) for c in DatasetOut.model_fields}
