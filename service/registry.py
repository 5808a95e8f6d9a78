"""The model registry: exported model directories under ``<data-dir>/models/``, recorded in the database.

Registering copies a directory in (once, atomically) and refuses one the service cannot honour. Loaded
encoders are shared: two collections on one model hold one TorchScript module.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path

from sqlalchemy import select

from service.db import Database
from service.encoder import Encoder
from service.errors import ErrorCode, ServiceError
from service.paths import DataDir
from service.tables import ModelRow
from trainer.card import CARD_FILE, CardError, ModelCard, read_card

logger = logging.getLogger(__name__)


class ModelRegistry:
    """Registered models: their rows, their directories and their loaded encoders."""

    def __init__(self, db: Database, paths: DataDir) -> None:
        self.db = db
        self.paths = paths
        self._encoders: dict[str, Encoder] = {}
        self._lock = threading.Lock()

    def register_dir(self, source: Path) -> ModelCard:
        """Copy a model directory into the data dir (once) and record it; raises CardError when unusable."""
        source = Path(source)
        card = read_card(source)
        target = self.paths.model_dir(card.model_id)
        if source.resolve() != target.resolve():
            if target.exists():
                if read_card(target).encoder_sha256 != card.encoder_sha256:
                    raise CardError(f"a different model with id {card.model_id!r} is already registered")
            else:
                _copy_dir(source, target)
        Encoder.load(target)  # refuse now, not at activation, a directory we cannot honour
        with self.db.session() as session:
            row = session.get(ModelRow, card.model_id)
            if row is None:
                session.add(
                    ModelRow(id=card.model_id, path=str(target.resolve()), card=card.model_dump(mode="json"))
                )
            else:
                row.path, row.card = str(target.resolve()), card.model_dump(mode="json")
            session.commit()
        logger.info("registered model %s", card.model_id)
        return card

    def register_found(self) -> None:
        """Record model directories already under ``<data-dir>/models`` (e.g. written by the trainer)."""
        if not self.paths.models.is_dir():
            return
        with self.db.session() as session:
            known = set(session.scalars(select(ModelRow.id)))
        for path in sorted(p for p in self.paths.models.iterdir() if (p / CARD_FILE).is_file()):
            if path.name in known:
                continue
            try:
                self.register_dir(path)
            except (CardError, OSError) as exc:
                logger.warning("skipping model directory %s: %s", path.name, exc)

    def row(self, model_id: str) -> ModelRow:
        with self.db.session() as session:
            row = session.get(ModelRow, model_id)
        if row is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no registered model with id {model_id!r} (GET /models)")
        return row

    def rows(self) -> list[ModelRow]:
        with self.db.session() as session:
            return list(session.scalars(select(ModelRow).order_by(ModelRow.created_at.desc())))

    def directory(self, model_id: str) -> Path:
        """Where the model's files are (under the data dir, wherever it was when the model was registered)."""
        path = Path(self.row(model_id).path)
        return path if path.exists() else self.paths.model_dir(model_id)

    def load_encoder(self, model_id: str) -> Encoder:
        """The model's encoder, loaded once; 404 for an unknown id, 409 when it cannot be loaded."""
        with self._lock:
            encoder = self._encoders.get(model_id)
        if encoder is not None:
            return encoder
        path = self.directory(model_id)
        try:
            encoder = Encoder.load(path)
        except CardError as exc:
            raise ServiceError(ErrorCode.CONFLICT, f"model {model_id} cannot be loaded: {exc}") from exc
        with self._lock:
            return self._encoders.setdefault(model_id, encoder)


def _copy_dir(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        tmp.rename(target)  # readers never see a half-copied model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
